"""fastbp: train fully connected networks on the CPU with JIT-compiled backpropagation kernels.

`import fastbp` loads nothing heavy: Numba (half a second to import) and the kernels load when a
name below is first used (a module `__getattr__`, PEP 562), as SciPy and scikit-image load theirs.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: each public name, and the submodule that defines it
_EXPORTS = {
    "MLP": "model", "load": "io", "compile": "prebuild",
    **{name: "optim" for name in ("SGD", "Adam", "AdamW", "RMSprop", "ConstantLR", "CosineLR", "ExponentialLR",
                                  "StepLR")},
}
_SUBMODULES = ("data", "kernels", "parallel")  # parallel: `fastbp.parallel.active_layer()`, in docs/guide.md

__all__ = ["MLP", "SGD", "Adam", "AdamW", "RMSprop", "ConstantLR", "CosineLR", "ExponentialLR", "StepLR", "load",
           "data", "kernels", "compile", "__version__"]


def __getattr__(name: str) -> Any:
    """fastbp.MLP, fastbp.kernels, ...: the submodule is imported on first use, then the name is kept here."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups find it without calling __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from . import data, kernels
    from .io import load
    from .model import MLP
    from .optim import SGD, Adam, AdamW, ConstantLR, CosineLR, ExponentialLR, RMSprop, StepLR
    from .prebuild import compile  # noqa: A004
