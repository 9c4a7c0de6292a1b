"""Where Numba keeps fastbp's compiled kernels: a directory named by a digest of their source.

Numba invalidates a cached function when *its own* file changes, not when a kernel it calls in
another module does; a stale caller then runs old callee code (seen here as a segfault after an
edit to `dense.py`, and as silently different weights). Keying the directory on every kernel
module's source (and the Numba version) makes a stale cache impossible — under
`NUMBA_CACHE_DIR` too, which chooses where the keyed directory goes, not whether it is keyed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numba

from .target import VECTOR_WIDTH


def kernels_digest() -> str:
    """sha256 over the source of every kernel module, the Numba version and the vector width
    (`target.VECTOR_WIDTH`: a cache built for one width is never loaded for another)."""
    digest = hashlib.sha256(f"{numba.__version__} {VECTOR_WIDTH}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _candidates(name: str) -> list[Path]:
    """Cache directories to try, in order: under NUMBA_CACHE_DIR, the user cache, the temp dir."""
    places = [Path(os.environ["NUMBA_CACHE_DIR"]) / "fastbp"] if os.environ.get("NUMBA_CACHE_DIR") else []
    try:
        places.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastbp")
    except RuntimeError:  # no home directory at all
        pass
    places.append(Path(tempfile.gettempdir()) / f"fastbp-{getattr(os, 'getuid', lambda: 'user')()}")
    return [place / name for place in places]


def configure_cache() -> str | None:
    """Point Numba's cache at <place>/kernels-<digest>, the first writable of `_candidates`.

    Returns the directory, or None when nothing is writable (Numba then falls back to the
    package's own __pycache__, or compiles in memory).
    """
    for candidate in _candidates(f"kernels-{kernels_digest()}"):
        if _writable(candidate):
            numba.config.CACHE_DIR = str(candidate)
            return str(candidate)
    return None


def has_compiled(kernel) -> bool:
    """Whether Numba's on-disk cache holds compiled code of `kernel` (a `cache=True` dispatcher) for
    this install and this source, in any signature. False means that its first call in this process
    compiles it, tens of seconds for a training loop. Reads Numba's index through its private cache
    objects; a Numba without them gives False."""
    try:
        return bool(kernel._cache._cache_file._load_index())
    except (AttributeError, OSError):
        return False
