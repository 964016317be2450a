"""On-disk cache of reference feature statistics, keyed by everything that determines them.

Key = sha256 over (split name, protocol string, extractor name, weights hash, sorted file list with sizes and
mtimes, stats config). A changed, added, removed or touched file, other weights or another protocol give another key,
so stale entries are never read (they stay on disk until removed). Entries are ``.npz`` files written atomically
(temporary file in the same directory, fsync, ``os.replace``), like torch-fidelity's ``torch_atomic_save``; they are
read with ``allow_pickle=False`` and checked (finite ``mu [D]``, ``sigma [D, D]``, ``features [n, D]``); an entry that
cannot be read or fails the check is reported in one warning line and treated as a miss, so it is recomputed and
rewritten. Default directory: ``$I2I_CACHE_DIR`` or ``~/.cache/i2i``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from i2i.metrics.stats import FeatureStats


def default_cache_dir() -> Path:
    """``$I2I_CACHE_DIR`` or ``~/.cache/i2i``."""
    return Path(os.environ.get("I2I_CACHE_DIR") or Path.home() / ".cache" / "i2i").expanduser()


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The first existing path among ``path`` and its parents when it is not a directory (``None``: all clear)."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_cache_dir(cache_dir: str | os.PathLike, key: str = "cache_dir") -> None:
    """Raise ``ValueError`` naming ``key`` when ``cache_dir`` (or a parent of it) is an existing file."""
    blocker = file_in_the_way(cache_dir)
    if blocker is not None:
        raise ValueError(f"{key}={cache_dir}: {blocker} is a file, not a directory — set {key} to a directory "
                         "(or move the file away)")


def warn(message: str) -> None:
    """One warning line on stderr (through tqdm, so a progress bar stays intact)."""
    tqdm.write(f"i2i: warning: {message}", file=sys.stderr)


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


#: what reading a damaged ``.npz`` raises (empty: EOFError; truncated: BadZipFile; pickled object arrays: ValueError)
_UNREADABLE = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error)


class InvalidEntry(ValueError):
    """A readable entry whose arrays cannot be statistics (the message says which array and why)."""


def describe_error(err: Exception) -> str:
    """A short reason for an unusable entry (``KeyError`` alone would print only the missing name)."""
    if isinstance(err, InvalidEntry):
        return str(err)
    if isinstance(err, KeyError):
        return f"no {err.args[0]!r} array" if err.args else "an array is missing"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidEntry(f"{name} has dtype {arr.dtype}, expected numbers")
    if not np.isfinite(arr).all():
        raise InvalidEntry(f"{name} has NaN/inf values")


def read_entry(z, key: str) -> FeatureStats:
    """Check an open entry and return its stats; :class:`InvalidEntry` (or ``KeyError``) says what is wrong.

    Expected: the stored key equal to ``key``; finite ``mu [D]`` and ``sigma [D, D]``; ``n >= 2``; ``features``
    empty or finite ``[n, D]``.
    """
    if str(z["key"]) != key:
        raise InvalidEntry("written for another key")
    mu, sigma, n, feats = z["mu"], z["sigma"], z["n"], z["features"]
    if mu.ndim != 1 or mu.size == 0:
        raise InvalidEntry(f"mu has shape {list(mu.shape)}, expected [D]")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise InvalidEntry(f"sigma has shape {list(sigma.shape)}, expected [{d}, {d}] for mu [{d}]")
    if n.shape != () or not np.issubdtype(n.dtype, np.integer) or int(n) < 2:
        raise InvalidEntry(f"n={n.tolist()}, expected an image count >= 2")
    if feats.size and feats.shape != (int(n), d):
        raise InvalidEntry(f"features have shape {list(feats.shape)}, expected [{int(n)}, {d}]")
    for name, arr in (("mu", mu), ("sigma", sigma), ("features", feats)):
        _check_finite(name, arr)
    return FeatureStats(mu=mu, sigma=sigma, n=int(n), features=feats if feats.size else None)


class StatsCache:
    """Reference-statistics cache with observable ``hits`` / ``misses`` counters.

    Args:
        cache_dir: directory for the ``.npz`` entries (``None``: :func:`default_cache_dir`).

    Raises:
        ValueError: ``cache_dir`` (or a parent of it) is an existing file.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        check_cache_dir(self.dir)
        self.hits = self.misses = 0

    def path(self, split: str, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")[-60:] or "split"
        return self.dir / f"{safe}-{key[:20]}.npz"

    def load(self, split: str, key: str) -> FeatureStats | None:
        """The cached stats, or ``None`` (counted as a miss) when absent, unreadable, invalid or of another key.

        A present entry that cannot be used is named in one warning line; the caller recomputes and rewrites it.
        """
        p = self.path(split, key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                stats = read_entry(z, key)
        except _UNREADABLE as e:
            warn(f"{p}: unusable statistics cache entry ({describe_error(e)}) — recomputing and rewriting it")
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
