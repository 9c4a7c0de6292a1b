"""Micro-benchmarks of the dense-layer kernels on the reference shapes 784-256-128-10 (and, with
FASTBP_BENCH_WIDE=1, on the wide networks' shapes 784-1024-1024-10 and 784-2048-2048-10).

One group per kernel, layer shape and batch size S. In each: `fastbp` (the kernel), `numpy` (the NumPy
code that computes the same result, bias and relu included) and `matmul` (NumPy's matrix product for
the same contraction alone, the issue's yardstick). S = 512 is the issue's reference batch; S = 1 is
the batch-1 training step; at S = 16 the small layers' kernels run serially (below PARALLEL_WORK), the
path whose row sums once stayed scalar. Each benchmark also checks that fastbp and NumPy agree, so a
fast wrong kernel cannot pass.

Weight and bias gradients are timed in their training form, the fused SGD step
`W ← W − (ε/S) Σ_s δ[s]ᵀ a[s]` (α = −ε/S, β = 1); `dense_update_forward` is that step on W fused with
the next batch's forward, as plain SGD trains (the numbers to compare: it against forward + gradient).
fastbp's kernels get δ already multiplied by α, and α = 1, as the training code calls them
(`training.loss_and_backward`); NumPy multiplies its product by α.

Every array starts on a 64-byte cache line, as fastbp's parameters and training buffers do (`fastbp.buffers`).
NumPy's own large arrays start 16 bytes past one, and there the row sums' vector loads and stores
straddle two lines: the 128→10 backward ran 17-20% slower (2026-11-28), NumPy's matmul 5-7%.

The wide layers (784→1024, 1024→1024, 1024→10, 784→2048, 2048→2048, 2048→10, at S = 64, 128, 512)
have weight matrices of 3-16 MiB, larger than L2: they time the kernels' cache blocking. They take
minutes, so the default run (and `tests/test_benchmarks.py`) leaves them out:

    FASTBP_BENCH_WIDE=1 pytest benchmarks/bench_dense.py -k wide
"""
import os

import numpy as np
import pytest

from fastbp import kernels as K
from fastbp.buffers import copy_on_a_line, empty_on_a_line
from reference_job import LAYER_SHAPES, LEARNING_RATE

BATCHES = (1, 16, 512)
#: layer l = 1..L by its (n_in, n_out)
LAYERS = {f"{n_in}x{n_out}": (n_in, n_out) for n_in, n_out in LAYER_SHAPES}
#: the layers whose input gradient δ^{l-1} training computes: all but the first
BACKWARD_LAYERS = dict(list(LAYERS.items())[1:])
IMPLS = ("fastbp", "numpy", "matmul")

#: the wide networks' layers, timed when FASTBP_BENCH_WIDE is set (not "0"), at WIDE_BATCHES
WIDE = os.environ.get("FASTBP_BENCH_WIDE", "0") not in ("", "0")
WIDE_NETWORKS = ((784, 1024, 1024, 10), (784, 2048, 2048, 10))
WIDE_BATCHES = (64, 128, 512)
WIDE_LAYERS = {f"{n_in}x{n_out}": (n_in, n_out)
               for sizes in WIDE_NETWORKS for n_in, n_out in zip(sizes[:-1], sizes[1:])}
#: their layers whose δ^{l-1} training computes: not a network's first
WIDE_BACKWARD_LAYERS = {name: shape for name, shape in WIDE_LAYERS.items() if shape[0] != 784}
LAYERS.update(WIDE_LAYERS)


def cases(layers, wide_layers) -> list:
    """(layer, S) of the reference `layers` at BATCHES, and with FASTBP_BENCH_WIDE the `wide_layers` at
    WIDE_BATCHES (ids "wide-<layer>-<S>", so that -k wide selects them)."""
    reference = [pytest.param(layer, S, id=f"{layer}-{S}") for layer in layers for S in BATCHES]
    wide = [pytest.param(layer, S, id=f"wide-{layer}-{S}") for layer in wide_layers for S in WIDE_BATCHES]
    return reference + (wide if WIDE else [])


REFERENCE_LAYERS = {name: shape for name, shape in LAYERS.items() if shape in LAYER_SHAPES}
FORWARD_CASES = cases(REFERENCE_LAYERS, WIDE_LAYERS)
BACKWARD_CASES = cases(BACKWARD_LAYERS, WIDE_BACKWARD_LAYERS)


def empty(shape):
    return empty_on_a_line(shape, np.float32)


def relu_activations(rng, shape):
    """a = relu(z) with z standard normal: about half the units are off, as in a trained network."""
    return copy_on_a_line(np.maximum(rng.standard_normal(shape, dtype=np.float32), 0))


def normal(rng, shape, scale=1.0):
    return copy_on_a_line((scale * rng.standard_normal(shape)).astype(np.float32))


def check_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-4)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("layer", "S"), FORWARD_CASES)
def test_dense_forward(measure, rng, layer, S, impl):
    """a^l = relu(a^{l-1} W^T + b)."""
    n_in, n_out = LAYERS[layer]
    A, W, b = relu_activations(rng, (S, n_in)), normal(rng, (n_out, n_in), 0.05), normal(rng, n_out)
    A_out = empty((S, n_out))

    def numpy_forward():
        np.matmul(A, W.T, out=A_out)
        np.add(A_out, b, out=A_out)
        np.maximum(A_out, 0, out=A_out)

    functions = {
        "fastbp": lambda: K.dense_forward(A, W, b, K.RELU, A_out, None),  # smooth=None, as a relu network's fit
        "numpy": numpy_forward,
        "matmul": lambda: np.matmul(A, W.T, out=A_out),
    }
    measure(f"dense_forward {layer} S={S}", impl, 2 * S * n_in * n_out, functions[impl])
    if impl != "matmul":
        check_close(A_out, np.maximum(A @ W.T + b, 0))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_dense_forward_smooth_activation(measure, rng, activation, impl):
    """a^1 = f(a^0 W^T + b) with f = tanh or σ on 784→256 at S = 512: the activation's share of the
    forward (fastbp's float32 tanh and σ are vectorised polynomials, `kernels.vecmath`)."""
    S, (n_in, n_out) = 512, LAYERS["784x256"]
    A, W, b = relu_activations(rng, (S, n_in)), normal(rng, (n_out, n_in), 0.05), normal(rng, n_out)
    A_out = empty((S, n_out))
    f = {"tanh": np.tanh, "sigmoid": lambda z, out: np.divide(1, 1 + np.exp(-z, out=out), out=out)}[activation]

    def numpy_forward():
        np.matmul(A, W.T, out=A_out)
        np.add(A_out, b, out=A_out)
        f(A_out, out=A_out)

    functions = {
        "fastbp": lambda: K.dense_forward(A, W, b, K.ACTIVATIONS[activation], A_out, True),
        "numpy": numpy_forward,
        "matmul": lambda: np.matmul(A, W.T, out=A_out),
    }
    measure(f"dense_forward {activation} 784x256 S={S}", impl, 2 * S * n_in * n_out, functions[impl])
    if impl != "matmul":
        check_close(A_out, f(A @ W.T + b, out=np.empty_like(A_out)))


# ----------------------------------------------------------------------------- backward
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("layer", "S"), BACKWARD_CASES)
def test_dense_backward(measure, rng, layer, S, impl):
    """δ^{l-1} = (δ^l W) ∘ relu'(a^{l-1})."""
    n_in, n_out = LAYERS[layer]
    D, W, A = normal(rng, (S, n_out)), normal(rng, (n_out, n_in), 0.05), relu_activations(rng, (S, n_in))
    D_out = empty((S, n_in))
    packs = empty((K.backward_packs(n_out, n_in), K.PACK_ELEMENTS))  # a wide W's, as the training workspace holds

    def numpy_backward():
        np.matmul(D, W, out=D_out)
        np.multiply(D_out, A > 0, out=D_out)

    functions = {
        "fastbp": lambda: K.dense_backward(D, W, A, K.RELU, D_out, packs),
        "numpy": numpy_backward,
        "matmul": lambda: np.matmul(D, W, out=D_out),
    }
    measure(f"dense_backward {layer} S={S}", impl, 2 * S * n_in * n_out, functions[impl])
    if impl != "matmul":
        check_close(D_out, (D @ W) * (A > 0))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("layer", "S"), FORWARD_CASES)
def test_dense_weight_gradient(measure, rng, layer, S, impl):
    """W ← W + α δ^T a^{l-1} with α = −ε/S: the fused SGD step."""
    n_in, n_out = LAYERS[layer]
    D, A, W = normal(rng, (S, n_out)), relu_activations(rng, (S, n_in)), normal(rng, (n_out, n_in), 0.05)
    alpha = -LEARNING_RATE / S
    product = empty((n_out, n_in))

    def numpy_step(G):
        np.matmul(D.T, A, out=product)
        np.multiply(product, np.float32(alpha), out=product)
        np.add(G, product, out=G)

    D_alpha = copy_on_a_line(D * np.float32(alpha))  # δ as training leaves it, multiplied by α
    steps = {
        "fastbp": lambda G: K.dense_weight_gradient(D_alpha, A, 1.0, 1.0, G),
        "numpy": numpy_step,
        "matmul": lambda G: np.matmul(D.T, A, out=G),
    }
    if impl != "matmul":  # one step on a copy equals W + α δ^T a
        G = W.copy()
        steps[impl](G)
        check_close(G, W + alpha * (D.T @ A))
    measure(f"dense_weight_gradient {layer} S={S}", impl, 2 * S * n_in * n_out, steps[impl], W)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("layer", "S"), FORWARD_CASES)
def test_dense_update_forward(measure, rng, layer, S, impl):
    """W ← W + α δ'^T a', then a^l = relu(a^{l-1} W^T + b): the previous batch's SGD step (S' = S
    samples, α = −ε/S) fused into this batch's forward, as plain SGD trains."""
    n_in, n_out = LAYERS[layer]
    D_prev, A_prev = normal(rng, (S, n_out)), relu_activations(rng, (S, n_in))
    A, W, b = relu_activations(rng, (S, n_in)), normal(rng, (n_out, n_in), 0.05), normal(rng, n_out)
    alpha = -LEARNING_RATE / S
    product, A_out = empty((n_out, n_in)), empty((S, n_out))

    def numpy_step_forward(G):
        np.matmul(D_prev.T, A_prev, out=product)
        np.multiply(product, np.float32(alpha), out=product)
        np.add(G, product, out=G)
        np.matmul(A, G.T, out=A_out)
        np.add(A_out, b, out=A_out)
        np.maximum(A_out, 0, out=A_out)

    D_alpha = copy_on_a_line(D_prev * np.float32(alpha))  # δ' as training leaves it, multiplied by α
    steps = {
        "fastbp": lambda G: K.dense_update_forward(D_alpha, A_prev, 1.0, A, G, b, K.RELU, A_out, None),
        "numpy": numpy_step_forward,
        "matmul": lambda G: (np.matmul(D_prev.T, A_prev, out=product), np.matmul(A, G.T, out=A_out)),
    }
    if impl != "matmul":  # one call on a copy: the stepped W, and the forward through it
        G = W.copy()
        steps[impl](G)
        stepped = W + alpha * (D_prev.T @ A_prev)
        check_close(G, stepped)
        check_close(A_out, np.maximum(A @ stepped.T + b, 0))
    measure(f"dense_update_forward {layer} S={S}", impl, 4 * S * n_in * n_out, steps[impl], W)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize(("layer", "S"), cases(REFERENCE_LAYERS, {}))
def test_bias_gradient(measure, rng, layer, S, impl):
    """b ← b + α Σ_s δ[s, :] with α = −ε/S; S·n_out additions counted as FLOP."""
    n_out = LAYERS[layer][1]
    D, b = normal(rng, (S, n_out)), normal(rng, n_out)
    alpha = -LEARNING_RATE / S
    column_sums = empty(n_out)

    def numpy_step(g):
        np.sum(D, axis=0, out=column_sums)
        np.multiply(column_sums, np.float32(alpha), out=column_sums)
        np.add(g, column_sums, out=g)

    steps = {"fastbp": lambda g: K.bias_gradient(D, alpha, 1.0, g), "numpy": numpy_step}
    g = b.copy()
    steps[impl](g)
    check_close(g, b + alpha * D.sum(axis=0))
    measure(f"bias_gradient {layer} S={S}", impl, S * n_out, steps[impl], b)
