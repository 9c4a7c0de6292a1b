"""Optimizer steps over the flat parameter vector, as one table selected by an integer code.

Every step reads the flat gradient g = ∂E/∂θ of a batch (θ = W^1, b^1, W^2, b^2, ..., the layout of
`training.param_offsets`) and updates θ in place, element by element. The rules are PyTorch's
(``torch.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop``; dampening 0, amsgrad off), with λ the weight decay:

| code   | update of one element θ (state: v; m, u)                                             |
|--------|--------------------------------------------------------------------------------------|
| SGD    | g ← g + λθ;  v ← μv + g;  d = g + μv (Nesterov) or v (classical, μ > 0) or g;  θ ← θ - ε d |
| ADAM   | g ← g + λθ;  m ← β₁m + (1-β₁)g;  u ← β₂u + (1-β₂)g²;  θ ← θ - ε/(1-β₁ᵗ) · m / (√u/√(1-β₂ᵗ) + eps) |
| ADAMW  | θ ← θ(1 - ελ);  then the ADAM step with λ = 0                                         |
| RMSPROP| g ← g + λθ;  u ← αu + (1-α)g²;  c ← αc + (1-α)g, ũ = u - c² (centered) or u;  d = g / (√ũ + eps); b ← μb + d, d = b (μ > 0);  θ ← θ - ε d |

`hyper` holds the hyper-parameters at the indices below; `state` holds the rows each optimizer
keeps (`STATE_ROWS`), zero before the first step: SGD the velocity v; Adam the moments m and u;
RMSprop the mean square u, then the momentum buffer b (μ > 0), then the mean gradient c
(centered). `t` is the step number, 1 for the first step. Alongside: the L2 penalty of scikit-learn's MLP and PyTorch's
gradient-norm clipping, both one pass over the flat vectors, summed in a fixed order.
"""
import math

import numpy as np
from numba import prange

from .common import FASTMATH, PARALLEL_WORK, cast_like, njit, unsigned_range

SGD, ADAM, ADAMW, RMSPROP = 0, 1, 2, 3

#: optimizer name -> code; the Python side of the table (`fastbp.optim` classes look their code up here)
OPTIMIZERS = {"sgd": SGD, "adam": ADAM, "adamw": ADAMW, "rmsprop": RMSPROP}

# indices into the hyper-parameter vector `hyper`
LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, L2, MAX_NORM, ALPHA, CENTERED = range(11)
N_HYPER = 11


def hyper_parameters(lr: float = 0.0, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                     beta1: float = 0.0, beta2: float = 0.0, eps: float = 0.0, l2: float = 0.0,
                     max_norm: float = 0.0, alpha: float = 0.0, centered: bool = False) -> np.ndarray:
    """The float64 vector `hyper` read by the kernels of this module (0 switches a feature off).
    `alpha` is RMSprop's smoothing constant (PyTorch's name), not the L2 coefficient `l2`."""
    hyper = np.zeros(N_HYPER)
    hyper[[LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, L2, MAX_NORM, ALPHA, CENTERED]] = (
        lr, momentum, float(nesterov), weight_decay, beta1, beta2, eps, l2, max_norm, alpha, float(centered))
    return hyper


def state_rows(code: int, hyper: np.ndarray) -> int:
    """Rows of `state` that the optimizer `code` keeps with these hyper-parameters (at least 1, so that
    every optimizer passes an array of one type)."""
    if code == SGD:
        return 1  # v (read only when μ > 0)
    if code == ADAM or code == ADAMW:
        return 2  # m, u
    if code == RMSPROP:
        return 1 + (hyper[MOMENTUM] != 0) + (hyper[CENTERED] != 0)  # u, then b, then c
    raise ValueError(f"unknown optimizer code {code}")


# The steps are elementwise and run in blocks of BLOCK elements, one task each (serial below
# PARALLEL_WORK elements). Every block but the last has the same length, a multiple of every vector
# width, so each element takes the same path through the vectorised loop (vector body or scalar
# remainder) whatever the number of threads: results are bit-identical for any thread count.
BLOCK = 1 << 12


@njit(inline="always", cache=True)
def _block(params, i):
    """The indices of block i of the flat vector, unsigned (see `unsigned_range`)."""
    return unsigned_range(i * BLOCK, min(i * BLOCK + BLOCK, params.shape[0]))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """θ ← θ - ε d with g ← g + λθ, v ← μv + g, d = g + μv (Nesterov), v (μ > 0) or g (μ = 0).

    params, grads, velocity: (P,) flat vectors; velocity is zero before the first step
    (PyTorch's first step sets v = g, which is μ·0 + g). Parallel over blocks of elements.
    """
    lr_, mu, wd = cast_like(params, lr), cast_like(params, momentum), cast_like(params, weight_decay)
    n_blocks = (params.shape[0] + BLOCK - 1) // BLOCK
    if params.shape[0] < PARALLEL_WORK:
        for i in range(n_blocks):
            _sgd_block(params, grads, velocity, lr_, mu, nesterov, wd, i)
    else:
        for i in prange(n_blocks):
            _sgd_block(params, grads, velocity, lr_, mu, nesterov, wd, i)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _sgd_block(params, grads, velocity, lr, mu, nesterov, wd, i):
    for p in _block(params, i):
        g = grads[p] + wd * params[p]
        if mu != 0:
            v = mu * velocity[p] + g
            velocity[p] = v
            g = g + mu * v if nesterov else v
        params[p] -= lr * g


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def adam_step(params, grads, m, u, lr, beta1, beta2, eps, weight_decay, decoupled, t):
    """One Adam (decoupled=False) or AdamW (decoupled=True) step number t ≥ 1 (Kingma & Ba; Loshchilov & Hutter).

    Adam:  g ← g + λθ.   AdamW: θ ← θ(1 - ελ).   Then m ← β₁m + (1-β₁)g, u ← β₂u + (1-β₂)g²,
    θ ← θ - ε/(1-β₁ᵗ) · m / (√u / √(1-β₂ᵗ) + eps), as ``torch.optim.Adam``/``AdamW`` compute it.
    params, grads, m, u: (P,) flat vectors; m and u are zero before step 1. Parallel over blocks of
    elements; error_model="numpy" (IEEE division, no ZeroDivisionError check) lets LLVM vectorise the
    loop, which the check prevents.
    """
    step_size = cast_like(params, lr / (1.0 - beta1 ** t))
    root_correction = cast_like(params, math.sqrt(1.0 - beta2 ** t))
    b1, b2, eps_ = cast_like(params, beta1), cast_like(params, beta2), cast_like(params, eps)
    c1, c2 = cast_like(params, 1.0 - beta1), cast_like(params, 1.0 - beta2)  # as torch: 1 - β in float64, then cast
    coupled = cast_like(params, 0.0 if decoupled else weight_decay)  # Adam: λ in the gradient
    shrink = cast_like(params, 1.0 - lr * weight_decay if decoupled else 1.0)  # AdamW: θ(1 - ελ)
    n_blocks = (params.shape[0] + BLOCK - 1) // BLOCK
    if params.shape[0] < PARALLEL_WORK:
        for i in range(n_blocks):
            _adam_block(params, grads, m, u, step_size, root_correction, b1, b2, c1, c2, eps_, coupled, shrink, i)
    else:
        for i in prange(n_blocks):
            _adam_block(params, grads, m, u, step_size, root_correction, b1, b2, c1, c2, eps_, coupled, shrink, i)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def _adam_block(params, grads, m, u, step_size, root_correction, b1, b2, c1, c2, eps, coupled, shrink, i):
    for p in _block(params, i):
        g = grads[p] + coupled * params[p]
        theta = shrink * params[p]
        m[p] = b1 * m[p] + c1 * g
        u[p] = b2 * u[p] + c2 * g * g
        params[p] = theta - step_size * m[p] / (math.sqrt(u[p]) / root_correction + eps)


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def rmsprop_step(params, grads, square_avg, buf, grad_avg, lr, alpha, eps, weight_decay, momentum, centered):
    """One RMSprop step, as ``torch.optim.RMSprop`` computes it (Hinton's lecture 6e; Graves 2013 centered).

    g ← g + λθ;  u ← αu + (1-α)g²;  c ← αc + (1-α)g, ũ = u - c² (centered) or ũ = u;
    d = g / (√ũ + eps);  b ← μb + d, θ ← θ - ε b (μ > 0) or θ ← θ - ε d.
    params, grads, square_avg (u), buf (b, used when μ > 0), grad_avg (c, used when centered): (P,) flat
    vectors, the state zero before the first step. Parallel over blocks of elements; error_model="numpy"
    lets the division vectorise, as in `adam_step`.
    """
    lr_, a, eps_, wd = cast_like(params, lr), cast_like(params, alpha), cast_like(params, eps), cast_like(params, weight_decay)
    c, mu = cast_like(params, 1.0 - alpha), cast_like(params, momentum)
    n_blocks = (params.shape[0] + BLOCK - 1) // BLOCK
    if params.shape[0] < PARALLEL_WORK:
        for i in range(n_blocks):
            _rmsprop_block(params, grads, square_avg, buf, grad_avg, lr_, a, c, eps_, wd, mu, centered, i)
    else:
        for i in prange(n_blocks):
            _rmsprop_block(params, grads, square_avg, buf, grad_avg, lr_, a, c, eps_, wd, mu, centered, i)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def _rmsprop_block(params, grads, square_avg, buf, grad_avg, lr, a, c, eps, wd, mu, centered, i):
    for p in _block(params, i):
        g = grads[p] + wd * params[p]
        u = a * square_avg[p] + c * g * g
        square_avg[p] = u
        if centered:
            m = a * grad_avg[p] + c * g
            grad_avg[p] = m
            u = u - m * m
        d = g / (math.sqrt(u) + eps)
        if mu != 0:
            d = mu * buf[p] + d
            buf[p] = d
        params[p] -= lr * d


@njit(parallel=True, cache=True)
def optimizer_step(code, params, grads, state, hyper, t):
    """θ ← step(θ, g) for the optimizer `code` (SGD, ADAM, ADAMW, RMSPROP) at step number t ≥ 1.

    params, grads: (P,) · state: (`state_rows(code, hyper)`, P) or more rows · hyper: (N_HYPER,) float64, indexed by LR, MOMENTUM, ...
    parallel=True with no loop of its own: it calls parallel kernels (see `training`).
    """
    if code == SGD:
        sgd_step(params, grads, state[0], hyper[LR], hyper[MOMENTUM], hyper[NESTEROV] != 0, hyper[WEIGHT_DECAY])
    elif code == ADAM or code == ADAMW:
        adam_step(params, grads, state[0], state[1], hyper[LR], hyper[BETA1], hyper[BETA2], hyper[EPS],
                  hyper[WEIGHT_DECAY], code == ADAMW, t)
    elif code == RMSPROP:
        momentum, centered = hyper[MOMENTUM] != 0, hyper[CENTERED] != 0
        # rows u, b (μ > 0), c (centered); a row the step does not use is passed as u and never touched
        buf = state[1] if momentum else state[0]
        grad_avg = state[state.shape[0] - 1] if centered else state[0]
        rmsprop_step(params, grads, state[0], buf, grad_avg, hyper[LR], hyper[ALPHA], hyper[EPS],
                     hyper[WEIGHT_DECAY], hyper[MOMENTUM], centered)
    else:
        raise ValueError("unknown optimizer code")


@njit(fastmath=FASTMATH, cache=True)
def add_l2_penalty(params, offsets, coefficient, grads):
    """g_W ← g_W + c W for every weight matrix (biases untouched); returns ½ c Σ_l ||W^l||².

    With c = α/S this is scikit-learn's MLP penalty: E + α/(2S) Σ_l ||W^l||² for a batch of S.
    params, grads: (P,) flat vectors · offsets: `param_offsets(sizes)`, W^l at [offsets[l, 0], offsets[l, 1]).
    Serial, summed in order of the flat index.
    """
    c = cast_like(params, coefficient)
    squares = 0.0
    for l in range(1, offsets.shape[0] - 1):
        for p in range(offsets[l, 0], offsets[l, 1]):
            w = params[p]
            squares += w * w
            grads[p] += c * w
    return 0.5 * coefficient * squares


@njit(fastmath=FASTMATH, cache=True)
def clip_grad_norm(grads, max_norm):
    """g ← g · max_norm / (||g||₂ + 1e-6) when that factor is < 1; returns ||g||₂ before clipping.

    ``torch.nn.utils.clip_grad_norm_`` over the whole flat gradient (P,). ||g||₂ is summed in float64
    in order of the flat index, so it does not depend on the number of threads.
    """
    squares = 0.0
    for p in range(grads.shape[0]):
        squares += float(grads[p]) * float(grads[p])
    norm = math.sqrt(squares)
    factor = max_norm / (norm + 1e-6)
    if factor < 1:
        f = cast_like(grads, factor)
        for p in range(grads.shape[0]):
            grads[p] *= f
    return norm
