"""The first layer on sparse input (CSR rows), and the training epoch that uses it; layers 2..L stay dense.

Forward   z^1_{sk} = b_k + Σ_{j ∈ nnz(x_s)} W_kj x_sj,   a^1 = f(z^1)
Gradient  G_kj ← β G_kj + α Σ_s δ^1_sk x_sj, over the nonzeros x_sj only

(the dense layer's equations, `dense`, with the zero terms left out). X is given by its CSR arrays
`indptr` (N+1,), `indices` (nnz,), `data` (nnz,): row r's nonzeros are data[indptr[r]:indptr[r+1]]
in the columns indices[...]; a batch is the array `rows` of its row numbers, read in place.
Training stores W^1 transposed, Wᵀ (n_0, n_1), for the length of an epoch (`transpose_first_layer`): a
nonzero x_sj then reads and updates the contiguous row Wᵀ[j, :], a vector loop, instead of gathering
one element from each row of W (3-4x slower here). The forward is parallel over rows s, the gradient
over blocks of units k: no two threads add into one element (the rule of `dense`), and each element sums
its terms in order of s, then of the nonzeros: bit-identical for any number of threads. No fast-math flags:
training (`sparse_forward`) and inference (`sparse_first_layer`) run the same row loop, so they give the same bits.
The input layer needs no δ^0, so the workspace here has n_0 = 0 (`workspace_offsets(sizes_0)`): the
dense batch a^0, (B, n_0), is never built.
"""
import numpy as np
from numba import prange

from .activations import IDENTITY, activate
from .common import cast_like, njit, task_range, unsigned_range
from .dense import dense_forward, dense_weight_gradient
from .dropout import dropout_forward, layer_key, step_key
from .optimizers import L2, LR, MAX_NORM, add_l2_penalty, clip_grad_norm, optimizer_step
from .training import A_, D_, _buffer, _mat, _weights, loss_and_backward, param_offsets, workspace_offsets


@njit(inline="always", cache=True)
def _forward_row(indptr, indices, data, r, WT, b, code, A_out, s):
    """A_out[s] = f(b + Σ_q data[q] Wᵀ[indices[q]]) for row r of X."""
    n_out = WT.shape[1]
    for k in unsigned_range(0, n_out):
        A_out[s, k] = b[k]
    for q in range(indptr[r], indptr[r + 1]):
        x, j = data[q], indices[q]
        for k in unsigned_range(0, n_out):  # contiguous in A_out and Wᵀ: vectorises
            A_out[s, k] += WT[j, k] * x
    for k in unsigned_range(0, n_out):
        A_out[s, k] = activate(code, A_out[s, k])


#: below this many multiply-adds the sparse kernels run serially. Higher than `common.PARALLEL_WORK`, as each
#: term is a random row of Wᵀ. On two idle cores one batch's sparse forward (12,800 nonzeros x 128 units)
#: took 0.23-0.30 ms on two threads and 0.48-0.68 ms on one, so a batch of 128 such rows runs in parallel;
#: while other processes held the cores, two threads once took 11.9 ms (benchmarks/NOTES.md, 2026-12-03/04).
SPARSE_PARALLEL_WORK = 1 << 20


@njit(inline="always", cache=True)
def _nnz(indptr, S):
    """About the number of nonzeros in S rows of X (for the serial/parallel choice)."""
    return indptr[-1] * S // max(indptr.shape[0] - 1, 1)


@njit(parallel=True, cache=True)
def sparse_forward(indptr, indices, data, rows, WT, b, code, A_out):
    """a[s, k] = f(b[k] + Σ_{q ∈ row rows[s]} Wᵀ[indices[q], k] data[q])

    rows: (S,) rows of X · WT: (n_in, n_out), W^1 transposed (`train_epoch_sparse`), so that each nonzero adds
    a contiguous row of Wᵀ, a vector loop · b: (n_out,) · A_out: (S, n_out), written.
    Parallel over rows s (serial below SPARSE_PARALLEL_WORK multiply-adds): each thread writes its own rows of A_out.
    """
    if _nnz(indptr, rows.shape[0]) * WT.shape[1] < SPARSE_PARALLEL_WORK:
        for s in range(rows.shape[0]):
            _forward_row(indptr, indices, data, rows[s], WT, b, code, A_out, s)
    else:
        for s in prange(rows.shape[0]):
            _forward_row(indptr, indices, data, rows[s], WT, b, code, A_out, s)


@njit(inline="always", cache=True)
def _gradient_columns(indptr, indices, data, rows, D, alpha, beta, GT, k0, k1):
    """Columns [k0, k1) of `sparse_weight_gradient`."""
    if beta != 1:  # β = 0 writes zeros (never 0 · an old NaN); β = 1, the fused SGD step, reads Gᵀ as is
        for j in range(GT.shape[0]):
            for k in unsigned_range(k0, k1):
                GT[j, k] = beta * GT[j, k] if beta != 0 else cast_like(GT, 0)
    for s in range(rows.shape[0]):
        r = rows[s]
        for q in range(indptr[r], indptr[r + 1]):
            x, j = alpha * data[q], indices[q]
            for k in unsigned_range(k0, k1):  # contiguous in Gᵀ and δ: vectorises
                GT[j, k] += D[s, k] * x


@njit(parallel=True, cache=True)
def sparse_weight_gradient(indptr, indices, data, rows, D, alpha, beta, GT):
    """Gᵀ[j, k] = β Gᵀ[j, k] + α Σ_s δ[s, k] x[rows[s], j], the sum over the nonzeros of each row.

    D: (S, n_out) δ^1 · GT: (n_in, n_out), the gradient (or W^1) transposed. With α = -ε/S, β = 1 and
    GT = Wᵀ: the SGD step, touching only the rows j that occur in the batch. Parallel over blocks of
    columns k: each thread adds into its own elements, every element in order of s, then of the nonzeros.
    """
    n_out = GT.shape[1]
    alpha_, beta_ = cast_like(GT, alpha), cast_like(GT, beta)
    if _nnz(indptr, rows.shape[0]) * n_out + (GT.size if beta_ != 1 else 0) < SPARSE_PARALLEL_WORK:
        _gradient_columns(indptr, indices, data, rows, D, alpha_, beta_, GT, 0, n_out)
    else:
        # blocks of ≥ 32 columns (two vectors), at most 8; a count from the shape alone: a call of
        # numba.get_num_threads() here would keep this kernel and its callers out of the cache
        n_blocks = min(8, max(1, n_out // 32))
        for t in prange(n_blocks):
            k0, k1 = task_range(t, n_blocks, n_out)
            _gradient_columns(indptr, indices, data, rows, D, alpha_, beta_, GT, k0, k1)


@njit(parallel=True, cache=True)
def sparse_forward_backward(indptr, indices, data, rows, T, sizes, sizes_0, codes, params, poff, work, woff,
                            alpha, beta, out, p, key, smooth, packed):
    """`training.forward_backward` for a batch of CSR rows: forward (sparse layer 1, dense layers 2..L, dropout
    p with `key` on the hidden layers), loss, every δ, then out^l ← β out^l + α (Σ_s δ^l a^{l-1T}, Σ_s δ^l).

    params, out: W^1 stored transposed, (n_0, n_1), the other layers as usual (`transpose_first_layer`).
    work, woff: a workspace for sizes_0, the sizes with n_0 = 0. The δ are all computed before any W^l in out changes,
    so α = -ε/S, β = 1, out = params is the SGD step. smooth: as in `training.forward`; packed: as in
    `training.loss_and_backward`.
    Returns (batch-mean loss, number correct).
    """
    S, L = rows.shape[0], sizes.shape[0] - 1
    WT, b = _mat(params, poff[1, 0], sizes[0], sizes[1]), params[poff[1, 1]:poff[1, 1] + sizes[1]]
    A_in = _buffer(work, woff, sizes_0, 1, A_, S)
    sparse_forward(indptr, indices, data, rows, WT, b, codes[0] if L > 1 else IDENTITY, A_in)
    for l in range(2, L + 1):
        if p is not None:
            dropout_forward(A_in, p, layer_key(key, l - 1))
        W, b = _weights(params, poff, sizes, l)
        A_out = _buffer(work, woff, sizes_0, l, A_, S)
        dense_forward(A_in, W, b, codes[l - 1] if l < L else IDENTITY, A_out, smooth)
        A_in = A_out
    no_input = _mat(work, woff[0, A_], S, 0)  # a^0 is never read with weights=False
    # every δ^l, multiplied by α, and the biases' part
    loss, correct = loss_and_backward(sizes_0, codes, params, poff, no_input, T, work, woff, S,
                                      alpha, beta, out, False, None, p, key, packed)
    for l in range(L, 1, -1):
        G, _ = _weights(out, poff, sizes, l)
        dense_weight_gradient(_buffer(work, woff, sizes_0, l, D_, S), _buffer(work, woff, sizes_0, l - 1, A_, S),
                              1.0, beta, G)
    GT = _mat(out, poff[1, 0], sizes[0], sizes[1])
    sparse_weight_gradient(indptr, indices, data, rows, _buffer(work, woff, sizes_0, 1, D_, S), 1.0, beta, GT)
    return loss, correct


@njit(parallel=True, cache=True)
def train_epoch_sparse(indptr, indices, data, T, order, batch_size, sizes, codes, params, work, grads, fused, code,
                       hyper, state, t, p, seed, smooth, packed):
    """One epoch over the CSR rows of X in the order `order`, as `training.train_epoch` (fused=True: plain SGD,
    the step fused into the gradient pass, eagerly) or `training.train_epoch_optimizer` (fused=False: gradient
    into `grads`, L2 penalty, clipping, then the optimizer `code`).

    params, grads, state: with W^1 (and its gradient and optimizer state) stored transposed, (n_0, n_1)
    (`transpose_first_layer`): every optimizer step is elementwise, so it runs on that layout unchanged.
    T: (N, n_L) targets · work: `workspace_offsets(sizes with n_0 = 0, batch_size)` elements · t: steps so far.
    p not None: inverted dropout, the masks of step t from `seed`. smooth, packed: as in `training.train_epoch`.
    Returns (Σ_batches S·E, number correct, t).
    """
    N, L = order.shape[0], sizes.shape[0] - 1
    sizes_0 = sizes.copy()  # the shapes of the workspace, which holds no a^0 or δ^0
    sizes_0[0] = 0
    poff, woff = param_offsets(sizes), workspace_offsets(sizes_0, batch_size)
    total_loss = 0.0
    total_correct = 0
    for start in range(0, N, batch_size):
        S = min(batch_size, N - start)
        rows = order[start:start + S]
        Tb = _mat(work, woff[L + 1, 0], S, sizes[L])
        for s in range(S):
            for k in range(sizes[L]):
                Tb[s, k] = T[rows[s], k]
        key = step_key(seed, t) if p is not None else 0
        if fused:
            loss, correct = sparse_forward_backward(indptr, indices, data, rows, Tb, sizes, sizes_0, codes, params,
                                                    poff, work, woff, -hyper[LR] / S, 1.0, params, p, key, smooth,
                                                    packed)
        else:
            loss, correct = sparse_forward_backward(indptr, indices, data, rows, Tb, sizes, sizes_0, codes, params,
                                                    poff, work, woff, 1.0 / S, 0.0, grads, p, key, smooth,
                                                    packed)
            if hyper[L2] > 0:
                loss += add_l2_penalty(params, poff, hyper[L2] / S, grads)
            if hyper[MAX_NORM] > 0:
                clip_grad_norm(grads, hyper[MAX_NORM])
            optimizer_step(code, params, grads, state, hyper, t + 1)
        t += 1
        total_loss += loss * S
        total_correct += correct
    return total_loss, total_correct, t


@njit(parallel=True, cache=True)
def sparse_first_layer(indptr, indices, data, start, WT, b, code, A_out):
    """a[s, k] = f(b[k] + Σ_{q ∈ row start + s} Wᵀ[indices[q], k] data[q]) for the rows [start, start + S) of X,
    S = A_out.shape[0]: inference on many rows. WT: (n_in, n_out), W transposed once per call of
    `predict_proba`, so that each nonzero adds a contiguous row of Wᵀ, a vector loop. Parallel over rows s.
    """
    if _nnz(indptr, A_out.shape[0]) * WT.shape[1] < SPARSE_PARALLEL_WORK:
        for s in range(A_out.shape[0]):
            _forward_row(indptr, indices, data, start + s, WT, b, code, A_out, s)
    else:
        for s in prange(A_out.shape[0]):
            _forward_row(indptr, indices, data, start + s, WT, b, code, A_out, s)


def workspace_size(sizes: np.ndarray, batch_size: int) -> int:
    """Elements of `train_epoch_sparse`'s workspace."""
    sizes_0 = sizes.copy()
    sizes_0[0] = 0
    return int(workspace_offsets(sizes_0, batch_size)[-1, 2])


def transpose_first_layer(vector: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, to_transposed: bool) -> None:
    """Store the W^1 block of a parameter-shaped vector as (n_0, n_1) (to_transposed) or back as (n_1, n_0),
    in place."""
    w0, b0 = offsets[1]
    shape = (sizes[1], sizes[0]) if to_transposed else (sizes[0], sizes[1])
    vector[w0:b0] = vector[w0:b0].reshape(shape).T.ravel()
