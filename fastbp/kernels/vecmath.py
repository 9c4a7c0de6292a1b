"""exp, tanh and the sigmoid in float32 arithmetic that LLVM can vectorise.

Numba calls the C library's `expf`/`tanhf` one value at a time: LLVM here has no vector math library
(Numba's `numba -s`: SVML not available; the veclib option of LLVM does not reach Numba's pipeline).
A tanh layer's forward spent as long in `tanhf` as in its matrix product (benchmarks/NOTES.md). These are Cephes' float32 algorithms (S. Moshier, `expf.c`,
`tanhf.c`), written with selects instead of branches, so that a loop over them vectorises:

- e^x = 2^n e^r with n = round(x / ln2), r = x - n ln2 (ln2 in two parts, so r is exact), e^r by a
  degree-7 polynomial, 2^n built from its IEEE bits;
- tanh z = z + z³P(z²) for |z| < 0.625, else sign(z) (1 - 2 / (e^{2|z|} + 1));
- σ(z) = 1 / (1 + e^{-|z|}) for z ≥ 0, else e^{-|z|} σ(|z|): no exp overflows.

Against float64 NumPy on the 800,001 float32 values of tests/test_vecmath.py (-100..100, and ±10^-30..10^2):
exp within 0.97 ulp, tanh 1.2 ulp, σ 2.4 ulp; NaN gives NaN, ±inf the limits. Float64 keeps the C
library's functions: `tanh`, `sigmoid` pick by type at compile time. Loops over them must be compiled
with `error_model="numpy"`: Python's error model checks every division for zero, which keeps the
loop scalar.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .common import cast_like, njit

F = np.float32
LOG2E, LN2_HI, LN2_LO = F(1.44269504088896341), F(0.693359375), F(-2.12194440e-4)  # ln2 = LN2_HI + LN2_LO
EXP_MIN = F(-87.33654)  # e^x below this is subnormal: 0 is returned
EXP_MAX = F(88.37626)  # 2^n with n ≤ 127 is a normal float32: x is clamped to this
TANH_SERIES = F(0.625)  # below this |z|, tanh's series, where 1 - 2/(e^{2z} + 1) would cancel


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE 754 bits are the int32 `bits`."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", cache=True)
def exp32(x):
    """e^x of a float32 x (Cephes expf, within 1 ulp); 0 below EXP_MIN, e^EXP_MAX (2.4e38) above EXP_MAX.

    Its two callers need no more: σ takes e^{-|z|} ≤ 1, and tanh's 1 - 2/(e^{2|z|} + 1) is 1 from
    |z| = 9 on. The range is handled by a clamp and a product, not by branches, so that it vectorises."""
    xc = min(max(x, EXP_MIN), EXP_MAX)
    n = np.floor(xc * LOG2E + F(0.5))  # np.floor keeps float32; math.floor would give an int64
    r = xc - n * LN2_HI - n * LN2_LO
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    y = (p * r * r + r + F(1)) * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))  # e^r 2^n
    return y * F(x >= EXP_MIN)  # 0 below EXP_MIN; NaN stays NaN (NaN * 0)


@njit(inline="always", cache=True)
def tanh32(z):
    """tanh z of a float32 z (Cephes tanhf): both branches computed, one selected."""
    a = abs(z)
    far = F(1) - F(2) / (exp32(a + a) + F(1))
    far = far if z >= F(0) else -far
    s = z * z
    p = F(-5.70498872745e-3)
    p = p * s + F(2.06390887954e-2)
    p = p * s - F(5.37397155531e-2)
    p = p * s + F(1.33314422036e-1)
    p = p * s - F(3.33332819422e-1)
    near = p * s * z + z
    return near if a < TANH_SERIES else far  # NaN: exp32 passes it on


@njit(inline="always", cache=True)
def sigmoid32(z):
    """σ(z) = 1 / (1 + e^{-z}) of a float32 z, from e^{-|z|} ≤ 1, so that no exp overflows."""
    e = exp32(-abs(z))
    r = F(1) / (F(1) + e)
    return r * max(e, F(z >= F(0)))  # r for z ≥ 0 (e ≤ 1), e r below; NaN passes through e


@njit(inline="always", cache=True)
def sigmoid_libm(z):
    """σ(z) from the C library's exp, in z's float type, without overflow: for scalar loops (the loss
    kernels, whose log1p stays a call anyway), where it is faster than `sigmoid32` called per value."""
    one = cast_like(z, 1)  # a bare 1 would make a float32 z's arithmetic float64
    if z >= 0:
        return one / (one + math.exp(-z))
    e = math.exp(z)
    return e / (one + e)


def tanh(z):
    """tanh z in z's own float type (compiled code only)."""
    raise NotImplementedError("tanh is for compiled code")


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{-z}) in z's own float type, without overflow for any z (compiled code only)."""
    raise NotImplementedError("sigmoid is for compiled code")


# Not inlined by Numba (LLVM inlines them): inlined overloads with selects made Numba's SSA pass warn
# ("variable ... is not in scope") when a loss kernel used them.
@overload(tanh)
def _tanh(z):
    return (lambda z: tanh32(z)) if z == types.float32 else (lambda z: math.tanh(z))


@overload(sigmoid)
def _sigmoid(z):
    return (lambda z: sigmoid32(z)) if z == types.float32 else (lambda z: sigmoid_libm(z))
