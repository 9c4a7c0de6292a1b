"""The multilayer perceptron: builds the flat parameter and workspace arrays and calls the kernels."""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import threading
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from . import distributed
from . import kernels as K
from .buffers import copy_on_a_line, empty_on_a_line, zeros_on_a_line
from .distributed import writeable_map
from .kernels.cache import has_compiled
from .kernels.optimizers import LR
from .optim import OPTIMIZERS, SGD, Optimizer
from . import sparse_input
from .parallel import parallel_section, thread_count
from .validation import (check_non_negative, check_positive, check_positive_int, check_sample_weight, check_targets,
                         check_X)

#: the outputs that classify (accuracy is recorded); "identity" and "poisson" regress
_CLASSIFYING = ("softmax", "sigmoid")

class MLP:
    """A fully connected network trained by backpropagation.

    ``z^l = b^l + W^l a^{l-1}``, ``a^l = f_l(z^l)`` for l = 1..L, with the output layer and its loss
    fused (docs/derivation.md eq. 1-14).

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_0, n_1, ..., n_L]``: inputs, hidden layers, outputs. At least two entries, each ≥ 1.
    activation : str or sequence of str, default "relu"
        Hidden activation, a name in ``fastbp.kernels.REGISTRY`` ("relu", "tanh", "sigmoid", "identity",
        "gelu"), or one per hidden layer.
    output : {"softmax", "sigmoid", "identity", "poisson"}, default "softmax"
        Output layer and loss: softmax + cross-entropy (classes), sigmoid + binary cross-entropy
        (multi-label or one binary output), identity + ½ squared error (regression), exp + half Poisson
        deviance (counts or rates ≥ 0).
    dtype : np.float32 or np.float64, default np.float32
    seed : int, default 0
        Seeds the initialisation (the activation's rule: He for relu and GELU layers, Glorot for the others and
        the output layer).
    dropout : float in [0, 1), default 0
        Inverted dropout on every hidden layer during `fit` (each unit kept with probability 1 - p and
        scaled by 1/(1 - p)); the masks follow from fit's `seed` and the step count. Never applied by
        `predict_proba`, `evaluate` or `loss_and_grads`.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[l]`` has shape ``(n_{l+1}, n_l)``: ``W[k, j]`` as in ``z_k = b_k + Σ_j W_kj a_j``.
    biases : list of ndarray
        ``biases[l]`` has shape ``(n_{l+1},)``.
    """

    def __init__(self, layer_sizes: Sequence[int], activation: str | Sequence[str] = "relu",
                 output: str = "softmax", dtype=np.float32, seed: int = 0, dropout: float = 0.0) -> None:
        self.layer_sizes = _check_layer_sizes(layer_sizes)
        self.activations = _check_activations(activation, len(self.layer_sizes) - 2)
        self.output = _check_name(output, K.OUTPUTS, "output")
        self.dtype = _check_dtype(dtype)
        self.seed = seed
        self.dropout = _check_dropout(dropout)
        self._sizes = np.array(self.layer_sizes, dtype=np.int64)
        self._codes = np.array([K.ACTIVATIONS[a] for a in self.activations] + [K.OUTPUTS[self.output]],
                               dtype=np.int64)
        self._smooth = K.smooth_flag(self._codes)  # None for relu/identity networks: less code to compile
        self._packed = K.packs_flag(self._sizes)  # None unless a layer is big enough to pack: likewise
        self._offsets = K.param_offsets(self._sizes)
        self._params = zeros_on_a_line(self._offsets[-1, 0], self.dtype)
        self.weights, self.biases = self._views(self._params)
        self._initialise(np.random.default_rng(seed))
        self.optimizer: Optimizer | None = None  # the optimizer of the last fit, continued by the next

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
        """Each hidden layer's rule from the activation registry (He normal for relu-like, Glorot uniform for
        the others), Glorot uniform for the output layer; biases 0."""
        rules = [K.REGISTRY[f].init for f in self.activations] + [K.glorot_uniform]
        for W, init in zip(self.weights, rules):
            W[...] = init(rng, W.shape)

    def _workspace(self, batch: int, copies: int = 1) -> np.ndarray:
        """`copies` workspaces for batches of up to `batch` rows, one after the other, starting on a
        cache line (`buffers`), as each buffer in them does (`K.workspace_offsets`)."""
        return empty_on_a_line(copies * K.workspace_offsets(self._sizes, batch)[-1, 2], self.dtype)

    # ------------------------------------------------------------------ training
    def loss_and_grads(self, X, y, sample_weight=None) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Batch-mean loss E and its gradients on (X, y), without changing the model.

        With `sample_weight` (N,), E is the weighted mean Σ_s w_s E_s / Σ_s w_s.

        Returns
        -------
        loss : float
        dW : list of ndarray, shaped like `weights`: ``∂E/∂W^l``
        db : list of ndarray, shaped like `biases`: ``∂E/∂b^l``
        """
        X, T = self._check_data(X, y)
        sw = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        grads = empty_on_a_line(self._params.shape, self.dtype)
        if sparse_input.is_sparse(X):
            if sw is not None:
                raise ValueError("sample_weight with sparse X is not supported; pass sample_weight=None or a dense X")
            with parallel_section():
                loss = sparse_input.loss_and_grads(self, X, T, grads)
            return loss, *self._views(grads)
        loss = self._flat_loss_and_grads(X, T, sw, self._workspace(X.shape[0]), grads)
        dW, db = self._views(grads)
        return loss, dW, db

    def _flat_loss_and_grads(self, X, T, sw, work, grads) -> float:
        """E on checked (X, T) (weighted by sw unless None), with ∂E/∂θ written into the flat `grads`."""
        S = X.shape[0]
        wb = None if sw is None else self._batch_weights(sw)  # None as the training loop passes it: one variant
        with parallel_section():
            loss, _ = K.forward_backward(self._sizes, self._codes, self._params, self._offsets, X, T, work,
                                         K.workspace_offsets(self._sizes, S), S, 1.0 / S, 0.0, grads, wb,
                                         None, 0, self._smooth, self._packed)
        return float(loss)

    def _batch_weights(self, sw: np.ndarray) -> np.ndarray:
        """The weights of one batch of all rows as the kernels take them (`K.batch_weights`)."""
        wb = np.empty_like(sw)
        K.batch_weights(sw, np.arange(sw.shape[0]), wb)
        return wb

    def fit(self, X, y, epochs: int = 20, batch_size: int = 32, optimizer: Optimizer | None = None,
            shuffle: bool = True, seed: int = 0, verbose: int = 1, *, alpha: float = 0.0,
            clip_norm: float | None = None, validation_data: tuple | None = None, validation_split: float = 0.0,
            patience: int | None = None, min_delta: float = 0.0, monitor: str | None = None,
            callbacks: Sequence[Callable] = (), sample_weight=None, comm=None, shard: str = "global",
            checkpoint=None, checkpoint_every: int = 1, resume=None) -> dict[str, list[float]]:
        """Train by mini-batches; the loop over an epoch's batches, each gradient and each optimizer
        step run in compiled code. Training continues from the current weights.

        Parameters
        ----------
        X : array-like (N, n_0), or a scipy.sparse matrix (kept sparse: a compiled sparse first layer)
        y : targets: see `output` in the class docstring
        epochs : int, number of passes over the data
        batch_size : int, samples per step (the last batch of an epoch may be smaller)
        optimizer : SGD, Adam, AdamW or RMSprop, default: the optimizer of the previous fit, else SGD(lr=0.01)
            Its state (momentum, moments, step and epoch counts) carries over between fits.
        shuffle : bool, reshuffle the samples every epoch, from `seed`
        seed : int, seeds the shuffling, the validation split and the dropout masks
        verbose : int, 0 silent, 1 a progress bar in a terminal, else one line per epoch (stdout), 2 the lines
        alpha : float ≥ 0, L2 penalty on the weights, scikit-learn's convention: a batch of S samples
            adds ``α/(2S) Σ_l ||W^l||²`` to its loss (biases are not penalised)
        clip_norm : float > 0 or None, clip the whole gradient to this L2 norm before each step
        validation_data : (X_val, y_val), evaluated after every epoch
        validation_split : float in [0, 1), the fraction of (X, y) held out (drawn from `seed`) for validation
        patience : int or None, early stopping: stop after `patience` epochs without the monitored value
            improving by more than `min_delta`, and end with the weights of the best epoch
        min_delta : float ≥ 0
        monitor : "val_loss", "loss", "val_accuracy" or "accuracy"; default "val_loss" with validation, else "loss"
        callbacks : callables ``callback(epoch, history, model)`` run after every epoch (epoch from 1);
            training stops when one returns True
        sample_weight : array-like (N,) of weights ≥ 0, or None
            Each batch's loss becomes Σ_s w_s E_s / Σ_s w_s and its L2 penalty α/(2 Σ_s w_s) Σ_l ||W^l||²
            (scikit-learn's); weight 2 counts a sample twice. The validation loss is unweighted.
        comm : mpi4py communicator or None, train data-parallel over its ranks (`fastbp.distributed`,
            docs/distributed.md): `batch_size` is the global batch, the weights stay identical on every
            rank, the history is reduced over ranks, and only rank 0 prints and writes checkpoints
        shard : "global" (every rank passes the same X, y) or "local" (each rank passes its own rows); with comm
        checkpoint : path or None, write the state of the run there (`fastbp.checkpoint`), atomically, every
            `checkpoint_every` epochs and at the last one
        checkpoint_every : int ≥ 1
        resume : path or None, continue the run from this checkpoint: `epochs` counts the epochs of the whole
            run, so the same call resumes it; with the same data, settings, ranks and threads the final
            weights equal those of an uninterrupted run, bit for bit

        Returns
        -------
        history : dict
            Per epoch: ``"loss"`` (mean of the batch losses, penalty included, as Keras and scikit-learn
            report it), ``"accuracy"`` for softmax/sigmoid outputs, ``"val_loss"``/``"val_accuracy"`` with
            validation, ``"lr"`` and ``"samples_per_second"``; with `comm` also ``"allreduce_seconds"``.
        """
        ctx = None if comm is None else distributed.Context(comm, shard)
        with ctx.checks() if ctx else contextlib.nullcontext():  # with comm: every rank's checks, then compared
            X_dtype = str(getattr(X, "dtype", ""))
            X, T = self._check_data(writeable_map(X), y)
            sw = check_sample_weight(sample_weight, X.shape[0], self.dtype)
            if sw is not None and ctx is not None:
                raise ValueError("sample_weight is not supported with comm (data-parallel training); "
                                 "pass sample_weight=None, or train without comm")
            if sw is not None and sparse_input.is_sparse(X):
                raise ValueError("sample_weight with sparse X is not supported; pass sample_weight=None or a dense X")
            if ctx is not None and (self.dropout > 0 or sparse_input.is_sparse(X)):
                raise ValueError("comm (data-parallel training) takes dense X and no dropout; pass X.toarray() "
                                 "or train without comm, and set dropout=0")
            epochs = check_positive_int(epochs, "epochs")
            verbose = _check_verbose(verbose) if ctx is None or ctx.is_root else 0
            optimizer = self._check_optimizer(optimizer)
            alpha = check_non_negative(alpha, "alpha")
            clip_norm = None if clip_norm is None else check_positive(clip_norm, "clip_norm")
            checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
            rng = np.random.default_rng(seed)
            X, T, sw, validation = self._validation_set(X, T, sw, validation_data, validation_split,
                                                        rng if ctx is None else ctx.split_rng(rng))
            batch_size = min(check_positive_int(batch_size, "batch_size"), X.shape[0] if ctx is None else 1 << 62)
            stopper = _EarlyStopping(patience, min_delta, _monitor(monitor, validation is not None, self.output))
            callbacks = _check_callbacks(callbacks)
            for e in range(epochs):  # checks the schedule up front, before any weight changes
                optimizer.learning_rate(optimizer.epochs + e)
            if ctx is not None:
                ctx.signature = distributed.signature(self, X, X_dtype, seed, epochs, batch_size, shuffle, optimizer,
                                                      alpha, clip_norm, validation, stopper, checkpoint_every, resume)
        history = self._empty_history(validation is not None)
        if ctx is None:
            run, n_total = _Run(self, optimizer, batch_size, alpha, clip_norm, seed, sparse_input.is_sparse(X)), X.shape[0]
        else:
            n_total = ctx.n_total(X.shape[0])
            batch_size = min(batch_size, n_total)
            run = distributed.Run(self, optimizer, batch_size, alpha, clip_norm, ctx, X.shape[0])
            ctx.broadcast_start(self, optimizer, run.state)
        compiles = _first_epoch_compiles(run)
        if compiles and ctx is None:
            _compile_beside(run, sw)
        done, finished = 0, False
        if resume is not None:
            done, finished = self._resume(resume, ctx, optimizer, rng, history, stopper, batch_size, n_total)
        with _Progress(verbose, epochs, compiling=verbose > 0 and compiles) as progress:
            for epoch in range(done + 1, (done if finished else epochs) + 1):
                order = (ctx.epoch_order(rng, X.shape[0], shuffle) if ctx else
                         rng.permutation(X.shape[0]) if shuffle else np.arange(X.shape[0]))
                # read when the epoch starts: a schedule may follow what the callbacks saw (scikit-learn's "adaptive")
                if not run.epoch(X, T, order, optimizer.learning_rate(), history, sw):
                    warnings.warn(f"training diverged in epoch {epoch} (loss is {run.diverged_loss}); stopped and "
                                  f"kept the weights from the end of epoch {epoch - 1}. Lower the learning rate.",
                                  RuntimeWarning, stacklevel=2)
                    break
                if validation is not None:
                    self._record_validation(*validation, history, ctx)
                progress.update(epoch, history)
                stop = stopper.update(history, self._params)
                stop = any([bool(callback(epoch, history, self)) for callback in callbacks]) or stop
                stop = ctx.any(stop) if ctx else stop  # every rank stops together
                if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == epochs or stop):
                    self._checkpoint(checkpoint, ctx, optimizer, epoch, stop, rng, history, stopper, batch_size,
                                     n_total)
                if stop:
                    break
        stopper.restore_best(self._params)
        self.optimizer = optimizer
        return history

    def partial_fit(self, X, y, batch_size: int = 32, optimizer: Optimizer | None = None, shuffle: bool = True,
                    seed: int | None = None, *, alpha: float = 0.0, clip_norm: float | None = None,
                    sample_weight=None) -> dict[str, list[float]]:
        """One epoch over (X, y), continuing from the current weights and optimizer state (streaming data).

        `optimizer` defaults to the one of the previous fit/partial_fit (else SGD(lr=0.01)); `seed`
        defaults to the optimizer's epoch count, so successive calls shuffle differently but reproducibly.
        Repeated calls equal one `fit` only when the shuffling matches. Returns the one-epoch history.
        """
        optimizer = self._check_optimizer(optimizer)
        seed = optimizer.epochs if seed is None else seed
        return self.fit(X, y, epochs=1, batch_size=batch_size, optimizer=optimizer, shuffle=shuffle, seed=seed,
                        verbose=0, alpha=alpha, clip_norm=clip_norm, sample_weight=sample_weight)

    def fit_lbfgs(self, X, y, max_iter: int = 200, max_fun: int = 15000, tol: float = 1e-4, *, alpha: float = 0.0,
                  sample_weight=None, callback: Callable | None = None):
        """Full-batch training by scipy's L-BFGS-B, as scikit-learn's ``solver="lbfgs"``: scipy's
        ``minimize(method="L-BFGS-B", jac=True)`` on the compiled loss and gradient over the flat parameter vector.

        Minimises ``Σ_s w_s E_s / Σ_s w_s + α/(2 Σ_s w_s) Σ_l ||W^l||²`` (w_s = 1 without `sample_weight`), with
        scipy's options ``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``; `callback` is scipy's. The
        weights end at the result's ``x``. Returns scipy's ``OptimizeResult`` (``fun``, ``nit``, ``status``, ...).
        """
        import scipy.optimize  # here: importing fastbp need not load scipy

        X, T = self._check_data(X, y)
        if sparse_input.is_sparse(X):
            raise ValueError("fit_lbfgs takes dense X; pass X.toarray(), or train sparse X with fit")
        sw = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        options = {"maxiter": check_positive_int(max_iter, "max_iter"),
                   "maxfun": check_positive_int(max_fun, "max_fun"), "gtol": check_non_negative(tol, "tol")}
        alpha = check_non_negative(alpha, "alpha")
        grads, work = empty_on_a_line(self._params.shape, self.dtype), self._workspace(X.shape[0])
        penalty = alpha / (X.shape[0] if sw is None else float(sw.sum(dtype=np.float64)))

        def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
            self._params[...] = theta
            loss = self._flat_loss_and_grads(X, T, sw, work, grads)
            if penalty > 0:
                loss += K.add_l2_penalty(self._params, self._offsets, penalty, grads)
            return loss, grads.astype(np.float64)  # a copy: scipy keeps it while grads is overwritten

        result = scipy.optimize.minimize(loss_and_gradient, self._params.astype(np.float64), method="L-BFGS-B",
                                         jac=True, callback=callback, options=options)
        self._params[...] = result.x
        return result

    def evaluate(self, X, y) -> tuple[float, float | None]:
        """(mean loss E, accuracy) on (X, y), without the L2 penalty; accuracy is None for identity outputs."""
        return self._loss_and_accuracy(*self._check_data(X, y))

    def save(self, path) -> None:
        """Write the architecture and weights to a ``.npz`` file, atomically; `fastbp.load` reads it back exactly."""
        from .io import save

        save(self, path)

    def to_onnx(self, path=None, opset: int = 18):
        """The ONNX graph of `predict_proba` (an ``onnx.ModelProto``), written to `path` when given;
        needs ``pip install fastbp[onnx]`` (`fastbp.onnx.to_onnx`)."""
        from .onnx import to_onnx

        return to_onnx(self, path, opset)

    # ------------------------------------------------------------------ fit helpers
    def _check_optimizer(self, optimizer: Optimizer | None) -> Optimizer:
        if optimizer is None:
            return getattr(self, "optimizer", None) or SGD()
        if not isinstance(optimizer, Optimizer):
            *others, last = [f"fastbp.{cls.__name__}" for cls in OPTIMIZERS.values()]
            raise TypeError(f"optimizer must be a {', '.join(others)} or {last}, got {type(optimizer).__name__}; "
                            "pass e.g. optimizer=fastbp.Adam(lr=1e-3)")
        return optimizer

    def _validation_set(self, X, T, sw, validation_data, validation_split, rng):
        """(X, T, sample weights or None) to train on and (X_val, T_val) or None."""
        if validation_data is not None and validation_split:
            raise ValueError("pass validation_data or validation_split, not both")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            return X, T, sw, self._check_data(writeable_map(validation_data[0]), validation_data[1])
        split = check_non_negative(validation_split, "validation_split")
        if split == 0:
            return X, T, sw, None
        n_val = int(round(split * X.shape[0]))
        if split >= 1 or not 1 <= n_val < X.shape[0]:
            raise ValueError(f"validation_split={split} leaves no training or no validation samples out of "
                             f"{X.shape[0]}; pass a fraction in (0, 1) such as 0.1")
        order = rng.permutation(X.shape[0])
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        return X[train], T[train], None if sw is None else sw[train], (X[val], T[val])

    def _empty_history(self, with_validation: bool) -> dict[str, list[float]]:
        keys = ["loss"] + (["accuracy"] if self.output in _CLASSIFYING else [])
        if with_validation:
            keys += ["val_" + key for key in keys]
        return {key: [] for key in keys + ["lr", "samples_per_second"]}

    def _record_validation(self, X_val, T_val, history, ctx=None) -> None:
        loss, accuracy = ctx.validation_sums(self, X_val, T_val) if ctx else self._loss_and_accuracy(X_val, T_val)
        history["val_loss"].append(loss)
        if "val_accuracy" in history:
            history["val_accuracy"].append(accuracy)

    def _loss_and_accuracy(self, X, T) -> tuple[float, float | None]:
        """(mean loss E, accuracy or None for identity outputs) on checked (X, T), without the L2 penalty."""
        Z, D = np.empty(T.shape, self.dtype), np.empty(T.shape, self.dtype)  # z^L, then a^L · δ^L
        losses = np.empty(X.shape[0], self.dtype)  # E_s
        logits = np.append(self._codes[:-1], K.IDENTITY_SE)  # the same network with the logits as outputs
        with parallel_section():
            if sparse_input.is_sparse(X):
                sparse_input.outputs(self, X, logits, Z)
            else:
                self._predict_outputs(X, logits, Z)
            loss = K.output_loss(Z, T, self._codes[-1], Z, D, losses)
            correct = K.count_correct(Z, T, self._codes[-1])
        return loss, correct / X.shape[0] if self.output in _CLASSIFYING else None

    def _predict_outputs(self, X: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
        """out = a^L of checked dense X, with `codes` (the model's, or IDENTITY_SE last for the logits)."""
        prediction = self._row_work(X.shape[0], thread_count())
        if prediction.WT is None:
            prediction.kernel(X, self._sizes, codes, self._params, prediction.work, out, self._smooth)
        else:  # many rows: the wide layers from their W^T
            WT = K.transpose_weights(self._sizes, self._params, prediction.WT)
            prediction.kernel(X, self._sizes, codes, self._params, prediction.work, WT, out, self._smooth)

    def _row_work(self, n_rows: int, threads: int) -> threading.local:
        """This Python thread's prediction `kernel` (`K.predict_kernel`) for `n_rows` rows on `threads` threads,
        its `work`: (threads, size), one workspace per thread, as small as the blocks of rows each thread takes
        through every layer (a training workspace for `n_rows` for `K.predict_outputs_by_fit_forward`, which
        stands in for an uncompiled `predict_outputs`: `_fit_forward_can_predict`), and `WT`, scratch for the
        transposed weights (None: the kernel takes none). Kept for the next call with the same two: sizing and
        allocating the workspaces took 14 µs of a 51-µs single-sample predict_proba (benchmarks/NOTES.md)."""
        local = self.__dict__.get("_row_work_local") or self.__dict__.setdefault("_row_work_local", threading.local())
        if getattr(local, "key", None) != (n_rows, threads):
            local.kernel = K.predict_kernel(n_rows, threads)
            if local.kernel is K.predict_outputs and self._fit_forward_can_predict():
                local.kernel, local.work = K.predict_outputs_by_fit_forward, self._workspace(n_rows)
            else:
                local.work = self._workspace(K.predict_rows(n_rows, threads), copies=threads).reshape(threads, -1)
            local.WT = (empty_on_a_line(K.transposed_size(self._sizes), self.dtype)
                        if local.kernel is K.predict_outputs_rows else None)
            local.key = (n_rows, threads)
        return local

    def _fit_forward_can_predict(self) -> bool:
        """Whether `predict_outputs` is compiled neither in this process nor on disk while the forward of a fit of
        this model's types is, here or on disk (`K.predict_outputs_by_fit_forward`): a run that has trained then
        predicts with the kernels it has, instead of compiling another one (asked once per row count, as it reads
        the cache's index files)."""
        if K.predict_outputs.overloads or has_compiled(K.predict_outputs):
            return False
        return K.fit_forward_is_compiled(self._sizes, self._codes, self._params, self._offsets, self._smooth)

    def _checkpoint(self, path, ctx, optimizer, epoch, finished, rng, history, stopper, batch_size, n_total):
        """Write a checkpoint (`fastbp.checkpoint`); with comm, rank 0 writes after a barrier and every rank
        raises if the write fails."""
        from .checkpoint import save_checkpoint

        args = (path, self, optimizer, epoch, finished, rng, history, stopper, batch_size, n_total,
                1 if ctx is None else ctx.size)
        if ctx is None:
            return save_checkpoint(*args)
        ctx.barrier()
        ctx.root_result(save_checkpoint, *args)

    def _resume(self, path, ctx, optimizer, rng, history, stopper, batch_size, n_total) -> tuple[int, bool]:
        """Restore the checkpoint at `path` (read by rank 0 and broadcast, with comm); (epochs done, finished)."""
        from .checkpoint import load_checkpoint, restore

        fields = load_checkpoint(path) if ctx is None else ctx.root_result(load_checkpoint, path)
        return restore(fields, path, self, optimizer, rng, history, stopper, batch_size, n_total)

    # ------------------------------------------------------------------ inference
    def predict_proba(self, X) -> np.ndarray:
        """Output activations a^L, shape (N, n_L): class probabilities, sigmoid outputs or values."""
        X = check_X(X, self.layer_sizes[0], self.dtype)
        sparse = sparse_input.is_sparse(X)  # asked once per call: a single-sample call is a few tens of µs in all
        if sparse:
            sparse_input.check_model(self)
        out = np.empty((X.shape[0], self.layer_sizes[-1]), dtype=self.dtype)
        with parallel_section():
            if sparse:  # CSR: the sparse first layer, then the dense layers
                sparse_input.outputs(self, X, self._codes, out)
                return out
            self._predict_outputs(X, self._codes, out)
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
        if sparse_input.is_sparse(X):
            sparse_input.check_model(self)
        return X, check_targets(y, X.shape[0], self.layer_sizes[-1], self.output, self.dtype)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["weights"], state["biases"]  # views into _params: rebuilt on unpickling
        state.pop("_row_work_local", None)  # predict's per-thread workspaces: made again when needed
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("dropout", 0.0)  # pickled before dropout existed
        self.__dict__.update(state)
        self._smooth = K.smooth_flag(self._codes)  # pickled before it existed
        self._packed = K.packs_flag(self._sizes)  # likewise
        self._params = copy_on_a_line(self._params)  # unpickled arrays start wherever NumPy put them
        self.weights, self.biases = self._views(self._params)

    def __repr__(self) -> str:
        return (f"MLP({self.layer_sizes}, activation={self.activations}, output={self.output!r}, "
                f"dtype={np.dtype(self.dtype).name})")


class _Run:
    """One fit's buffers and the compiled epoch for its optimizer; an epoch that diverges is undone."""

    def __init__(self, model: MLP, optimizer: Optimizer, batch_size: int, alpha: float, clip_norm: float | None,
                 seed: int = 0, sparse: bool = False):
        self.model, self.optimizer, self.batch_size = model, optimizer, batch_size
        # (p, seed) for the kernels, checked again (a public attribute); p = None, not 0, when there is no dropout:
        # the kernels are then compiled without their dropout code
        self.dropout = (_check_dropout(model.dropout) or None, _dropout_seed(seed))
        self.fused = optimizer.fused and alpha == 0 and clip_norm is None  # plain SGD, no gradient vector
        self.state = optimizer.bind(model._params)
        self.grads = None if self.fused else empty_on_a_line(model._params.shape, model.dtype)
        self.alpha, self.max_norm = alpha, clip_norm or 0.0
        self.diverged_loss = math.nan
        # CSR X: kernels.sparse with its own workspace (no dense a^0); else K.train_epoch, which keeps two batches
        self.sparse = sparse_input.SparseEpoch(self) if sparse else None

    @functools.cached_property
    def work(self) -> np.ndarray | None:
        """The training workspaces (two batches' for the fused SGD step), made at the first epoch: sizing them
        compiles `K.workspace_offsets` in a first run, which the compile worker (`_compile_beside`) need not
        wait for."""
        return None if self.sparse else self.model._workspace(self.batch_size, copies=2 if self.fused else 1)

    def epoch(self, X, T, order, lr: float, history, sw=None) -> bool:
        """Train one epoch at learning rate `lr` and append its numbers to history; False, with nothing
        changed, if it diverged."""
        m, opt = self.model, self.optimizer
        hyper = K.hyper_parameters(**opt.step_settings(lr), l2=self.alpha, max_norm=self.max_norm)
        saved = m._params.copy(), self.state.copy(), opt.steps
        start = time.perf_counter()
        with parallel_section():
            if self.sparse is not None:  # CSR X
                loss_sum, correct = self.sparse(X, T, order, hyper)
            elif self.fused:
                loss_sum, correct = K.train_epoch(X, T, order, self.batch_size, m._sizes, m._codes, m._params,
                                                  self.work, hyper[LR], sw, *self.dropout, opt.steps, m._smooth,
                                                  m._packed)
                opt.steps += -(-X.shape[0] // self.batch_size)
            else:
                loss_sum, correct, opt.steps = K.train_epoch_optimizer(
                    X, T, order, self.batch_size, m._sizes, m._codes, m._params, self.work, self.grads, opt.code,
                    hyper, self.state, opt.steps, sw, *self.dropout, m._smooth, m._packed)
        seconds = time.perf_counter() - start
        return self.finish(loss_sum, correct, X.shape[0], seconds, hyper[LR], saved, history)

    def finish(self, loss_sum, correct, N: int, seconds: float, lr: float, saved, history) -> bool:
        """Undo the epoch (`saved`: parameters, state, steps before it) and return False if it diverged;
        else count it and append its mean loss, accuracy, lr and samples/s over N samples to history."""
        m, opt = self.model, self.optimizer
        if not np.isfinite(loss_sum) or not np.isfinite(m._params).all():
            m._params[...], self.state[...], opt.steps = saved
            self.diverged_loss = loss_sum / N
            return False
        opt.epochs += 1
        history["loss"].append(loss_sum / N)
        if "accuracy" in history:
            history["accuracy"].append(correct / N)
        history["lr"].append(lr)
        history["samples_per_second"].append(N / seconds)
        return True


class _EarlyStopping:
    """Stops after `patience` epochs without improvement of `monitor` by more than `min_delta`; keeps the best weights."""

    def __init__(self, patience: int | None, min_delta: float, monitor: str) -> None:
        self.patience = None if patience is None else check_positive_int(patience, "patience")
        self.min_delta = check_non_negative(min_delta, "min_delta")
        self.monitor, self.sign = monitor, -1.0 if monitor.endswith("accuracy") else 1.0
        self.best, self.wait, self.best_params = math.inf, 0, None

    def update(self, history: dict[str, list[float]], params: np.ndarray) -> bool:
        """Record the last epoch; True when training should stop."""
        if self.patience is None:
            return False
        value = self.sign * history[self.monitor][-1]
        if value < self.best - self.min_delta:
            self.best, self.wait, self.best_params = value, 0, params.copy()
        else:
            self.wait += 1
        return self.wait >= self.patience

    def restore_best(self, params: np.ndarray) -> None:
        if self.best_params is not None:
            params[...] = self.best_params


#: what the progress display says while the first epoch compiles the kernels
COMPILING = "compiling kernels (first run on this machine)…"


def _compile_beside(run: _Run, sw) -> None:
    """For a first epoch that compiles its kernels: a second process compiles the loss, backward and prediction
    kernels into the cache meanwhile (`prebuild.compile_beside`), when the fit passes the argument types the worker
    compiles: plain SGD, dense X, no sample weights, no dropout."""
    if run.fused and run.sparse is None and sw is None and run.dropout[0] is None:
        from .prebuild import compile_beside
        compile_beside(run.model.dtype, run.model._smooth is not None, run.model._packed is not None)


def _first_epoch_compiles(run: _Run) -> bool:
    """Whether the first epoch of this fit compiles its epoch kernel: not yet compiled in this process, nor in
    Numba's on-disk cache (`kernels.cache.has_compiled`)."""
    kernel = K.train_epoch if getattr(run, "fused", False) else K.train_epoch_optimizer  # with comm, not fused
    return not kernel.signatures and not has_compiled(kernel)


class _Progress:
    """One progress display on stdout. verbose=1: a tqdm bar over epochs (loss, accuracy, samples/s) when stdout
    is a terminal, else one plain line per epoch; verbose=2: the lines; verbose=0: nothing. Lines carry no
    carriage return, so a log file reads cleanly.

    While the first epoch compiles (`compiling`), the display says so with the seconds elapsed and no ETA:
    the bar shows `COMPILING` and a clock, refreshed by a thread; the lines say it once, then every 10 s.
    The epoch bar starts after that epoch, so that its rate and ETA leave the compilation out.
    """

    def __init__(self, verbose: int, epochs: int, compiling: bool = False) -> None:
        self.verbose, self.epochs, self.stream = verbose, epochs, sys.stdout
        self.use_bar = verbose == 1 and _isatty(self.stream)
        self.bar, self.clock, self.started = None, None, time.perf_counter()
        if verbose and compiling:
            self.clock = _Clock(self)
        elif self.use_bar:
            self.bar = self._epoch_bar(0)

    def _epoch_bar(self, done: int):
        return _tqdm(total=self.epochs, initial=done, unit="epoch", file=self.stream, dynamic_ncols=True)

    def update(self, epoch: int, history: dict[str, list[float]]) -> None:
        if not self.verbose:
            return
        compiled = self.clock is not None
        if compiled:
            self.clock.stop()
            self.clock = None
            if not self.use_bar:
                self._print(f"kernels compiled ({time.perf_counter() - self.started:.0f} s with epoch {epoch})")
        if not self.use_bar:
            self._print(_epoch_line(epoch, self.epochs, history))
            return
        postfix = {key: f"{history[key][-1]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy")
                   if key in history}
        postfix["samples/s"] = f"{history['samples_per_second'][-1]:,.0f}"
        if compiled:  # the bar starts now, this epoch done: its rate and ETA leave the compilation out
            self.bar = self._epoch_bar(epoch)
            self.bar.set_postfix(postfix)
        else:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.clock is not None:
            self.clock.stop()
        if self.bar is not None:
            self.bar.close()


def _tqdm(**options):
    """A tqdm bar. tqdm is imported here, for a terminal's bar only: importing it took 13 ms of a warm
    `fastbp train --quiet`."""
    from tqdm import tqdm
    return tqdm(**options)


class _Clock:
    """The compile notice of `_Progress`, with the seconds elapsed, kept up to date by a daemon thread (the
    compiler releases the GIL often enough for it to run) until `stop`."""

    def __init__(self, progress: _Progress) -> None:
        self.progress, self.done = progress, threading.Event()
        if progress.use_bar:  # a clock and no ETA: the bar's format has neither rate nor remaining time
            self.bar = _tqdm(total=progress.epochs, desc=COMPILING, bar_format="{desc} {elapsed}", file=progress.stream,
                             leave=False)
            period = 1.0
        else:
            self.bar = None
            progress._print(COMPILING)
            period = 10.0
        self.thread = threading.Thread(target=self._tick, args=(period,), daemon=True)
        self.thread.start()

    def _tick(self, period: float) -> None:
        while not self.done.wait(period):
            if self.bar is not None:
                self.bar.refresh()
            else:
                self.progress._print(f"{COMPILING} {time.perf_counter() - self.progress.started:.0f} s")

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _epoch_line(epoch: int, epochs: int, history: dict[str, list[float]]) -> str:
    line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {history['loss'][-1]:.4f}"
    for key in ("accuracy", "val_loss", "val_accuracy"):
        if key in history:
            line += f"  {key.replace('_', ' ')} {history[key][-1]:.4f}"
    return line + f"  {history['samples_per_second'][-1]:,.0f} samples/s"


def _monitor(monitor: str | None, with_validation: bool, output: str) -> str:
    if monitor is None:
        return "val_loss" if with_validation else "loss"
    allowed = ["loss"] + (["accuracy"] if output in _CLASSIFYING else [])
    allowed += ["val_" + key for key in allowed] if with_validation else []
    if monitor not in allowed:
        raise ValueError(f"monitor={monitor!r} is not recorded by this fit; choose one of {allowed} "
                         "(val_* needs validation_data or validation_split)")
    return monitor


def _check_callbacks(callbacks) -> list[Callable]:
    callbacks = [callbacks] if callable(callbacks) else list(callbacks)
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables callback(epoch, history, model), got {callback!r}")
    return callbacks


def _check_dropout(p) -> float:
    p = check_non_negative(p, "dropout")
    if p >= 1:
        raise ValueError(f"dropout is the probability of dropping a hidden unit and must lie in [0, 1), got {p}")
    return p


def _dropout_seed(seed) -> int:
    """fit's seed as the integer the dropout masks hash (any int; other seeds count as 0)."""
    return int(seed) % (1 << 63) if isinstance(seed, (int, np.integer)) else 0


def _check_verbose(verbose) -> int:
    if not isinstance(verbose, (int, np.integer)) or verbose < 0:
        raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar in a terminal, else lines) or 2 (lines), "
                         f"got {verbose!r}")
    return int(verbose)


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
