"""Optimizers and learning-rate schedules: hyper-parameters and state on the Python side.

The update itself runs in compiled code (`fastbp.kernels.optimizers`), once per batch, inside the
compiled loop over an epoch's batches. An optimizer keeps its state (momentum buffer, Adam moments,
step count, epochs done) between calls to `fit`/`partial_fit` of the model it was last used with,
so passing the same optimizer again continues training; `reset()` starts over.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from . import kernels as K
from .kernels.optimizers import state_rows
from .validation import check_fraction, check_lr, check_non_negative

#: a learning rate: a number, or a callable epoch -> learning rate (epochs counted from 0)
LearningRate = Union[float, Callable[[int], float]]


# ----------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class ConstantLR:
    """ε_e = lr for every epoch e."""
    lr: float

    def __call__(self, epoch: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepLR:
    """ε_e = lr · gamma^⌊e / step_size⌋ (``torch.optim.lr_scheduler.StepLR``)."""
    lr: float
    step_size: int
    gamma: float = 0.1

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class ExponentialLR:
    """ε_e = lr · gamma^e (``torch.optim.lr_scheduler.ExponentialLR``)."""
    lr: float
    gamma: float

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** epoch


@dataclass(frozen=True)
class CosineLR:
    """ε_e = min_lr + (lr - min_lr)(1 + cos(π e / epochs)) / 2, then min_lr from e = epochs on
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` with T_max = epochs, without restarts)."""
    lr: float
    epochs: int
    min_lr: float = 0.0

    def __call__(self, epoch: int) -> float:
        e = min(epoch, self.epochs)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * e / self.epochs)) / 2


# ----------------------------------------------------------------------------- optimizers
class Optimizer:
    """What every optimizer shares: the learning rate or schedule, and state kept between fits.

    Subclasses set `code` (the kernel's optimizer code) and implement `_hyper(lr)`.
    """

    code: int = K.SGD

    def __init__(self, lr: LearningRate) -> None:
        self.lr = lr if callable(lr) else check_lr(lr)
        self.reset()

    def reset(self) -> None:
        """Forget the state: zero momentum/moments, step and epoch counts back to 0."""
        self.state: np.ndarray | None = None  # (`state_rows`, P) flat state vectors
        self.steps = 0  # optimizer steps taken (Adam's t)
        self.epochs = 0  # epochs trained; the schedule's epoch
        self._owner: weakref.ref | None = None

    def learning_rate(self, epoch: int | None = None) -> float:
        """The learning rate ε of `epoch` (default: the next epoch to train), checked finite and > 0."""
        epoch = self.epochs if epoch is None else epoch
        if not callable(self.lr):
            return self.lr
        try:
            return check_lr(self.lr(epoch))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the learning-rate schedule {self.lr!r} gave a bad value for epoch {epoch}: {exc}") from None

    def hyper(self, epoch: int | None = None) -> np.ndarray:
        """The kernel's hyper-parameter vector for `epoch` (without L2 and clipping; `fit` adds those)."""
        return K.hyper_parameters(**self.step_settings(self.learning_rate(epoch)))

    def step_settings(self, lr: float) -> dict:
        """The keyword arguments of `kernels.hyper_parameters` for a step at learning rate `lr`."""
        return self._hyper(lr)

    @property
    def fused(self) -> bool:
        """True when the step is plain θ ← θ - ε g, taken by the next batch's forward as it reads W
        (`kernels.dense_update_forward`), with no gradient vector."""
        return False

    @property
    def state_rows(self) -> int:
        """Rows of state the kernel keeps per parameter (`kernels.optimizers.state_rows`)."""
        return state_rows(self.code, K.hyper_parameters(**self._hyper(0.0)))  # rows never depend on ε

    def bind(self, params: np.ndarray) -> np.ndarray:
        """The (`state_rows`, P) state for the flat parameter vector `params`, allocated (zeros) on first
        use or when the optimizer is used with another model, then kept."""
        shape = (self.state_rows, params.shape[0])
        fits = self.state is not None and self.state.shape == shape and self.state.dtype == params.dtype
        same_model = self._owner is not None and self._owner() is params
        unpickled = self._owner is None and self.state is not None  # pickled along with its model
        if not (fits and (same_model or unpickled)):
            self.reset()
            self.state = np.zeros(shape, dtype=params.dtype)
        self._owner = weakref.ref(params)
        return self.state

    def _hyper(self, lr: float) -> dict:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_owner"] = None  # a weak reference does not pickle; the copy adopts the first model it is used with
        return state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({fields})"

    def _settings(self) -> dict:
        return {"lr": self.lr}


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov momentum and weight decay.

    ``g ← g + λθ``; ``v ← μv + g``; ``θ ← θ - ε (g + μv)`` (Nesterov) or ``θ ← θ - ε v`` (momentum)
    or ``θ ← θ - ε g`` (μ = 0; docs/derivation.md eq. 22): ``torch.optim.SGD`` with dampening 0.
    Plain SGD (μ = 0, λ = 0) is fused into the next batch's forward (`kernels.dense_update_forward`), which
    updates each row of W just before reading it, so a step costs no extra pass over W.

    Parameters
    ----------
    lr : float or callable epoch -> float, default 0.01
        Learning rate ε, finite and > 0, or a schedule such as `StepLR`, `CosineLR`.
    momentum : float in [0, 1), default 0
    nesterov : bool, default False
        Nesterov momentum; needs momentum > 0.
    weight_decay : float ≥ 0, default 0
        λ, added to the gradient as λθ for every parameter, biases included (PyTorch's convention).
    """

    code = K.SGD

    def __init__(self, lr: LearningRate = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        self.momentum = check_fraction(momentum, "momentum")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, e.g. SGD(lr=0.05, momentum=0.9, nesterov=True)")
        self.nesterov = bool(nesterov)
        self.weight_decay = check_non_negative(weight_decay, "weight_decay")
        super().__init__(lr)

    @property
    def fused(self) -> bool:
        return self.momentum == 0 and self.weight_decay == 0

    def _hyper(self, lr: float) -> dict:
        return dict(lr=lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)

    def _settings(self) -> dict:
        settings = {"lr": self.lr}
        if self.momentum:
            settings.update(momentum=self.momentum, nesterov=self.nesterov)
        if self.weight_decay:
            settings["weight_decay"] = self.weight_decay
        return settings


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) as ``torch.optim.Adam`` computes it (amsgrad off).

    ``g ← g + λθ``; ``m ← β₁m + (1-β₁)g``; ``u ← β₂u + (1-β₂)g²``;
    ``θ ← θ - ε/(1-β₁ᵗ) · m / (√u/√(1-β₂ᵗ) + eps)``, t = 1, 2, ... the step number.

    Parameters
    ----------
    lr : float or callable epoch -> float, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float ≥ 0, default 1e-8
    weight_decay : float ≥ 0, default 0
        λ, an L2 term added to the gradient (coupled; see `AdamW` for the decoupled form).
    """

    code = K.ADAM

    def __init__(self, lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_fraction(beta1, "betas[0]"), check_fraction(beta2, "betas[1]"))
        self.eps = check_non_negative(eps, "eps")
        self.weight_decay = check_non_negative(weight_decay, "weight_decay")
        super().__init__(lr)

    def _hyper(self, lr: float) -> dict:
        return dict(lr=lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps, weight_decay=self.weight_decay)

    def _settings(self) -> dict:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019) as ``torch.optim.AdamW`` computes it: ``θ ← θ(1 - ελ)``, then the
    Adam step without the L2 term. Same parameters as `Adam`; weight_decay defaults to 1e-2 as in PyTorch."""

    code = K.ADAMW

    def __init__(self, lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop as ``torch.optim.RMSprop`` computes it.

    ``g ← g + λθ``; ``u ← αu + (1-α)g²``; ``ũ = u`` (or ``u - c²`` with ``c ← αc + (1-α)g``, centered);
    ``d = g / (√ũ + eps)``; ``b ← μb + d``, ``θ ← θ - ε b`` (μ > 0) or ``θ ← θ - ε d``.

    Parameters
    ----------
    lr : float or callable epoch -> float, default 0.01
    alpha : float in [0, 1), default 0.99
        Smoothing constant α of the running mean of g².
    eps : float ≥ 0, default 1e-8
    weight_decay : float ≥ 0, default 0
        λ, added to the gradient as λθ (PyTorch's convention).
    momentum : float in [0, 1), default 0
    centered : bool, default False
        Divide by an estimate of the gradient's variance, u - c², instead of its mean square u.
    """

    code = K.OPTIMIZERS["rmsprop"]

    def __init__(self, lr: LearningRate = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False) -> None:
        self.alpha = check_fraction(alpha, "alpha")
        self.eps = check_non_negative(eps, "eps")
        self.weight_decay = check_non_negative(weight_decay, "weight_decay")
        self.momentum = check_fraction(momentum, "momentum")
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)
        super().__init__(lr)

    def _hyper(self, lr: float) -> dict:
        return dict(lr=lr, alpha=self.alpha, eps=self.eps, weight_decay=self.weight_decay, momentum=self.momentum,
                    centered=self.centered)

    def _settings(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}


#: name -> optimizer class (the names of `kernels.OPTIMIZERS`); the CLI's --optimizer reads it
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.__name__.lower(): cls for cls in (SGD, Adam, AdamW, RMSprop)}
