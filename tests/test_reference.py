"""The readable twins (`fastbp.kernels.reference`) as an oracle: each tiled kernel equals its plain loop
nest on awkward shapes (1, 3, 5, 17, 130 rows and units), and each twin equals the float64 NumPy matrix form.
Then GELU, the activation whose f' needs z: f and f' against the erf formula and central differences,
and the passes that keep z^l and apply f'(z) around the dense kernels."""
import math

import numpy as np
import pytest
from scipy.special import erf

import fastbp
from fastbp import kernels as K
from fastbp.kernels import reference as R
from fastbp.kernels.activations import keep_z_and_activate, multiply_derivative_z
from reference import F, f_prime, output_and_loss

SHAPES = [(1, 1, 1), (1, 3, 5), (3, 5, 17), (5, 17, 3), (17, 130, 5), (130, 17, 130), (130, 130, 3), (5, 130, 130)]
DTYPES = [np.float64, np.float32]


def _tol(dtype, terms=1):
    """float64: rounding; float32: 1e-5 relative, and absolute in proportion to √(number of terms)."""
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5 * math.sqrt(terms))


def _random(rng, shape, dtype):
    return rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.REGISTRY))
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_forward_twin(S, n_in, n_out, activation, dtype):
    rng = np.random.default_rng(S + 7 * n_in + 31 * n_out)
    A, W, b = _random(rng, (S, n_in), dtype), _random(rng, (n_out, n_in), dtype), _random(rng, n_out, dtype)
    code = K.ACTIVATIONS[activation]
    twin, tiled = np.full((S, n_out), np.nan, dtype), np.full((S, n_out), np.nan, dtype)
    R.forward(A, W, b, code, twin)
    K.dense_forward(A, W, b, code, tiled, smooth=True)
    np.testing.assert_allclose(tiled, twin, **_tol(dtype, n_in))
    WT, rows = np.ascontiguousarray(W.T), np.full((S, n_out), np.nan, dtype)  # prediction's form, from W^T
    K.dense_forward_rows(A, WT, b, code, rows, smooth=True)
    np.testing.assert_allclose(rows, twin, **_tol(dtype, n_in))
    want = F[activation][0](A.astype(float) @ W.T.astype(float) + b)
    np.testing.assert_allclose(twin, want, **_tol(dtype, n_in))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(K.REGISTRY))
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_backward_twin(S, n_in, n_out, activation, dtype):
    """The twin takes f' from a, or from z for a `from_z` activation; the tiled kernel takes a, and for a
    `from_z` activation runs as identity with `multiply_derivative_z` after it, as training calls them."""
    rng = np.random.default_rng(S + 5 * n_in + 11 * n_out)
    D, W = _random(rng, (S, n_out), dtype), _random(rng, (n_out, n_in), dtype)
    if activation == "relu":
        D[rng.random(D.shape) < 0.5] = 0  # the zero δ that the row sums skip
    Z = _random(rng, (S, n_in), dtype)  # z^{l-1}
    entry = K.REGISTRY[activation]
    X = Z if entry.from_z else F[activation][0](Z.astype(float)).astype(dtype)  # what f' is written from
    twin, tiled = np.full((S, n_in), np.nan, dtype), np.full((S, n_in), np.nan, dtype)
    R.backward(D, W, X, entry.code, twin)
    if entry.from_z:
        K.dense_backward(D, W, X, K.IDENTITY, tiled)
        multiply_derivative_z(entry.code, Z, tiled)
    else:
        K.dense_backward(D, W, X, entry.code, tiled)
    np.testing.assert_allclose(tiled, twin, **_tol(dtype, n_out))
    prime = F[activation][1](X.astype(float))  # F's f' takes what the kernels take: a, or z for from_z
    np.testing.assert_allclose(twin, (D.astype(float) @ W.astype(float)) * prime, **_tol(dtype, n_out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,n_in,n_out", SHAPES)
def test_gradient_twins(S, n_in, n_out, dtype):
    rng = np.random.default_rng(3 * S + n_in + n_out)
    D, A = _random(rng, (S, n_out), dtype), _random(rng, (S, n_in), dtype)
    G_twin, g_twin = np.full((n_out, n_in), np.nan, dtype), np.full(n_out, np.nan, dtype)
    G, g = np.full((n_out, n_in), np.nan, dtype), np.full(n_out, np.nan, dtype)
    R.weight_gradient(D, A, G_twin)
    R.bias_gradient(D, g_twin)
    K.dense_weight_gradient(D, A, 1.0 / S, 0.0, G)
    K.bias_gradient(D, 1.0 / S, 0.0, g)
    np.testing.assert_allclose(G, G_twin, **_tol(dtype, S))
    np.testing.assert_allclose(g, g_twin, **_tol(dtype, S))
    np.testing.assert_allclose(G_twin, D.T.astype(float) @ A / S, **_tol(dtype, S))
    np.testing.assert_allclose(g_twin, D.sum(axis=0, dtype=float) / S, **_tol(dtype, S))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,n_in,n_out", SHAPES + [(600, 120, 40)])  # the last one fuses in parallel groups
def test_fused_step_and_forward_equal_the_twins_in_turn(S, n_in, n_out, dtype):
    """`dense_update_forward`: W ← W - ε ∂E/∂W from the previous batch, then this batch's forward."""
    rng = np.random.default_rng(S * n_out)
    S_prev, lr = 9, 0.1
    A, W, b = _random(rng, (S, n_in), dtype), _random(rng, (n_out, n_in), dtype), _random(rng, n_out, dtype)
    D_prev, A_prev = _random(rng, (S_prev, n_out), dtype), _random(rng, (S_prev, n_in), dtype)
    G = np.empty_like(W)
    R.weight_gradient(D_prev, A_prev, G)
    W_twin, twin = W - dtype(lr) * G, np.empty((S, n_out), dtype)
    R.forward(A, W_twin, b, K.RELU, twin)
    fused, tiled = W.copy(), np.empty((S, n_out), dtype)
    K.dense_update_forward(D_prev, A_prev, -lr / S_prev, A, fused, b, K.RELU, tiled, smooth=True)
    np.testing.assert_allclose(fused, W_twin, **_tol(dtype, S_prev))
    np.testing.assert_allclose(tiled, twin, **_tol(dtype, n_in))


def _padded(X, fill=np.nan):
    """X in the first columns of a C-contiguous array 16 columns wider, as the workspace pads its rows
    (`training.row_stride`); the padding holds `fill`, which no kernel may read."""
    out = np.full((X.shape[0], X.shape[1] + 16), fill, X.dtype)
    out[:, :X.shape[1]] = X
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S,n_in,n_out", [(1, 3, 5), (17, 130, 5), (130, 17, 130), (600, 120, 40)])
def test_the_dense_kernels_take_padded_rows_bit_for_bit(S, n_in, n_out, dtype):
    """a^{l-1}, a^l, δ^l and δ^{l-1} may have longer rows than W^l's shape says: the kernels read and write only
    the first n columns (their widths come from W), with the same arithmetic, so the results are the same bits."""
    rng = np.random.default_rng(S + n_in)
    A, W, b = _random(rng, (S, n_in), dtype), _random(rng, (n_out, n_in), dtype), _random(rng, n_out, dtype)
    D = _random(rng, (S, n_out), dtype)
    A_out, A_out_padded = np.empty((S, n_out), dtype), _padded(np.empty((S, n_out), dtype))
    K.dense_forward(A, W, b, K.TANH, A_out, smooth=True)
    K.dense_forward(_padded(A), W, b, K.TANH, A_out_padded, smooth=True)
    WT, rows, rows_padded = np.ascontiguousarray(W.T), np.empty((S, n_out), dtype), _padded(np.empty((S, n_out), dtype))
    K.dense_forward_rows(A, WT, b, K.TANH, rows, smooth=True)
    K.dense_forward_rows(_padded(A), _padded(WT), b, K.TANH, rows_padded, smooth=True)  # W^T's rows padded too
    D_in, D_in_padded = np.empty((S, n_in), dtype), _padded(np.empty((S, n_in), dtype))
    K.dense_backward(D, W, A, K.RELU, D_in)
    K.dense_backward(_padded(D), W, _padded(A), K.RELU, D_in_padded)
    G, G_padded = W.copy(), W.copy()
    K.dense_weight_gradient(D, A, -0.1 / S, 1.0, G)
    K.dense_weight_gradient(_padded(D), _padded(A), -0.1 / S, 1.0, G_padded)
    fused, fused_padded = W.copy(), W.copy()
    step, step_padded = np.empty((S, n_out), dtype), _padded(np.empty((S, n_out), dtype))
    K.dense_update_forward(D, A, -0.1 / S, A, fused, b, K.RELU, step, smooth=True)
    K.dense_update_forward(_padded(D), _padded(A), -0.1 / S, _padded(A), fused_padded, b, K.RELU, step_padded,
                           smooth=True)
    for plain, padded in [(A_out, A_out_padded), (rows, rows_padded), (D_in, D_in_padded), (step, step_padded)]:
        np.testing.assert_array_equal(padded[:, :plain.shape[1]], plain)
        assert np.isnan(padded[:, plain.shape[1]:]).all()  # the padding is never written
    np.testing.assert_array_equal(G_padded, G)
    np.testing.assert_array_equal(fused_padded, fused)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", list(K.OUTPUTS))
@pytest.mark.parametrize("S,n", [(1, 1), (3, 5), (17, 3), (130, 17)])
def test_output_delta_twin(S, n, output, dtype):
    rng = np.random.default_rng(S * n)
    Z = (4 * rng.normal(size=(S, n))).astype(dtype)
    T = {"softmax": np.eye(n)[rng.integers(0, n, S)], "sigmoid": rng.integers(0, 2, (S, n)),
         "identity": rng.normal(size=(S, n)), "poisson": rng.poisson(2.0, (S, n))}[output].astype(dtype)
    code = K.OUTPUTS[output]
    twin = np.empty_like(Z), np.empty_like(Z), np.empty(S, dtype)
    fast = np.empty_like(Z), np.empty_like(Z), np.empty(S, dtype)
    R.output_delta(Z, T, code, *twin)
    K.output_loss(Z, T, code, *fast)
    for got, want in zip(fast, twin):
        np.testing.assert_allclose(got, want, **_tol(dtype, n))
    want_A, want_losses = output_and_loss(Z.astype(float), T.astype(float), output)
    np.testing.assert_allclose(twin[0], want_A, **_tol(dtype, n))
    np.testing.assert_allclose(twin[1], want_A - T, **_tol(dtype, n))
    np.testing.assert_allclose(twin[2], want_losses, **_tol(dtype, n))


# ----------------------------------------------------------------------------- GELU: f' needs z
Z_VALUES = np.concatenate([np.linspace(-8, 8, 161), [-30.0, -1e-3, 0.0, 1e-3, 30.0]])


def _gelu_table(dtype):
    """(f(z), f'(z)) of the compiled entry, through the twins: z[s, 0] = Σ_j 1 · z[s, j] over one input."""
    Z = Z_VALUES.astype(dtype).reshape(-1, 1)
    A = np.empty_like(Z)
    R.forward(Z, np.ones((1, 1), dtype), np.zeros(1, dtype), K.GELU, A)
    D = np.empty_like(Z)
    R.backward(np.ones_like(Z), np.ones((1, 1), dtype), Z, K.GELU, D)
    return A[:, 0], D[:, 0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_is_pytorchs_exact_form(dtype):
    """torch.nn.functional.gelu's default: z Φ(z) = ½ z (1 + erf(z/√2)); f' = Φ(z) + z φ(z)."""
    f, prime = _gelu_table(dtype)
    z = Z_VALUES
    # float32: erf within an ulp, and 1 + erf(z/√2) cancels for z < 0 (as in PyTorch's float32 GELU)
    tol = dict(rtol=1e-14, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f, 0.5 * z * (1 + erf(z / np.sqrt(2))), **tol)
    np.testing.assert_allclose(prime, 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi),
                               **tol)
    assert f.dtype == dtype and prime.dtype == dtype
    at = {value: Z_VALUES == value for value in (0.0, 30.0, -30.0)}
    assert (f[at[0.0]] == 0).all() and (prime[at[0.0]] == 0.5).all()
    assert f[at[30.0]] == 30 and f[at[-30.0]] == 0 and prime[at[30.0]] == 1


def test_gelu_derivative_matches_central_differences():
    _, prime = _gelu_table(np.float64)
    h = 1e-6
    up, down = np.empty((Z_VALUES.size, 1)), np.empty((Z_VALUES.size, 1))
    R.forward((Z_VALUES + h).reshape(-1, 1), np.ones((1, 1)), np.zeros(1), K.GELU, up)
    R.forward((Z_VALUES - h).reshape(-1, 1), np.ones((1, 1)), np.zeros(1), K.GELU, down)
    np.testing.assert_allclose(prime, (up - down)[:, 0] / (2 * h), rtol=1e-7, atol=1e-9)
    assert prime.min() < 0  # GELU is not monotonic: f' is not a function of a, hence `from_z`


@pytest.mark.parametrize("dtype", DTYPES)
def test_keep_z_and_activate(dtype):
    rng = np.random.default_rng(0)
    A = _random(rng, (7, 5), dtype)
    Z, A_out = np.full_like(A, np.nan), A.copy()
    keep_z_and_activate(K.GELU, A_out, Z)
    np.testing.assert_array_equal(Z, A)
    np.testing.assert_allclose(A_out, F["gelu"][0](A.astype(float)), **_tol(dtype))
    D = np.ones_like(A)
    multiply_derivative_z(K.GELU, Z, D)
    np.testing.assert_allclose(D, f_prime("gelu", A.astype(float)), **_tol(dtype))


def test_gelu_model_keeps_z_and_trains():
    """A GELU network: gradients equal the NumPy reference (f' from the z^l the forward kept), and plain SGD
    (the step fused into the next forward) and Adam both lower the loss."""
    from reference import loss_and_grads

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    model = fastbp.MLP([6, 9, 7, 3], activation=["gelu", "relu"], dtype=np.float64, seed=2)
    loss, dW, db = model.loss_and_grads(X, y)
    want_loss, want_dW, want_db = loss_and_grads(model.weights, model.biases, model.activations, "softmax", X,
                                                 np.eye(3)[y])
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for got, want in zip(dW + db, want_dW + want_db):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for optimizer in (fastbp.SGD(lr=0.1), fastbp.Adam(lr=0.01)):
        fresh = fastbp.MLP([6, 9, 7, 3], activation="gelu", dtype=np.float32, seed=2)
        history = fresh.fit(X, y, epochs=20, batch_size=8, optimizer=optimizer, verbose=0)
        assert history["loss"][-1] < 0.8 * history["loss"][0], optimizer


def test_initialisation_follows_the_registry():
    """He normal for relu-like layers (relu, GELU), Glorot uniform for the others and the output layer."""
    model = fastbp.MLP([5, 8, 6, 4, 3], activation=["gelu", "tanh", "relu"], dtype=np.float64, seed=4)
    rng = np.random.default_rng(4)
    for W, init in zip(model.weights, [K.he_normal, K.glorot_uniform, K.he_normal, K.glorot_uniform]):
        np.testing.assert_array_equal(W, init(rng, W.shape))
    assert K.REGISTRY["gelu"].init is K.he_normal and K.REGISTRY["sigmoid"].init is K.glorot_uniform
