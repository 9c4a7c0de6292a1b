"""The float32 exp, tanh and σ of `fastbp.kernels.vecmath` against float64 NumPy, in units in the last
place (ulp) of the float32 result, over every order of magnitude, with NaN, ±inf and ±0."""
import numpy as np
import pytest
from numba import njit

from fastbp.kernels import vecmath

TINY = np.finfo(np.float32).tiny  # the smallest normal float32, 1.2e-38

FUNCTIONS = {  # name -> (vecmath function, float64 reference, worst error allowed in ulp)
    "exp": (vecmath.exp32, np.exp, 1.0),
    "tanh": (vecmath.tanh, np.tanh, 1.5),
    "sigmoid": (vecmath.sigmoid, lambda z: _sigmoid64(z), 3.0),
}


def _sigmoid64(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _compiled(fn):
    @njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
    return apply


def _grid(dtype=np.float32):
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-30, 2, 200_000)
    return np.concatenate([np.linspace(-100, 100, 400_001), magnitudes, -magnitudes]).astype(dtype)


def _ulps(actual, exact):
    """|actual - exact| in ulp of the float32 nearest to exact."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(actual.astype(np.float64) - exact) / spacing


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_float32_functions_are_within_a_few_ulp(name):
    fn, reference, worst = FUNCTIONS[name]
    x = _grid()
    if name == "exp":
        x = x[x < 88.3]  # exp32 serves σ (e^{-|z|}) and tanh (e^{2|z|}, 1 - 2/(e + 1) = 1 from |z| = 9)
    out = np.empty_like(x)
    _compiled(fn)(x, out)
    with np.errstate(over="ignore"):
        exact = reference(x.astype(np.float64))
    assert out.dtype == np.float32
    normal = np.abs(exact) >= TINY
    assert _ulps(out[normal], exact[normal]).max() <= worst
    assert np.abs(out[~normal] - exact[~normal]).max(initial=0) <= TINY  # subnormal results may flush to 0


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_float32_functions_at_nan_infinities_and_zero(name):
    fn, reference, _ = FUNCTIONS[name]
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1e-45, -1e-45, 1e4, -1e4], np.float32)
    out = np.empty_like(x)
    _compiled(fn)(x, out)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], reference(x[1:].astype(np.float64)), rtol=1e-7, atol=TINY)


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_float64_keeps_the_c_library(name):
    fn, reference, _ = FUNCTIONS[name]
    x = _grid(np.float64)[::7]
    out = np.empty_like(x)
    _compiled(fn)(x, out)
    np.testing.assert_allclose(out, reference(x), rtol=1e-15, atol=1e-300)
