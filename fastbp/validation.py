"""Input checks, done before any training or inference kernel runs.

Each check raises ValueError (a wrong value) or TypeError (a wrong type) with a message that names
the argument, says what is wrong and how to fix it. The array checks return a C-contiguous array
in the model's dtype — the input itself when it already is one — so compiled code only ever sees
clean, finite input, and a failed check leaves the model untouched. The one pass that reads every
value, for NaN and inf, is itself compiled (`kernels.checks.all_finite`); it takes only a
contiguous float array, which the checks before it guarantee. Until that kernel is compiled (in this
process or in the cache), inputs below COMPILE_FROM_VALUES are checked by NumPy instead, so that a first
run on small data does not wait for its compilation.

Accepted and converted: lists, integer, bool and other float arrays, Fortran-ordered and strided
views, and float64 data for a float32 model. Rejected: complex, string, object and date dtypes,
ragged lists, NaN/inf, and values that overflow the model's dtype.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from .buffers import copy_on_a_line
from .kernels.cache import has_compiled
from .kernels.checks import all_finite
from .parallel import parallel_section
from .sparse_input import check_sparse_X, is_sparse

#: the outputs whose targets are probabilities or 0/1 labels
_PROBABILITY_OUTPUTS = ("softmax", "sigmoid")


# ----------------------------------------------------------------------------- scalars
def check_positive_int(value, name: str) -> int:
    """`value` as an int ≥ 1, or a TypeError/ValueError naming `name`.

    Python and NumPy integers are accepted; bool and float (even ``3.0``) are not.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}; "
                        f"pass a whole number such as {name}=32")
    if value < 1:
        raise ValueError(f"{name} must be ≥ 1, got {value}; pass a positive whole number such as {name}=32")
    return int(value)


def check_positive_real(value, name: str, example: str = "0.01") -> float:
    """`value` as a finite float > 0 (a learning rate, say), or a TypeError/ValueError naming `name`.

    Python and NumPy reals are accepted (``np.float32(0.1)`` too); bool, complex and strings are not.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}; "
                        f"pass e.g. {name}={example}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}; pass e.g. {name}={example}")
    return value


def check_real(value, name: str) -> float:
    """`value` as a finite float, or a TypeError (not a real number; bool is not) / ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_non_negative(value, name: str) -> float:
    """`value` as a finite float ≥ 0, or a TypeError/ValueError naming `name`."""
    value = check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return value


def check_positive(value, name: str) -> float:
    """`value` as a finite float > 0, or a TypeError/ValueError naming `name`."""
    value = check_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_fraction(value, name: str) -> float:
    """`value` as a float in [0, 1) (a momentum, a decay rate), or a TypeError/ValueError naming `name`."""
    value = check_real(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def check_lr(lr) -> float:
    """A fixed learning rate as a finite float > 0, or a TypeError/ValueError that suggests one."""
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number or a callable epoch -> lr, got {type(lr).__name__}; "
                        "pass e.g. lr=0.01")
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be finite and > 0, got {lr}; pass e.g. lr=0.01")
    return lr


# ----------------------------------------------------------------------------- arrays
def check_X(X, n_features: int, dtype, name: str = "X") -> np.ndarray:
    """X as a finite (N, n_features) C-contiguous array of `dtype`, N ≥ 1.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix
        The inputs, one row per sample. A sparse X is returned as CSR (`sparse_input.check_sparse_X`).
    n_features : int
        Width of the model's input layer, n_0.
    dtype : np.float32 or np.float64
        The model's dtype.
    name : str, default "X"
        What the messages call the argument (e.g. "validation_data[0]").

    Raises
    ------
    TypeError
        X does not hold real numbers.
    ValueError
        X is not 2-D, is empty, has the wrong width, or holds NaN, inf or values beyond `dtype`'s range.
    """
    if is_sparse(X):  # kept sparse: CSR of `dtype`, the stored values checked (fastbp.sparse_input)
        return check_sparse_X(X, n_features, dtype, name)
    arr = _as_real_array(X, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {arr.ndim}-D shape {arr.shape}; "
                         f"reshape a single sample with {name}.reshape(1, -1)")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples, shape {arr.shape}); pass at least one sample")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per sample, but the model's input layer has "
                         f"{n_features}; pass {name} with shape (n_samples, {n_features})")
    return _finite_in_dtype(arr, name, dtype)


def check_targets(y, n_samples: int, n_outputs: int, output: str, dtype, name: str = "y") -> np.ndarray:
    """Targets y as a finite (n_samples, n_outputs) C-contiguous matrix t of `dtype`.

    - softmax: integer class labels in [0, n_outputs), 1-D (floats like 2.0 and bools count as
      integers; they are one-hot encoded here), or rows of class probabilities that sum to 1;
    - sigmoid: a 0/1 (or [0, 1]) matrix, or a vector when n_outputs == 1;
    - identity: real targets, a vector when n_outputs == 1; poisson: the same, each ≥ 0.

    `name` is what the messages call the argument, "y" by default.

    Raises
    ------
    TypeError
        y does not hold real numbers (e.g. string class names).
    ValueError
        y has the wrong number of rows or columns, holds NaN/inf, labels outside [0, n_outputs)
        or non-integer labels, probabilities outside [0, 1] or rows that do not sum to 1.
    """
    arr = _as_real_array(y, name)
    if arr.ndim == 0 or arr.shape[0] != n_samples:
        rows = arr.shape[0] if arr.ndim else "no"
        raise ValueError(f"{name} has {rows} rows but X has {n_samples} samples; pass one target per sample")
    if arr.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got {arr.ndim}-D shape {arr.shape}; "
                         f"pass ({n_samples},) labels or a ({n_samples}, {n_outputs}) target matrix")
    if output == "softmax" and arr.ndim == 1:
        _check_finite(arr, name)
        return _one_hot(arr, n_outputs, dtype, name)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim == 1 or arr.shape[1] != n_outputs:
        raise ValueError(_target_shape_message(arr.shape, n_samples, n_outputs, output, name))
    T = _finite_in_dtype(arr, name, dtype)
    if output == "poisson" and (T < 0).any():
        where = _first(T < 0)
        raise ValueError(f"{name} for a poisson output must be ≥ 0 (counts or rates), got {name}{list(where)} = "
                         f"{T[where].item()}; use output='identity' for targets of either sign")
    if output in _PROBABILITY_OUTPUTS:
        _check_unit_interval(T, output, name)
    if output == "softmax":
        _check_rows_sum_to_one(T, name)
    return T


def check_sample_weight(sample_weight, n_samples: int, dtype, name: str = "sample_weight") -> np.ndarray | None:
    """Sample weights as a finite (n_samples,) C-contiguous array of `dtype`, each ≥ 0 with a sum > 0, or None.

    Raises
    ------
    TypeError
        the weights are not real numbers.
    ValueError
        wrong shape, NaN/inf, a negative weight, or all weights zero.
    """
    if sample_weight is None:
        return None
    w = _as_real_array(sample_weight, name)
    if w.ndim == 0:
        w = np.full(n_samples, w)
    if w.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},), one weight per sample, got {w.shape}")
    w = _finite_in_dtype(w, name, dtype)
    if (w < 0).any():
        where = _first(w < 0)
        raise ValueError(f"{name}{list(where)} = {w[where].item()} is negative; weights must be ≥ 0")
    if not w.sum(dtype=np.float64) > 0:
        raise ValueError(f"{name} holds only zero weights; give at least one sample a positive weight")
    return w


# ----------------------------------------------------------------------------- helpers
def _as_real_array(a, name: str) -> np.ndarray:
    """`a` as an array of integers, bools or floats; never copies an array that already is one."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be read as an array ({exc}); "
                         "pass a rectangular numeric array, every row the same length") from exc
    if arr.dtype.kind not in "biuf":  # bool, integers, floats (the kind: one character, no subtype walk)
        hint = (" (for class names, encode them as 0..C-1 first, e.g. with sklearn.preprocessing.LabelEncoder)"
                if name != "X" and arr.dtype.kind in "USO" else "")
        raise TypeError(f"{name} must hold real numbers (integer, bool or float), got dtype {arr.dtype}; "
                        f"convert it with np.asarray({name}, dtype=float){hint}")
    return arr


def _finite_in_dtype(arr: np.ndarray, name: str, dtype) -> np.ndarray:
    """arr converted to a C-contiguous, writeable `dtype` array, checked finite in one pass after the cast.

    A read-only array is copied, so that the kernels see one array type and compile one variant. An
    array that needs no conversion is used as it is; a converted one starts on a cache line (`buffers`).

    A cast keeps NaN and inf, and turns a value too large for `dtype` into inf, so checking the
    converted array alone finds both; the source value then tells which message applies.
    """
    converted = arr
    if arr.dtype != dtype or not (arr.flags.c_contiguous and arr.flags.writeable):
        with np.errstate(over="ignore", invalid="ignore"):
            converted = copy_on_a_line(arr, dtype)
    if not _all_finite(converted):
        where = _first(~np.isfinite(converted))
        if not np.isfinite(arr[where]):
            _check_finite(arr, name)
        raise ValueError(f"{name}{list(where)} = {arr[where].item()!r} overflows {np.dtype(dtype).name} "
                         f"(largest {np.finfo(dtype).max:.3g}); rescale {name} or use a float64 model")
    return converted


#: values from which `_all_finite` compiles its kernel when it is not compiled yet. Below, NumPy's check (2-4x
#: slower, and its mask at most 1 MB, 0.2 ms) spares a first run on small data the compilation: 1.3-2.2 s of a
#: cold `fastbp train` (benchmarks/NOTES.md)
COMPILE_FROM_VALUES = 1 << 20


def _all_finite(a: np.ndarray) -> bool:
    """np.isfinite(a).all() for a C-contiguous float array: one compiled pass on every thread, or NumPy's
    check while that kernel is neither compiled (here or in the cache) nor worth compiling for `a`."""
    # `overloads`, not `signatures`: a list built on each read, 0.6 µs of a one-row prediction
    if all_finite.overloads or a.size >= COMPILE_FROM_VALUES or _kernel_in_cache():
        with parallel_section():
            return all_finite(a.reshape(-1))
    return bool(np.isfinite(a).all())


@functools.cache
def _kernel_in_cache() -> bool:
    """Whether the cache held `all_finite` when first asked (read once: a file read per call would cost more
    than the check of a few rows)."""
    return has_compiled(all_finite)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        where = _first(~np.isfinite(arr))
        raise ValueError(f"{name} contains NaN or infinity (first at {name}{list(where)} = {arr[where].item()}); "
                         "remove or impute those values first")


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True element of mask."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(mask), mask.shape))


def _one_hot(labels: np.ndarray, n_classes: int, dtype, name: str) -> np.ndarray:
    """(N,) class labels → (N, n_classes) one-hot rows, after checking each label."""
    if np.issubdtype(labels.dtype, np.floating) and not np.array_equal(labels, np.round(labels)):
        bad = labels[labels != np.round(labels)][0].item()
        raise ValueError(f"{name} holds non-integer class labels (e.g. {bad!r}); pass integers in "
                         f"[0, {n_classes}), or rows of class probabilities with shape (n_samples, {n_classes})")
    outside = (labels < 0) | (labels >= n_classes)
    if outside.any():
        bad = labels[outside][0].item()
        raise ValueError(f"{name} holds the label {bad!r}, outside [0, {n_classes}) for a model with "
                         f"{n_classes} outputs; relabel the classes 0..{n_classes - 1} "
                         "(e.g. with sklearn.preprocessing.LabelEncoder) or give the model more outputs")
    T = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    T[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return T


def _target_shape_message(shape: tuple[int, ...], n_samples: int, n_outputs: int, output: str, name: str) -> str:
    want = f"{name} must have shape ({n_samples}, {n_outputs}) for a model with {n_outputs} outputs, got {shape}"
    if output == "softmax" and len(shape) == 2 and shape[1] == 1:
        return f"{want}; pass class labels as a 1-D array ({name}.ravel()), or one-hot rows of width {n_outputs}"
    if output == "softmax":
        return (f"{want}; pass class labels as a 1-D array, or one-hot / probability rows of width {n_outputs} "
                "(or change the model's output layer size)")
    if output == "sigmoid":
        return f"{want}; pass one 0/1 column per output unit (a 1-D vector only for a single output)"
    return f"{want}; pass one column per output unit (a 1-D vector only for a single output)"


def _check_unit_interval(T: np.ndarray, output: str, name: str) -> None:
    outside = (T < 0) | (T > 1)
    if outside.any():
        where = _first(outside)
        raise ValueError(f"{name} for a {output} output must lie in [0, 1] (probabilities or 0/1 labels), "
                         f"got {name}{list(where)} = {T[where].item()}; "
                         + ("pass integer class labels as a 1-D array instead" if output == "softmax"
                            else "binarise or rescale the targets, or use output='identity' for real values"))


def _check_rows_sum_to_one(T: np.ndarray, name: str) -> None:
    sums = T.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1) > 1e-3
    if off.any():
        s = int(np.argmax(off))
        raise ValueError(f"each row of {name} must sum to 1 (class probabilities), but row {s} sums to {sums[s]:.6g}; "
                         "normalise the rows, pass integer class labels as a 1-D array, "
                         "or use output='sigmoid' for multi-label targets")
