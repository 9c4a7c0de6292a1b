"""One training step and the loop over an epoch's mini-batches, in compiled code.

The network lives in flat arrays so that a kernel takes only arrays and integers:
- `sizes` (L+1,): n_0 .. n_L; `codes` (L,): the activation code of layers 1..L-1, then the loss code;
  a hidden layer whose f' needs z (`activations.is_from_z`, e.g. GELU) keeps z^l in the workspace;
- `params`: W^1, b^1, W^2, b^2, ... each row-major, one after the other (`param_offsets`);
- `work`: every per-batch buffer for a batch capacity B (`workspace_offsets`), allocated once per fit.
  A batch of S ≤ B rows uses the first S rows of each buffer, so both offset tables (`poff`, `woff`)
  are computed once per epoch, not per batch.
"""
import warnings

import numba
import numpy as np
from numba import prange, types
from numba.core.errors import NumbaPerformanceWarning

from .activations import IDENTITY, dense_code, is_from_z, keep_z_and_activate, multiply_derivative_z
from .cache import has_compiled
from .common import PARALLEL_WORK, cast_like, njit, task_range
from .dropout import dropout_backward, dropout_forward, layer_key, step_key
from .dense import (PACK_ELEMENTS, SAMPLE_TILE, backward_packs, bias_gradient, dense_backward, dense_forward,
                    dense_forward_rows, dense_forward_serial, dense_update_forward, dense_weight_gradient,
                    takes_row_sums)
from .losses import count_correct, output_activation_serial, output_loss
from .optimizers import L2, MAX_NORM, add_l2_penalty, clip_grad_norm, optimizer_step

# Every function here (and `optimizers.optimizer_step`) that calls a parallel kernel is itself compiled
# with parallel=True, though it has no parallel loop of its own: a cached non-parallel caller of a
# parallel function segfaults when it is loaded from the cache by a later process (numba issues #8578,
# #4807; reproduced here). The warning that parallel=True found nothing to parallelise is expected for them,
# and for `dense.dense_forward_serial` and `losses._loss_rows`, which are compiled so for their speed.
warnings.filterwarnings("ignore", category=NumbaPerformanceWarning,
                        message=r"(?s)\s*The keyword argument 'parallel=True'"
                                r".*fastbp.kernels.(training|optimizers|dense|losses)\.py")

# columns of the workspace offset table: a^l and δ^l; z^l of hidden layers (kept for `from_z` activations)
A_, D_, Z_ = 0, 1, 2
#: elements per 64-byte cache line of float32 (two lines of float64; `fastbp.buffers.LINE_BYTES`). In a
#: workspace that starts on a line, every buffer does, and so do their rows when n_l is a multiple of
#: 16 (784, 256, 128): then no vector load or store of a row sum straddles two lines
LINE = 16
#: the rows of a^l, δ^l and z^l of the input and hidden layers are padded by LINE elements when n_l is a multiple of
#: this (`row_stride`)
PAD_MULTIPLE = 512


@njit(cache=True)
def param_offsets(sizes):
    """(L+2, 2) offsets of W^l and b^l in the flat parameter vector (row 0 unused); [L+1, 0] = its size."""
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
    """(L+2, 3) offsets of a^l (column 0) and δ^l (column 1), l = 0..L, and z^l (column 2), l = 1..L-1, for a
    batch capacity B: each a (B, `row_stride(sizes, l)`) buffer, of which a batch of S ≤ B rows uses the first S.

    Row L+1 holds the targets t (column 0), the per-sample losses (column 1) and the total size (column 2).
    The z^l buffers come next, then the backward's packs, if a layer has a W big enough to use them (`_packs`),
    so that the others lie where they did before there were any.
    Every buffer, and the total, starts on a multiple of LINE elements: in a workspace whose data starts
    on a cache line (`MLP._workspace`), so does every buffer.
    """
    L = sizes.shape[0] - 1
    offsets = np.zeros((L + 2, 3), np.int64)
    off = 0
    for l in range(L + 1):
        for col in (A_, D_):
            offsets[l, col] = off
            off = _line_up(off + B * row_stride(sizes, l))
    offsets[L + 1, 0] = off
    off = _line_up(off + B * sizes[L])
    offsets[L + 1, 1] = off
    off = _line_up(off + B)
    for l in range(1, L):
        offsets[l, Z_] = off
        off = _line_up(off + B * row_stride(sizes, l))
    offsets[L + 1, 2] = off + _n_packs(sizes) * PACK_ELEMENTS
    return offsets


@njit(inline="always", cache=True)
def _n_packs(sizes):
    """The packs that the backward of the biggest of layers 2..L takes (`dense.backward_packs`): 0 for most networks."""
    n = 0
    for l in range(2, sizes.shape[0]):
        n = max(n, backward_packs(sizes[l], sizes[l - 1]))
    return n


def packs_flag(sizes: np.ndarray) -> bool | None:
    """The kernels' `packed` argument for a network of layer `sizes`: True when the backward of one of layers
    2..L packs blocks of its W (`dense.backward_packs`: W of more than PACK_MIN_ELEMENTS elements), else None.
    None is a type of its own, so Numba prunes `dense_backward`'s packing and compiles none of its code: the
    cold compile of the backward takes a second less (benchmarks/NOTES.md). Read without compiling anything."""
    return True if any(backward_packs.py_func(sizes[l], sizes[l - 1]) > 0 for l in range(2, len(sizes))) else None


@njit(inline="always", cache=True)
def _packs(work, woff, sizes):
    """The workspace's (`_n_packs`, PACK_ELEMENTS) packs for `dense_backward`: the last of its buffers."""
    end = woff[sizes.shape[0], 2]
    n = _n_packs(sizes)
    return work[end - n * PACK_ELEMENTS:end].reshape((n, PACK_ELEMENTS))


@njit(inline="always", cache=True)
def row_stride(sizes, l):
    """Elements per row of the workspace's a^l, δ^l and z^l: n_l, or n_l + LINE for an input or hidden layer
    whose n_l is a multiple of PAD_MULTIPLE. The kernels read only the first n_l columns (their widths come
    from W^l), so the padding never changes a result.

    Why: rows of 1,024 float32 (4 KB) put element j of every row in one L1 set, and the row sums' register tile
    streams 8 such rows at once (4 of Y, 4 of the output); the weight gradient and the backward of a
    1,024-wide layer ran 1.2-1.9x slower than on padded rows (benchmarks/NOTES.md). The output layer is never
    padded: the losses and the caller read a^L whole.
    """
    return padded_width(sizes[l]) if l < sizes.shape[0] - 1 else sizes[l]


@njit(inline="always", cache=True)
def padded_width(n):
    """n, or n + LINE when n > 0 is a multiple of PAD_MULTIPLE: the elements per row of a workspace buffer
    (`row_stride`) and of a layer's W^T in `transpose_weights`' WT, whose rows of 4 KB would otherwise fall in a
    sixteenth of L2's sets (a panel's rows of W^T then streamed from L3)."""
    return n + LINE if n > 0 and n % PAD_MULTIPLE == 0 else n


@njit(inline="always", cache=True)
def _buffer(work, woff, sizes, l, column, S):
    """The first S rows of a^l (column A_), δ^l (D_) or z^l (Z_) in the workspace: an (S, `row_stride`) array,
    of which the first n_l columns hold the values."""
    return _mat(work, woff[l, column], S, row_stride(sizes, l))


@njit(inline="always", cache=True)
def _line_up(off):
    """off rounded up to a multiple of LINE."""
    return (off + LINE - 1) // LINE * LINE


@njit(inline="always", cache=True)
def _mat(buf, off, rows, cols):
    """The (rows, cols) row-major matrix stored in buf from offset off."""
    return buf[off:off + rows * cols].reshape((rows, cols))


@njit(inline="always", cache=True)
def _weights(params, poff, sizes, l):
    """(W^l, b^l) as views into the flat vector `params` (or a gradient vector shaped like it)."""
    return _mat(params, poff[l, 0], sizes[l], sizes[l - 1]), params[poff[l, 1]:poff[l, 1] + sizes[l]]


@njit(inline="always", cache=True)
def _is_run(index):
    """True when index is i, i+1, i+2, ...: the batch is a block of consecutive rows."""
    for s in range(1, index.shape[0]):
        if index[s] != index[0] + s:
            return False
    return True


@njit(inline="always", cache=True)
def _copy_row(X, T, row, A0, Tb, s):
    """A0[s] = X[row], Tb[s] = T[row], in element loops: a slice assignment would compile Numba's
    shape-mismatch error path, and `row` read once lets the loops vectorise."""
    for j in range(X.shape[1]):  # A0's rows may be padded
        A0[s, j] = X[row, j]
    for k in range(Tb.shape[1]):
        Tb[s, k] = T[row, k]


@njit(parallel=True, cache=True)
def batch_rows(X, T, index, work, woff, sizes):
    """(a^0, t): rows X[index[s]] and T[index[s]] of the batch.

    A block of consecutive rows (every batch of an epoch in order) is returned as views of X and T,
    read in place; otherwise the rows are gathered into the workspace's a^0 and t. a^0's rows may then be
    padded (`row_stride`): its first n_0 columns are the rows of X.
    """
    S = index.shape[0]
    if _is_run(index):
        return X[index[0]:index[0] + S], T[index[0]:index[0] + S]
    L = sizes.shape[0] - 1
    A0 = _buffer(work, woff, sizes, 0, A_, S)
    Tb = _mat(work, woff[L + 1, 0], S, sizes[L])
    if A0.size < PARALLEL_WORK:
        for s in range(S):
            _copy_row(X, T, index[s], A0, Tb, s)
    else:  # rows scattered in memory: two threads keep twice as many reads in flight
        for s in prange(S):
            _copy_row(X, T, index[s], A0, Tb, s)
    return A0, Tb


@njit(parallel=True, cache=True)
def forward(sizes, codes, params, poff, A0, work, woff, S, p=None, key=0, smooth=True):
    """a^l = f_l(b^l + W^l a^{l-1}) for l = 1..L from the batch a^0 = A0 of S rows; leaves the
    logits z^L in a^L. poff = `param_offsets(sizes)`, woff = `workspace_offsets(sizes, B)`, S ≤ B.
    p: None, or inverted dropout of probability p on every hidden a^l, masks from key = `dropout.step_key(seed,
    step)`. None is a type of its own: Numba prunes the dropout branches then, and compiles no dropout code.
    smooth: None when every hidden activation is relu or identity (`activations.smooth_flag`); likewise no code
    for the others is compiled then.
    """
    _layers(dense_forward, sizes, codes, params, poff, A0, work, woff, S, p, key, smooth)


@njit(inline="always", cache=True)
def _layers(dense, sizes, codes, params, poff, A0, work, woff, S, p, key, smooth):
    """`forward` with the dense kernel `dense` (`dense_forward`, or `dense_forward_serial` for one
    thread's block of rows); returns the logits z^L, left in the workspace's a^L. p not None: inverted
    dropout on each hidden a^l before the next layer reads it. smooth: as in `forward`."""
    L = sizes.shape[0] - 1
    A_in = A0
    for l in range(1, L + 1):
        W, b = _weights(params, poff, sizes, l)
        A_out = _buffer(work, woff, sizes, l, A_, S)
        code = codes[l - 1] if l < L else IDENTITY
        dense(A_in, W, b, dense_code(code), A_out, smooth)
        _keep_z(code, A_out, work, woff, sizes, l, S, smooth)
        if p is not None and l < L:
            dropout_forward(A_out, p, layer_key(key, l))
        A_in = A_out
    return _buffer(work, woff, sizes, L, A_, S)


@njit(inline="always", cache=True)
def _keep_z(code, A_out, work, woff, sizes, l, S, smooth):
    """For a layer whose f' needs z (`is_from_z`): z^l, left in A_out by the dense kernel run as identity,
    kept in the workspace, and a^l = f(z^l) written over it."""
    if smooth is not None and is_from_z(code):
        keep_z_and_activate(code, A_out, _buffer(work, woff, sizes, l, Z_, S))


@njit(parallel=True, cache=True)
def output_and_loss(sizes, codes, T, work, woff, S, wb=None):
    """a^L, δ^L and the batch-mean loss against targets T, from the logits z^L left in a^L by `forward`.

    wb: None, or the batch's scaled sample weights (`batch_weights`): then E_s and δ^L_s are multiplied
    by wb[s], so that the mean over S rows is the weighted mean Σ_s w_s E_s / Σ_s w_s (scikit-learn's).
    Returns (batch-mean loss, number of correct predictions).
    """
    L = sizes.shape[0] - 1
    A_L = _buffer(work, woff, sizes, L, A_, S)
    D = _buffer(work, woff, sizes, L, D_, S)
    losses = work[woff[L + 1, 1]:woff[L + 1, 1] + S]
    loss = output_loss(A_L, T, codes[L - 1], A_L, D, losses)
    if wb is not None:
        loss = _weigh_rows(wb, losses, D)
    return loss, count_correct(A_L, T, codes[L - 1])


@njit(cache=True)
def _weigh_rows(wb, losses, D):
    """E_s ← wb[s] E_s and δ^L_s ← wb[s] δ^L_s; returns the new mean (1/S) Σ_s E_s, summed in order of s."""
    total = 0.0
    for s in range(D.shape[0]):
        losses[s] *= wb[s]
        total += losses[s]
        for k in range(D.shape[1]):
            D[s, k] *= wb[s]
    return total / D.shape[0]


@njit(cache=True)
def batch_weights(sw, index, wb):
    """wb[s] = w_s S / Σ_s' w_s' for the batch's samples index[s], s < S; returns Σ_s w_s.

    Why scaled: the kernels divide every batch sum by S, so (1/S) Σ_s wb[s] δ_s a_s is scikit-learn's
    Σ_s w_s δ_s a_s / Σ_s w_s. Weights all 1 give wb = 1 exactly: the same bits as no weights.
    sw: (N,) sample weights w ≥ 0 with a positive sum per batch · index: (S,) · wb: (≥ S,), written.
    """
    S = index.shape[0]
    total = 0.0
    for s in range(S):
        total += sw[index[s]]
    scale = S / total if total > 0 else 0.0  # a batch of zero weights contributes nothing
    for s in range(S):
        wb[s] = sw[index[s]] * scale
    return total


@njit(parallel=True, cache=True)
def forward_backward(sizes, codes, params, poff, A0, T, work, woff, S, alpha, beta, out, wb=None, p=None, key=0,
                     smooth=True, packed=True):
    """One step on the batch (a^0, t) = (A0, T) of S rows: forward, loss, then for l = L..1
    δ^{l-1} from W^l, and out^l ← β out^l + α (Σ_s δ^l a^{l-1T}, Σ_s δ^l).

    α = 1/S, β = 0, out = gradient vector: the gradients ∂E/∂W, ∂E/∂b.
    α = -ε/S, β = 1, out = params: the SGD step, fused. Each W^l is updated only after δ^{l-1}
    has been computed from it, so every gradient of the step uses the original weights (docs/derivation.md eq. 18).
    wb: None, or scaled sample weights (`output_and_loss`). p not None, key: inverted dropout on the hidden
    layers (`forward`). smooth: as in `forward`; packed: as in `loss_and_backward`.
    Returns (batch-mean loss, number of correct predictions).
    """
    forward(sizes, codes, params, poff, A0, work, woff, S, p, key, smooth)
    return loss_and_backward(sizes, codes, params, poff, A0, T, work, woff, S, alpha, beta, out, True, wb, p, key,
                             packed)


@njit(parallel=True, cache=True)
def loss_and_backward(sizes, codes, params, poff, A0, T, work, woff, S, alpha, beta, out, weights, wb=None, p=None,
                      key=0, packed=True):
    """The loss, then for l = L..1: δ^{l-1} from W^l, and out^l ← β out^l + α (Σ_s δ^l a^{l-1T}, Σ_s δ^l),
    after `forward`. With weights=False only the biases' part: W^l is left to `forward_with_step`.
    Each δ^l is left in `work` multiplied by α, once its δ^{l-1} and bias part are done: every weight gradient,
    here or in the next batch's step, then takes α = 1, for which the row sums keep their sums in
    registers (`dense._rows_panel`). The products α δ^l_{sk} a^{l-1}_{sj} are those of α applied in the kernel.
    p not None: the forward's dropout masks (same key) multiply each hidden δ^{l-1} too. It takes no `smooth`
    (`forward`): it is called with more combinations of argument types than any other kernel, and each value of
    `smooth` would compile them all again, for 0.5 s less of cold compile.
    packed: None when no layer's backward packs W (`packs_flag`): no packing code is compiled then.
    Returns (batch-mean loss, number of correct predictions).
    """
    L = sizes.shape[0] - 1
    loss, correct = output_and_loss(sizes, codes, T, work, woff, S, wb)
    for l in range(L, 0, -1):
        W, _ = _weights(params, poff, sizes, l)
        G, g = _weights(out, poff, sizes, l)
        D = _buffer(work, woff, sizes, l, D_, S)
        A_in = _buffer(work, woff, sizes, l - 1, A_, S) if l > 1 else A0
        if l > 1:
            D_in = _buffer(work, woff, sizes, l - 1, D_, S)
            code_in = dense_code(codes[l - 2])
            # with dropout, Σ_k δ_k W_kj alone, then the mask, 1/(1-p) and f' (dropout.dropout_backward);
            # one call with an int64 code either way: a literal IDENTITY would compile a second signature
            code_f = code_in if p is None else np.int64(IDENTITY)
            if packed is None:  # pruned by type, as the other branch is when packed is True
                dense_backward(D, W, A_in, code_f, D_in, None)
            else:  # (a conditional expression here made Numba's parfor array analysis fail)
                dense_backward(D, W, A_in, code_f, D_in, _packs(work, woff, sizes))
            if p is not None:
                dropout_backward(D_in, A_in, code_in, p, layer_key(key, l - 1))
            if is_from_z(codes[l - 2]):  # f'(z^{l-1}), from the z^{l-1} that the forward kept
                multiply_derivative_z(codes[l - 2], _buffer(work, woff, sizes, l - 1, Z_, S), D_in)
        bias_gradient(D, alpha, beta, g)
        scale_rows(D, alpha, sizes[l])
        if weights:
            dense_weight_gradient(D, A_in, 1.0, beta, G)
    return loss, correct


@njit(cache=True)
def scale_rows(D, alpha, n):
    """D[s, k] ← α D[s, k] for k < n (the rest of each row is padding)."""
    alpha_ = cast_like(D, alpha)
    for s in range(D.shape[0]):
        for k in range(n):
            D[s, k] *= alpha_


@njit(parallel=True, cache=True)
def forward_with_step(sizes, codes, params, poff, A0_prev, work_prev, A0, work, woff, p=None, key=0, smooth=True):
    """For l = 1..L: W^l ← W^l - (ε/S') Σ_s δ'^l a'^{l-1T}, the previous batch's SGD step, fused
    with this batch's forward a^l = f_l(b^l + W^l a^{l-1}) (`dense_update_forward`).

    The previous batch (a'^0 = A0_prev, S' rows) left its a'^l and its δ'^l, already multiplied by
    α = -ε/S' (`loss_and_backward`), in `work_prev`; this batch
    (a^0 = A0, S rows) writes its own into `work`. S' = 0: no step is pending, a plain forward;
    S = 0: the step alone. (The row counts are read off the arrays: an integer argument that is
    sometimes a literal 0 would compile this function once more for each such call.)
    p not None, key: inverted dropout on this batch's hidden a^l (`forward`). smooth: as in `forward`.
    """
    L = sizes.shape[0] - 1
    S_prev, S = A0_prev.shape[0], A0.shape[0]
    A_in = A0
    for l in range(1, L + 1):
        W, b = _weights(params, poff, sizes, l)
        D_prev = _buffer(work_prev, woff, sizes, l, D_, S_prev)
        A_prev = _buffer(work_prev, woff, sizes, l - 1, A_, S_prev) if l > 1 else A0_prev
        A_out = _buffer(work, woff, sizes, l, A_, S)
        code = codes[l - 1] if l < L else IDENTITY
        dense_update_forward(D_prev, A_prev, 1.0, A_in, W, b, dense_code(code), A_out, smooth)
        _keep_z(code, A_out, work, woff, sizes, l, S, smooth)
        if p is not None and l < L:
            dropout_forward(A_out, p, layer_key(key, l))
        A_in = A_out


@njit(parallel=True, cache=True)
def train_epoch(X, T, order, batch_size, sizes, codes, params, work, lr, sw=None, p=None, seed=0, t=0, smooth=True,
                packed=True):
    """One epoch of mini-batch SGD, W ← W - ε ∂E/∂W per batch, batches taken from X[order].

    Each batch's step on the weights is taken by the next batch's forward, as it reads W^l
    (`forward_with_step`), and the last one by a forward of no rows; the biases are stepped at once. So the
    two batches' buffers must both stay: batch i uses workspace i % 2, and its a^0 stays where
    `batch_rows` put it.
    X: (N, n_0) · T: (N, n_L) targets · order: (N,) sample order · params updated in place
    work: two workspaces for batch capacity `batch_size`, one after the other (`workspace_offsets`).
    sw: None or (N,) sample weights (`batch_weights`).
    p not None: inverted dropout on the hidden layers, the masks of step t + i from `seed` (`dropout`).
    smooth: None when every hidden activation is relu or identity (`activations.smooth_flag`): no code for
    the others is compiled then. packed: None when no layer's backward packs W (`packs_flag`): likewise.
    Returns (Σ_batches S·E, number correct).
    """
    N = order.shape[0]
    poff, woff = param_offsets(sizes), workspace_offsets(sizes, batch_size)
    size = woff[-1, 2]
    wb = None if sw is None else np.empty(batch_size, params.dtype)
    total_loss = 0.0
    total_correct = 0
    A0_prev, work_prev = X[:0], work[size:2 * size]
    key = np.int64(0)  # one type for every call below: an int64, never a literal
    for start in range(0, N, batch_size):
        S = min(batch_size, N - start)
        i = start // batch_size % 2
        work_i = work[i * size:(i + 1) * size]
        A0, Tb = batch_rows(X, T, order[start:start + S], work_i, woff, sizes)
        key = step_key(seed, t + start // batch_size) if p is not None else np.int64(0)
        forward_with_step(sizes, codes, params, poff, A0_prev, work_prev, A0, work_i, woff, p, key, smooth)
        wb_i = None if sw is None else _weights_of(sw, order[start:start + S], wb)
        loss, correct = loss_and_backward(sizes, codes, params, poff, A0, Tb, work_i, woff, S, -lr / S, 1.0,
                                          params, False, wb_i, p, key, packed)
        total_loss += loss * S
        total_correct += correct
        A0_prev, work_prev = A0, work_i
    # the last batch's step, with a forward of no rows
    forward_with_step(sizes, codes, params, poff, A0_prev, work_prev, X[:0], work_prev, woff, p, key, smooth)
    return total_loss, total_correct


@njit(parallel=True, cache=True)
def train_epoch_optimizer(X, T, order, batch_size, sizes, codes, params, work, grads, code, hyper, state, t,
                          sw=None, p=None, seed=0, smooth=True, packed=True):
    """One epoch where each batch takes g = ∂E/∂θ (+ L2), clips ||g||, then an optimizer step.

    X: (N, n_0) · T: (N, n_L) targets · order: (N,) sample order · params: (P,) updated in place
    work: a workspace for batch capacity `batch_size` · grads: (P,) scratch for g
    code, hyper, state, t: the optimizer (`optimizers.optimizer_step`); t = steps taken so far.
    hyper[L2] = α adds α/(2S) Σ_l ||W^l||² to each batch loss (scikit-learn's MLP penalty);
    hyper[MAX_NORM] > 0 clips ||g||₂ to it. Returns (Σ_batches S·(E + penalty), number correct, t).
    sw: None or (N,) sample weights: the batch loss is Σ w_s E_s / Σ w_s, the penalty α/(2 Σ w_s) Σ_l ||W^l||²
    (scikit-learn's). p not None: inverted dropout, the masks of step t from `seed`. smooth, packed: as in
    `train_epoch`.
    """
    N = order.shape[0]
    poff, woff = param_offsets(sizes), workspace_offsets(sizes, batch_size)
    total_loss = 0.0
    total_correct = 0
    wb = None if sw is None else np.empty(batch_size, params.dtype)
    for start in range(0, N, batch_size):
        S = min(batch_size, N - start)
        A0, Tb = batch_rows(X, T, order[start:start + S], work, woff, sizes)
        wb_s = None if sw is None else _weights_of(sw, order[start:start + S], wb)
        key = step_key(seed, t) if p is not None else np.int64(0)
        loss, correct = forward_backward(sizes, codes, params, poff, A0, Tb, work, woff, S, 1.0 / S, 0.0, grads,
                                         wb_s, p, key, smooth, packed)
        weight = _weight_sum(sw, order[start:start + S])
        if hyper[L2] > 0 and weight > 0:
            loss += add_l2_penalty(params, poff, hyper[L2] / weight, grads)
        if hyper[MAX_NORM] > 0:
            clip_grad_norm(grads, hyper[MAX_NORM])
        t += 1
        optimizer_step(code, params, grads, state, hyper, t)
        total_loss += loss * S
        total_correct += correct
    return total_loss, total_correct, t


@njit(inline="always", cache=True)
def _weights_of(sw, index, wb):
    """The batch's scaled weights (`batch_weights`), as the first S entries of wb."""
    batch_weights(sw, index, wb)
    return wb[:index.shape[0]]


@njit(inline="always", cache=True)
def _weight_sum(sw, index):
    """Σ_s w_s over the batch, or S without weights (the L2 penalty's denominator)."""
    if sw is None:
        return float(index.shape[0])
    total = 0.0
    for s in range(index.shape[0]):
        total += sw[index[s]]
    return total


#: rows per block of `predict_outputs` (at most): a multiple of the forward's SAMPLE_TILE, at most 64; 32-128 rows
#: were as fast (predicting 10,000 rows)
PREDICT_ROWS = 64 // SAMPLE_TILE * SAMPLE_TILE


@njit(inline="always", cache=True)
def _row_blocks(N, n_threads):
    """(rows per block, number of blocks, number of runs) for N rows on n_threads threads: blocks of up to
    PREDICT_ROWS rows, fewer when there are few rows, so that every thread has some; one contiguous run
    of blocks per thread (`task_range`). Blocks start at multiples of the forward's SAMPLE_TILE, so every row
    falls in the same kind of register tile as in one `forward` over all N rows, whatever n_threads is."""
    per_thread = (N + n_threads - 1) // n_threads
    rows = max(SAMPLE_TILE, min(PREDICT_ROWS, (per_thread + SAMPLE_TILE - 1) // SAMPLE_TILE * SAMPLE_TILE))
    n_blocks = (N + rows - 1) // rows
    return rows, n_blocks, min(n_threads, n_blocks)


#: rows from which a prediction sums rows of the transposed weights (`predict_outputs_rows`) in the layers wide
#: enough (`takes_row_sums`): with fewer, transposing W costs more than it saves (benchmarks/NOTES.md)
TRANSPOSE_MIN_ROWS = 512


@njit(parallel=True, cache=True)
def predict_outputs(X, sizes, codes, params, work, out, smooth=True):
    """out = a^L for every row of X, in blocks of rows that each thread takes through all layers alone.

    X: (N, n_0) · out: (N, n_L), written · work: (n_threads, size), one workspace per thread for the
    rows of a block (`predict_rows(N, n_threads)`, `workspace_offsets`).
    codes[L - 1], the output, may be IDENTITY_SE whatever the model's: out is then the logits z^L.
    smooth: as in `forward`.
    Each thread takes one contiguous run of blocks (`_row_blocks`) and computes every layer of them on
    its own, in its own workspace, so no thread reads what another wrote and there is one parallel
    region in all. (Layer by layer, each parallel kernel would split the units of every layer across the
    threads, and each layer would read the other thread's half of the one before.) A single block of a few
    rows is better split the other way: `predict_outputs_by_layer`; many rows, from W^T: `predict_outputs_rows`.
    `predict_kernel` picks. The results are those of `forward` on the whole of X, bit for bit, for any number of
    threads.
    """
    rows, n_blocks, n_runs = _row_blocks(X.shape[0], work.shape[0])
    for r in prange(n_runs):
        b0, b1 = task_range(r, n_runs, n_blocks)
        _predict_blocks(dense_forward_serial, X, sizes, codes, params, work[r], out, rows, b0, b1, smooth)


@njit(parallel=True, cache=True)
def predict_outputs_rows(X, sizes, codes, params, work, WT, out, smooth=True):
    """`predict_outputs` with the layers that take row sums (`takes_row_sums`) computed from their transposed
    weights WT (`transpose_weights`; `dense_forward_rows`), for TRANSPOSE_MIN_ROWS rows or more. The same bits for
    any number of threads. A kernel of its own, so that a fit on fewer rows compiles none of its code (a cold
    `fastbp train` took 1.2 s longer with it inside `predict_outputs`; benchmarks/NOTES.md)."""
    rows, n_blocks, n_runs = _row_blocks(X.shape[0], work.shape[0])
    for r in prange(n_runs):
        b0, b1 = task_range(r, n_runs, n_blocks)
        _predict_blocks_from_rows(X, sizes, codes, params, WT, work[r], out, rows, b0, b1, smooth)


def transpose_weights(sizes: np.ndarray, params: np.ndarray, WT: np.ndarray) -> np.ndarray:
    """WT, filled with W^T of each layer that takes row sums (`takes_row_sums`), for `predict_outputs_rows`.
    Layer l's W^T is an (n_{l-1}, `padded_width(n_l)`) block, the blocks in order of l (`transposed_size`);
    the narrow layers' blocks are left as they are. NumPy's transposing copy: compiling one cost a cold start 1 s
    (benchmarks/NOTES.md)."""
    poff, start = param_offsets(sizes), 0
    for l in range(1, sizes.shape[0]):
        n_in, n_out, stride = sizes[l - 1], sizes[l], padded_width(sizes[l])
        if takes_row_sums(n_out, n_in, WT):
            W = params[poff[l, 0]:poff[l, 0] + n_out * n_in].reshape(n_out, n_in)
            np.copyto(WT[start:start + n_in * stride].reshape(n_in, stride)[:, :n_out], W.T)
        start += n_in * stride
    return WT


def transposed_size(sizes: np.ndarray) -> int:
    """Elements of `transpose_weights`' WT for a network of `sizes`."""
    return sum(int(sizes[l - 1]) * padded_width(sizes[l]) for l in range(1, len(sizes)))


@njit(parallel=True, cache=True)
def predict_outputs_by_layer(X, sizes, codes, params, work, out, smooth=True):
    """`predict_outputs` layer by layer, each layer's units split between the threads by `dense_forward`
    (above PARALLEL_WORK): for a single block of a few rows, where each core then keeps its share of W^l in
    its own L2 from call to call, instead of one core reading all of W from L3 on every call (0.94 MB for the
    reference network). Only work[0] is used. The same bits as `predict_outputs`.

    A kernel of its own, not a branch of `predict_outputs`, so that a fit's first prediction (of many rows)
    compiles none of the parallel forward's code, which a cold start waited for (benchmarks/NOTES.md).
    """
    rows, n_blocks, _ = _row_blocks(X.shape[0], work.shape[0])
    _predict_blocks(dense_forward, X, sizes, codes, params, work[0], out, rows, 0, n_blocks, smooth)


def predict_kernel(n_rows: int, n_threads: int):
    """The kernel that predicts n_rows rows on n_threads threads best: `predict_outputs_by_layer` when the rows
    make a single block (`predict_rows`) and there are threads to split its layers, `predict_outputs_rows` from
    TRANSPOSE_MIN_ROWS rows on (it takes WT, `transpose_weights`, after work), else `predict_outputs`."""
    if n_threads > 1 and n_rows <= predict_rows(n_rows, n_threads):
        return predict_outputs_by_layer
    return predict_outputs_rows if n_rows >= TRANSPOSE_MIN_ROWS else predict_outputs


def predict_outputs_by_fit_forward(X, sizes, codes, params, work, out, smooth=True):
    """`predict_outputs` through the kernels a fit of the same types has compiled: `forward_with_step` with no
    step pending (a plain forward of all the rows of X), then `output_activation_serial`. The same bits: each
    element is summed by the same tiles in the same order (`_row_blocks`' blocks start on tile boundaries).

    For the first predictions of a process whose fit compiled its kernels while `predict_outputs` is compiled
    neither here nor on disk, so that a first run does not wait for it (2.4 s of a cold `fastbp train`;
    `fit_forward_is_compiled`). work: a training workspace for X.shape[0] rows (`workspace_offsets`).
    """
    N, L = X.shape[0], sizes.shape[0] - 1
    woff = workspace_offsets(sizes, N)
    forward_with_step(sizes, codes, params, param_offsets(sizes), X[:0], work, X, work, woff, None, np.int64(0),
                      smooth)
    start = woff[L, A_]  # the logits z^L, left in a^L (`forward`)
    output_activation_serial(work[start:start + N * sizes[L]].reshape(N, sizes[L]), codes[L - 1], out)


def fit_forward_is_compiled(sizes, codes, params, poff, smooth) -> bool:
    """Whether `forward_with_step` is compiled, in this process or on disk, for the types with which
    `predict_outputs_by_fit_forward` calls it (as `train_epoch` does): after a fit's plain SGD on the same dtype
    and kind of activations. Another signature would compile anew, as long as `predict_outputs` takes."""
    rows, vector, key = numba.typeof(np.empty((0, 1), params.dtype)), numba.typeof(params), types.int64
    signature = tuple(numba.typeof(a) for a in (sizes, codes, params, poff)) + (
        rows, vector, rows, vector, numba.typeof(poff), types.none, key, numba.typeof(smooth))
    return signature in forward_with_step.overloads or has_compiled(forward_with_step, signature)


@njit(inline="always", cache=True)
def _predict_blocks(dense, X, sizes, codes, params, work, out, rows, b0, b1, smooth):
    """Blocks [b0, b1) of `rows` rows of `predict_outputs`, every layer of each with the kernel `dense`, in one
    workspace."""
    N = X.shape[0]
    L = sizes.shape[0] - 1
    poff, woff = param_offsets(sizes), workspace_offsets(sizes, rows)
    for block in range(b0, b1):
        start = block * rows
        S = min(rows, N - start)
        Z = _layers(dense, sizes, codes, params, poff, X[start:start + S], work, woff, S, None, 0, smooth)
        output_activation_serial(Z, codes[L - 1], out[start:start + S])


@njit(inline="always", cache=True)
def _predict_blocks_from_rows(X, sizes, codes, params, WT, work, out, rows, b0, b1, smooth):
    """`_predict_blocks` of `predict_outputs_rows`: each layer that takes row sums (`takes_row_sums`) from its W^T
    in WT (`dense_forward_rows`), the others with `dense_forward_serial`. Not a branch of `_layers`, which training
    and the other prediction kernels inline: a pruned branch there still cost `predict_outputs` 0.5 s of
    compilation."""
    N = X.shape[0]
    L = sizes.shape[0] - 1
    poff, woff = param_offsets(sizes), workspace_offsets(sizes, rows)
    for block in range(b0, b1):
        start = block * rows
        S = min(rows, N - start)
        A_in, W_start = X[start:start + S], 0  # W^l's transpose starts at W_start in WT (`transpose_weights`)
        for l in range(1, L + 1):
            W, b = _weights(params, poff, sizes, l)
            A_out = _buffer(work, woff, sizes, l, A_, S)
            code = codes[l - 1] if l < L else IDENTITY
            if takes_row_sums(sizes[l], sizes[l - 1], A_out):
                WT_l = _mat(WT, W_start, sizes[l - 1], padded_width(sizes[l]))
                dense_forward_rows(A_in, WT_l, b, dense_code(code), A_out, smooth)
            else:
                dense_forward_serial(A_in, W, b, dense_code(code), A_out, smooth)
            _keep_z(code, A_out, work, woff, sizes, l, S, smooth)
            W_start += sizes[l - 1] * padded_width(sizes[l])
            A_in = A_out
        output_activation_serial(A_in, codes[L - 1], out[start:start + S])


@njit(cache=True)
def predict_rows(N, n_threads):
    """Rows per block of `predict_outputs` on N rows and n_threads threads: the batch capacity of each
    thread's workspace."""
    return _row_blocks(N, n_threads)[0]
