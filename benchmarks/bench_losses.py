"""Micro-benchmarks of the fused output layer + loss, softmax + cross-entropy on the 10 reference classes.

`output_loss` writes a^L = softmax(z^L), δ^L = a^L − t and the per-sample losses
E_s = lse(z_s) − Σ_k t_sk z_sk in one pass over the logits; `numpy` computes the same with array operations.
"""
import numpy as np
import pytest

from fastbp import kernels as K
from reference_job import N_CLASSES

BATCHES = (1, 64, 512)


def numpy_output_loss(Z, T, A_out, D, losses):
    """The same outputs as `K.output_loss(Z, T, SOFTMAX_CE, A_out, D, losses)` with NumPy, max subtracted before exp."""
    m = Z.max(axis=1, keepdims=True)
    np.subtract(Z, m, out=A_out)
    np.exp(A_out, out=A_out)
    sums = A_out.sum(axis=1, keepdims=True)
    np.divide(A_out, sums, out=A_out)
    np.subtract(A_out, T, out=D)
    np.subtract((np.log(sums) + m)[:, 0], (T * Z).sum(axis=1), out=losses)
    return losses.mean(dtype=np.float64)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("S", BATCHES)
def test_output_loss_softmax_ce(measure, rng, S, impl):
    Z = (3 * rng.standard_normal((S, N_CLASSES))).astype(np.float32)
    T = np.eye(N_CLASSES, dtype=np.float32)[rng.integers(0, N_CLASSES, S)]
    A_out, D, losses = np.empty_like(Z), np.empty_like(Z), np.empty(S, np.float32)
    functions = {
        "fastbp": lambda: K.output_loss(Z, T, K.SOFTMAX_CE, A_out, D, losses),
        "numpy": lambda: numpy_output_loss(Z, T, A_out, D, losses),
    }
    loss = measure(f"output_loss softmax-CE {N_CLASSES} classes S={S}", impl, 0, functions[impl])
    probabilities = np.exp(Z - Z.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(A_out, probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D, probabilities - T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, -np.log(probabilities[T > 0]).mean(), rtol=1e-5)
