"""The dense layer: forward, backward-δ and weight-gradient kernels, side by side.

Forward   z^l_{sk} = b^l_k + Σ_j W^l_{kj} a^{l-1}_{sj},   a^l = f(z^l)          (seed 000 eq. 1)
Backward  δ^{l-1}_{sj} = f'(z^{l-1}_{sj}) Σ_k δ^l_{sk} W^l_{kj}                  (seed 000 eq. 16)
Gradient  ∂E/∂W^l_{kj} = (1/S) Σ_s δ^l_{sk} a^{l-1}_{sj},  ∂E/∂b^l_k = (1/S) Σ_s δ^l_{sk}   (eq. 11, 12)

Every contraction is a dot product over the last, contiguous axis of two row-major arrays
(`out[m, n] = Σ_p X[m, p] Y[n, p]`), computed in 4 x 4 register tiles. The backward and
gradient kernels therefore read the transposes `W^T`, `δ^T` and `a^T`, which the kernels
before them write next to the row-major arrays; for small batches the gradient and backward
kernels switch to row updates (axpy form) that need no transpose.

Determinism: each output element is summed by one thread, in a fixed order that depends only
on the shapes (never on the thread count), so results are bit-identical for any number of threads.
"""
from numba import njit, prange

from .activations import RELU, activate, derivative
from .common import FASTMATH, cast_like
TILE = 4
# Below this many samples the weight gradient is a sum of S rank-1 row updates (axpy form):
# a 4 x 4 dot-product tile over a handful of samples cannot vectorise.
SMALL_BATCH = 8


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot(X, m, Y, n):
    """Σ_p X[m, p] Y[n, p]."""
    acc = X[m, 0] * 0
    for p in range(X.shape[1]):
        acc += X[m, p] * Y[n, p]
    return acc


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _dot4x4(X, m, Y, n):
    """The 16 dot products Σ_p X[m+a, p] Y[n+c, p], a, c in 0..3: a register tile.

    Each loaded X and Y value is used four times, so the loop is bound by FMAs, not loads.
    """
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = X[m, 0] * 0
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = X[m, 0] * 0
    for p in range(X.shape[1]):
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


@njit(inline="always", cache=True)
def _tile(t, n_col_tiles, M, N):
    """Row/column ranges [m0, m1) x [n0, n1) of tile t in a grid of TILE x TILE tiles."""
    m0 = (t // n_col_tiles) * TILE
    n0 = (t % n_col_tiles) * TILE
    return m0, min(m0 + TILE, M), n0, min(n0 + TILE, N)


@njit(inline="always", cache=True)
def _n_tiles(M, N):
    """(number of tiles, tiles per row) covering an M x N output."""
    n_col_tiles = (N + TILE - 1) // TILE
    return ((M + TILE - 1) // TILE) * n_col_tiles, n_col_tiles


# ----------------------------------------------------------------------------- forward
@njit(inline="always", cache=True)
def _store_forward(A_out, A_outT, b, code, s, k, acc):
    a = activate(code, acc + b[k])
    A_out[s, k] = a
    if A_outT.shape[1] > 0:
        A_outT[k, s] = a


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_forward(A, W, b, code, A_out, A_outT):
    """a^l[s, k] = f(b[k] + Σ_j W[k, j] a^{l-1}[s, j])   (seed 000 eq. 1; NOTATION.md)

    A: (S, n_in) activations a^{l-1} · W: (n_out, n_in) · b: (n_out,) · code: activation f
    A_out: (S, n_out), written · A_outT: (n_out, S), written as A_out's transpose, or (0, 0) to skip.
    Parallel over 4 x 4 tiles of (s, k): each a[s, k] is summed by one thread, in order of j.
    """
    S, n_out = A_out.shape
    n_tiles, n_col_tiles = _n_tiles(S, n_out)
    for t in prange(n_tiles):
        s0, s1, k0, k1 = _tile(t, n_col_tiles, S, n_out)
        if s1 - s0 == TILE and k1 - k0 == TILE:
            c = _dot4x4(A, s0, W, k0)
            for i in range(TILE):
                for q in range(TILE):
                    _store_forward(A_out, A_outT, b, code, s0 + i, k0 + q, c[TILE * i + q])
        else:
            for s in range(s0, s1):
                for k in range(k0, k1):
                    _store_forward(A_out, A_outT, b, code, s, k, _dot(A, s, W, k))


# ----------------------------------------------------------------------------- backward
@njit(inline="always", cache=True)
def _store_backward(D_out, D_outT, A, code, s, j, acc):
    d = derivative(code, A[s, j]) * acc
    D_out[s, j] = d
    D_outT[j, s] = d


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_backward(D, WT, A, code, D_out, D_outT):
    """δ^{l-1}[s, j] = f'(z^{l-1}[s, j]) Σ_k δ^l[s, k] W[k, j]   (seed 000 eq. 16; NOTATION.md)

    In the forward pass a^l = f(b + W a^{l-1}), so ∂z^l_k/∂a^{l-1}_j = W[k, j].
    D: (S, n_out) δ^l · WT: (n_in, n_out) = W^T · A: (S, n_in) a^{l-1}, from which f' is taken
    D_out: (S, n_in) and D_outT: (n_in, S), written. For relu the sum is skipped where z ≤ 0 (seed 002).
    Parallel over 4 x 4 tiles of (s, j), each element summed by one thread in order of k.
    """
    S, n_in = D_out.shape
    n_tiles, n_col_tiles = _n_tiles(S, n_in)
    for t in prange(n_tiles):
        s0, s1, j0, j1 = _tile(t, n_col_tiles, S, n_in)
        if s1 - s0 == TILE and j1 - j0 == TILE and not _all_inactive(A, code, s0, j0):
            c = _dot4x4(D, s0, WT, j0)
            for i in range(TILE):
                for q in range(TILE):
                    _store_backward(D_out, D_outT, A, code, s0 + i, j0 + q, c[TILE * i + q])
        else:
            for s in range(s0, s1):
                for j in range(j0, j1):
                    acc = D[s, 0] * 0
                    if code != RELU or A[s, j] > 0:
                        acc = _dot(D, s, WT, j)
                    _store_backward(D_out, D_outT, A, code, s, j, acc)


@njit(inline="always", cache=True)
def _all_inactive(A, code, s0, j0):
    """True when every relu unit of the tile is off (a ≤ 0), so its whole tile of sums can be skipped."""
    if code != RELU:
        return False
    for i in range(TILE):
        for q in range(TILE):
            if A[s0 + i, j0 + q] > 0:
                return False
    return True


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_backward_rows(D, W, A, code, D_out):
    """δ^{l-1}[s, :] = f'(z^{l-1}[s, :]) ∘ Σ_k δ^l[s, k] W[k, :]   (axpy form of `dense_backward`)

    D: (S, n_out) · W: (n_out, n_in) · A: (S, n_in) a^{l-1} · D_out: (S, n_in), written.
    For small batches: reads W row by row, so no transpose is needed. Parallel over samples s
    when there are several, each row summed in order of k.
    """
    S, n_in = D_out.shape
    n_out = D.shape[1]
    for s in prange(S):
        for j in range(n_in):
            D_out[s, j] = 0
        for k in range(n_out):
            d = D[s, k]
            for j in range(n_in):
                D_out[s, j] += d * W[k, j]
        for j in range(n_in):
            D_out[s, j] *= derivative(code, A[s, j])


# ----------------------------------------------------------------------------- gradient
@njit(inline="always", cache=True)
def _store_gradient(G, alpha, beta, k, j, acc):
    if beta == 0:
        G[k, j] = alpha * acc
    else:
        G[k, j] = beta * G[k, j] + alpha * acc


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_weight_gradient(DT, AT, alpha, beta, G):
    """G[k, j] = β G[k, j] + α Σ_s δ[s, k] a^{l-1}[s, j]   (seed 000 eq. 11; NOTATION.md)

    With α = 1/S, β = 0 this is ∂E/∂W; with α = -ε/S, β = 1 it is the SGD step W ← W - ε ∂E/∂W
    fused into the same pass. DT: (n_out, S) δ^T · AT: (n_in, S) a^{l-1 T} · G: (n_out, n_in).
    Parallel over 4 x 4 tiles of (k, j): no two threads add into one element (llm.c's rule).
    """
    n_out, n_in = G.shape
    alpha_, beta_ = cast_like(G, alpha), cast_like(G, beta)
    n_tiles, n_col_tiles = _n_tiles(n_out, n_in)
    for t in prange(n_tiles):
        k0, k1, j0, j1 = _tile(t, n_col_tiles, n_out, n_in)
        if k1 - k0 == TILE and j1 - j0 == TILE:
            c = _dot4x4(DT, k0, AT, j0)
            for i in range(TILE):
                for q in range(TILE):
                    _store_gradient(G, alpha_, beta_, k0 + i, j0 + q, c[TILE * i + q])
        else:
            for k in range(k0, k1):
                for j in range(j0, j1):
                    _store_gradient(G, alpha_, beta_, k, j, _dot(DT, k, AT, j))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dense_weight_gradient_rows(D, A, alpha, beta, G):
    """G[k, :] = β G[k, :] + α Σ_s δ[s, k] a^{l-1}[s, :]   (axpy form of `dense_weight_gradient`)

    D: (S, n_out) · A: (S, n_in) · G: (n_out, n_in). For small batches: S rank-1 row updates
    added in order of s, with no transpose. Parallel over output units k.
    """
    n_out, n_in = G.shape
    S = D.shape[0]
    alpha_, beta_ = cast_like(G, alpha), cast_like(G, beta)
    for k in prange(n_out):
        if beta_ == 0:
            for j in range(n_in):
                G[k, j] = 0
        elif beta_ != 1:
            for j in range(n_in):
                G[k, j] *= beta_
        for s in range(S):
            d = alpha_ * D[s, k]
            for j in range(n_in):
                G[k, j] += d * A[s, j]


@njit(cache=True)
def bias_gradient(DT, alpha, beta, g):
    """g[k] = β g[k] + α Σ_s δ[s, k]   (seed 000 eq. 12); DT: (n_out, S) · g: (n_out,), summed in order of s."""
    for k in range(g.shape[0]):
        acc = DT[k, 0] * 0
        for s in range(DT.shape[1]):
            acc += DT[k, s]
        _store_vector(g, cast_like(g, alpha), cast_like(g, beta), k, acc)


@njit(cache=True)
def bias_gradient_rows(D, alpha, beta, g):
    """The same as `bias_gradient`, from D: (S, n_out) row-major."""
    for k in range(g.shape[0]):
        acc = D[0, k] * 0
        for s in range(D.shape[0]):
            acc += D[s, k]
        _store_vector(g, cast_like(g, alpha), cast_like(g, beta), k, acc)


@njit(inline="always", cache=True)
def _store_vector(g, alpha, beta, k, acc):
    if beta == 0:
        g[k] = alpha * acc
    else:
        g[k] = beta * g[k] + alpha * acc


@njit(parallel=True, cache=True)
def transpose(X, XT):
    """XT[j, i] = X[i, j]; X: (m, n) · XT: (n, m). Parallel over rows of XT."""
    m, n = X.shape
    for j in prange(n):
        for i in range(m):
            XT[j, i] = X[i, j]
