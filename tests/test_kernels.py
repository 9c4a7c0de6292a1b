"""Each kernel against the float64 NumPy matrix form, on shapes that leave remainders after the
4 x 4 and 3 x 4 tiles (sizes 1..9) and in both dtypes."""
import numpy as np
import pytest
from numba import njit, types

from fastbp import kernels as K
from reference import F, output_and_loss

# the activations whose f' the dense kernels apply from a (the registry's others, GELU: tests/test_reference.py)
CODES = {name: entry.code for name, entry in K.REGISTRY.items() if not entry.from_z}
# (37, 33, 10) and (15, 6, 23) leave 2 and 7 terms after the 8-term tiles of the row sums: the backward takes
# them in pairs, the last one alone; (4, 4, 4) and (5, 9, 7) have 4 and 7 terms, all in the pairs and one alone
SHAPES = [(1, 1, 1), (1, 5, 3), (3, 4, 4), (4, 4, 4), (5, 9, 7), (8, 3, 12), (9, 17, 5), (37, 33, 10), (15, 6, 23),
          (13, 20, 150), (70, 40, 150)]  # 150 units: 3 groups of forward tiles, one partial; serial, then parallel
DTYPES = [np.float64, np.float32]


def _tol(dtype, terms=256):
    """Tolerances against float64 for sums of up to `terms` terms: float32 rounding errors grow about
    as the square root of the number of terms (a random walk), so longer sums get proportionally more."""
    scale = max(1.0, terms / 256) ** 0.5
    return dict(rtol=1e-12 * scale, atol=1e-12 * scale) if dtype == np.float64 else dict(rtol=2e-5 * scale, atol=2e-5 * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.ACTIVATIONS))
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_dense_forward(S, n_in, n_out, activation, dtype):
    rng = np.random.default_rng(S * n_in * n_out)
    A, W, b = (rng.normal(size=s).astype(dtype) for s in [(S, n_in), (n_out, n_in), (n_out,)])
    A_out = np.full((S, n_out), np.nan, dtype)
    K.dense_forward(A, W, b, K.ACTIVATIONS[activation], A_out, smooth=True)
    want = F[activation][0](A.astype(float) @ W.T.astype(float) + b)
    np.testing.assert_allclose(A_out, want, **_tol(dtype))


# widths about the row sums' panels (64 float32 or 32 float64 columns on AVX-512, 16 or 8 on AVX2): short of one,
# one with columns past it, several; 7 and 13 rows leave rows past the full tiles of 4
ROW_SHAPES = [(7, 33, 70), (13, 20, 150), (4, 9, 64), (64, 784, 256), (5, 300, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.ACTIVATIONS))
@pytest.mark.parametrize("S,n_in,n_out", SHAPES + ROW_SHAPES)
def test_dense_forward_rows(S, n_in, n_out, activation, dtype):
    """The forward from the rows of W^T (prediction's, eq. 1, 2) against the matrix form; and each row's result,
    bit for bit, is that of the row alone: every element is b plus the terms in order of j, each a fused
    multiply-add, whether its tile goes through the register panels or not."""
    rng = np.random.default_rng(S * n_in + n_out)
    A, W, b = (rng.normal(size=s).astype(dtype) for s in [(S, n_in), (n_out, n_in), (n_out,)])
    WT = np.ascontiguousarray(W.T)
    A_out = np.full((S, n_out), np.nan, dtype)
    K.dense_forward_rows(A, WT, b, K.ACTIVATIONS[activation], A_out, smooth=True)
    want = F[activation][0](A.astype(float) @ W.T.astype(float) + b)
    # one running sum per element, not the dot products' 16 lanes: its rounding grows faster with the terms
    np.testing.assert_allclose(A_out, want, **_tol(dtype, 4 * n_in))
    for s in range(S):
        alone = np.empty((1, n_out), dtype)
        K.dense_forward_rows(A[s:s + 1], WT, b, K.ACTIVATIONS[activation], alone, smooth=True)
        np.testing.assert_array_equal(alone[0], A_out[s])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile,samples", [(K.dense._dot4x4, 4), (K.dense._dot3x4, 3)])
def test_both_forward_register_tiles(tile, samples, dtype):
    """The forward runs one of the two tiles, by the CPU's register count (`SAMPLE_TILE`): each is
    checked here, whichever this CPU runs, against the float64 dot products (eq. 1)."""
    rng = np.random.default_rng(samples)
    X, Y = rng.normal(size=(samples + 3, 37)).astype(dtype), rng.normal(size=(9, 37)).astype(dtype)
    sums = np.array(tile(X, 2, Y, 5)).reshape(samples, 4)
    np.testing.assert_allclose(sums, X[2:2 + samples].astype(float) @ Y[5:9].T.astype(float), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(CODES))
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_dense_backward(S, n_in, n_out, activation, dtype):
    rng = np.random.default_rng(S + n_in + n_out)
    D, W = rng.normal(size=(S, n_out)).astype(dtype), rng.normal(size=(n_out, n_in)).astype(dtype)
    if activation == "relu":  # δ^l of a relu layer is 0 where its units were off: those terms are skipped
        D[rng.random(D.shape) < 0.5] = 0
    A = F[activation][0](rng.normal(size=(S, n_in))).astype(dtype)  # a^{l-1} = f(z^{l-1})
    want = (D.astype(float) @ W.astype(float)) * F[activation][1](A.astype(float))
    D_out = np.full((S, n_in), np.nan, dtype)
    K.dense_backward(D, W, A, CODES[activation], D_out)
    np.testing.assert_allclose(D_out, want, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
# α = 1: the register panels (`dense._rows_panel`), as training calls the kernel (with α folded into δ)
@pytest.mark.parametrize("alpha,beta", [(0.25, 0.0), (-0.1, 1.0), (0.5, 0.75), (1.0, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_weight_and_bias_gradient(S, n_in, n_out, alpha, beta, dtype):
    rng = np.random.default_rng(3 * S + n_in)
    D, A = rng.normal(size=(S, n_out)).astype(dtype), rng.normal(size=(S, n_in)).astype(dtype)
    G, g = rng.normal(size=(n_out, n_in)).astype(dtype), rng.normal(size=n_out).astype(dtype)
    if beta == 0:  # β = 0 must ignore whatever the output held, NaN included
        G[...], g[...] = np.nan, np.nan
    want_G = (beta * G.astype(float) if beta else 0) + alpha * D.T.astype(float) @ A
    want_g = (beta * g.astype(float) if beta else 0) + alpha * D.sum(axis=0, dtype=float)
    K.dense_weight_gradient(D, A, alpha, beta, G)
    K.bias_gradient(D, alpha, beta, g)
    np.testing.assert_allclose(G, want_G, **_tol(dtype))
    np.testing.assert_allclose(g, want_g, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("folded", [False, True], ids=["alpha", "alpha-in-delta"])
@pytest.mark.parametrize("S_prev", [0, 1, 9, 300])  # 300: the step's terms in two blocks
@pytest.mark.parametrize("S,n_in,n_out", SHAPES + [(600, 120, 10), (300, 60, 30), (40, 1100, 40), (32, 784, 256)])
# parallel, few unit tiles; rows of W too wide for groups of GROUP tiles; the reference job's first layer
def test_dense_update_forward(S, n_in, n_out, S_prev, folded, dtype):
    """The previous batch's SGD step on W, then this batch's forward: against the matrix form, and
    bit for bit against `dense_weight_gradient` then `dense_forward`. folded: α multiplied into δ' and the
    kernels called with α = 1, as training calls them (the register panels of `dense._rows_panel`)."""
    rng = np.random.default_rng(S * n_out + S_prev)
    A, W, b = (rng.normal(size=s).astype(dtype) for s in [(S, n_in), (n_out, n_in), (n_out,)])
    D_prev, A_prev = rng.normal(size=(S_prev, n_out)).astype(dtype), rng.normal(size=(S_prev, n_in)).astype(dtype)
    D_prev[rng.random(D_prev.shape) < 0.5] = 0  # relu: the skipped terms
    alpha = -0.1 / max(S_prev, 1)
    want_W = W.astype(float) + alpha * D_prev.T.astype(float) @ A_prev
    want = F["relu"][0](A.astype(float) @ want_W.T + b)
    if folded:
        D_prev, alpha = (alpha * D_prev).astype(dtype), 1.0
    fused, A_out = W.copy(), np.full((S, n_out), np.nan, dtype)
    K.dense_update_forward(D_prev, A_prev, alpha, A, fused, b, K.RELU, A_out, smooth=True)
    np.testing.assert_allclose(fused, want_W, **_tol(dtype, S_prev))
    np.testing.assert_allclose(A_out, want, **_tol(dtype, n_in))
    apart, apart_out = W.copy(), np.empty((S, n_out), dtype)
    K.dense_weight_gradient(D_prev, A_prev, alpha, 1.0, apart)
    K.dense_forward(A, apart, b, K.RELU, apart_out, smooth=True)
    np.testing.assert_array_equal(fused, apart)
    np.testing.assert_array_equal(A_out, apart_out)


# rows of 600 columns come in column blocks where MAX_COLUMNS is 256 (AVX-512), rows of 2,100 on every CPU, and
# the 9-sample backward's rows of 1,100 for MIN_TILES; 300 terms of float64 (and 1,100 of float32 in the
# backward) in two or more term blocks (PANEL_BYTES); 1,100 and 2,100 inputs make forward groups smaller than GROUP.
# The weight gradient takes whole rows; 10 x 600 and 20 x 2,100 give it fewer tiles of rows than groups
BLOCKED_SHAPES = [(300, 600, 300), (37, 2100, 70), (9, 1100, 1100), (64, 600, 10), (40, 2100, 20)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,n_in,n_out", BLOCKED_SHAPES)
def test_cache_blocks_cover_every_term_once(S, n_in, n_out, dtype):
    """Forward, backward and weight gradient on shapes whose row sums run in column and term blocks."""
    rng = np.random.default_rng(S + n_in)
    A, W, b = (rng.normal(size=s).astype(dtype) for s in [(S, n_in), (n_out, n_in), (n_out,)])
    D = rng.normal(size=(S, n_out)).astype(dtype)
    D[rng.random(D.shape) < 0.3] = 0
    A_out, D_out, G = np.empty((S, n_out), dtype), np.empty((S, n_in), dtype), np.full((n_out, n_in), np.nan, dtype)
    K.dense_forward(A, W, b, K.TANH, A_out, smooth=True)
    K.dense_backward(D, W, A, K.IDENTITY, D_out)
    K.dense_weight_gradient(D, A, 0.5, 0.0, G)
    G_panels = np.full((n_out, n_in), np.nan, dtype)
    K.dense_weight_gradient(D, A, 1.0, 0.0, G_panels)  # α = 1: through the register panels
    tol = _tol(dtype) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(G_panels, D.T.astype(float) @ A.astype(float), **tol)
    np.testing.assert_allclose(A_out, np.tanh(A.astype(float) @ W.T.astype(float) + b), **tol)
    np.testing.assert_allclose(D_out, D.astype(float) @ W.astype(float), **tol)
    np.testing.assert_allclose(G, 0.5 * D.T.astype(float) @ A.astype(float), **tol)


@pytest.mark.parametrize("S,n_in,n_out", [(1, 700, 3), (2, 300, 5), (64, 1000, 2), (5, 2, 9)])
def test_row_sums_split_into_column_blocks_give_the_same_bits(S, n_in, n_out):
    """Few row tiles → the kernels split columns across tasks; each element must not change."""
    rng = np.random.default_rng(0)
    D, W = rng.normal(size=(S, n_out)), rng.normal(size=(n_out, n_in))
    D_out = np.empty((S, n_in))
    K.dense_backward(D, W, np.ones((S, n_in)), K.IDENTITY, D_out)
    for s in range(S):  # one sample at a time: a single task per 128 columns
        row = np.empty((1, n_in))
        K.dense_backward(D[s:s + 1], W, np.ones((1, n_in)), K.IDENTITY, row)
        if S < 4:  # the same code path (rows beyond a full tile) → the same bits
            np.testing.assert_array_equal(row[0], D_out[s])
        np.testing.assert_allclose(row[0], D_out[s], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", list(K.OUTPUTS))
@pytest.mark.parametrize("S,n", [(1, 1), (1, 10), (7, 3), (37, 5)])
def test_output_loss(S, n, output, dtype):
    rng = np.random.default_rng(S * n)
    Z = (3 * rng.normal(size=(S, n))).astype(dtype)
    T = {"softmax": np.eye(n)[rng.integers(0, n, S)], "sigmoid": rng.integers(0, 2, (S, n)),
         "identity": rng.normal(size=(S, n)), "poisson": rng.poisson(2.0, (S, n))}[output].astype(dtype)
    A_out, D, losses = np.empty_like(Z), np.empty_like(Z), np.empty(S, dtype)
    loss = K.output_loss(Z, T, K.OUTPUTS[output], A_out, D, losses)
    want_A, want_losses = output_and_loss(Z.astype(float), T.astype(float), output)
    tol = _tol(dtype)
    np.testing.assert_allclose(A_out, want_A, **tol)
    np.testing.assert_allclose(losses, want_losses, **tol)
    assert loss == pytest.approx(want_losses.mean(), rel=tol["rtol"], abs=tol["atol"])
    np.testing.assert_allclose(D, want_A - T, **tol)
    probs = np.empty_like(Z)
    K.output_activation(Z, K.OUTPUTS[output], probs)
    np.testing.assert_array_equal(probs, A_out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_sigmoid_are_finite_at_extreme_logits(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1000.0, 1.0, -50.0]], dtype)
    T = np.eye(3, dtype=dtype)[[1, 0, 2]]
    for code in (K.SOFTMAX_CE, K.SIGMOID_BCE):
        A_out, D, losses = np.empty_like(Z), np.empty_like(Z), np.empty(3, dtype)
        loss = K.output_loss(Z, T, code, A_out, D, losses)
        assert np.isfinite(loss) and np.isfinite(A_out).all() and np.isfinite(D).all()
        assert (losses >= 0).all()
    # softmax/CE: logit gap 2e4 for the wrong class → loss 2e4; equal logits → log 3
    K.output_loss(Z, T, K.SOFTMAX_CE, A_out, D, losses)
    # (float32 spacing at 1e4 is 1e-3, so log 3 is recovered to about that absolute precision)
    np.testing.assert_allclose(losses[:2], [2e4, np.log(3)], rtol=1e-6 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_saturate_without_overflow(dtype):
    z = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype)
    for name in ("tanh", "sigmoid"):
        out = np.empty_like(z)
        with np.errstate(all="raise"):
            # z_k = Σ_j diag(z)_kj · 1 = z_k
            K.dense_forward(np.ones((1, 5), dtype), np.diag(z[0]), np.zeros(5, dtype), CODES[name], out, smooth=True)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, F[name][0](z.astype(float)), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_table_computes_in_the_arrays_dtype(dtype):
    """f and f' of a float32 value are float32: a bare 1 in `1 - a * a` once made Numba compute the
    tanh and sigmoid derivatives (and the sigmoid) in float64, with conversions in every loop."""
    @njit
    def table(a):
        return (K.activate(K.TANH, a), K.activate(K.SIGMOID, a), K.derivative(K.TANH, a),
                K.derivative(K.SIGMOID, a), K.derivative(K.RELU, a))

    values = table(dtype(0.25))
    assert table.nopython_signatures[0].return_type == types.UniTuple(types.float32 if dtype == np.float32
                                                                      else types.float64, 5)
    np.testing.assert_allclose(values, [np.tanh(0.25), 1 / (1 + np.exp(-0.25)), 1 - 0.25 ** 2, 0.25 * 0.75, 1],
                               rtol=1e-6)


@pytest.mark.parametrize("sizes,strides", [([7, 5, 3], [7, 5, 3]), ([512, 1024, 6, 512], [528, 1040, 6, 512])])
def test_workspace_views_do_not_overlap_and_start_on_cache_lines(sizes, strides):
    """Rows of a multiple of 512 elements are 16 longer, except the output layer's (`row_stride`)."""
    sizes, B, L = np.array(sizes, np.int64), 4, len(sizes) - 1
    assert [K.row_stride(sizes, l) for l in range(L + 1)] == strides
    offsets = K.workspace_offsets(sizes, B)
    # (start, size) of a^l and δ^l for l = 0..L, z^l of the hidden layers, then of the targets and the per-sample losses
    buffers = [(offsets[l, col], B * strides[l]) for l in range(L + 1) for col in range(2)]
    buffers += [(offsets[l, 2], B * strides[l]) for l in range(1, L)]
    buffers += [(offsets[L + 1, 0], B * sizes[L]), (offsets[L + 1, 1], B)]
    buffers.sort()
    assert all(start + size <= following for (start, size), (following, _) in zip(buffers, buffers[1:]))
    assert buffers[-1][0] + buffers[-1][1] <= offsets[L + 1, 2]  # the total size
    assert all(start % K.LINE == 0 for start, _ in buffers) and offsets[L + 1, 2] % K.LINE == 0
    params = K.param_offsets(sizes)
    assert params[-1, 0] == sum(sizes[l] * sizes[l - 1] + sizes[l] for l in range(1, L + 1))


@pytest.mark.parametrize("sizes,n_packs", [([7, 5, 3], 0), ([20, 600, 500, 3], 4), ([30, 300, 2048, 1000, 3], 16)])
def test_a_workspace_ends_with_the_packs_of_its_biggest_backward(sizes, n_packs):
    """After the z^l buffers, the packs that `dense_backward` of the biggest W^l, l ≥ 2, takes (none for most)."""
    sizes, B, L = np.array(sizes, np.int64), 4, len(sizes) - 1
    offsets = K.workspace_offsets(sizes, B)
    z_end = offsets[L - 1, 2] + B * K.row_stride(sizes, L - 1)
    z_end += (-z_end) % K.LINE
    assert max(K.backward_packs(sizes[l], sizes[l - 1]) for l in range(2, L + 1)) == n_packs
    assert offsets[L + 1, 2] - z_end == n_packs * K.PACK_ELEMENTS


@pytest.mark.parametrize("index,in_place", [(np.arange(3, 9), True), (np.array([4]), True),
                                            (np.array([5, 2, 7]), False), (np.array([3, 4, 6]), False)])
def test_batch_rows_reads_a_block_in_place_and_gathers_the_rest(index, in_place):
    rng = np.random.default_rng(0)
    sizes = np.array([7, 5, 3], np.int64)
    X, T = rng.normal(size=(10, 7)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    work = np.zeros(K.workspace_offsets(sizes, 8)[-1, 2], np.float32)
    A0, Tb = K.batch_rows(X, T, index, work, K.workspace_offsets(sizes, len(index)), sizes)
    np.testing.assert_array_equal(A0, X[index])
    np.testing.assert_array_equal(Tb, T[index])
    assert np.shares_memory(A0, X) == in_place and np.shares_memory(Tb, T) == in_place
    assert np.shares_memory(A0, work) != in_place


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size,shuffled,widths", [(1, False, (20, 150)), (7, True, (20, 150)),
                                                        (64, False, (20, 150)), (64, True, (20, 150)),
                                                        (7, True, (512, 512)),  # padded rows (`row_stride`)
                                                        (16, True, (512, 600))])  # W^2 past PACK_MIN_ELEMENTS
def test_train_epoch_takes_the_steps_of_forward_backward(batch_size, shuffled, widths, dtype):
    """`train_epoch` defers each batch's step on W to the next batch's forward; the weights after the
    epoch must be those of one eager `forward_backward` SGD step per batch, bit for bit."""
    rng = np.random.default_rng(batch_size)
    sizes, codes = np.array([*widths, 9, 4], np.int64), np.array([K.RELU, K.TANH, K.SOFTMAX_CE], np.int64)
    N = 150  # not a multiple of the batch size: the last batch is smaller
    X, T = rng.normal(size=(N, widths[0])).astype(dtype), np.eye(4, dtype=dtype)[rng.integers(0, 4, N)]
    order = rng.permutation(N) if shuffled else np.arange(N)
    poff, woff = K.param_offsets(sizes), K.workspace_offsets(sizes, batch_size)
    eager = (0.3 * rng.normal(size=poff[-1, 0])).astype(dtype)
    lazy = eager.copy()
    loss, correct = K.train_epoch(X, T, order, batch_size, sizes, codes, lazy, np.empty(2 * woff[-1, 2], dtype), 0.1,
                                  smooth=True)
    work, want_loss, want_correct = np.empty(woff[-1, 2], dtype), 0.0, 0
    for start in range(0, N, batch_size):
        index = order[start:start + batch_size]
        S = len(index)
        step_loss, step_correct = K.forward_backward(sizes, codes, eager, poff, X[index], T[index], work, woff, S,
                                                     -0.1 / S, 1.0, eager, smooth=True)
        want_loss, want_correct = want_loss + step_loss * S, want_correct + step_correct
    np.testing.assert_array_equal(lazy, eager)
    assert loss == want_loss and correct == want_correct


def test_smooth_flag_is_none_only_for_relu_and_identity_layers():
    """`smooth_flag` reads the hidden layers' codes only: the last code is the output's."""
    assert K.smooth_flag(np.array([K.RELU, K.IDENTITY, K.SOFTMAX_CE])) is None
    assert K.smooth_flag(np.array([K.SIGMOID_BCE])) is None  # no hidden layer
    for other in (K.TANH, K.SIGMOID, K.GELU):
        assert K.smooth_flag(np.array([K.RELU, other, K.IDENTITY_SE])) is True


@pytest.mark.parametrize("batch_size", [1, 64])
def test_a_relu_network_trains_the_same_bits_without_the_other_activations_code(batch_size):
    """smooth=None (what fit passes for relu and identity layers) leaves out only code that such a network never
    runs: the epoch and the predictions are those of the kernels compiled with every activation, bit for bit."""
    rng = np.random.default_rng(batch_size)
    sizes, codes = np.array([30, 64, 40, 5], np.int64), np.array([K.RELU, K.IDENTITY, K.SOFTMAX_CE], np.int64)
    X, T = rng.normal(size=(150, 30)).astype(np.float32), np.eye(5, dtype=np.float32)[rng.integers(0, 5, 150)]
    woff = K.workspace_offsets(sizes, batch_size)
    start = (0.3 * rng.normal(size=K.param_offsets(sizes)[-1, 0])).astype(np.float32)
    order = rng.permutation(150)
    results = []
    for smooth in (None, True):
        params, work = start.copy(), np.empty(2 * woff[-1, 2], np.float32)
        loss, correct = K.train_epoch(X, T, order, batch_size, sizes, codes, params, work, 0.1, None, None, 0, 0,
                                      smooth)
        rows = K.predict_rows(150, 2)
        out = np.empty((150, 5), np.float32)
        K.predict_outputs_rows(X, sizes, codes, params,
                               np.empty((2, K.workspace_offsets(sizes, rows)[-1, 2]), np.float32),
                               K.transpose_weights(sizes, params, np.empty(K.transposed_size(sizes), np.float32)), out,
                               smooth)  # layer 1 from W^T
        results.append((params, loss, correct, out))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


_COMPILE_FORWARD = """
import numpy as np, fastbp
from fastbp import kernels as K
from fastbp.kernels.activations import activate_block, keep_z_and_activate
X = np.ones((5, 4), np.float32)
for activation in ("relu", "gelu"):
    m = fastbp.MLP([4, 8, 3], activation=activation, seed=0)
    woff = K.workspace_offsets(m._sizes, 5)
    K.forward(m._sizes, m._codes, m._params, K.param_offsets(m._sizes), X, np.empty(woff[-1, 2], np.float32), woff,
              5, None, np.int64(0), m._smooth)
    print(len(activate_block.signatures), len(keep_z_and_activate.signatures))
"""


def test_a_relu_network_compiles_no_code_for_the_other_activations(tmp_path):
    """The forward of a relu network, with the `smooth_flag` a fit passes, compiles neither of the kernels that
    apply tanh, sigmoid or GELU; a GELU network's compiles both. In a new process with an empty cache, so that
    nothing is loaded ready-made."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "FASTBP_COMPILE_WORKER": "0"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_FORWARD], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    relu, gelu = (line.split() for line in run.stdout.strip().splitlines())
    assert relu == ["0", "0"]
    assert all(int(n) > 0 for n in gelu)


def test_packs_flag_is_true_only_for_a_network_whose_backward_packs():
    """`packs_flag`: None (no packing code compiled) unless a W of layers 2..L is past PACK_MIN_ELEMENTS; layer 1
    has no backward, so the input width never counts."""
    assert K.packs_flag([784, 256, 128, 10]) is None
    assert K.packs_flag([100_000, 256, 10]) is None
    assert K.packs_flag([20, 600, 500, 3]) is True and K.backward_packs(500, 600) > 0
    assert K.packs_flag(np.array([8, 512, 1024, 3])) is True
    assert K.packs_flag([8, 3]) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("S,n_in,n_out", [(37, 2050, 136), (64, 1024, 304), (5, 1024, 264)])
def test_a_big_backward_packs_blocks_of_W_and_keeps_its_sums(S, n_in, n_out, activation, dtype):
    """A W past PACK_MIN_ELEMENTS is cut into column blocks whose blocks of rows are copied into packs
    (`dense.backward_packs`) before the row sums read them: eq. 15 against float64 NumPy, packed and not
    (packs=None), and the same bits as the unpacked kernel on column slices of W too small to be packed."""
    assert K.backward_packs(n_out, n_in) > 0 and K.backward_packs(n_out, 512) == 0
    rng = np.random.default_rng(S + n_in)
    D, W = rng.normal(size=(S, n_out)).astype(dtype), rng.normal(size=(n_out, n_in)).astype(dtype)
    A = F[activation][0](rng.normal(size=(S, n_in))).astype(dtype)
    D_out = np.full((S, n_in), np.nan, dtype)
    K.dense_backward(D, W, A, CODES[activation], D_out)  # no packs: every task reads W in place
    want = (D.astype(float) @ W.astype(float)) * F[activation][1](A.astype(float))
    np.testing.assert_allclose(D_out, want, **_tol(dtype, terms=n_out))
    packs = np.full((K.backward_packs(n_out, n_in), K.PACK_ELEMENTS), np.nan, dtype)
    packed = np.full((S, n_in), np.nan, dtype)
    K.dense_backward(D, W, A, CODES[activation], packed, packs)
    np.testing.assert_allclose(packed, want, **_tol(dtype, terms=n_out))
    for j0 in range(0, n_in, 512):
        j1 = min(j0 + 512, n_in)
        part = np.empty((S, j1 - j0), dtype)
        K.dense_backward(D, np.ascontiguousarray(W[:, j0:j1]), np.ascontiguousarray(A[:, j0:j1]),
                         CODES[activation], part)
        np.testing.assert_array_equal(packed[:, j0:j1], part)
    with pytest.raises(ValueError, match="packs"):
        K.dense_backward(D, W, A, CODES[activation], packed, packs[:1])
    # the weight gradient of the same layer: rows of 4 KB or more take their terms in smaller blocks (`_term_block`)
    G = np.full((n_out, n_in), np.nan, dtype)
    K.dense_weight_gradient(D, A, 1.0, 0.0, G)
    np.testing.assert_allclose(G, D.T.astype(float) @ A.astype(float), **_tol(dtype, terms=S))
