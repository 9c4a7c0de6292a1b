"""Input checks done in Python, before any compiled code runs.

Each check raises ValueError or TypeError with a message that names the argument, says what is
wrong and how to fix it, and returns a C-contiguous copy or view in the model's dtype.
"""
from __future__ import annotations

import numbers

import numpy as np


def check_positive_int(value, name: str) -> int:
    """`value` as an int ≥ 1, or a TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}; pass e.g. {name}=32")
    if value < 1:
        raise ValueError(f"{name} must be ≥ 1, got {value}")
    return int(value)


def _as_real_array(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be read as an array ({exc}); pass a rectangular numeric array") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers (integer or float), got dtype {arr.dtype}; "
                        f"convert it with np.asarray({name}, dtype=float)")
    return arr


def check_X(X, n_features: int, dtype) -> np.ndarray:
    """X as a finite (N, n_features) C-contiguous array of `dtype`, N ≥ 1."""
    arr = _as_real_array(X, "X")
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got {arr.ndim}-D shape {arr.shape}; "
                         "reshape a single sample with X.reshape(1, -1)")
    if arr.shape[0] == 0:
        raise ValueError("X is empty (0 samples); pass at least one sample")
    if arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features per sample, but the model's input layer has "
                         f"{n_features}; pass X with shape (n_samples, {n_features})")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError("X contains NaN or infinity; remove or impute those values first")
    return arr


def check_targets(y, n_samples: int, n_outputs: int, output: str, dtype) -> np.ndarray:
    """Targets y as a finite (n_samples, n_outputs) C-contiguous matrix t of `dtype`.

    softmax: integer labels in [0, n_outputs) (one-hot encoded here) or rows of class
    probabilities; sigmoid: 0/1 (or [0, 1]) matrix, or a vector when n_outputs == 1;
    identity: real targets, a vector when n_outputs == 1.
    """
    arr = _as_real_array(y, "y")
    if arr.shape[:1] != (n_samples,):
        raise ValueError(f"y has {arr.shape[0] if arr.ndim else 0} rows but X has {n_samples} samples; "
                         "pass one target per sample")
    if not np.isfinite(arr).all():
        raise ValueError("y contains NaN or infinity; remove those samples first")
    if output == "softmax" and arr.ndim == 1:
        return _one_hot(arr, n_outputs, dtype)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(f"y must have shape ({n_samples}, {n_outputs}) for a model with {n_outputs} "
                         f"outputs, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if output in ("softmax", "sigmoid") and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"y for a {output} output must lie in [0, 1] (probabilities or 0/1 labels)")
    if output == "softmax" and not np.allclose(arr.sum(axis=1), 1, atol=1e-3):
        raise ValueError("each row of y must sum to 1 (class probabilities); "
                         "or pass integer class labels as a 1-D array")
    return arr


def _one_hot(labels: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("y holds non-integer class labels; pass integers in "
                             f"[0, {n_classes}) or rows of class probabilities")
    if labels.min() < 0 or labels.max() >= n_classes:
        bad = labels[(labels < 0) | (labels >= n_classes)][0].item()
        raise ValueError(f"y holds the label {bad!r}, outside [0, {n_classes}) for a model with "
                         f"{n_classes} outputs; relabel the classes 0..{n_classes - 1} "
                         "(e.g. with sklearn.preprocessing.LabelEncoder)")
    T = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    T[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return T
