"""Micro-benchmarks of the finiteness check that `fit` and `predict` run on every input value.

`all_finite` sums x·0 over blocks of values on every thread; `numpy` is `np.isfinite(X).all()`,
which writes a boolean mask as large as X on one thread. The inputs: the 10,000-sample inference
batch and the 60,000-sample training set of the reference job, float32.
"""
import numpy as np
import pytest

from fastbp import kernels as K
from reference_job import LAYER_SIZES


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("N", (10_000, 60_000))
def test_all_finite(measure, rng, N, impl):
    X = rng.random((N, LAYER_SIZES[0]), dtype=np.float32)
    functions = {"fastbp": lambda: K.all_finite(X.reshape(-1)), "numpy": lambda: np.isfinite(X).all()}
    assert measure(f"all_finite {N} x {LAYER_SIZES[0]} float32", impl, 0, functions[impl])
    X[-1, -1] = np.inf
    assert not functions[impl]()
