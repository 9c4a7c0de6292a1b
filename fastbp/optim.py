"""Optimizers: hyper-parameters and state on the Python side; the update runs in compiled code."""
from __future__ import annotations

import math


class SGD:
    """Plain stochastic gradient descent, ``W ← W - lr ∂E/∂W`` (NOTATION.md, seed 002).

    The update is fused into the weight-gradient kernel, so a step costs no extra pass.

    Parameters
    ----------
    lr : float
        Learning rate ε, finite and > 0.
    """

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = _check_lr(lr)

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr!r})"


def _check_lr(lr: float) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"lr must be a real number, got {type(lr).__name__}; pass e.g. lr=0.01")
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be finite and > 0, got {lr}; pass e.g. lr=0.01")
    return lr
