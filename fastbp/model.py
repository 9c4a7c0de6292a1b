"""The multilayer perceptron: builds the flat parameter and workspace arrays and calls the kernels."""
from __future__ import annotations

import time
import warnings
from typing import Sequence

import numpy as np

from . import kernels as K
from .optim import SGD
from .validation import check_positive_int, check_targets, check_X

#: rows per chunk when predicting; bounds the inference workspace
PREDICT_BATCH = 1024


class MLP:
    """A fully connected network trained by backpropagation.

    ``z^l = b^l + W^l a^{l-1}``, ``a^l = f_l(z^l)`` for l = 1..L, with the output layer and its loss
    fused (NOTATION.md).

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_0, n_1, ..., n_L]``: inputs, hidden layers, outputs. At least two entries, each ≥ 1.
    activation : str or sequence of str, default "relu"
        Hidden activation, one of "relu", "tanh", "sigmoid", "identity", or one per hidden layer.
    output : {"softmax", "sigmoid", "identity"}, default "softmax"
        Output layer and loss: softmax + cross-entropy (classes), sigmoid + binary cross-entropy
        (multi-label or one binary output), identity + ½ squared error (regression).
    dtype : np.float32 or np.float64, default np.float32
    seed : int, default 0
        Seeds the initialisation (He for relu layers, Glorot for the others and the output layer).

    Attributes
    ----------
    weights : list of ndarray
        ``weights[l]`` has shape ``(n_{l+1}, n_l)``: ``W[k, j]`` as in ``z_k = b_k + Σ_j W_kj a_j``.
    biases : list of ndarray
        ``biases[l]`` has shape ``(n_{l+1},)``.
    """

    def __init__(self, layer_sizes: Sequence[int], activation: str | Sequence[str] = "relu",
                 output: str = "softmax", dtype=np.float32, seed: int = 0) -> None:
        self.layer_sizes = _check_layer_sizes(layer_sizes)
        self.activations = _check_activations(activation, len(self.layer_sizes) - 2)
        self.output = _check_name(output, K.OUTPUTS, "output")
        self.dtype = _check_dtype(dtype)
        self.seed = seed
        self._sizes = np.array(self.layer_sizes, dtype=np.int64)
        self._codes = np.array([K.ACTIVATIONS[a] for a in self.activations] + [K.OUTPUTS[self.output]],
                               dtype=np.int64)
        self._offsets = K.param_offsets(self._sizes)
        self._params = np.zeros(self._offsets[-1, 0], dtype=self.dtype)
        self.weights, self.biases = self._views(self._params)
        self._initialise(np.random.default_rng(seed))

    # ------------------------------------------------------------------ parameters
    def _views(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-layer (W^l, b^l) views into a flat parameter-shaped vector."""
        weights, biases = [], []
        for l in range(1, len(self.layer_sizes)):
            w0, b0 = self._offsets[l]
            n_out, n_in = self.layer_sizes[l], self.layer_sizes[l - 1]
            weights.append(flat[w0:b0].reshape(n_out, n_in))
            biases.append(flat[b0:b0 + n_out])
        return weights, biases

    def _initialise(self, rng: np.random.Generator) -> None:
        """He normal for relu layers, Glorot uniform for the others; biases 0."""
        hidden = self.activations + [None]
        for W, f in zip(self.weights, hidden):
            n_out, n_in = W.shape
            if f == "relu":
                W[...] = rng.normal(0.0, np.sqrt(2.0 / n_in), size=W.shape)
            else:
                r = np.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-r, r, size=W.shape)

    def _workspace(self, batch: int) -> np.ndarray:
        return np.empty(K.workspace_offsets(self._sizes, batch)[-1, 2], dtype=self.dtype)

    # ------------------------------------------------------------------ training
    def loss_and_grads(self, X, y) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Batch-mean loss E and its gradients on (X, y), without changing the model.

        Returns
        -------
        loss : float
        dW : list of ndarray, shaped like `weights`: ``∂E/∂W^l``
        db : list of ndarray, shaped like `biases`: ``∂E/∂b^l``
        """
        X, T = self._check_data(X, y)
        S = X.shape[0]
        work = self._workspace(S)
        K.gather_batch(X, T, np.arange(S), work, K.workspace_offsets(self._sizes, S), self._sizes)
        grads = np.empty_like(self._params)
        loss, _ = K.forward_backward(self._sizes, self._codes, self._params, work, S, 1.0 / S, 0.0, grads)
        dW, db = self._views(grads)
        return float(loss), dW, db

    def fit(self, X, y, epochs: int = 20, batch_size: int = 32, optimizer: SGD | None = None,
            shuffle: bool = True, seed: int = 0, verbose: int = 1) -> dict[str, list[float]]:
        """Train with mini-batch SGD; the loop over an epoch's batches runs in compiled code.

        Parameters
        ----------
        X : array-like (N, n_0)
        y : targets: see `output` in the class docstring
        epochs : int, number of passes over the data
        batch_size : int, samples per step (the last batch of an epoch may be smaller)
        optimizer : SGD, default SGD(lr=0.01)
        shuffle : bool, reshuffle the samples every epoch, from `seed`
        seed : int, seeds the shuffling
        verbose : int, 0 silent, 1 one line per epoch

        Returns
        -------
        history : dict
            ``"loss"`` per epoch (the mean of the batch losses, as Keras reports it), ``"accuracy"``
            for softmax/sigmoid outputs, ``"samples_per_second"`` per epoch.
        """
        X, T = self._check_data(X, y)
        epochs = check_positive_int(epochs, "epochs")
        batch_size = min(check_positive_int(batch_size, "batch_size"), X.shape[0])
        optimizer = SGD() if optimizer is None else optimizer
        if not isinstance(optimizer, SGD):
            raise TypeError(f"optimizer must be a fastbp.SGD, got {type(optimizer).__name__}")
        rng = np.random.default_rng(seed)
        work = self._workspace(batch_size)
        history: dict[str, list[float]] = {"loss": [], "samples_per_second": []}
        if self.output != "identity":
            history["accuracy"] = []
        N = X.shape[0]
        for epoch in range(1, epochs + 1):
            order = rng.permutation(N) if shuffle else np.arange(N)
            before = self._params.copy()
            start = time.perf_counter()
            loss_sum, correct = K.train_epoch(X, T, order, batch_size, self._sizes, self._codes,
                                              self._params, work, optimizer.lr)
            seconds = time.perf_counter() - start
            if not np.isfinite(loss_sum) or not np.isfinite(self._params).all():
                self._params[...] = before
                warnings.warn(f"training diverged in epoch {epoch} (loss is {loss_sum / N}); stopped and kept "
                              f"the weights from the end of epoch {epoch - 1}. Lower the learning rate.",
                              RuntimeWarning, stacklevel=2)
                break
            history["loss"].append(loss_sum / N)
            history["samples_per_second"].append(N / seconds)
            if "accuracy" in history:
                history["accuracy"].append(correct / N)
            if verbose:
                print(_epoch_line(epoch, epochs, history), flush=True)
        return history

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X) -> np.ndarray:
        """Output activations a^L, shape (N, n_L): class probabilities, sigmoid outputs or values."""
        X = check_X(X, self.layer_sizes[0], self.dtype)
        batch = min(PREDICT_BATCH, X.shape[0])
        out = np.empty((X.shape[0], self.layer_sizes[-1]), dtype=self.dtype)
        K.predict_outputs(X, self._sizes, self._codes, self._params, self._workspace(batch), batch, out)
        return out

    def predict(self, X) -> np.ndarray:
        """Class labels (softmax), 0/1 labels (sigmoid; a vector for one output) or values (identity)."""
        A = self.predict_proba(X)
        if self.output == "softmax":
            return A.argmax(axis=1)
        if self.output == "sigmoid":
            A = (A > 0.5).astype(np.int64)
        return A[:, 0] if A.shape[1] == 1 else A

    def score(self, X, y) -> float:
        """Accuracy for softmax/sigmoid outputs (subset accuracy for multi-label), R² for identity."""
        A = self.predict_proba(X)
        T = check_targets(y, A.shape[0], self.layer_sizes[-1], self.output, self.dtype)
        if self.output == "softmax":
            return float(np.mean(A.argmax(axis=1) == T.argmax(axis=1)))
        if self.output == "sigmoid":
            return float(np.mean(np.all((A > 0.5) == (T > 0.5), axis=1)))
        residual = ((T - A) ** 2).sum(axis=0, dtype=np.float64)
        total = ((T - T.mean(axis=0)) ** 2).sum(axis=0, dtype=np.float64)
        return float(np.mean(1 - residual / np.where(total > 0, total, 1)))

    # ------------------------------------------------------------------ helpers
    def _check_data(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        X = check_X(X, self.layer_sizes[0], self.dtype)
        return X, check_targets(y, X.shape[0], self.layer_sizes[-1], self.output, self.dtype)

    def __repr__(self) -> str:
        return (f"MLP({self.layer_sizes}, activation={self.activations}, output={self.output!r}, "
                f"dtype={np.dtype(self.dtype).name})")


def _epoch_line(epoch: int, epochs: int, history: dict[str, list[float]]) -> str:
    line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {history['loss'][-1]:.4f}"
    if "accuracy" in history:
        line += f"  accuracy {history['accuracy'][-1]:.4f}"
    return line + f"  {history['samples_per_second'][-1]:,.0f} samples/s"


def _check_layer_sizes(layer_sizes) -> list[int]:
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError("layer_sizes must be a list of ints like [64, 128, 10]") from None
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least an input and an output size, got {sizes}")
    return [check_positive_int(n, f"layer_sizes[{i}]") for i, n in enumerate(sizes)]


def _check_name(name, table: dict, argument: str) -> str:
    if name not in table:
        raise ValueError(f"unknown {argument} {name!r}; choose one of {sorted(table)}")
    return name


def _check_activations(activation, n_hidden: int) -> list[str]:
    if isinstance(activation, str):
        return [_check_name(activation, K.ACTIVATIONS, "activation")] * n_hidden
    names = list(activation)
    if len(names) != n_hidden:
        raise ValueError(f"activation lists {len(names)} names but the model has {n_hidden} hidden layers; "
                         "give one name, or one per hidden layer")
    return [_check_name(a, K.ACTIVATIONS, "activation") for a in names]


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt.type
