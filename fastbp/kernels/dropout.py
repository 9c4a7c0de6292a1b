"""Inverted dropout on the hidden layers, with a mask computed from a counter-based hash.

Forward: ``ã_j = m_j a_j / (1 - p)`` with ``m_j ∈ {0, 1}`` kept with probability 1 - p, so that the
expected ã is a and inference needs no rescaling. Backward: the next layer sees ã, so
``δ_j = f'(z_j) · m_j / (1 - p) · Σ_k δ_k W_kj``: the usual δ (docs/derivation.md, the backward
recursion for δ), times the same mask and scale.

The mask bit of unit j of batch row s is a pure function of (seed, step, layer, s, j): a splitmix64
hash, not a random stream. So it is the same whatever the number of threads or the order in which they
run, needs no buffer, and is recomputed in the backward instead of stored.
"""
import numpy as np
from numba import prange

from .activations import derivative
from .common import PARALLEL_WORK, cast_like, njit

_U = np.uint64


@njit(inline="always", cache=True)
def _mix(x):
    """splitmix64's finaliser: a bijection of uint64 whose output bits each depend on every input bit."""
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


@njit(cache=True)
def step_key(seed, step):
    """The key of one training step: a hash of (seed, step), as int64 (Numba's default integer)."""
    return np.int64(_mix(_mix(_U(seed)) + _U(step)))


@njit(inline="always", cache=True)
def layer_key(key, l):
    """The key of hidden layer l within a step."""
    return _mix(_U(key) + _U(l))


@njit(inline="always", cache=True)
def keep(key, s, j, p):
    """m_sj: True with probability 1 - p, from the hash of (layer key, s, j); 53 bits → a uniform in [0, 1)."""
    h = _mix(key ^ _mix((_U(s) << _U(32)) | _U(j)))
    return (h >> _U(11)) * 1.1102230246251565e-16 >= p  # 2^-53


@njit(inline="always", cache=True)
def _forward_row(A, s, p, key, scale):
    for k in range(A.shape[1]):
        A[s, k] = A[s, k] * scale if keep(key, s, k, p) else cast_like(A, 0)


@njit(parallel=True, cache=True)
def dropout_forward(A, p, key):
    """ã[s, k] = m_sk a[s, k] / (1 - p), in place; A: (S, n_l) the activations of hidden layer l,
    key = `layer_key(step key, l)`."""
    scale = cast_like(A, 1.0 / (1.0 - p))
    if A.size < PARALLEL_WORK:  # a parallel region costs more than it saves on a small batch (common.py)
        for s in range(A.shape[0]):
            _forward_row(A, s, p, key, scale)
    else:
        for s in prange(A.shape[0]):
            _forward_row(A, s, p, key, scale)


@njit(inline="always", cache=True)
def _backward_row(D, A, code, s, p, key, scale, keep_fraction):
    for j in range(D.shape[1]):
        if keep(key, s, j, p):
            # A holds ã = a/(1 - p): f' is written from a (activations.derivative)
            D[s, j] = D[s, j] * scale * derivative(code, A[s, j] * keep_fraction)
        else:
            D[s, j] = cast_like(D, 0)


@njit(parallel=True, cache=True)
def dropout_backward(D, A, code, p, key):
    """δ[s, j] ← δ[s, j] · m_sj / (1 - p) · f'(z[s, j]), in place, where D holds Σ_k δ^{l+1}_k W_kj on
    entry (`dense_backward` with the identity code) and A the dropped activations ã of the same layer.
    D, A: (S, n_l); code: the layer's activation; key: as in `dropout_forward`."""
    scale = cast_like(D, 1.0 / (1.0 - p))
    keep_fraction = cast_like(D, 1.0 - p)
    if D.size < PARALLEL_WORK:
        for s in range(D.shape[0]):
            _backward_row(D, A, code, s, p, key, scale, keep_fraction)
    else:
        for s in prange(D.shape[0]):
            _backward_row(D, A, code, s, p, key, scale, keep_fraction)


@njit(cache=True)
def dropout_mask(seed, step, l, S, n, p):
    """The (S, n) 0/1 mask m of hidden layer l at training step `step` (for tests and inspection)."""
    key = layer_key(step_key(seed, step), l)
    mask = np.empty((S, n))
    for s in range(S):
        for j in range(n):
            mask[s, j] = 1.0 if keep(key, s, j, p) else 0.0
    return mask
