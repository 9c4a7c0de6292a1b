"""Input checks that read every value, compiled because they run on every `fit` and `predict`.

`all_finite` replaces `np.isfinite(X).all()`, which writes a mask as large as X on one thread.
"""
from numba import prange

from .common import FASTMATH, PARALLEL_WORK, cast_like, njit, unsigned_range

BLOCK = PARALLEL_WORK  # values per task of `all_finite`


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _block_is_finite(x, start, stop):
    """Whether x[start:stop] holds no NaN or ±inf: x·0 is 0 for a finite x and NaN for NaN and ±inf,
    so the sum of the x·0 is NaN exactly when some value is not finite (docs/derivation.md eq. 31)."""
    zero = acc = cast_like(x, 0)
    for p in unsigned_range(start, stop):
        acc += x[p] * zero
    return acc == acc


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def all_finite(x):
    """True when no value of x is NaN or ±inf.   x: (n,), contiguous

    Parallel over blocks of BLOCK values when there are several. FASTMATH lets each block's sum
    vectorise; it has no nnan/ninf flag, which would let LLVM fold x·0 to 0 (a test checks this).
    """
    n_blocks = (x.size + BLOCK - 1) // BLOCK
    finite_blocks = 0
    if n_blocks == 1:
        finite_blocks += _block_is_finite(x, 0, x.size)
    else:
        for i in prange(n_blocks):
            finite_blocks += _block_is_finite(x, i * BLOCK, min(i * BLOCK + BLOCK, x.size))
    return finite_blocks == n_blocks
