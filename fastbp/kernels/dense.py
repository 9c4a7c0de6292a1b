"""The dense layer: forward, backward-δ and weight-gradient kernels, side by side.

Forward   z^l_{sk} = b^l_k + Σ_j W^l_{kj} a^{l-1}_{sj},   a^l = f(z^l)   (docs/derivation.md eq. 1, 2)
Backward  δ^{l-1}_{sj} = f'(z^{l-1}_{sj}) Σ_k δ^l_{sk} W^l_{kj}          (docs/derivation.md eq. 15)
Gradient  ∂E/∂W^l_{kj} = (1/S) Σ_s δ^l_{sk} a^{l-1}_{sj},  ∂E/∂b^l_k = (1/S) Σ_s δ^l_{sk}   (eq. 16, 17)

Step      W^l ← W^l - (ε/S') Σ_s δ'^l a'^{l-1T}, the previous batch's, fused into the forward  (eq. 19)

All of them read the row-major arrays as they are, with no transposes:
- the forward is a dot product over j, contiguous in both `A[s, :]` and `W[k, :]`, computed in
  register tiles of 4 samples x 4 units (`_dot4x4`) on AVX-512, 3 x 4 (`_dot3x4`) where there are
  only 16 vector registers (`SAMPLE_TILE`);
- the backward and the gradient sum rows: `δ^{l-1}[s, :] = Σ_k δ[s, k] W[k, :]` and
  `G[k, :] = Σ_s δ[s, k] a[s, :]`, along the contiguous rows, where they vectorise: with α = 1 (the
  training code folds α into δ) in panels of 4 output rows x 4 vectors (2 on AVX2) whose sums stay in registers
  over all the terms (`_rows_panel`), else in tiles of 4 output rows x CHUNK terms (`_rows_chunk`).

Compile time: every kernel's loop calls one compiled task function for a run of tiles
(`_forward_tiles`, `_row_sum_tiles`, `_backward_tiles`), so the tile code is typed and lowered once
per type instead of once per branch and kernel: the three forward kernels sharing `_forward_tiles`
cut a cold `fastbp train` fit from 41 to 31 s (benchmarks/NOTES.md). The tiles are inlined into the
task functions only. `_forward_tiles` is compiled with parallel=True, though it has no parallel loop:
compiled without it, the forward ran up to 1.5x slower on one thread (the same loops; what differs is
Numba's pipeline around them, as for `dense_forward_serial`).
The forward's tiles apply relu alone of the activation table; `activate_block` applies tanh and
sigmoid once per task, which saves compile time. The forward kernels take `smooth`, None for a network of relu
and identity layers (`activations.smooth_flag`): then the call of `activate_block` is pruned, and none of its
code is compiled.

Determinism: each output element is summed by one thread, in a fixed order that depends only
on the shapes (never on the thread count), so results are bit-identical for any number of threads.

Widths come from W: the activations and δ (A, A_out, D, D_out) may have longer rows than W's shape says,
as the workspace pads rows of 512, 1,024, ... elements (`training.row_stride`); only their first n_in or n_out
columns are read or written, so padding never changes a result.
"""
import numpy as np
from numba import prange
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .activations import activate_block, derivative, relu_or_identity
from .target import VECTOR_REGISTERS, VECTOR_WIDTH
from .common import (FASTMATH, PARALLEL_WORK, TASKS, NoAliasCompiler, cast_like, njit, task_range,
                     unsigned_range)

TILE = 4  # output rows (samples s, or units k) per register tile
# The forward's register tile is SAMPLE_TILE samples x TILE units: dot products whose partial sums each
# fill a vector register. 4 x 4 holds 16 of them plus 8 loaded vectors: that fits AVX-512's 32 registers,
# but on AVX2's 16 LLVM spilled 5 sums to the stack on every step. There 3 x 4 (12 sums) fits with no spill and
# ran the forward 1.15-1.2x faster than 2 x 4 (8 sums, which ran 1.3x faster than 4 x 4): fewer loads per FMA,
# and 12 independent sums hide the FMA latency better than 8 (benchmarks/NOTES.md).
SAMPLE_TILE = 4 if VECTOR_REGISTERS >= 32 else 3
# Terms of a row sum per register tile, a constant trip count that LLVM unrolls. The tile's 4 x CHUNK factors
# are loop-invariant and wait in vector registers. 32 of them spill on AVX2's 16 registers, and the 8 rows of Y
# plus 4 output rows that 4 KB row strides (1,024-wide float32 layers) map to one L1 set exceed its 8 ways:
# there 4 terms ran the row sums 1.2-2x faster than 8 (benchmarks/NOTES.md). AVX-512 keeps the 8 it was tuned with.
CHUNK = 8 if VECTOR_REGISTERS >= 32 else 4
# The row sums' panel (`_rows_panel`) is 4 output rows x PANEL_VECTORS vectors, whose sums stay in registers over
# all the terms. Two on AVX2: 8 sums, the 2 vectors of Y and 4 broadcast factors of each term, 14 of its 16
# registers. Four where there are 32: 16 sums, 4 vectors of Y and the 4 factors, so each broadcast feeds 4 FMAs
# instead of 2; the SGD step of the reference job at batch 512 ran 1.1x faster than with two (benchmarks/NOTES.md).
PANEL_VECTORS = 4 if VECTOR_REGISTERS >= 32 else 2
PANEL_ROW_BYTES = PANEL_VECTORS * min(VECTOR_WIDTH, 512 if VECTOR_REGISTERS >= 32 else 256) // 8
MIN_TILES = 8  # the backward splits its rows into column blocks until there are about this many tiles
MIN_COLUMNS = 128  # ... but no block narrower than this
# ... nor wider. With CHUNK 8 (AVX-512), 256: a tile's 4 output rows and 8 rows of terms then stay in L1 (12 KB
# of float32). With CHUNK 4 (AVX2) whole rows up to 2,048 ran the row sums 1.1-1.3x faster than blocks of 256 on
# one thread: each tile's loop over its columns is longer, and its setup (16 factors broadcast to registers,
# which AVX2's 16 registers cannot all hold) is paid once per row instead of once per block (benchmarks/NOTES.md).
MAX_COLUMNS = 256 if CHUNK == 8 else 2048
PANEL_BYTES = 1 << 18  # a task's row sums take their terms in blocks whose rows of Y fill at most this (256 KB): they
                       # stay in L2 while the task's row tiles take turns on them, instead of streaming from L3
# The backward reads W as the rows it sums. A W of more than PACK_MIN_ELEMENTS (1 MB of float32, more than a
# core's L2) is cut into column blocks of about MIN_COLUMNS, at most MAX_PACKS, each a task with all the samples,
# and each block of its terms is first copied into the task's pack (BLIS's packing): contiguous rows that stay in
# L2 whatever W's row stride. Without it every task read all of W from memory, and rows of 4 or 8 KB (1,024 or
# 2,048 float32) used a sixteenth of L2's sets: a 2,048 x 2,048 backward ran 3.3x slower at S = 128 (NOTES.md).
PACK_MIN_ELEMENTS = 1 << 18
MAX_PACKS = 16
PACK_ELEMENTS = PANEL_BYTES // 4  # a pack's size in elements: PANEL_BYTES of float32 (float64 uses half)
L1_BYTES = 1 << 14  # the forward reads rows of W this size from L1 (half of a 32 KB L1d; the rest holds rows of a)
GROUP = 16  # the forward's tiles come in groups of up to this many unit tiles: 64 rows of W, kept in L2
MIN_GROUPS = 4  # ... but `dense_update_forward`, parallel over groups, makes at least this many


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot(X, m, Y, n):
    """Σ_p X[m, p] Y[n, p], p < Y.shape[1]: the forward's X = a^{l-1} may have longer (padded) rows than Y = W."""
    acc = cast_like(X, 0)
    for p in range(Y.shape[1]):
        acc += X[m, p] * Y[n, p]
    return acc


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot1x4(X, m, Y, n):
    """The 4 dot products Σ_p X[m, p] Y[n+c, p], c in 0..3: each X value is loaded once for 4 sums."""
    c0 = c1 = c2 = c3 = cast_like(X, 0)
    for p in range(Y.shape[1]):
        x = X[m, p]
        c0 += x * Y[n, p]
        c1 += x * Y[n + 1, p]
        c2 += x * Y[n + 2, p]
        c3 += x * Y[n + 3, p]
    return c0, c1, c2, c3


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot4x4(X, m, Y, n):
    """The 16 dot products Σ_p X[m+a, p] Y[n+c, p], a, c in 0..3: a register tile.

    Each loaded X and Y value is used four times, so the loop is bound by FMAs, not loads.
    """
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = cast_like(X, 0)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = cast_like(X, 0)
    for p in range(Y.shape[1]):
        x0, x1, x2, x3 = X[m, p], X[m + 1, p], X[m + 2, p], X[m + 3, p]
        y0, y1, y2, y3 = Y[n, p], Y[n + 1, p], Y[n + 2, p], Y[n + 3, p]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    return (c00, c01, c02, c03, c10, c11, c12, c13,
            c20, c21, c22, c23, c30, c31, c32, c33)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot3x4(X, m, Y, n):
    """The 12 dot products Σ_p X[m+a, p] Y[n+c, p], a in 0..2, c in 0..3: the register tile for CPUs
    with 16 vector registers (AVX2), where the 16 sums of `_dot4x4` do not fit. 12 sums, 3 X vectors
    and one Y vector at a time fill 16 registers exactly: each step loads 7 vectors for 12 FMAs."""
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = cast_like(X, 0)
    for p in range(Y.shape[1]):
        x0, x1, x2 = X[m, p], X[m + 1, p], X[m + 2, p]
        y = Y[n, p]
        c00 += x0 * y
        c10 += x1 * y
        c20 += x2 * y
        y = Y[n + 1, p]
        c01 += x0 * y
        c11 += x1 * y
        c21 += x2 * y
        y = Y[n + 2, p]
        c02 += x0 * y
        c12 += x1 * y
        c22 += x2 * y
        y = Y[n + 3, p]
        c03 += x0 * y
        c13 += x1 * y
        c23 += x2 * y
    return c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23


#: the forward's register tile, SAMPLE_TILE x TILE dot products
_dot_tile = _dot4x4 if SAMPLE_TILE == 4 else _dot3x4


@njit(inline="always", cache=True)
def _tile(t, M, N, columns):
    """Rows [m0, m1) x columns [j0, j1) of tile t of a row-sum kernel's M x N output, in tiles of
    4 rows x `columns` numbered down each block of columns: a task's consecutive tiles share their
    columns, and so the rows of Y they read."""
    n_row_tiles = (M + TILE - 1) // TILE
    m0, j0 = (t % n_row_tiles) * TILE, (t // n_row_tiles) * columns
    return m0, min(m0 + TILE, M), j0, min(j0 + columns, N)


@njit(inline="always", cache=True)
def _term_block(P, columns, itemsize):
    """Terms per block of a task's row sums: all P when P rows of `columns` fit in the budget, else
    the most that do, a multiple of CHUNK (so that the register tiles' chunks of terms stay the same).
    The budget is PANEL_BYTES, half of it for rows of 4 KB or more: the task's output rows, as long, must
    stay in L2 beside the block (the weight gradient of a 2,048-wide layer ran 1.8x faster at S = 128,
    the SGD step fused into its forward 1.2x at S = 512; benchmarks/NOTES.md)."""
    row_bytes = columns * itemsize
    rows = (PANEL_BYTES // 2 if row_bytes >= 4096 else PANEL_BYTES) // row_bytes
    return max(P, 1) if rows >= P else max(CHUNK, rows - rows % CHUNK)


@njit(inline="always", cache=True)
def _group(W):
    """Unit tiles per group of the forward: GROUP, or fewer when their rows of W would not fit in
    PANEL_BYTES (rows wider than 1,024 float32), so that the group's rows stay in L2."""
    return max(1, min(GROUP, PANEL_BYTES // (TILE * max(W.shape[1], 1) * W.itemsize)))


@njit(inline="always", cache=True)
def _sample_block(A, W):
    """Sample tiles per block of a forward task: as many as have their rows of a^{l-1} fit in PANEL_BYTES,
    or 1 when a group's rows of W fit in L1_BYTES.

    Why: within a block the unit tiles are the outer loop, so each tile's 4 rows of W are read from L1 by
    every sample tile in turn, while the block's rows of a^{l-1} come from L2. The other way round, the
    4 rows of W that each step of the dot products loads came from L2 (a group's 64 rows of 784 float32
    are 200 KB): L2's 32 bytes a cycle, just what the loop needs, capped the tile. A W that fits in L1
    (the 10 x 128 output layer) keeps the sample tiles outer: each row of a^{l-1} is then read once.
    """
    group_rows = min(W.shape[0], _group(W) * TILE)
    if group_rows * W.shape[1] * W.itemsize <= L1_BYTES:
        return 1
    return max(1, PANEL_BYTES // (SAMPLE_TILE * max(A.shape[1], 1) * A.itemsize))


@njit(inline="always", cache=True)
def _forward_tasks(S, W):
    """(number of tasks, groups, sample blocks per group) of `dense_forward` of W on S samples.

    The unit tiles (k) come in groups of at most GROUP (64 rows of W), fewer when their rows would
    not fit in PANEL_BYTES (rows wider than 1,024 float32), all about as wide, and each group's sample
    tiles (s) in blocks, so that there are about TASKS tasks of about equal work: enough that a
    thread's share varies little with where prange cuts the run of tasks.
    """
    n_s_tiles, n_u_tiles = (S + SAMPLE_TILE - 1) // SAMPLE_TILE, (W.shape[0] + TILE - 1) // TILE
    n_groups = (n_u_tiles + _group(W) - 1) // _group(W)
    n_blocks = max(1, min(n_s_tiles, (TASKS + n_groups - 1) // n_groups))
    return n_groups * n_blocks, n_groups, n_blocks


@njit(inline="always", cache=True)
def _forward_task(t, n_groups, n_blocks, S, n_out):
    """Sample tiles [st0, st1) and unit tiles [u0, u1) of forward task t: block t % n_blocks of the
    sample tiles, with group t // n_blocks of the unit tiles. Blocks (and groups) differ in size by
    at most one tile, and none is empty (for S > 0)."""
    n_s_tiles, n_u_tiles = (S + SAMPLE_TILE - 1) // SAMPLE_TILE, (n_out + TILE - 1) // TILE
    g, block = t // n_blocks, t % n_blocks
    return (block * n_s_tiles // n_blocks, (block + 1) * n_s_tiles // n_blocks,
            g * n_u_tiles // n_groups, (g + 1) * n_u_tiles // n_groups)


@njit(inline="always", cache=True)
def _column_block(M, N):
    """Columns per tile of the backward's row sums on an M x N output: whole rows when there are enough
    row tiles to keep every thread busy, narrower blocks (≥ MIN_COLUMNS) when there are few, and
    rows wider than MAX_COLUMNS in blocks of about equal width, a multiple of 16 (a cache line of
    float32). The blocking never changes a result: each element is still summed in the same order."""
    blocks = max(1, MIN_TILES // ((M + TILE - 1) // TILE), (N + MAX_COLUMNS - 1) // MAX_COLUMNS)
    columns = (N + blocks - 1) // blocks
    return max(MIN_COLUMNS, columns + (-columns) % 16)


@njit(inline="always", cache=True)
def _row_tasks(M, N, columns):
    """(number of tiles, number of tasks) of the backward's row sums on an M x N output in tiles of
    4 rows x `columns`: tasks are runs of consecutive tiles (`task_range`), about TASKS of them."""
    n_tiles = ((M + TILE - 1) // TILE) * ((N + columns - 1) // columns)
    return n_tiles, min(n_tiles, TASKS)


# ----------------------------------------------------------------------------- forward
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_forward(A, W, b, code, A_out, smooth=True):
    """a^l[s, k] = f(b[k] + Σ_j W[k, j] a^{l-1}[s, j])   (docs/derivation.md eq. 1, 2)

    A: (S, n_in) activations a^{l-1} · W: (n_out, n_in) · b: (n_out,) · code: activation f
    A_out: (S, n_out), written · smooth: None when `code` is relu or identity for every call of this
    signature (`activations.smooth_flag`): no code for the other activations is compiled then.
    Computed in SAMPLE_TILE x 4 tiles of (s, k), parallel over tasks of many tiles (serial below
    PARALLEL_WORK): each a[s, k] is summed by one thread, in order of j.

    A task is a group of up to 16 unit tiles (64 rows of W) with a block of sample tiles
    (`_forward_task`), whose rows of W stay in L2. Within it the sample tiles come in blocks whose rows of
    a^{l-1} stay in L2 too (`_sample_block`), and in each block every unit tile takes its turn on all the
    block's sample tiles, its 4 rows of W in L1. Tasks are numbered group by group, and prange gives
    each thread one contiguous run of them, so a thread reads only its own rows of W: the rows that
    `dense_weight_gradient` writes on that same thread. Each core then keeps its half of W in its
    own cache from step to step, instead of fetching the rows the other core has just written.
    Tile ranges are worked out once per task, not once per tile: their integer divisions were a
    visible share of the time on the reference shapes. The tiles apply relu as they store; tanh and sigmoid are
    applied to the task's block just after (`activate_block`), while it is in L1.
    """
    S, n_out = A_out.shape[0], W.shape[0]
    if S * W.size < PARALLEL_WORK:
        dense_forward_serial(A, W, b, code, A_out, smooth)
    else:
        n_tasks, n_groups, n_blocks = _forward_tasks(S, W)
        block = _sample_block(A, W)
        for t in prange(n_tasks):
            st0, st1, u0, u1 = _forward_task(t, n_groups, n_blocks, S, n_out)
            _forward_tiles(A, W, b, code, A_out, st0, st1, u0, u1, block, smooth)


# parallel=True with no prange: it calls the parallel-compiled `_forward_tiles`, and a cached non-parallel
# caller of a parallel function crashes when a later process loads it (training.py's note)
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_forward_serial(A, W, b, code, A_out, smooth=True):
    """`dense_forward` on the calling thread: its tasks in turn, each sum in the same order.

    For small layers, and for a thread that computes its own block of rows through every layer
    (`training.predict_outputs`).
    """
    S, n_out = A_out.shape[0], W.shape[0]
    n_tasks, n_groups, n_blocks = _forward_tasks(S, W)
    block = _sample_block(A, W)
    for t in range(n_tasks):
        st0, st1, u0, u1 = _forward_task(t, n_groups, n_blocks, S, n_out)
        _forward_tiles(A, W, b, code, A_out, st0, st1, u0, u1, block, smooth)


@njit(fastmath=FASTMATH, cache=True, pipeline_class=NoAliasCompiler)
def dense_forward_rows(A, WT, b, code, A_out, smooth=True):
    """a^l[s, :] = f(b + Σ_j a^{l-1}[s, j] W^T[j, :])   (docs/derivation.md eq. 1, 2, from the rows of W^T)

    A: (S, n_in) a^{l-1} · WT: (n_in, ≥ n_out), W transposed, its rows maybe padded · b: (n_out,) · code: f
    A_out: (S, n_out), written · smooth: as in `dense_forward`. On the calling thread, for prediction
    (`training.predict_outputs_rows`; `training.transpose_weights` makes WT).
    Why row sums: `dense_forward`'s dot products end each register tile with 16 horizontal sums, a fifth of
    the work on a 256-term dot product; summing rows of W^T has none, and ran at 0.98 of one core's FMA peak
    against 0.83-0.86 (benchmarks/NOTES.md). Full tiles of 4 samples take `_rows_panel` on the columns that
    fill its panels, in blocks of columns whose rows of W^T stay in L2 while the tiles take turns on them
    (`_row_block`); the rest is added one term at a time. Every a[s, k] is b[k] plus the terms in order of j,
    each a fused multiply-add, on either path: a row's result does not depend on the rows around it.
    """
    S, n_in, n_out = A_out.shape[0], WT.shape[0], b.shape[0]
    V = _panel_columns(A_out)
    k_panel = n_out // V * V
    columns = _row_block(n_in, V, WT.itemsize)
    s_tiled = S - S % TILE
    for s in range(S):
        for k in unsigned_range(0, n_out):
            A_out[s, k] = b[k]
    for k0 in range(0, k_panel, columns):
        k1 = min(k0 + columns, k_panel)
        for s0 in range(0, s_tiled, TILE):
            _rows_panel(A[s0:s0 + TILE, :n_in], WT, A_out[s0], A_out[s0 + 1], A_out[s0 + 2], A_out[s0 + 3], k0, k1)
    for s in range(S):  # the columns past the panels; every column of the rows past the full tiles
        k_rest = k_panel if s < s_tiled else 0
        for j in range(n_in):
            x = A[s, j]
            for k in unsigned_range(k_rest, n_out):
                A_out[s, k] += x * WT[j, k]
    for s in range(S):
        for k in unsigned_range(0, n_out):
            A_out[s, k] = relu_or_identity(code, A_out[s, k])
    if smooth is not None:
        activate_block(code, A_out, 0, S, 0, n_out)


@njit(inline="always", cache=True)
def _row_block(n_in, V, itemsize):
    """Columns per block of `dense_forward_rows`: the most whole panels of V columns whose n_in rows fit in
    PANEL_BYTES, at least one."""
    return max(1, PANEL_BYTES // max(n_in * V * itemsize, 1)) * V


def panel_columns(dtype) -> int:
    """Columns of a row-sum panel (`_rows_panel`) of `dtype`: PANEL_ROW_BYTES of them."""
    return PANEL_ROW_BYTES // np.dtype(dtype).itemsize


def takes_row_sums(n_out, n_in, out):
    """True when an n_in -> n_out layer predicts from W^T (`dense_forward_rows`): it fills at least one panel of
    out's dtype, and W has at most PACK_MIN_ELEMENTS elements. Why the second: each thread's blocks of rows read all
    of W^T, which then stays in its core's L2; a bigger one came from L3, where the row sums gained nothing on the
    dot products, and transposing a 1,024 x 1,024 W took milliseconds (benchmarks/NOTES.md)."""
    return n_out >= panel_columns(out.dtype) and n_out * n_in <= PACK_MIN_ELEMENTS


@overload(takes_row_sums, inline="always")
def _takes_row_sums_overload(n_out, n_in, out):
    return lambda n_out, n_in, out: n_out >= _panel_columns(out) and n_out * n_in <= PACK_MIN_ELEMENTS


# parallel=True with no prange, as `dense_forward_serial`: Numba's parallel pipeline gives the tiles faster
# code (up to 1.5x on one thread; benchmarks/NOTES.md)
@njit(parallel=True, fastmath=FASTMATH, cache=True, pipeline_class=NoAliasCompiler)
def _forward_tiles(A, W, b, code, A_out, st0, st1, u0, u1, block, smooth):
    """Sample tiles [st0, st1) x unit tiles [u0, u1) of the forward: a task. The sample tiles come in
    blocks of `block` tiles (`_sample_block`); in each block every unit tile takes its turn on all of the
    block's sample tiles. Then f on the task's block of a^l, while it is in L1 (`activate_block`), unless
    smooth is None: the tiles' relu was all there was to apply, and Numba prunes the call.
    One compiled function for `dense_forward`, `dense_forward_serial` and `dense_update_forward`, so that
    Numba types and lowers the tiles once, not once per kernel and branch."""
    S, n_out = A_out.shape[0], W.shape[0]
    for sb in range(st0, st1, block):
        for u in range(u0, u1):  # 4 rows of W in L1 while the block's sample tiles take turns
            for st in range(sb, min(sb + block, st1)):
                _forward_tile(A, W, b, code, A_out, st * SAMPLE_TILE, min(st * SAMPLE_TILE + SAMPLE_TILE, S),
                              u * TILE, min(u * TILE + TILE, n_out))
    if smooth is not None:
        activate_block(code, A_out, st0 * SAMPLE_TILE, min(st1 * SAMPLE_TILE, S), u0 * TILE, min(u1 * TILE, n_out))


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _forward_tile(A, W, b, code, A_out, s0, s1, k0, k1):
    """a[s, k] = relu(b[k] + Σ_j W[k, j] a^{l-1}[s, j]) for relu, z = b[k] + Σ ... for the other codes
    (`activate_block` follows), on the [s0, s1) x [k0, k1) tile of `dense_forward`: a SAMPLE_TILE x 4
    register tile (`_dot_tile`) when it is full, 1 x 4 tiles for the samples of a partial tile (batch 1 included), single
    sums at the last units."""
    if s1 - s0 == SAMPLE_TILE and k1 - k0 == TILE:
        c = _dot_tile(A, s0, W, k0)
        for i in range(SAMPLE_TILE):
            for q in range(TILE):
                A_out[s0 + i, k0 + q] = relu_or_identity(code, c[TILE * i + q] + b[k0 + q])
    elif k1 - k0 == TILE:
        for s in range(s0, s1):
            c = _dot1x4(A, s, W, k0)
            for q in range(TILE):
                A_out[s, k0 + q] = relu_or_identity(code, c[q] + b[k0 + q])
    else:
        for s in range(s0, s1):
            for k in range(k0, k1):
                A_out[s, k] = relu_or_identity(code, _dot(A, s, W, k) + b[k])


# ----------------------------------------------------------------------------- row sums
@njit(inline="always", fastmath=FASTMATH, cache=True)
def _rows_chunk(X, Y, alpha, out, m0, p0, j0, j1, n=CHUNK):
    """out[m0+i, j] += Σ_{q<n} (α X[m0+i, p0+q]) Y[p0+q, j] for i < 4, j in [j0, j1): a register tile.

    The q loop has a constant trip count n (CHUNK, or 2 for the backward's last terms), so LLVM unrolls
    it and vectorises the j loop with the four sums in registers: n loads of Y feed 4n FMAs. The
    factors α X are loop-invariant and computed once per tile, so α costs no multiply in the loop.
    """
    for j in unsigned_range(j0, j1):
        c0 = c1 = c2 = c3 = cast_like(out, 0)
        for q in range(n):
            y = Y[p0 + q, j]
            c0 += (alpha * X[m0, p0 + q]) * y
            c1 += (alpha * X[m0 + 1, p0 + q]) * y
            c2 += (alpha * X[m0 + 2, p0 + q]) * y
            c3 += (alpha * X[m0 + 3, p0 + q]) * y
        out[m0, j] += c0
        out[m0 + 1, j] += c1
        out[m0 + 2, j] += c2
        out[m0 + 3, j] += c3


def _panel_columns(out):
    """Columns of a `_rows_panel` for out's dtype, PANEL_ROW_BYTES of them, as a compile-time constant
    (an array's itemsize is a run-time field to Numba; LLVM must see the panel's width to unroll it)."""
    raise NotImplementedError("_panel_columns is for compiled code")


@overload(_panel_columns, inline="always")
def _panel_columns_overload(out):
    columns = panel_columns(as_dtype(out.dtype))
    return lambda out: columns


@njit(fastmath=FASTMATH, cache=True, pipeline_class=NoAliasCompiler)
def _rows_panel(F, Y, out0, out1, out2, out3, j0, j1):
    """out_i[j] += Σ_p F[i, p] Y[p, j] for i < 4, j in [j0, j1): a register tile of 4 rows x V columns
    (`_panel_columns`: PANEL_VECTORS vectors) at a time, whose vector sums stay in registers over all the terms.
    F: (4, P) factors · Y: (P, ≥ j1) · j1 - j0 a multiple of V. Each element is summed in the order of p.

    Why 4 arguments for the 4 output rows: Numba tells LLVM that no two array arguments overlap
    (`NoAliasCompiler`), so LLVM keeps each row's sums in registers across the loop over p. Rows of one
    array might overlap for all LLVM knows, and it would load and store them at every term (`_rows_chunk`).
    Why no α: a scalar multiply before each broadcast ran the panel 1.6x slower on Zen 1
    (benchmarks/NOTES.md); the training code folds α into δ instead (`training.loss_and_backward`).
    """
    V = _panel_columns(out0)
    for panel in range((j1 - j0) // V):
        jv = np.uint64(j0 + panel * V)
        for p in range(F.shape[1]):
            f0, f1, f2, f3 = F[0, p], F[1, p], F[2, p], F[3, p]
            for jj in range(V):  # a constant trip count: unrolled into two vector FMAs per row
                j = jv + np.uint64(jj)
                y = Y[p, j]
                out0[j] += f0 * y
                out1[j] += f1 * y
                out2[j] += f2 * y
                out3[j] += f3 * y


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _row_sums(X, Y, alpha, beta, out, m0, m1, j0, j1, p0, p1, pairs=False):
    """out[m, j] += α Σ_{p0 ≤ p < p1} X[m, p] Y[p, j] for m in [m0, m1), j in [j0, j1): block [p0, p1)
    of the terms of out = β out + α Σ_p X[m, p] Y[p, j], β applied with the first block (p0 = 0).

    With α = 1 a full tile's columns go through `_rows_panel`, as many as fill its panels; the rest as follows.
    Blocks start at multiples of CHUNK and are added in order, so each element is summed term after
    term in the order of p, however the terms are blocked. Full tiles of 4 rows take the register
    tile for each chunk of CHUNK terms, and with `pairs` for each pair of the P % CHUNK terms left (the
    backward's: a 10-unit output layer is 8 + 2 terms, or 4 + 4 + 2). The terms left then, and rows beyond a full
    tile, are added one term at a time, skipping zero X[m, p] (a relu unit that was off in the layer
    above contributes nothing: the relu skip of docs/derivation.md). `pairs` is a compile-time choice:
    Numba prunes the branch when it is left out, and the weight gradient (whose terms are samples, a
    multiple of 8 in most batches) leaves it out, which saves compilation.
    """
    if beta != 1 and p0 == 0:
        for m in range(m0, m1):
            for j in unsigned_range(j0, j1):
                out[m, j] = beta * out[m, j] if beta != 0 else cast_like(out, 0)
    # the panel, its sums in registers, for a full tile of at least CHUNK terms; the columns it leaves, as below.
    # Fewer terms (batches of 1-3 samples in the gradient) take the one-at-a-time loop below and its relu skip:
    # through the panel, the batch-1 step took 1.6-1.9x as long (benchmarks/NOTES.md).
    if alpha == 1 and m1 - m0 == TILE and p1 - p0 >= CHUNK:
        V = _panel_columns(out)
        j_panel = j0 + (j1 - j0) // V * V
        # the tile's factors as a block, of one array type whatever X's layout (one compiled signature)
        _rows_panel(X[m0:m0 + TILE, p0:p1], Y[p0:p1], out[m0], out[m0 + 1], out[m0 + 2], out[m0 + 3], j0, j_panel)
        j0 = j_panel
    P = Y.shape[0]
    full = m1 - m0 == TILE
    p_tiled = min(p1, P - P % CHUNK) if full else p0
    for p in range(p0, p_tiled, CHUNK):
        _rows_chunk(X, Y, alpha, out, m0, p, j0, j1)
    if pairs and full and p1 == P:
        for p in range(p_tiled, P - 1, 2):
            _rows_chunk(X, Y, alpha, out, m0, p, j0, j1, 2)
        p_tiled = P - (P - p_tiled) % 2
    for m in range(m0, m1):
        for p in range(p_tiled, p1):
            x = alpha * X[m, p]
            if x != 0:
                for j in unsigned_range(j0, j1):
                    out[m, j] += x * Y[p, j]


@njit(fastmath=FASTMATH, cache=True, pipeline_class=NoAliasCompiler)
def _row_sum_tiles(X, Y, alpha, beta, out, t0, t1, columns):
    """Tiles [t0, t1) of out ← β out + α X Y, each 4 rows x `columns` (`_tile`): a task. The terms come
    in blocks (`_term_block`) whose rows of Y stay in L2 while the task's tiles take turns on them.
    Compiled without overlap checks (`NoAliasCompiler`), as a parallel loop's body is: out must not
    overlap X or Y."""
    M, N = out.shape
    P = Y.shape[0]
    block = _term_block(P, columns, Y.itemsize)
    for p0 in range(0, max(P, 1), block):  # one pass when P = 0, for β
        for t in range(t0, t1):
            m0, m1, j0, j1 = _tile(t, M, N, columns)
            _row_sums(X, Y, alpha, beta, out, m0, m1, j0, j1, p0, min(p0 + block, P))


# ----------------------------------------------------------------------------- backward
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_backward(D, W, A, code, D_out, packs=None):
    """δ^{l-1}[s, j] = f'(z^{l-1}[s, j]) Σ_k δ^l[s, k] W[k, j]   (docs/derivation.md eq. 15)

    In the forward pass a^l = f(b + W a^{l-1}), so ∂z^l_k/∂a^{l-1}_j = W[k, j].
    D: (S, n_out) δ^l · W: (n_out, n_in) · A: (S, n_in) a^{l-1}, from which f' is taken
    D_out: (S, n_in), written; it must not overlap the inputs.
    packs: (≥ `backward_packs(n_out, n_in)`, PACK_ELEMENTS) scratch for copies of W, as the training workspace
    holds (`training.workspace_offsets`); give them for a W of more than PACK_MIN_ELEMENTS. None: nothing is
    packed, every task reads W in place (in tiles of other columns, so a sum may differ in its last bit from a
    packed one), and no packing code is compiled (`training.packs_flag`).
    Parallel over runs of tiles of 4 samples x a block of units j (serial below PARALLEL_WORK); each element
    is summed by one thread in order of k. A big W (`backward_packs` > 0) is cut into column blocks, each a
    task with all the samples, whose blocks of terms are packed first (`_backward_tiles`).
    """
    S, n_in = D_out.shape[0], W.shape[1]
    n_packs = 0
    if packs is not None:  # pruned when packs is None: then no packing code is compiled
        n_packs = backward_packs(W.shape[0], n_in) if S * W.size >= PARALLEL_WORK else 0
        if packs.shape[0] < n_packs or packs.shape[1] < PACK_ELEMENTS:
            raise ValueError("packs: give backward_packs(n_out, n_in) rows of PACK_ELEMENTS, or None")
    if n_packs > 0:  # task t: column block t with all the samples, and pack t
        columns = (n_in + n_packs - 1) // n_packs
        columns += (-columns) % (PANEL_ROW_BYTES // 4)  # a multiple of every panel's width (float32's is the most
        # columns), so of a line; maybe fewer blocks than packs
        n_tasks = (n_in + columns - 1) // columns
        n_tiles = ((S + TILE - 1) // TILE) * n_tasks
    else:
        columns = _column_block(S, n_in)
        n_tiles, n_tasks = _row_tasks(S, n_in, columns)
    if S * W.size < PARALLEL_WORK:  # never packed (n_packs is 0)
        for t in range(n_tasks):
            t0, t1 = task_range(t, n_tasks, n_tiles)
            _backward_tiles(D, W, A, code, D_out, t0, t1, columns, _task_pack(packs, t, 0))
    else:  # one parallel loop for both layouts: each prange is compiled into a function of its own
        for t in prange(n_tasks):
            t0, t1 = task_range(t, n_tasks, n_tiles)
            _backward_tiles(D, W, A, code, D_out, t0, t1, columns, _task_pack(packs, t, n_packs))


@njit(inline="always", cache=True)
def _task_pack(packs, t, n_packs):
    """Task t's pack: packs[t], an empty one when W is not packed (n_packs = 0), None when packs is None."""
    if packs is None:
        return None
    return packs[t] if n_packs > 0 else packs.reshape(-1)[:0]


@njit(cache=True)
def backward_packs(n_out, n_in):
    """Packs (column blocks, tasks) of `dense_backward` for an (n_out, n_in) W: 0 when W has at most
    PACK_MIN_ELEMENTS elements, else about n_in / MIN_COLUMNS, at most MAX_PACKS."""
    return 0 if n_out * n_in <= PACK_MIN_ELEMENTS else max(1, min(MAX_PACKS, n_in // MIN_COLUMNS))


@njit(fastmath=FASTMATH, cache=True, pipeline_class=NoAliasCompiler)
def _backward_tiles(D, W, A, code, D_out, t0, t1, columns, pack):
    """Tiles [t0, t1) of `dense_backward`, each 4 samples x `columns` units (`_tile`): a task. The
    terms (units k) come in blocks whose rows of W stay in L2 while the tiles take turns on them;
    after the last block each tile's sums are multiplied by f'(z) = f'(a) while it is in L1.
    With a pack (a task of one column block), each block of W's rows is copied into it first, and the
    full tiles' panels read the copy: the same numbers, so the same sums (`_packed_panels`)."""
    S, n_in = D_out.shape[0], W.shape[1]
    n_out = W.shape[0]
    one, zero = cast_like(D_out, 1), cast_like(D_out, 0)
    block = _term_block(n_out, columns, W.itemsize)
    _, _, jb0, jb1 = _tile(t0, S, n_in, columns)  # a packed task's column block
    for k0 in range(0, n_out, block):  # blocks of units k, their rows of W in L2
        k1 = min(k0 + block, n_out)
        packed = False
        if pack is not None:  # pruned, with all the packing code, when pack is None
            packed = pack.shape[0] > 0 and k1 - k0 >= CHUNK
            if packed:
                P = _pack_block(W, k0, k1, jb0, jb1, pack)
        for t in range(t0, t1):
            s0, s1, j0, j1 = _tile(t, S, n_in, columns)
            j_rest = j0  # the columns from here on are summed from W itself
            if pack is not None:  # (P exists only then)
                if packed and s1 - s0 == TILE:
                    j_rest = _packed_panels(D, P, D_out, s0, k0, k1, j0, j1)
            _row_sums(D, W, one, zero, D_out, s0, s1, j_rest, j1, k0, k1, True)
            if k1 == n_out:  # the tile's sums are complete: f' while it is in L1
                for s in range(s0, s1):
                    for j in unsigned_range(j0, j1):
                        D_out[s, j] *= derivative(code, A[s, j])


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _pack_block(W, k0, k1, j0, j1, pack):
    """P[k - k0, j - j0] = W[k, j] for k in [k0, k1), j in [j0, j1): the block, contiguous in `pack`."""
    P = pack[:(k1 - k0) * (j1 - j0)].reshape((k1 - k0, j1 - j0))
    j0_ = np.uint64(j0)  # unsigned indices: a signed j0 + j made LLVM gather each vector element by element
    for k in range(k0, k1):
        for j in unsigned_range(0, j1 - j0):
            P[k - k0, j] = W[k, j0_ + j]
    return P


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _packed_panels(D, P, D_out, s0, k0, k1, j0, j1):
    """D_out[s0 + i, j] += Σ_{k0 ≤ k < k1} δ[s0 + i, k] P[k - k0, j - j0] for i < 4, over the columns
    [j0, j_panel) that fill whole panels, as `_row_sums` adds them from W (set to 0 first at k0 = 0);
    returns j_panel, where the columns left to `_row_sums` begin."""
    j_panel = j0 + (j1 - j0) // _panel_columns(D_out) * _panel_columns(D_out)
    if k0 == 0:
        for s in range(s0, s0 + TILE):
            for j in unsigned_range(j0, j_panel):
                D_out[s, j] = cast_like(D_out, 0)
    _rows_panel(D[s0:s0 + TILE, k0:k1], P, D_out[s0, j0:j1], D_out[s0 + 1, j0:j1], D_out[s0 + 2, j0:j1],
                D_out[s0 + 3, j0:j1], np.int64(0), j_panel - j0)  # an int64, not a literal: one signature
    return j_panel


# ----------------------------------------------------------------------------- gradient
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_weight_gradient(D, A, alpha, beta, G):
    """G[k, j] = β G[k, j] + α Σ_s δ[s, k] a^{l-1}[s, j]   (docs/derivation.md eq. 16)

    With α = 1/S, β = 0 this is ∂E/∂W; with α = -ε/S, β = 1 it is the SGD step W ← W - ε ∂E/∂W
    fused into the same pass. D: (S, n_out) δ · A: (S, n_in) a^{l-1} · G: (n_out, n_in), which
    must not overlap D or A. In tiles of 4 units k x all the inputs j, parallel over the fused step's groups
    of them (`_step_groups`; serial below PARALLEL_WORK): no two threads add into one element (llm.c's rule),
    each element is summed in order of s, and an eager SGD step gives every element the sums of the fused
    one (`dense_update_forward`), bit for bit.
    """
    n_out, n_in = G.shape
    alpha_, beta_ = cast_like(G, alpha), cast_like(G, beta)
    DT = D.T  # a view: δ[s, k] read as DT[k, s], one scalar per term
    n_unit_tiles = (n_out + TILE - 1) // TILE
    if D.shape[0] * G.size < PARALLEL_WORK:
        _row_sum_tiles(DT, A, alpha_, beta_, G, np.int64(0), n_unit_tiles, n_in)  # int64s: one signature
    else:
        n_groups = _step_groups(G)
        for g in prange(n_groups):
            u0, u1 = task_range(g, n_groups, n_unit_tiles)
            _row_sum_tiles(DT, A, alpha_, beta_, G, u0, u1, n_in)  # tiles of whole rows


@njit(inline="always", cache=True)
def _step_groups(W):
    """Groups of unit tiles (rows of W) of the fused step and the weight gradient: `_group(W)` tiles each, but
    at least MIN_GROUPS groups, narrower ones in a narrow layer, so that no thread idles."""
    n_unit_tiles = (W.shape[0] + TILE - 1) // TILE
    return max(MIN_GROUPS, (n_unit_tiles + _group(W) - 1) // _group(W))


@njit(cache=True)
def bias_gradient(D, alpha, beta, g):
    """g[k] = β g[k] + α Σ_s δ[s, k]   (docs/derivation.md eq. 17); D: (S, n_out) · g: (n_out,), summed in order of s."""
    alpha_, beta_ = cast_like(g, alpha), cast_like(g, beta)
    for k in range(g.shape[0]):
        g[k] = beta_ * g[k] if beta_ != 0 else cast_like(g, 0)
    for s in range(D.shape[0]):
        for k in range(g.shape[0]):
            g[k] += alpha_ * D[s, k]


# ----------------------------------------------------------------------------- the SGD step, fused into the forward
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_update_forward(D_prev, A_prev, alpha, A, W, b, code, A_out, smooth=True):
    """W[k, j] += α Σ_s δ'[s, k] a'[s, j], then a^l[s, k] = f(b[k] + Σ_j W[k, j] a^{l-1}[s, j])

    The previous batch's SGD step on W (α = -ε/S', from its δ' = D_prev and a' = A_prev, eq. 11),
    fused into this batch's forward (eq. 1): each group of rows of W is updated just before its
    forward tiles read it, so a step reads W once instead of twice, in one parallel region.
    D_prev: (S', n_out) · A_prev: (S', n_in) · A: (S, n_in) · W: (n_out, n_in), updated · b: (n_out,)
    A_out: (S, n_out), written · smooth: as in `dense_forward`. S' = 0 is a plain forward; S = 0, the step
    alone. Parallel over groups of unit tiles (`_step_groups`). Below PARALLEL_WORK, or with fewer than 8 unit
    tiles, it calls the two kernels in turn instead: fusing saves nothing when W stays in cache anyway, and
    compiling a serial copy of the fused loops would double this kernel's compile time. Every W[k, j] and
    a[s, k] is computed by the arithmetic of `dense_weight_gradient` (tiles of whole rows, as here) and
    `dense_forward`, so the result is that of the two kernels in turn, bit for bit.
    """
    S, n_out = A_out.shape[0], W.shape[0]
    alpha_ = cast_like(W, alpha)
    DT = D_prev.T  # a view: δ'[s, k] read as DT[k, s], as in dense_weight_gradient
    n_unit_tiles = (n_out + TILE - 1) // TILE
    if max(S, D_prev.shape[0]) * W.size < PARALLEL_WORK or n_unit_tiles < 2 * MIN_GROUPS:
        # little work (W stays in cache anyway), or too few rows of W to share out evenly:
        # the two kernels in turn, each serial or split its own way
        dense_weight_gradient(D_prev, A_prev, alpha, 1.0, W)
        dense_forward(A, W, b, code, A_out, smooth)
    else:
        n_groups = _step_groups(W)
        block = _sample_block(A, W)
        for g in prange(n_groups):
            # group g, unit tiles [u0, u1): the step on their rows of W, in tiles of whole rows as
            # `dense_weight_gradient` takes it, then their forward tiles (`dense_forward`'s task g of n_groups,
            # with one block of all the samples), while those rows are in cache
            st0, st1, u0, u1 = _forward_task(g, n_groups, 1, S, n_out)
            _row_sum_tiles(DT, A_prev, alpha_, cast_like(W, 1), W, u0, u1, W.shape[1])
            _forward_tiles(A, W, b, code, A_out, st0, st1, u0, u1, block, smooth)
