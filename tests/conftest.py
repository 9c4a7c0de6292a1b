import numpy as np
import pytest

import fastbp

ACTIVATIONS = list(fastbp.kernels.REGISTRY)  # every registered activation
OUTPUTS = ["softmax", "sigmoid", "identity"]


def make_targets(rng, output, S, n_out):
    """Random targets of the kind each output takes: labels, 0/1 matrix, real values."""
    if output == "softmax":
        return rng.integers(0, n_out, S)
    if output == "sigmoid":
        return rng.integers(0, 2, (S, n_out)).astype(float)
    return rng.normal(size=(S, n_out))


def one_hot_or_matrix(y, output, n_out):
    if output == "softmax" and y.ndim == 1:
        return np.eye(n_out)[y]
    return np.asarray(y, float).reshape(len(y), n_out)


@pytest.fixture
def digits():
    return fastbp.data.load_digits_split(seed=0)
