"""Readable twins of the fast kernels: one plain loop nest per equation, serial, no tiles.

Each function here computes what one kernel of `dense` or `losses` computes, written as the index
notation reads (docs/notation.md: s a sample of the batch, k a unit of layer l, j a unit of layer
l-1), with no register tiles, task split or fused step. They are the oracle of tests/test_reference.py,
beside the float64 NumPy matrix form, and the place to read what a fast kernel does.

| twin                 | fast kernel                                    | equation                                       |
|----------------------|------------------------------------------------|------------------------------------------------|
| `forward`            | `dense.dense_forward`                          | z_sk = b_k + Σ_j W_kj a_sj,  a_sk = f(z_sk)     |
| `backward`           | `dense.dense_backward`                         | δ^{l-1}_sj = f'(z_sj) Σ_k δ_sk W_kj             |
| `weight_gradient`    | `dense.dense_weight_gradient` (α = 1/S, β = 0) | ∂E/∂W_kj = (1/S) Σ_s δ_sk a_sj                  |
| `bias_gradient`      | `dense.bias_gradient` (α = 1/S, β = 0)         | ∂E/∂b_k = (1/S) Σ_s δ_sk                        |
| `output_delta`       | `losses.output_loss`                           | a^L = output(z^L), δ^L_sk = a^L_sk - t_sk, E_s  |

Loops run over every index in order, with no tricks but the loss's numerical stability
(log-sum-exp, the softplus form), which the equations need in floating point.
"""
import math


from .activations import activate, activate_z, derivative, derivative_z, is_from_z
from .common import cast_like, njit
from .losses import EXP_POISSON, IDENTITY_SE, SIGMOID_BCE, SOFTMAX_CE


@njit(inline="always", cache=True)
def f(code, z):
    """a = f(z) for any registered activation `code`."""
    return activate_z(code, z) if is_from_z(code) else activate(code, z)


@njit(inline="always", cache=True)
def f_prime(code, x):
    """f'(z) for any registered activation `code`, from x = z for a `from_z` activation, else x = a = f(z)."""
    return derivative_z(code, x) if is_from_z(code) else derivative(code, x)


@njit(cache=True)
def forward(A, W, b, code, A_out):
    """z[s, k] = b[k] + Σ_j W[k, j] a^{l-1}[s, j],  a^l[s, k] = f(z[s, k])

    A: (S, n_in) a^{l-1} · W: (n_out, n_in) · b: (n_out,) · code: the activation f · A_out: (S, n_out) a^l, written.
    """
    S, n_in = A.shape
    n_out = W.shape[0]
    for s in range(S):
        for k in range(n_out):
            z = b[k]
            for j in range(n_in):
                z += W[k, j] * A[s, j]
            A_out[s, k] = f(code, z)


@njit(cache=True)
def backward(D, W, X, code, D_out):
    """δ^{l-1}[s, j] = f'(z^{l-1}[s, j]) Σ_k δ^l[s, k] W[k, j]

    D: (S, n_out) δ^l · W: (n_out, n_in) W^l · X: (S, n_in) a^{l-1} = f(z^{l-1}), or z^{l-1} for an activation
    whose f' is written from z (`Activation.from_z`) · code: the activation f of layer l-1 · D_out: (S, n_in), written.
    """
    S, n_out = D.shape
    n_in = W.shape[1]
    for s in range(S):
        for j in range(n_in):
            total = cast_like(D_out, 0)
            for k in range(n_out):
                total += D[s, k] * W[k, j]
            D_out[s, j] = f_prime(code, X[s, j]) * total


@njit(cache=True)
def weight_gradient(D, A, G):
    """G[k, j] = ∂E/∂W[k, j] = (1/S) Σ_s δ[s, k] a^{l-1}[s, j]

    D: (S, n_out) δ^l · A: (S, n_in) a^{l-1} · G: (n_out, n_in), written.
    """
    S, n_out = D.shape
    n_in = A.shape[1]
    for k in range(n_out):
        for j in range(n_in):
            total = cast_like(G, 0)
            for s in range(S):
                total += D[s, k] * A[s, j]
            G[k, j] = total / S


@njit(cache=True)
def bias_gradient(D, g):
    """g[k] = ∂E/∂b[k] = (1/S) Σ_s δ[s, k]

    D: (S, n_out) δ^l · g: (n_out,), written.
    """
    S, n_out = D.shape
    for k in range(n_out):
        total = cast_like(g, 0)
        for s in range(S):
            total += D[s, k]
        g[k] = total / S


@njit(cache=True)
def output_delta(Z, T, code, A_out, D, losses):
    """a^L[s, k] = output(z^L[s, k]),  δ^L[s, k] = ∂E_s/∂z^L[s, k] = a^L[s, k] - t[s, k],  and E_s

    for the output/loss pair `code`:
    - SOFTMAX_CE:  a_k = e^{z_k - m} / Σ_c e^{z_c - m} (m = max_c z_c),  E_s = Σ_k t_k (lse(z) - z_k);
    - SIGMOID_BCE: a_k = σ(z_k),  E_s = Σ_k max(z_k, 0) - t_k z_k + log(1 + e^{-|z_k|});
    - IDENTITY_SE: a_k = z_k,  E_s = ½ Σ_k (z_k - t_k)²;
    - EXP_POISSON: a_k = e^{z_k},  E_s = Σ_k e^{z_k} - t_k z_k + t_k log t_k - t_k (0 log 0 = 0).
    Z, T: (S, n_L) logits and targets · A_out, D: (S, n_L), written · losses: (S,) E_s, written.
    """
    S, n = Z.shape
    for s in range(S):
        loss = 0.0
        if code == SOFTMAX_CE:
            m = Z[s, 0]
            for k in range(n):
                m = max(m, Z[s, k])
            total = 0.0
            for k in range(n):
                total += math.exp(Z[s, k] - m)
            lse = m + math.log(total)
            for k in range(n):
                A_out[s, k] = math.exp(Z[s, k] - lse)
                loss += T[s, k] * (lse - Z[s, k])
        elif code == SIGMOID_BCE:
            for k in range(n):
                z = Z[s, k]
                A_out[s, k] = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
                loss += max(z, 0.0) - T[s, k] * z + math.log1p(math.exp(-abs(z)))
        elif code == IDENTITY_SE:
            for k in range(n):
                A_out[s, k] = Z[s, k]
                loss += 0.5 * (Z[s, k] - T[s, k]) ** 2
        elif code == EXP_POISSON:
            for k in range(n):
                t = T[s, k]
                A_out[s, k] = math.exp(Z[s, k])
                loss += A_out[s, k] - t * Z[s, k] + (t * math.log(t) - t if t > 0 else 0.0)
        else:
            raise ValueError("unknown output code")
        for k in range(n):
            D[s, k] = A_out[s, k] - T[s, k]
        losses[s] = loss
