"""Property-based tests: every kernel against the float64 NumPy matrix form, on shapes drawn from
1..13 — sizes below, at and past the 4-row register tiles and the 8-term chunks, so every remainder
path runs — and on wide layers that the row-sum kernels split into column blocks, in both dtypes,
with and without the zero δ that relu leaves (the kernels skip those terms).
tests/test_kernels.py checks a fixed list of shapes; here Hypothesis picks them, and shrinks a
failure to the smallest shape that shows it."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbp import kernels as K
from reference import F, output_and_loss

# the activations whose f' the dense kernels apply from a (the registry's others, GELU: tests/test_reference.py)
CODES = {name: entry.code for name, entry in K.REGISTRY.items() if not entry.from_z}

# The first example of each kernel and dtype compiles it (or loads it from the cache): no deadline.
# derandomize: the same examples on every CI run, so a red run can always be reproduced.
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None)

sizes = st.integers(1, 13)
dtypes = st.sampled_from([np.float32, np.float64])
activations = st.sampled_from(list(CODES))
seeds = st.integers(0, 2**32 - 1)
# α, β as the callers use them: gradients (1/S, 0), a fused SGD step (-ε/S, 1), and a general pair
alpha_beta = st.sampled_from([(1.0, 0.0), (0.25, 0.0), (-0.05, 1.0), (0.5, 0.75)])
sparsity = st.sampled_from([0.0, 0.5])
# column counts around the row-sum kernels' minimum block width of 128 and its multiples
wide = st.sampled_from([127, 128, 129, 131, 255, 257, 300])


def _tol(dtype, scale=1.0):
    """float64 kernels agree with the reference to rounding; float32 to a few ulps of the sum's size."""
    tol = 1e-12 if dtype == np.float64 else 3e-5
    return dict(rtol=tol, atol=tol * scale)


def _random(rng, shape, dtype, scale=1.0):
    return (scale * rng.normal(size=shape)).astype(dtype)


def _unfilled(shape, dtype):
    """An output buffer full of NaN, so an element the kernel forgets to write fails the comparison."""
    return np.full(shape, np.nan, dtype)


def _sparse(rng, X, zeros):
    """X with a fraction `zeros` of its entries set to 0, as relu leaves its δ: the kernels skip those terms."""
    X[rng.random(X.shape) < zeros] = 0
    return X


@PROPERTY
@given(S=sizes, n_in=sizes, n_out=sizes, activation=activations, dtype=dtypes, seed=seeds)
def test_dense_forward(S, n_in, n_out, activation, dtype, seed):
    rng = np.random.default_rng(seed)
    A, W, b = _random(rng, (S, n_in), dtype), _random(rng, (n_out, n_in), dtype), _random(rng, n_out, dtype)
    A_out = _unfilled((S, n_out), dtype)
    K.dense_forward(A, W, b, CODES[activation], A_out, smooth=True)
    want = F[activation][0](A.astype(float) @ W.T.astype(float) + b)
    np.testing.assert_allclose(A_out, want, **_tol(dtype, np.sqrt(n_in)))


def _check_dense_backward(S, n_in, n_out, activation, dtype, seed, zeros):
    rng = np.random.default_rng(seed)
    D, W = _sparse(rng, _random(rng, (S, n_out), dtype), zeros), _random(rng, (n_out, n_in), dtype)
    A = F[activation][0](rng.normal(size=(S, n_in))).astype(dtype)  # a^{l-1} = f(z^{l-1})
    want = (D.astype(float) @ W.astype(float)) * F[activation][1](A.astype(float))
    D_out = _unfilled((S, n_in), dtype)
    K.dense_backward(D, W, A, CODES[activation], D_out)
    np.testing.assert_allclose(D_out, want, **_tol(dtype, np.sqrt(n_out)))


def _check_weight_and_bias_gradient(S, n_in, n_out, alpha, beta, dtype, seed, zeros):
    rng = np.random.default_rng(seed)
    D, A = _sparse(rng, _random(rng, (S, n_out), dtype), zeros), _random(rng, (S, n_in), dtype)
    G, g = _random(rng, (n_out, n_in), dtype), _random(rng, n_out, dtype)
    if beta == 0:  # β = 0 overwrites: whatever the output held, NaN included, must not leak through
        G[...], g[...] = np.nan, np.nan
    old_G, old_g = np.nan_to_num(G).astype(float), np.nan_to_num(g).astype(float)
    want_G = beta * old_G + alpha * (D.T.astype(float) @ A.astype(float))
    want_g = beta * old_g + alpha * D.sum(axis=0, dtype=float)
    K.dense_weight_gradient(D, A, alpha, beta, G)
    K.bias_gradient(D, alpha, beta, g)
    np.testing.assert_allclose(G, want_G, **_tol(dtype, 1 + np.sqrt(S)))
    np.testing.assert_allclose(g, want_g, **_tol(dtype, 1 + np.sqrt(S)))


@PROPERTY
@given(S=sizes, n_in=sizes, n_out=sizes, activation=activations, dtype=dtypes, seed=seeds, zeros=sparsity)
def test_dense_backward(S, n_in, n_out, activation, dtype, seed, zeros):
    _check_dense_backward(S, n_in, n_out, activation, dtype, seed, zeros)


@PROPERTY
@given(S=sizes, n_in=sizes, n_out=sizes, ab=alpha_beta, dtype=dtypes, seed=seeds, zeros=sparsity)
def test_weight_and_bias_gradient(S, n_in, n_out, ab, dtype, seed, zeros):
    _check_weight_and_bias_gradient(S, n_in, n_out, *ab, dtype, seed, zeros)


@settings(PROPERTY, max_examples=15)
@given(rows=st.integers(1, 6), n_in=wide, n_out=sizes, activation=activations, ab=alpha_beta, dtype=dtypes,
       seed=seeds)
def test_row_sum_kernels_on_wide_layers(rows, n_in, n_out, activation, ab, dtype, seed):
    """Few rows and many columns: the row-sum kernels split the columns into blocks (≥ 128 wide)."""
    _check_dense_backward(rows, n_in, n_out, activation, dtype, seed, zeros=0.0)
    _check_weight_and_bias_gradient(rows, n_in, n_out, *ab, dtype, seed, zeros=0.0)
    _check_weight_and_bias_gradient(n_out, n_in, rows, *ab, dtype, seed, zeros=0.0)


def _targets(rng, output, S, n):
    if output == "softmax":
        return np.eye(n)[rng.integers(0, n, S)]
    if output == "sigmoid":
        return rng.integers(0, 2, (S, n)).astype(float)
    if output == "poisson":
        return rng.poisson(2.0, (S, n)).astype(float)
    return rng.normal(size=(S, n))


def _output_loss(Z, T, output):
    S, n = Z.shape
    A_out, D, losses = _unfilled((S, n), Z.dtype), _unfilled((S, n), Z.dtype), _unfilled(S, Z.dtype)
    loss = K.output_loss(Z, T, K.OUTPUTS[output], A_out, D, losses)
    return loss, A_out, D, losses


@PROPERTY
@given(S=sizes, n=sizes, output=st.sampled_from(list(K.OUTPUTS)), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_output_loss_and_activation(S, n, output, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    Z, T = _random(rng, (S, n), dtype, scale), _targets(rng, output, S, n).astype(dtype)
    loss, A_out, D, losses = _output_loss(Z, T, output)
    want_A, want_losses = output_and_loss(Z.astype(float), T.astype(float), output)
    np.testing.assert_allclose(A_out, want_A, **_tol(dtype))
    np.testing.assert_allclose(losses, want_losses, **_tol(dtype, scale * n))
    np.testing.assert_allclose(loss, want_losses.mean(), **_tol(dtype, scale * n))
    # δ^L = a^L − t (the kernel may subtract before rounding a^L: equal to an ulp)
    np.testing.assert_allclose(D, A_out.astype(float) - T, rtol=np.finfo(dtype).eps, atol=np.finfo(dtype).eps)
    probs = _unfilled((S, n), dtype)
    K.output_activation(Z, K.OUTPUTS[output], probs)
    np.testing.assert_array_equal(probs, A_out)


@PROPERTY
@given(S=sizes, n=sizes, output=st.sampled_from(["softmax", "sigmoid"]), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([100.0, 1e4]))
def test_output_loss_stays_finite_and_normalised_at_huge_logits(S, n, output, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    Z, T = _random(rng, (S, n), dtype, scale), _targets(rng, output, S, n).astype(dtype)
    with np.errstate(all="raise"):
        loss, A_out, D, losses = _output_loss(Z, T, output)
    assert np.isfinite(loss) and np.isfinite(A_out).all() and np.isfinite(D).all()
    assert (losses >= 0).all() and (A_out >= 0).all() and (A_out <= 1).all()
    if output == "softmax":
        np.testing.assert_allclose(A_out.sum(axis=1), 1, rtol=0, atol=4 * n * np.finfo(dtype).eps)
    _, want_losses = output_and_loss(Z.astype(float), T.astype(float), output)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=4 * n * np.finfo(dtype).eps * scale)


@PROPERTY
@given(S=sizes, n=st.integers(2, 13), dtype=dtypes, seed=seeds, shift=st.sampled_from([-100.0, 100.0]))
def test_softmax_is_unchanged_by_shifting_every_logit(S, n, dtype, seed, shift):
    rng = np.random.default_rng(seed)
    Z, T = _random(rng, (S, n), dtype), _targets(rng, "softmax", S, n).astype(dtype)
    _, A, _, losses = _output_loss(Z, T, "softmax")
    _, A_shifted, _, losses_shifted = _output_loss(Z + dtype(shift), T, "softmax")
    tol = 1e-12 if dtype == np.float64 else 1e-6  # Z + 100 rounds Z to the ulp of 100 (8e-6) in float32
    np.testing.assert_allclose(A_shifted, A, rtol=0, atol=100 * tol)
    np.testing.assert_allclose(losses_shifted, losses, rtol=0, atol=100 * tol)
