"""Bundled datasets: the UCI handwritten digits that scikit-learn ships (no download)."""
from __future__ import annotations

import numpy as np


def load_digits_split(test_size: float = 0.25, seed: int = 0, dtype=np.float32):
    """The 8x8 UCI digits (1,797 images, 10 classes), pixels scaled to [0, 1], split stratified.

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
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
