"""fastbp: train fully connected networks on the CPU with JIT-compiled backpropagation kernels."""
from . import parallel  # noqa: F401  first: picks a thread-safe Numba threading layer (fastbp/parallel.py)
from . import data, kernels
from .io import load
from .model import MLP
from .optim import SGD, Adam, AdamW, ConstantLR, CosineLR, ExponentialLR, RMSprop, StepLR
from .prebuild import compile  # noqa: A004  fastbp.compile: prebuilds the kernel cache

__version__ = "0.1.0"
__all__ = ["MLP", "SGD", "Adam", "AdamW", "RMSprop", "ConstantLR", "CosineLR", "ExponentialLR", "StepLR", "load",
           "data", "kernels", "compile", "__version__"]
