"""Activations f and their derivatives f': one registry entry each, selected in compiled code by an integer code.

`a = f(z)`. Most derivatives are written from the output a, which the forward keeps anyway:
relu `1[z > 0] = 1[a > 0]`, tanh `1 - a²`, sigmoid `a(1 - a)`, identity `1`. GELU's, `Φ(z) + z φ(z)`, is not
a function of a (GELU is not one-to-one), so its entry says `from_z`: training then keeps z^l of such a layer
in the workspace, the dense kernels run it as identity, and `keep_z_and_activate` / `multiply_derivative_z`
apply f and f'(z) in a pass of their own. The relu, tanh and sigmoid kernels stay exactly as they were.

Adding an activation (all in this file, plus its NumPy formula in tests/reference.py):
1. its compiled scalar f and f' and a new code;
2. one `Activation` entry in `REGISTRY` (name, code, f, f', initialisation, from_z);
3. one branch in each function of the explicit dispatch: `activate` and `derivative` for an f' written
   from a, else `activate_z` and `derivative_z`.
The model, the CLI, scikit-learn's wrapper, save/load and the tests read the registry.
"""

import math
from typing import Callable, NamedTuple

import numpy as np

from .common import cast_like, njit, unsigned_range
from .vecmath import sigmoid, tanh

IDENTITY, RELU, TANH, SIGMOID, GELU = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------- scalar f and f'
@njit(inline="always", cache=True)
def identity(z):
    return z


@njit(inline="always", cache=True)
def identity_prime(a):
    return cast_like(a, 1)


@njit(inline="always", cache=True)
def relu(z):
    return z if z > 0 else cast_like(z, 0)


@njit(inline="always", cache=True)
def relu_prime(a):
    """1[z > 0], which is 1[a > 0]."""
    return cast_like(a, 1) if a > 0 else cast_like(a, 0)


@njit(inline="always", cache=True)
def tanh_prime(a):
    """1 - tanh²(z) = 1 - a²."""
    return cast_like(a, 1) - a * a


@njit(inline="always", cache=True)
def sigmoid_prime(a):
    """σ(z)(1 - σ(z)) = a(1 - a)."""
    return a * (cast_like(a, 1) - a)


@njit(inline="always", cache=True)
def gelu(z):
    """z Φ(z) = ½ z (1 + erf(z / √2)): the exact form, PyTorch's default (``approximate='none'``)."""
    return cast_like(z, 0.5) * z * (cast_like(z, 1) + math.erf(z * cast_like(z, 1 / math.sqrt(2))))


@njit(inline="always", cache=True)
def gelu_prime(z):
    """Φ(z) + z φ(z) = ½ (1 + erf(z / √2)) + z e^{-z²/2} / √(2π), written from z."""
    cdf = cast_like(z, 0.5) * (cast_like(z, 1) + math.erf(z * cast_like(z, 1 / math.sqrt(2))))
    return cdf + z * math.exp(cast_like(z, -0.5) * z * z) * cast_like(z, 1 / math.sqrt(2 * math.pi))


# ----------------------------------------------------------------------------- initialisation rules
def he_normal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """W ~ N(0, 2 / n_in): keeps the variance of relu-like layers' outputs (He et al. 2015)."""
    return rng.normal(0.0, np.sqrt(2.0 / shape[1]), size=shape)


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """W ~ U(-r, r), r = √(6 / (n_in + n_out)) (Glorot & Bengio 2010): for tanh, sigmoid, identity and the output."""
    r = np.sqrt(6.0 / (shape[1] + shape[0]))
    return rng.uniform(-r, r, size=shape)


# ----------------------------------------------------------------------------- the registry
class Activation(NamedTuple):
    """One activation: everything fastbp needs to know about it."""
    name: str  #: what `MLP(activation=...)`, the CLI and saved models call it
    code: int  #: the integer the compiled kernels dispatch on
    f: Callable  #: compiled scalar a = f(z)
    f_prime: Callable  #: compiled scalar f', of a, or of z when `from_z`
    init: Callable  #: the initialisation rule of the weights W^l that feed it: (rng, (n_out, n_in)) -> W
    from_z: bool = False  #: f' needs z, not a: training keeps z^l for such a layer


REGISTRY: dict[str, Activation] = {entry.name: entry for entry in (
    Activation("identity", IDENTITY, identity, identity_prime, glorot_uniform),
    Activation("relu", RELU, relu, relu_prime, he_normal),
    Activation("tanh", TANH, tanh, tanh_prime, glorot_uniform),
    Activation("sigmoid", SIGMOID, sigmoid, sigmoid_prime, glorot_uniform),
    Activation("gelu", GELU, gelu, gelu_prime, he_normal, from_z=True),
)}

#: name -> code; the Python side of the table
ACTIVATIONS = {name: entry.code for name, entry in REGISTRY.items()}

#: the codes whose f' is written from z (`Activation.from_z`)
_FROM_Z = np.array(sorted(entry.code for entry in REGISTRY.values() if entry.from_z), dtype=np.int64)


def smooth_flag(codes: np.ndarray) -> bool | None:
    """The kernels' `smooth` argument for a network whose `codes` are its hidden activations, then its output's.

    None when every hidden activation is relu or identity, which the forward's register tiles apply as they
    store (`relu_or_identity`); True when any is another (tanh, sigmoid, GELU). None is a type of its own, so
    Numba prunes the forward's calls of `activate_block` and `keep_z_and_activate` and compiles none of their
    code: a relu network's first fit compiles less (benchmarks/NOTES.md).
    """
    return None if all(code in (RELU, IDENTITY) for code in codes[:-1]) else True


# ----------------------------------------------------------------------------- dispatch in compiled code
@njit(inline="always", cache=True)
def activate(code, z):
    """a = f(z) for an activation `code` whose f' is written from a (relu, tanh, sigmoid, identity)."""
    if code == RELU:
        return relu(z)
    if code == TANH:
        return tanh(z)
    if code == SIGMOID:
        return sigmoid(z)
    return identity(z)


@njit(inline="always", cache=True)
def derivative(code, a):
    """f'(z) written from a = f(z), for an activation `code` whose entry is not `from_z`."""
    if code == RELU:
        return relu_prime(a)
    if code == TANH:
        return tanh_prime(a)
    if code == SIGMOID:
        return sigmoid_prime(a)
    return identity_prime(a)


@njit(inline="always", cache=True)
def activate_z(code, z):
    """a = f(z) for an activation `code` whose f' needs z (`from_z`): kept out of `activate`, whose
    branches are inlined into the fast kernels' loops, so that a libm call (erf) cannot stop them vectorising."""
    if code == GELU:
        return gelu(z)
    return z * cast_like(z, math.nan)  # not a from_z code: NaN, never a silently wrong value


@njit(inline="always", cache=True)
def derivative_z(code, z):
    """f'(z) written from z, for an activation `code` whose entry is `from_z`."""
    if code == GELU:
        return gelu_prime(z)
    return z * cast_like(z, math.nan)


@njit(inline="always", cache=True)
def is_from_z(code):
    """Whether the activation `code`'s f' is written from z (training keeps z^l)."""
    for c in _FROM_Z:
        if c == code:
            return True
    return False


@njit(inline="always", cache=True)
def dense_code(code):
    """The code the dense kernels run for layer activation `code`: itself, or identity for a `from_z`
    activation, which `keep_z_and_activate` and `multiply_derivative_z` apply around them."""
    return IDENTITY if is_from_z(code) else code


@njit(inline="always", cache=True)
def relu_or_identity(code, z):
    """relu(z) for the relu code, z for every other: the part of the table cheap enough to inline
    into every register tile of the forward kernels. `activate_block` applies the rest."""
    return z if code != RELU or z > 0 else cast_like(z, 0)


@njit(error_model="numpy", cache=True)
def activate_block(code, A, s0, s1, k0, k1):
    """A[s, k] = f(A[s, k]) on the block [s0, s1) x [k0, k1) of A, for the activations that
    `relu_or_identity` leaves to it (tanh, sigmoid, and the `from_z` ones such as GELU).

    The forward kernels call it once per task, after their tiles, while the block is in L1: one
    compiled copy of those functions instead of one in every tile path of every forward kernel.
    The unsigned k lets the loop vectorise, with the float32 tanh and σ of `vecmath` and NumPy's error
    model (no zero check on their divisions). The `from_z` activations have a loop of their own, so
    that their libm calls stay out of the tanh and sigmoid loop.
    """
    if code == IDENTITY or code == RELU:
        return
    if is_from_z(code):
        for s in range(s0, s1):
            for k in range(k0, k1):
                A[s, k] = activate_z(code, A[s, k])
        return
    for s in range(s0, s1):
        for k in unsigned_range(k0, k1):
            A[s, k] = activate(code, A[s, k])


# ----------------------------------------------------------------------------- the passes of `from_z` activations
@njit(cache=True)
def keep_z_and_activate(code, A, Z):
    """Z[s, k] = z[s, k], then A[s, k] = f(z[s, k]), for a `from_z` activation `code`.

    A: (S, n) holding z^l (the dense kernel ran as identity), overwritten with a^l · Z: (S, n), written.
    """
    for s in range(A.shape[0]):
        for k in range(A.shape[1]):
            z = A[s, k]
            Z[s, k] = z
            A[s, k] = activate_z(code, z)


@njit(cache=True)
def multiply_derivative_z(code, Z, D):
    """D[s, j] *= f'(z[s, j]) for a `from_z` activation `code`: the factor of δ^{l-1} = f'(z^{l-1}) Σ_k δ^l_k W_kj
    that `dense_backward`, run as identity, leaves out. Z, D: (S, n)."""
    for s in range(D.shape[0]):
        for j in range(D.shape[1]):
            D[s, j] *= derivative_z(code, Z[s, j])
