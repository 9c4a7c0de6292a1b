"""Activations f and their derivatives f', as one table selected by an integer code.

`a = f(z)` and `f'` written from the output `a` (docs/derivation.md eq. 3, 4):
relu `1[z > 0] = 1[a > 0]`, tanh `1 - a²`, sigmoid `a(1 - a)`, identity `1`.
Adding an activation means adding a code, one line in `activate` and one in `derivative`.
"""

from .common import cast_like, njit, unsigned_range
from .vecmath import sigmoid, tanh

IDENTITY, RELU, TANH, SIGMOID = 0, 1, 2, 3

#: name -> code; the Python side of the table
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "sigmoid": SIGMOID}


@njit(inline="always", cache=True)
def activate(code, z):
    """a = f(z) for the activation `code`."""
    if code == RELU:
        return z if z > 0 else cast_like(z, 0)
    if code == TANH:
        return tanh(z)
    if code == SIGMOID:
        return sigmoid(z)
    return z


@njit(inline="always", cache=True)
def derivative(code, a):
    """f'(z) written from a = f(z) for the activation `code`."""
    if code == RELU:
        return cast_like(a, 1) if a > 0 else cast_like(a, 0)
    if code == TANH:
        return cast_like(a, 1) - a * a
    if code == SIGMOID:
        return a * (cast_like(a, 1) - a)
    return cast_like(a, 1)


@njit(inline="always", cache=True)
def relu_or_identity(code, z):
    """relu(z) for the relu code, z for every other: the part of the table cheap enough to inline
    into every register tile of the forward kernels. `activate_block` applies the rest."""
    return z if code != RELU or z > 0 else cast_like(z, 0)


@njit(error_model="numpy", cache=True)
def activate_block(code, A, s0, s1, k0, k1):
    """A[s, k] = f(A[s, k]) on the block [s0, s1) x [k0, k1) of A, for the activations that
    `relu_or_identity` leaves to it (tanh, sigmoid).

    The forward kernels call it once per task, after their tiles, while the block is in L1: one
    compiled copy of those functions instead of one in every tile path of every forward kernel.
    The unsigned k lets the loop vectorise, with the float32 tanh and σ of `vecmath` and NumPy's error
    model (no zero check on their divisions).
    """
    if code == IDENTITY or code == RELU:
        return
    for s in range(s0, s1):
        for k in unsigned_range(k0, k1):
            A[s, k] = activate(code, A[s, k])
