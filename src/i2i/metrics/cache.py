"""On-disk cache of reference feature statistics, keyed by everything that determines them.

Key = sha256 over (split name, protocol string, extractor name, weights hash, sorted file list with sizes and
mtimes, stats config). A changed, added, removed or touched file, other weights or another protocol give another key,
so stale entries are never read (they stay on disk until removed). Entries are ``.npz`` files written atomically
(temporary file in the same directory, fsync, ``os.replace``), like torch-fidelity's ``torch_atomic_save``; they are
read with ``allow_pickle=False``. Default directory: ``$I2I_CACHE_DIR`` or ``~/.cache/i2i``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from i2i.metrics.stats import FeatureStats


def default_cache_dir() -> Path:
    """``$I2I_CACHE_DIR`` or ``~/.cache/i2i``."""
    return Path(os.environ.get("I2I_CACHE_DIR") or Path.home() / ".cache" / "i2i").expanduser()


def file_fingerprint(files: list[Path]) -> list[list]:
    """``[[name, size, mtime_ns], ...]`` sorted by name."""
    out = []
    for f in files:
        st = os.stat(f)
        out.append([Path(f).name, st.st_size, st.st_mtime_ns])
    return sorted(out)


def cache_key(split: str, protocol: str, extractor_name: str, weights_hash: str, files: list[Path],
              config: dict | None = None) -> str:
    """sha256 hex digest over every input that changes the statistics."""
    payload = {"split": split, "protocol": protocol, "extractor": extractor_name, "weights": weights_hash,
               "files": file_fingerprint(files), "config": config or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class StatsCache:
    """Reference-statistics cache with observable ``hits`` / ``misses`` counters.

    Args:
        cache_dir: directory for the ``.npz`` entries (``None``: :func:`default_cache_dir`).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.hits = self.misses = 0

    def path(self, split: str, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")[-60:] or "split"
        return self.dir / f"{safe}-{key[:20]}.npz"

    def load(self, split: str, key: str) -> FeatureStats | None:
        """The cached stats, or ``None`` (counted as a miss) when absent, unreadable or of another key."""
        p = self.path(split, key)
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    raise KeyError(key)
                feats = z["features"] if z["features"].size else None
                stats = FeatureStats(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]), features=feats)
        except (OSError, KeyError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return stats

    def save(self, split: str, key: str, stats: FeatureStats, meta: dict | None = None) -> Path:
        """Write ``stats`` atomically; returns the entry path."""
        p = self.path(split, key)
        feats = stats.features if stats.features is not None else np.zeros((0,), np.float32)
        atomic_write_bytes(p, lambda f: np.savez(f, key=np.str_(key), mu=stats.mu, sigma=stats.sigma,
                                                  n=np.int64(stats.n), features=feats,
                                                  meta=np.str_(json.dumps(meta or {}, sort_keys=True))))
        return p
