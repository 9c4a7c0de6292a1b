"""The reference job of the benchmarks, shared by the pytest micro-benchmarks, `peers.py` and `startup.py`.

MLP 784-256-128-10 (the helpers also take other layer sizes, e.g. the wide 784-1024-1024-10), relu hidden layers, softmax + cross-entropy, plain SGD with lr 0.01, float32,
random samples (pixels uniform in [0, 1), labels uniform in 0..9), one epoch without shuffling.

FLOP counting (the issue's rule): per sample and layer l, 2·n_{l-1}·n_l for the forward
contraction, the same for the weight gradient, and again for the input gradient δ^{l-1}
where it is needed, i.e. not for the first layer.
"""
from __future__ import annotations

import numpy as np

LAYER_SIZES = (784, 256, 128, 10)
LEARNING_RATE = 0.01
DTYPE = np.float32
N_CLASSES = LAYER_SIZES[-1]

#: (n_in, n_out) of each layer l = 1..L
LAYER_SHAPES = tuple(zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]))


def reference_data(n_samples: int, seed: int = 0, layer_sizes=LAYER_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """X: (n_samples, n_0) float32 in [0, 1), y: (n_samples,) int64 labels in 0..n_L - 1."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, layer_sizes[0]), dtype=DTYPE)
    y = rng.integers(0, layer_sizes[-1], n_samples)
    return X, y


def forward_flops_per_sample(layer_sizes=LAYER_SIZES) -> int:
    """Σ_l 2·n_{l-1}·n_l: the forward contractions of one sample."""
    return sum(2 * n_in * n_out for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]))


def training_flops_per_sample(layer_sizes=LAYER_SIZES) -> int:
    """Forward + weight gradient for every layer, + input gradient for every layer but the first."""
    first_layer = 2 * layer_sizes[0] * layer_sizes[1]
    return 3 * forward_flops_per_sample(layer_sizes) - first_layer


def training_contractions(batch: int, layer_sizes=LAYER_SIZES) -> list[tuple[str, int, int, int]]:
    """The (name, M, N, P) matrix products `(M, P) @ (P, N)` of one training step on `batch` samples.

    forward a^{l-1} W^T: (S, n_in) @ (n_in, n_out) · backward δ^l W: (S, n_out) @ (n_out, n_in), l ≥ 2 ·
    gradient δ^{lT} a^{l-1}: (n_out, S) @ (S, n_in). Their 2·M·N·P add up to `training_flops_per_sample`·S.
    """
    products = []
    for l, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:]), start=1):
        products.append((f"forward {l}", batch, n_out, n_in))
        if l > 1:
            products.append((f"backward {l}", batch, n_in, n_out))
        products.append((f"gradient {l}", n_out, n_in, batch))
    return products


def initial_parameters(seed: int = 0, layer_sizes=LAYER_SIZES) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (W^l, b^l) of `fastbp.MLP(layer_sizes, seed=seed)`, copied: every library starts from them.

    W^l has shape (n_l, n_{l-1}), as in fastbp and torch.nn.Linear.
    """
    import fastbp

    model = fastbp.MLP(list(layer_sizes), activation="relu", output="softmax", dtype=DTYPE, seed=seed)
    return [(W.copy(), b.copy()) for W, b in zip(model.weights, model.biases)]


#: the hidden activations of the peers script's --activation, in NumPy
HIDDEN = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": lambda z: 0.5 * (1 + np.tanh(0.5 * z))}


def cross_entropy(params: list[tuple[np.ndarray, np.ndarray]], X: np.ndarray, y: np.ndarray,
                  activation: str = "relu") -> float:
    """Mean softmax cross-entropy of the network `params` (hidden layers: `activation`) on (X, y), in
    float64 with NumPy. Used after each library's epoch to check that all of them did the same job.
    """
    a = X.astype(np.float64)
    for l, (W, b) in enumerate(params, start=1):
        a = a @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        if l < len(params):
            a = HIDDEN[activation](a)
    a -= a.max(axis=1, keepdims=True)
    log_probs = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def numpy_sgd_step(params, X: np.ndarray, T: np.ndarray, lr: float = LEARNING_RATE) -> None:
    """One SGD step of the reference network in plain NumPy (the baseline of the training benchmarks).

    params: list of (W (n_out, n_in), b (n_out,)), updated in place · X: (S, n_0) · T: (S, n_L) one-hot.
    """
    activations = [X]
    for W, b in params[:-1]:
        activations.append(np.maximum(activations[-1] @ W.T + b, 0))
    W, b = params[-1]
    z = activations[-1] @ W.T + b
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    delta = e / e.sum(axis=1, keepdims=True) - T       # δ^L = a^L − t
    step = lr / X.shape[0]
    for l in range(len(params) - 1, -1, -1):
        W, b = params[l]
        a_in = activations[l]
        delta_in = (delta @ W) * (a_in > 0) if l > 0 else None   # from the original W^l
        W -= step * (delta.T @ a_in)
        b -= step * delta.sum(axis=0)
        delta = delta_in
