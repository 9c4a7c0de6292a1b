"""Output layers fused with their losses, each from the logits z^L, numerically stable.

For all three pairs the output delta is the same, δ^L_{sk} = ∂E_s/∂z^L_{sk} = a^L_{sk} - t_{sk}
(docs/derivation.md eq. 12-14); only a^L and E_s differ:

| code        | a^L = output(z)     | E_s                                                       |
|-------------|---------------------|-----------------------------------------------------------|
| SOFTMAX_CE  | e^{z_k - lse(z)}    | lse(z) Σ_k t_k - Σ_k t_k z_k        (docs/derivation.md eq. 27) |
| SIGMOID_BCE | σ(z_k)              | Σ_k max(z_k, 0) - t_k z_k + log1p(e^{-|z_k|})   (docs/derivation.md eq. 28) |
| IDENTITY_SE | z_k                 | ½ Σ_k (z_k - t_k)²                                         |
| EXP_POISSON | e^{z_k}             | Σ_k e^{z_k} - t_k z_k + t_k log t_k - t_k  (half Poisson deviance, t ≥ 0) |

lse(z) = m + log Σ_c e^{z_c - m} with m = max_c z_c, so exp never overflows (docs/derivation.md eq. 26).
"""
import math

import numpy as np
from numba import prange

from .vecmath import sigmoid_libm
from .common import PARALLEL_ELEMENTS, cast_like, njit, task_range

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_SE, EXP_POISSON = 0, 1, 2, 3

#: output name -> code; the Python side of the table
OUTPUTS = {"softmax": SOFTMAX_CE, "sigmoid": SIGMOID_BCE, "identity": IDENTITY_SE, "poisson": EXP_POISSON}


@njit(inline="always", cache=True)
def _row_max(Z, s):
    """m = max_k z_sk."""
    m = Z[s, 0]
    for k in range(1, Z.shape[1]):
        m = max(m, Z[s, k])
    return m


@njit(inline="always", cache=True)
def _exp_shifted(Z, s, m, A_out):
    """A_out[s, k] = e^{z_sk - m}; returns their sum. With m = max_k z_sk no exp overflows, and
    lse(z_s) = m + log(sum).

    Softmax is then A_out / sum: dividing by the sum, rather than taking e^{z - lse}, keeps the row
    summing to 1 to within rounding of the division even for float32 logits near 1000.
    """
    total = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        e = math.exp(Z[s, k] - m)
        A_out[s, k] = e
        total += e
    return total


@njit(inline="always", cache=True)
def _softmax_ce_row(Z, T, s, A_out, D):
    m = _row_max(Z, s)
    loss = t_sum = cast_like(Z, 0)
    for k in range(Z.shape[1]):  # before A_out (maybe Z itself) is written
        loss += T[s, k] * (m - Z[s, k])
        t_sum += T[s, k]
    total = _exp_shifted(Z, s, m, A_out)
    loss += t_sum * math.log(total)  # Σ_k t_k (lse - z_k), with the large terms cancelled first
    for k in range(Z.shape[1]):
        a = A_out[s, k] / total
        A_out[s, k] = a
        D[s, k] = a - T[s, k]
    return loss


@njit(inline="always", cache=True)
def _sigmoid_bce_row(Z, T, s, A_out, D):
    loss = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        t = T[s, k]
        z = Z[s, k]
        a = sigmoid_libm(z)
        loss += max(z, cast_like(z, 0)) - t * z + math.log1p(math.exp(-abs(z)))
        A_out[s, k] = a
        D[s, k] = a - t
    return loss


@njit(inline="always", cache=True)
def _identity_se_row(Z, T, s, A_out, D):
    loss = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        d = Z[s, k] - T[s, k]
        loss += d * d / 2
        A_out[s, k] = Z[s, k]
        D[s, k] = d
    return loss


@njit(inline="always", cache=True)
def _poisson_row(Z, T, s, A_out, D):
    """Half the Poisson deviance of the rate a = e^z; its constant t log t - t makes E_s = 0 at a = t
    (scikit-learn's MLP loss), t log t read as 0 at t = 0."""
    loss = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        t = T[s, k]
        z = Z[s, k]
        a = math.exp(z)
        loss += a - t * z
        if t > 0:
            loss += t * math.log(t) - t
        A_out[s, k] = a
        D[s, k] = a - t
    return loss


@njit(inline="always", cache=True)
def _loss_row(Z, T, code, s, A_out, D):
    """E_s, with a^L[s, :] and δ^L[s, :] written, for the output/loss pair `code`."""
    if code == SOFTMAX_CE:
        return _softmax_ce_row(Z, T, s, A_out, D)
    if code == SIGMOID_BCE:
        return _sigmoid_bce_row(Z, T, s, A_out, D)
    if code == EXP_POISSON:
        return _poisson_row(Z, T, s, A_out, D)
    return _identity_se_row(Z, T, s, A_out, D)


#: runs of rows that `output_loss` shares among the threads
LOSS_TASKS = 64


# parallel=True with no prange, as `dense.dense_forward_serial`: compiled without it, the loop ran 1.5x slower
@njit(parallel=True, cache=True)
def _loss_rows(Z, T, code, A_out, D, losses, s0, s1):
    """losses[s] = E_s, with a^L[s, :] and δ^L[s, :] written, for the rows [s0, s1) of `output_loss`.
    A function of its own, called by both of its paths, so that the four row kernels are compiled once."""
    for s in range(s0, s1):
        losses[s] = _loss_row(Z, T, code, s, A_out, D)


@njit(parallel=True, cache=True)
def output_loss(Z, T, code, A_out, D, losses):
    """E = (1/S) Σ_s E_s and δ^L[s, k] = a^L[s, k] - t[s, k]   (docs/derivation.md eq. 9-14)

    Z: (S, n_L) logits z^L · T: (S, n_L) targets · code: SOFTMAX_CE, SIGMOID_BCE or IDENTITY_SE
    A_out: (S, n_L) a^L, written (may be Z itself) · D: (S, n_L) δ^L, written
    losses: (S,) E_s, written. Returns the batch-mean loss E, summed in order of s in float64.
    Parallel over runs of samples when there are enough of them (PARALLEL_ELEMENTS); each row's numbers
    depend on that row alone, so the runs change no bit.
    """
    S = Z.shape[0]
    if Z.size < PARALLEL_ELEMENTS:
        _loss_rows(Z, T, code, A_out, D, losses, np.int64(0), S)  # an int64, as below: a literal 0 compiles twice
    else:
        n_tasks = min(S, LOSS_TASKS)
        for t in prange(n_tasks):
            s0, s1 = task_range(t, n_tasks, S)
            _loss_rows(Z, T, code, A_out, D, losses, s0, s1)
    total = 0.0
    for s in range(S):
        total += losses[s]
    return total / S


@njit(parallel=True, cache=True)
def output_activation(Z, code, A_out):
    """a^L = output(z^L) without a loss: softmax, sigmoid or identity by `code`.

    Z: (S, n_L) logits · A_out: (S, n_L), written (may be Z itself). Parallel over samples s when
    there are enough of them (PARALLEL_ELEMENTS).
    """
    if Z.size < PARALLEL_ELEMENTS:
        output_activation_serial(Z, code, A_out)
    else:
        for s in prange(Z.shape[0]):
            _output_row(Z, code, s, A_out)


@njit(cache=True)
def output_activation_serial(Z, code, A_out):
    """`output_activation` on the calling thread (`training.predict_outputs`' blocks of rows)."""
    for s in range(Z.shape[0]):
        _output_row(Z, code, s, A_out)


@njit(inline="always", cache=True)
def _output_row(Z, code, s, A_out):
    """a^L[s, :] = output(z^L[s, :]) for the output `code`."""
    if code == SOFTMAX_CE:
        total = _exp_shifted(Z, s, _row_max(Z, s), A_out)
        for k in range(Z.shape[1]):
            A_out[s, k] /= total
    elif code == SIGMOID_BCE:
        for k in range(Z.shape[1]):
            A_out[s, k] = sigmoid_libm(Z[s, k])
    elif code == EXP_POISSON:
        for k in range(Z.shape[1]):
            A_out[s, k] = math.exp(Z[s, k])
    else:
        for k in range(Z.shape[1]):
            A_out[s, k] = Z[s, k]


@njit(inline="always", cache=True)
def _argmax(X, s):
    best = 0
    for k in range(1, X.shape[1]):
        if X[s, k] > X[s, best]:
            best = k
    return best


@njit(cache=True)
def count_correct(A, T, code):
    """How many rows of a^L predict their target: argmax for softmax, every unit on the right side
    of ½ for sigmoid (subset accuracy, as scikit-learn scores multi-label). 0 for identity and poisson.

    A: (S, n_L) outputs a^L · T: (S, n_L) targets.
    """
    correct = 0
    if code == IDENTITY_SE or code == EXP_POISSON:
        return correct
    for s in range(A.shape[0]):
        if code == SOFTMAX_CE:
            correct += _argmax(A, s) == _argmax(T, s)
        else:
            hit = True
            for k in range(A.shape[1]):
                hit = hit and ((A[s, k] > 0.5) == (T[s, k] > 0.5))
            correct += hit
    return correct
