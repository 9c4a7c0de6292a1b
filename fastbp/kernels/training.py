"""One training step and the loop over an epoch's mini-batches, in compiled code.

The network lives in flat arrays so that a kernel takes only arrays and integers:
- `sizes` (L+1,): n_0 .. n_L; `codes` (L,): the activation code of layers 1..L-1, then the loss code;
- `params`: W^1, b^1, W^2, b^2, ... each row-major, one after the other (`param_offsets`);
- `work`: every per-batch buffer for a batch capacity B (`workspace_offsets`), allocated once per fit.
"""
import numpy as np
from numba import njit

from .activations import IDENTITY
from .dense import (
    SMALL_BATCH,
    bias_gradient,
    bias_gradient_rows,
    dense_backward,
    dense_backward_rows,
    dense_forward,
    dense_weight_gradient,
    dense_weight_gradient_rows,
    transpose,
)
from .losses import count_correct, output_activation, output_loss

# columns of the workspace offset table
A_, AT_, D_, DT_, WT_ = 0, 1, 2, 3, 4


@njit(cache=True)
def param_offsets(sizes):
    """(L+1, 2) offsets of W^l and b^l in the flat parameter vector (row 0 unused); last row's end = size."""
    L = sizes.shape[0] - 1
    offsets = np.zeros((L + 2, 2), np.int64)
    off = 0
    for l in range(1, L + 1):
        offsets[l, 0] = off
        off += sizes[l] * sizes[l - 1]
        offsets[l, 1] = off
        off += sizes[l]
    offsets[L + 1, 0] = off
    return offsets


@njit(cache=True)
def workspace_offsets(sizes, B):
    """(L+2, 5) offsets of a^l, a^{lT}, δ^l, δ^{lT}, W^{lT} for a batch capacity B.

    Row L+1 holds the targets t (column 0), the per-sample losses (column 1) and the total size (column 2).
    """
    L = sizes.shape[0] - 1
    offsets = np.zeros((L + 2, 5), np.int64)
    off = 0
    for l in range(L + 1):
        for col in (A_, AT_, D_, DT_):
            offsets[l, col] = off
            off += B * sizes[l]
        offsets[l, WT_] = off
        if l > 0:
            off += sizes[l] * sizes[l - 1]
    offsets[L + 1, 0] = off
    off += B * sizes[L]
    offsets[L + 1, 1] = off
    off += B
    offsets[L + 1, 2] = off
    return offsets


@njit(inline="always", cache=True)
def _mat(buf, off, rows, cols):
    """The (rows, cols) row-major matrix stored in buf from offset off."""
    return buf[off:off + rows * cols].reshape((rows, cols))


@njit(inline="always", cache=True)
def _weights(params, poff, sizes, l):
    return _mat(params, poff[l, 0], sizes[l], sizes[l - 1]), params[poff[l, 1]:poff[l, 1] + sizes[l]]


@njit(cache=True)
def gather_batch(X, T, index, work, woff, sizes):
    """a^0[s, :] = X[index[s], :] and t[s, :] = T[index[s], :], with a^{0T} beside a^0."""
    S = index.shape[0]
    L = sizes.shape[0] - 1
    A0 = _mat(work, woff[0, A_], S, sizes[0])
    A0T = _mat(work, woff[0, AT_], sizes[0], S)
    Tb = _mat(work, woff[L + 1, 0], S, sizes[L])
    for s in range(S):
        for j in range(sizes[0]):
            A0[s, j] = X[index[s], j]
            A0T[j, s] = X[index[s], j]
        for k in range(sizes[L]):
            Tb[s, k] = T[index[s], k]


@njit(cache=True)
def forward(sizes, codes, params, work, S, keep_transposes):
    """a^l = f_l(b^l + W^l a^{l-1}) for l = 1..L on the batch in a^0; leaves the logits z^L in a^L."""
    L = sizes.shape[0] - 1
    poff = param_offsets(sizes)
    woff = workspace_offsets(sizes, S)
    for l in range(1, L + 1):
        W, b = _weights(params, poff, sizes, l)
        A_in = _mat(work, woff[l - 1, A_], S, sizes[l - 1])
        A_out = _mat(work, woff[l, A_], S, sizes[l])
        A_outT = _mat(work, woff[l, AT_], sizes[l], S if keep_transposes else 0)
        dense_forward(A_in, W, b, codes[l - 1] if l < L else IDENTITY, A_out, A_outT)
    return woff


@njit(cache=True)
def forward_backward(sizes, codes, params, work, S, alpha, beta, out):
    """One step on the batch gathered in the workspace: forward, loss, then for l = L..1
    δ^{l-1} from W^l, and out^l ← β out^l + α (Σ_s δ^l a^{l-1T}, Σ_s δ^l).

    α = 1/S, β = 0, out = gradient vector: the gradients ∂E/∂W, ∂E/∂b.
    α = -ε/S, β = 1, out = params: the SGD step, fused. Each W^l is updated only after δ^{l-1}
    has been computed from it, so every gradient of the step uses the original weights (seed 002).
    Returns (batch-mean loss, number of correct predictions).
    """
    L = sizes.shape[0] - 1
    small = S < SMALL_BATCH
    woff = forward(sizes, codes, params, work, S, not small)
    poff = param_offsets(sizes)
    T = _mat(work, woff[L + 1, 0], S, sizes[L])
    losses = work[woff[L + 1, 1]:woff[L + 1, 1] + S]
    A_L = _mat(work, woff[L, A_], S, sizes[L])
    D_L = _mat(work, woff[L, D_], S, sizes[L])
    loss = output_loss(A_L, T, codes[L - 1], A_L, D_L, _mat(work, woff[L, DT_], sizes[L], S), losses)
    correct = count_correct(A_L, T, codes[L - 1])
    for l in range(L, 0, -1):
        W, _ = _weights(params, poff, sizes, l)
        G, g = _weights(out, poff, sizes, l)
        D = _mat(work, woff[l, D_], S, sizes[l])
        A_in = _mat(work, woff[l - 1, A_], S, sizes[l - 1])
        if l > 1:
            D_in = _mat(work, woff[l - 1, D_], S, sizes[l - 1])
            if small:
                dense_backward_rows(D, W, A_in, codes[l - 2], D_in)
            else:
                WT = _mat(work, woff[l, WT_], sizes[l - 1], sizes[l])
                transpose(W, WT)
                dense_backward(D, WT, A_in, codes[l - 2], D_in, _mat(work, woff[l - 1, DT_], sizes[l - 1], S))
        if small:
            dense_weight_gradient_rows(D, A_in, alpha, beta, G)
            bias_gradient_rows(D, alpha, beta, g)
        else:
            DT = _mat(work, woff[l, DT_], sizes[l], S)
            dense_weight_gradient(DT, _mat(work, woff[l - 1, AT_], sizes[l - 1], S), alpha, beta, G)
            bias_gradient(DT, alpha, beta, g)
    return loss, correct


@njit(cache=True)
def train_epoch(X, T, order, batch_size, sizes, codes, params, work, lr):
    """One epoch of mini-batch SGD, W ← W - ε ∂E/∂W per batch, batches taken from X[order].

    X: (N, n_0) · T: (N, n_L) targets · order: (N,) sample order · params updated in place
    work: a workspace for batch capacity `batch_size`. Returns (Σ_batches S·E, number correct).
    """
    N = order.shape[0]
    total_loss = 0.0
    total_correct = 0
    for start in range(0, N, batch_size):
        S = min(batch_size, N - start)
        gather_batch(X, T, order[start:start + S], work, workspace_offsets(sizes, S), sizes)
        loss, correct = forward_backward(sizes, codes, params, work, S, -lr / S, 1.0, params)
        total_loss += loss * S
        total_correct += correct
    return total_loss, total_correct


@njit(cache=True)
def predict_outputs(X, sizes, codes, params, work, batch_size, out):
    """out = a^L for every row of X, computed batch_size rows at a time.

    X: (N, n_0) · out: (N, n_L), written · work: a workspace for batch capacity batch_size.
    """
    N = X.shape[0]
    L = sizes.shape[0] - 1
    for start in range(0, N, batch_size):
        S = min(batch_size, N - start)
        woff = workspace_offsets(sizes, S)
        A0 = _mat(work, woff[0, A_], S, sizes[0])
        A0[:, :] = X[start:start + S]
        forward(sizes, codes, params, work, S, False)
        output_activation(_mat(work, woff[L, A_], S, sizes[L]), codes[L - 1], out[start:start + S])
