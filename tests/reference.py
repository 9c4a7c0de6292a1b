"""Independent float64 NumPy references: the matrix form of the equations in docs/derivation.md."""
import numpy as np
from scipy.special import erf

#: name -> (f, f', what f' is written from: "a" = f(z) or "z")
F = {
    "identity": (lambda z: z, lambda a: np.ones_like(a), "a"),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(float), "a"),
    "tanh": (np.tanh, lambda a: 1 - a**2, "a"),
    "sigmoid": (lambda z: 0.5 * (1 + np.tanh(z / 2)), lambda a: a * (1 - a), "a"),  # σ(z) without overflow
    # GELU, PyTorch's exact form: z Φ(z), and Φ(z) + z φ(z)
    "gelu": (lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))),
             lambda z: 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), "z"),
}


def f_prime(activation, z):
    """f'(z) by the formula of F, from z or from a = f(z) as F says."""
    f, prime, of = F[activation]
    return prime(z if of == "z" else f(z))


def output_and_loss(Z, T, output):
    """(a^L, E_s per sample) from logits Z, by the textbook formulas (stable where needed)."""
    if output == "softmax":
        shifted = Z - Z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return np.exp(log_p), -(T * log_p).sum(axis=1)
    if output == "sigmoid":
        A = F["sigmoid"][0](Z)
        return A, (np.logaddexp(0, Z) - T * Z).sum(axis=1)  # -t log σ(z) - (1-t) log(1-σ(z))
    if output == "poisson":  # half the Poisson deviance of the rate e^z: t log(t/a) - t + a
        A = np.exp(Z)
        return A, (np.where(T > 0, T * np.log(np.where(T > 0, T, 1) / A), 0) - T + A).sum(axis=1)
    return Z, 0.5 * ((Z - T) ** 2).sum(axis=1)


def loss_and_grads(weights, biases, activations, output, X, T):
    """E = mean_s E_s and ∂E/∂W^l = δ^lᵀ a^{l-1} / S, ∂E/∂b^l = Σ_s δ^l / S, in float64."""
    weights = [np.asarray(W, np.float64) for W in weights]
    biases = [np.asarray(b, np.float64) for b in biases]
    X, T = np.asarray(X, np.float64), np.asarray(T, np.float64)
    S = X.shape[0]
    a, z = [X], [None]
    for l, (W, b) in enumerate(zip(weights, biases)):
        Z = a[-1] @ W.T + b
        z.append(Z)
        a.append(F[activations[l]][0](Z) if l < len(weights) - 1 else Z)
    A_L, losses = output_and_loss(a[-1], T, output)
    delta = A_L - T
    dW, db = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        dW[l] = delta.T @ a[l] / S
        db[l] = delta.sum(axis=0) / S
        if l > 0:
            delta = (delta @ weights[l]) * f_prime(activations[l - 1], z[l])
    return losses.mean(), dW, db
