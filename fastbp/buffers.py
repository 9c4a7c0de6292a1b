"""Arrays whose data starts on a 64-byte cache line: the parameters, the training workspace, and the
copies fastbp makes of its inputs.

NumPy's large arrays start 16 bytes past a line (glibc puts an allocation's header there), and so do
their rows when a row is a whole number of lines (784, 256 or 128 float32 values). Then the kernels'
vector loads and stores straddle two lines, which slows the first layer's kernels measurably
(benchmarks/NOTES.md, "How the loops are laid out").
"""
from __future__ import annotations

import numpy as np

#: bytes per cache line
LINE_BYTES = 64


def empty_on_a_line(shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, as ``np.empty(shape, dtype)``, whose data starts on a cache
    line (unless it is empty: NumPy places an empty view's data pointer anywhere)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + LINE_BYTES, np.uint8)
    start = -buffer.ctypes.data % LINE_BYTES
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def zeros_on_a_line(shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)``, starting on a cache line."""
    array = empty_on_a_line(shape, dtype)
    array[...] = 0
    return array


def copy_on_a_line(array: np.ndarray, dtype=None) -> np.ndarray:
    """A C-contiguous copy of `array` (cast to `dtype` as ``np.asarray`` casts), starting on a cache line."""
    copy = empty_on_a_line(array.shape, array.dtype if dtype is None else dtype)
    copy[...] = array
    return copy
