"""Optimizer steps over the flat parameter vector, as one table selected by an integer code.

Every step reads the flat gradient g = ∂E/∂θ of a batch (θ = W^1, b^1, W^2, b^2, ..., the layout of
`training.param_offsets`) and updates θ in place, element by element. The rules are PyTorch's
(``torch.optim.SGD``, ``Adam``, ``AdamW``; dampening 0, amsgrad off), with λ the weight decay:

| code   | update of one element θ (state: v; m, u)                                             |
|--------|--------------------------------------------------------------------------------------|
| SGD    | g ← g + λθ;  v ← μv + g;  d = g + μv (Nesterov) or v (classical, μ > 0) or g;  θ ← θ - ε d |
| ADAM   | g ← g + λθ;  m ← β₁m + (1-β₁)g;  u ← β₂u + (1-β₂)g²;  θ ← θ - ε/(1-β₁ᵗ) · m / (√u/√(1-β₂ᵗ) + eps) |
| ADAMW  | θ ← θ(1 - ελ);  then the ADAM step with λ = 0                                         |

`hyper` holds the hyper-parameters at the indices below; `state` is (2, P): the velocity v of SGD
(row 0), or the moments m (row 0) and u (row 1) of Adam, zero before the first step; `t` is the
step number, 1 for the first step. Alongside: the L2 penalty of scikit-learn's MLP and PyTorch's
gradient-norm clipping, both one pass over the flat vectors, summed in a fixed order.
"""
import math

import numpy as np
from numba import prange

from .common import FASTMATH, PARALLEL_WORK, cast_like, njit, unsigned_range

SGD, ADAM, ADAMW = 0, 1, 2

#: optimizer name -> code; the Python side of the table
OPTIMIZERS = {"sgd": SGD, "adam": ADAM, "adamw": ADAMW}

# indices into the hyper-parameter vector `hyper`
LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, L2, MAX_NORM = range(9)
N_HYPER = 9


def hyper_parameters(lr: float = 0.0, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                     beta1: float = 0.0, beta2: float = 0.0, eps: float = 0.0, l2: float = 0.0,
                     max_norm: float = 0.0) -> np.ndarray:
    """The float64 vector `hyper` read by the kernels of this module (0 switches a feature off)."""
    hyper = np.zeros(N_HYPER)
    hyper[[LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, L2, MAX_NORM]] = (
        lr, momentum, float(nesterov), weight_decay, beta1, beta2, eps, l2, max_norm)
    return hyper


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


@njit(parallel=True, cache=True)
def optimizer_step(code, params, grads, state, hyper, t):
    """θ ← step(θ, g) for the optimizer `code` (SGD, ADAM, ADAMW) at step number t ≥ 1.

    params, grads: (P,) · state: (2, P) · hyper: (N_HYPER,) float64, indexed by LR, MOMENTUM, ...
    parallel=True with no loop of its own: it calls parallel kernels (see `training`).
    """
    if code == SGD:
        sgd_step(params, grads, state[0], hyper[LR], hyper[MOMENTUM], hyper[NESTEROV] != 0, hyper[WEIGHT_DECAY])
    else:
        adam_step(params, grads, state[0], state[1], hyper[LR], hyper[BETA1], hyper[BETA2], hyper[EPS],
                  hyper[WEIGHT_DECAY], code == ADAMW, t)


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
