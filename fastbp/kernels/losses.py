"""Output layers fused with their losses, each from the logits z^L, numerically stable.

For all three pairs the output delta is the same, δ^L_{sk} = ∂E_s/∂z^L_{sk} = a^L_{sk} - t_{sk}
(seed 000 eq. 9, seed 004 eq. 9 and 26); only a^L and E_s differ:

| code        | a^L = output(z)     | E_s                                                       |
|-------------|---------------------|-----------------------------------------------------------|
| SOFTMAX_CE  | e^{z_k - lse(z)}    | lse(z) Σ_k t_k - Σ_k t_k z_k        (seed 000 eq. 4, 004 eq. 38) |
| SIGMOID_BCE | σ(z_k)              | Σ_k max(z_k, 0) - t_k z_k + log1p(e^{-|z_k|})   (seed 004 eq. 36) |
| IDENTITY_SE | z_k                 | ½ Σ_k (z_k - t_k)²                                         |

lse(z) = m + log Σ_c e^{z_c - m} with m = max_c z_c, so exp never overflows (seed 000 §1.8).
"""
import math

from numba import njit, prange

from .activations import sigmoid
from .common import PARALLEL_WORK, cast_like

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_SE = 0, 1, 2

#: output name -> code; the Python side of the table
OUTPUTS = {"softmax": SOFTMAX_CE, "sigmoid": SIGMOID_BCE, "identity": IDENTITY_SE}


@njit(inline="always", cache=True)
def _max_and_total(Z, s):
    """(m, Σ_c e^{z_sc - m}) with m = max_c z_sc, so lse(z_s) = m + log(total) and no exp overflows.

    Softmax is then e^{z - m} / total: dividing by the total, rather than taking e^{z - lse}, keeps
    the row summing to 1 to within rounding of the division even for float32 logits near 1000.
    """
    m = Z[s, 0]
    for c in range(1, Z.shape[1]):
        m = max(m, Z[s, c])
    total = cast_like(Z, 0)
    for c in range(Z.shape[1]):
        total += math.exp(Z[s, c] - m)
    return m, total


@njit(inline="always", cache=True)
def _softmax_ce_row(Z, T, s, A_out, D):
    m, total = _max_and_total(Z, s)
    log_total = math.log(total)
    loss = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        t = T[s, k]
        z = Z[s, k]
        a = math.exp(z - m) / total
        loss += t * ((m - z) + log_total)  # t (lse - z), with the large terms cancelled first
        A_out[s, k] = a
        D[s, k] = a - t
    return loss


@njit(inline="always", cache=True)
def _sigmoid_bce_row(Z, T, s, A_out, D):
    loss = cast_like(Z, 0)
    for k in range(Z.shape[1]):
        t = T[s, k]
        z = Z[s, k]
        a = sigmoid(z)
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
def _loss_row(Z, T, code, s, A_out, D):
    """E_s, with a^L[s, :] and δ^L[s, :] written, for the output/loss pair `code`."""
    if code == SOFTMAX_CE:
        return _softmax_ce_row(Z, T, s, A_out, D)
    if code == SIGMOID_BCE:
        return _sigmoid_bce_row(Z, T, s, A_out, D)
    return _identity_se_row(Z, T, s, A_out, D)


@njit(parallel=True, cache=True)
def output_loss(Z, T, code, A_out, D, losses):
    """E = (1/S) Σ_s E_s and δ^L[s, k] = a^L[s, k] - t[s, k]   (NOTATION.md, table above)

    Z: (S, n_L) logits z^L · T: (S, n_L) targets · code: SOFTMAX_CE, SIGMOID_BCE or IDENTITY_SE
    A_out: (S, n_L) a^L, written (may be Z itself) · D: (S, n_L) δ^L, written
    losses: (S,) E_s, written. Returns the batch-mean loss E, summed in order of s in float64.
    Parallel over samples s when there are enough of them (PARALLEL_WORK).
    """
    S = Z.shape[0]
    if Z.size < PARALLEL_WORK:
        for s in range(S):
            losses[s] = _loss_row(Z, T, code, s, A_out, D)
    else:
        for s in prange(S):
            losses[s] = _loss_row(Z, T, code, s, A_out, D)
    total = 0.0
    for s in range(S):
        total += losses[s]
    return total / S


@njit(parallel=True, cache=True)
def output_activation(Z, code, A_out):
    """a^L = output(z^L) without a loss: softmax, sigmoid or identity by `code`.

    Z: (S, n_L) logits · A_out: (S, n_L), written (may be Z itself). Parallel over samples s when
    there are enough of them (PARALLEL_WORK).
    """
    if Z.size < PARALLEL_WORK:
        for s in range(Z.shape[0]):
            _output_row(Z, code, s, A_out)
    else:
        for s in prange(Z.shape[0]):
            _output_row(Z, code, s, A_out)


@njit(inline="always", cache=True)
def _output_row(Z, code, s, A_out):
    """a^L[s, :] = output(z^L[s, :]) for the output `code`."""
    if code == SOFTMAX_CE:
        m, total = _max_and_total(Z, s)
        for k in range(Z.shape[1]):
            A_out[s, k] = math.exp(Z[s, k] - m) / total
    elif code == SIGMOID_BCE:
        for k in range(Z.shape[1]):
            A_out[s, k] = sigmoid(Z[s, k])
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
    of ½ for sigmoid (subset accuracy, as scikit-learn scores multi-label). 0 for identity.

    A: (S, n_L) outputs a^L · T: (S, n_L) targets.
    """
    correct = 0
    if code == IDENTITY_SE:
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
