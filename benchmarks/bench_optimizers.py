"""Micro-benchmarks of the optimizer steps over the flat parameter vector.

P = 235,146 is the reference network's parameter count (784-256-128-10): the steps run in parallel over
blocks of 4,096 parameters. P = 16,384 is below PARALLEL_WORK, where they run serially. Every training
step but plain SGD's runs one of them once. `numpy` computes the same update with in-place array operations.
"""
import math

import numpy as np
import pytest

from fastbp import kernels as K
from reference_job import LAYER_SIZES

REFERENCE_P = sum(n_in * n_out + n_out for n_in, n_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]))
SIZES = (16_384, REFERENCE_P)
LR, MOMENTUM = 1e-3, 0.9
BETA1, BETA2, EPS, T = 0.9, 0.999, 1e-8, 10  # Adam at step t = 10


def vectors(rng, P, n):
    return [rng.standard_normal(P).astype(np.float32) for _ in range(n)]


def numpy_adam(params, grads, m, u, scratch):
    """`K.adam_step(params, grads, m, u, LR, BETA1, BETA2, EPS, 0.0, False, T)` in NumPy."""
    f = np.float32
    np.multiply(m, f(BETA1), out=m)
    np.multiply(grads, f(1 - BETA1), out=scratch)
    np.add(m, scratch, out=m)
    np.multiply(u, f(BETA2), out=u)
    np.multiply(grads, grads, out=scratch)
    np.multiply(scratch, f(1 - BETA2), out=scratch)
    np.add(u, scratch, out=u)
    np.sqrt(u, out=scratch)
    np.divide(scratch, f(math.sqrt(1 - BETA2 ** T)), out=scratch)
    np.add(scratch, f(EPS), out=scratch)
    np.divide(m, scratch, out=scratch)
    np.multiply(scratch, f(LR / (1 - BETA1 ** T)), out=scratch)
    np.subtract(params, scratch, out=params)


def numpy_momentum(params, grads, velocity, scratch):
    """`K.sgd_step(params, grads, velocity, LR, MOMENTUM, False, 0.0)` in NumPy."""
    np.multiply(velocity, np.float32(MOMENTUM), out=velocity)
    np.add(velocity, grads, out=velocity)
    np.multiply(velocity, np.float32(LR), out=scratch)
    np.subtract(params, scratch, out=params)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("P", SIZES)
def test_adam_step(measure, rng, P, impl):
    params, grads, m, u = vectors(rng, P, 4)
    u = np.abs(u)
    scratch = np.empty(P, np.float32)
    steps = {
        "fastbp": lambda p, m, u: K.adam_step(p, grads, m, u, LR, BETA1, BETA2, EPS, 0.0, False, T),
        "numpy": lambda p, m, u: numpy_adam(p, grads, m, u, scratch),
    }
    once = [v.copy() for v in (params, m, u)]  # one step on copies, against the other implementation's
    other = [v.copy() for v in (params, m, u)]
    steps[impl](*once)
    steps["numpy" if impl == "fastbp" else "fastbp"](*other)
    for a, b in zip(once, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    measure(f"adam_step P={P:,}", impl, 0, steps[impl], params, m, u)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("P", SIZES)
def test_sgd_momentum_step(measure, rng, P, impl):
    params, grads, velocity = vectors(rng, P, 3)
    scratch = np.empty(P, np.float32)
    steps = {
        "fastbp": lambda p, v: K.sgd_step(p, grads, v, LR, MOMENTUM, False, 0.0),
        "numpy": lambda p, v: numpy_momentum(p, grads, v, scratch),
    }
    once, other = [params.copy(), velocity.copy()], [params.copy(), velocity.copy()]
    steps[impl](*once)
    steps["numpy" if impl == "fastbp" else "fastbp"](*other)
    for a, b in zip(once, other):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    measure(f"sgd_step momentum P={P:,}", impl, 0, steps[impl], params, velocity)
