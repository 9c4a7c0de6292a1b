"""fastbp: train fully connected networks on the CPU with JIT-compiled backpropagation kernels."""
from . import data, kernels
from .model import MLP
from .optim import SGD

__version__ = "0.1.0"
__all__ = ["MLP", "SGD", "__version__"]
