"""Bundled datasets: the UCI handwritten digits that scikit-learn ships (no download)."""
from __future__ import annotations

import importlib.metadata
import os

import numpy as np


def load_digits_split(test_size: float = 0.25, seed: int = 0, dtype=np.float32):
    """The 8x8 UCI digits (1,797 images, 10 classes), pixels scaled to [0, 1], split stratified.

    The split is scikit-learn's (`train_test_split(..., stratify=y)`). It is kept in fastbp's cache
    directory, so that later calls need not import scikit-learn (1.6 s, most of a warm `fastbp train`).

    Parameters
    ----------
    test_size : float, fraction held out for testing
    seed : int, seeds the split
    dtype : np.float32 or np.float64

    Returns
    -------
    X_train, X_test : ndarray (N, 64)
    y_train, y_test : ndarray (N,) integer labels 0..9
    """
    path = _split_path(test_size, seed)
    split = _read_split(path) if path else None
    if split is None:
        split = _split_with_sklearn(test_size, seed)
        if path:
            _write_split(path, split)
    pixels_train, pixels_test, y_train, y_test = split
    # the pixels are integers 0..16: the same bits as scaling scikit-learn's float64 array
    return (pixels_train / 16.0).astype(dtype), (pixels_test / 16.0).astype(dtype), y_train, y_test


_FIELDS = ("pixels_train", "pixels_test", "y_train", "y_test")


def _split_with_sklearn(test_size: float, seed: int) -> list[np.ndarray]:
    """(pixels_train, pixels_test, y_train, y_test), pixels as uint8 0..16, as scikit-learn splits them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    pixels_train, pixels_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                                  stratify=y)
    return [pixels_train.astype(np.uint8), pixels_test.astype(np.uint8), y_train, y_test]


def _split_path(test_size: float, seed: int) -> str | None:
    """Where this split is kept: fastbp's cache directory (private to the user, `kernels/cache.py`),
    named by its arguments and scikit-learn's version; None when there is no cache directory."""
    from .kernels.cache import cache_directory

    directory = cache_directory()
    if directory is None:
        return None
    version = importlib.metadata.version("scikit-learn")
    return os.path.join(directory, f"digits-split-{float(test_size)!r}-{int(seed)}-sklearn-{version}.npz")


def _read_split(path: str) -> list[np.ndarray] | None:
    """The split kept at `path`, or None when there is none or it cannot be read (it is then made again)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            return [saved[name] for name in _FIELDS]
    except Exception:  # noqa: BLE001  missing, cut short or garbled: computed again and rewritten
        return None


def _write_split(path: str, split: list[np.ndarray]) -> None:
    """Keep the split at `path`, atomically; a directory that cannot be written only costs the next call."""
    from .io import write_npz_atomically

    try:
        write_npz_atomically(path, dict(zip(_FIELDS, split)))
    except OSError:
        pass
