"""The training jobs of tests/test_distributed.py, run on 2 ranks by `fit.py` and in one process by the test."""
import os
import signal
import warnings

import numpy as np

import fastbp


def data(n=480, width=12, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width))
    y = (X[:, :classes].argmax(axis=1) + (rng.random(n) < 0.1)) % classes
    return X, y


OPTIMIZERS = {"sgd": lambda: fastbp.SGD(lr=0.05), "momentum": lambda: fastbp.SGD(lr=0.02, momentum=0.9),
              "adam": lambda: fastbp.Adam(lr=5e-3)}


class SameOnEveryRank:
    """A callback: whether every rank held the same weights after every epoch (True without comm)."""

    def __init__(self, comm):
        self.comm, self.same = comm, True

    def __call__(self, epoch, history, model):
        if self.comm is None:
            return
        weights = self.comm.allgather(model._params.tobytes())
        self.same &= all(w == weights[0] for w in weights)


def job(name, dtype, comm=None):
    """3 epochs of a float64 or float32 job with the optimizer `name`: (final weights, same on every rank)."""
    X, y = data()
    model = fastbp.MLP([12, 16, 8, 3], dtype=dtype, seed=7)
    check = SameOnEveryRank(comm)
    model.fit(X, y, epochs=3, batch_size=40, optimizer=OPTIMIZERS[name](), seed=11, verbose=0, comm=comm,
              callbacks=[check])
    return model._params.copy(), check.same


def job32(checkpoint, comm=None, resume=None, kill=False):
    """Adam, float32, L2, clipping, validation and early stopping settings, checkpointed every epoch."""
    X, y = data(n=600)

    def killer(epoch, history, model):
        if kill and comm.Get_rank() == 1 and epoch == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    check = SameOnEveryRank(comm)
    model = fastbp.MLP([12, 16, 8, 3], dtype=np.float32, seed=7)
    history = model.fit(X, y, epochs=5, batch_size=50, optimizer=fastbp.Adam(lr=5e-3), seed=3, verbose=0,
                        alpha=1e-3, clip_norm=1.0, validation_split=0.2, patience=10, comm=comm,
                        callbacks=[check, killer], checkpoint=checkpoint, checkpoint_every=1, resume=resume)
    return model._params.copy(), check.same, np.array(history["val_loss"])


def estimator_job(comm=None):
    """fastbp.sklearn.MLPClassifier (sgd with Nesterov momentum, L2, early stopping) in float64: its flat weights."""
    from sklearn.exceptions import ConvergenceWarning

    from fastbp.sklearn import MLPClassifier

    X, y = data()
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.02, batch_size=40, max_iter=4,
                        early_stopping=True, random_state=0, dtype=np.float64, comm=comm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 4 epochs on purpose
        clf.fit(X, y)
    return clf.model_._params.copy()
