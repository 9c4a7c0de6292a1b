"""End-to-end training benchmarks: one epoch of `MLP.fit` on the reference network, against the same
epoch written in plain NumPy, at several batch sizes; the gather of a shuffled batch; and inference,
`MLP.predict_proba` against the same forward pass in NumPy.

4,096 random samples (the peers script runs the full 60,000-sample job), no shuffling, SGD lr 0.01.
GFLOP/s count the whole step as the issue does (`reference_job.training_flops_per_sample`).
"""
import numpy as np
import pytest

import fastbp
from fastbp import kernels as K
from fastbp.buffers import empty_on_a_line
from reference_job import (DTYPE, LAYER_SIZES, LEARNING_RATE, N_CLASSES, forward_flops_per_sample,
                           initial_parameters, numpy_sgd_step, reference_data, training_flops_per_sample)

N_SAMPLES = 4096
BATCHES = (1, 16, 64, 512)
ROUNDS = 3


@pytest.fixture(scope="module")
def data():
    return reference_data(N_SAMPLES)


def fastbp_epoch(data, batch):
    X, y = data
    model = fastbp.MLP(list(LAYER_SIZES), activation="relu", output="softmax", dtype=DTYPE, seed=0)
    optimizer = fastbp.SGD(lr=LEARNING_RATE)
    return lambda: model.fit(X, y, epochs=1, batch_size=batch, optimizer=optimizer, shuffle=False, verbose=0)


def numpy_epoch(data, batch):
    X, y = data
    T = np.eye(N_CLASSES, dtype=DTYPE)[y]
    params = initial_parameters()

    def epoch():
        for start in range(0, len(X), batch):
            numpy_sgd_step(params, X[start:start + batch], T[start:start + batch])
        return params

    return epoch


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("batch", BATCHES)
def test_train_epoch(measure, data, batch, impl):
    epoch = {"fastbp": fastbp_epoch, "numpy": numpy_epoch}[impl](data, batch)
    flops = training_flops_per_sample() * N_SAMPLES
    result = measure(f"train epoch {N_SAMPLES} samples batch={batch}", impl, flops, epoch, rounds=ROUNDS)
    if impl == "fastbp":
        assert np.isfinite(result["loss"]).all()
    else:
        assert all(np.isfinite(W).all() for W, _ in result)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
@pytest.mark.parametrize("batch", (16, 512))
def test_gather_shuffled_batch(measure, data, batch, impl):
    """a^0 = X[index], t = T[index] for a shuffled batch (`K.batch_rows`) against NumPy's `np.take`."""
    X, y = data
    T = np.eye(N_CLASSES, dtype=DTYPE)[y]
    sizes = np.array(LAYER_SIZES, np.int64)
    index = np.random.default_rng(0).permutation(len(X))[:batch]
    woff = K.workspace_offsets(sizes, batch)
    work = empty_on_a_line(woff[-1, 2], DTYPE)  # as a model's workspace, and NumPy's outputs alike
    A0, Tb = empty_on_a_line((batch, X.shape[1]), DTYPE), empty_on_a_line((batch, N_CLASSES), DTYPE)
    gathers = {
        "fastbp": lambda: K.batch_rows(X, T, index, work, woff, sizes),
        "numpy": lambda: (np.take(X, index, axis=0, out=A0), np.take(T, index, axis=0, out=Tb)),
    }
    rows, targets = measure(f"gather shuffled batch={batch}", impl, 0, gathers[impl])
    np.testing.assert_array_equal(rows, X[index])
    np.testing.assert_array_equal(targets, T[index])


def numpy_predict_proba(params, X: np.ndarray) -> np.ndarray:
    """Softmax outputs of the reference network in plain NumPy: relu(a W^T + b) per hidden layer."""
    a = X
    for W, b in params[:-1]:
        a = np.maximum(a @ W.T + b, 0)
    W, b = params[-1]
    z = a @ W.T + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("impl", ("fastbp", "numpy"))
def test_predict_proba(measure, data, impl):
    """`MLP.predict_proba` (input checks included) against the same forward pass in NumPy."""
    X, _ = data
    model = fastbp.MLP(list(LAYER_SIZES), activation="relu", output="softmax", dtype=DTYPE, seed=0)
    params = initial_parameters()  # the model's own weights, copied
    predict = {"fastbp": lambda: model.predict_proba(X), "numpy": lambda: numpy_predict_proba(params, X)}[impl]
    proba = measure(f"predict_proba {N_SAMPLES} samples", impl, forward_flops_per_sample() * N_SAMPLES, predict)
    np.testing.assert_allclose(proba, numpy_predict_proba(params, X.astype(np.float64)), atol=1e-6)
