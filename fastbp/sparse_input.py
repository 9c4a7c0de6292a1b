"""Sparse input (``scipy.sparse``): its check, and the inference and training calls of `MLP` on it.

A sparse X is kept sparse: CSC (and any other scipy.sparse format) is converted to CSR once, the values
to the model's dtype, and the NaN/inf check reads only the stored values. The first layer then runs the
compiled CSR kernels of `kernels.sparse`; the layers after it are the dense ones.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from . import kernels as K
from .buffers import empty_on_a_line
from .kernels.sparse import sparse_first_layer, train_epoch_sparse, transpose_first_layer, workspace_size
from .parallel import thread_count

# kernels.sparse compiles its callers of parallel kernels with parallel=True, as kernels.training does
# and for the same reason (a cached non-parallel caller of a parallel function crashes; see there)
warnings.filterwarnings("ignore", category=NumbaPerformanceWarning,
                        message=r"(?s)\s*The keyword argument 'parallel=True'.*fastbp.kernels.sparse\.py")

#: rows of X whose first layer a^1 is computed at once by `outputs` (bounds its (rows, n_1) buffer)
ROWS = 4096


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array, without importing scipy when it is not loaded."""
    if isinstance(X, np.ndarray):  # the common case, answered at once (asked twice per predict_proba call)
        return False
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def check_sparse_X(X, n_features: int, dtype, name: str = "X"):
    """X as a CSR matrix of `dtype` with finite values, shape (N ≥ 1, n_features); never densified.

    Raises TypeError (values not real numbers) or ValueError (shape, NaN/inf, overflow of `dtype`),
    as `validation.check_X` does for dense arrays.
    """
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (integer, bool or float), got dtype {X.dtype}; "
                        f"convert it with {name}.astype(np.float32)")
    N, n = X.shape
    if N == 0:
        raise ValueError(f"{name} is empty (0 samples, shape {X.shape}); pass at least one sample")
    if n != n_features:
        raise ValueError(f"{name} has {n} features per sample, but the model's input layer has {n_features}; "
                         f"pass {name} with shape (n_samples, {n_features})")
    csr = X.tocsr()  # CSC → CSR once (a CSR matrix is returned as it is)
    if csr.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):
            csr = csr.astype(dtype)
    if not np.isfinite(csr.data).all():
        q = int(np.argmax(~np.isfinite(csr.data)))
        row, col = int(np.searchsorted(csr.indptr, q, side="right") - 1), int(csr.indices[q])
        value = X.tocsr()[row, col]
        what = ("contains NaN or infinity" if not np.isfinite(value) else
                f"overflows {np.dtype(dtype).name} (largest {np.finfo(dtype).max:.3g})")
        raise ValueError(f"{name}[{row}, {col}] = {value!r}: {name} {what}; remove, impute or rescale those values")
    return csr


def check_model(model) -> None:
    """Sparse input runs the kernels of relu-like layers: f' written from a. A layer whose f' needs z (GELU)
    is refused with a clear error instead of training on wrong gradients."""
    from .kernels import REGISTRY

    needs_z = [name for name in model.activations if REGISTRY[name].from_z]
    if needs_z:
        raise ValueError(f"sparse X is not supported with the activation(s) {sorted(set(needs_z))}; pass X.toarray() "
                         "or use relu, tanh, sigmoid or identity hidden layers")


def csr_arrays(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a checked CSR matrix, the indices as int64 (one compiled variant)."""
    return (np.asarray(X.indptr, np.int64), np.asarray(X.indices, np.int64), np.ascontiguousarray(X.data))


def outputs(model, X, codes: np.ndarray, out: np.ndarray) -> None:
    """out = a^L (with `codes`: the model's, or IDENTITY_SE last for the logits) of every row of CSR X."""
    indptr, indices, data = csr_arrays(X)
    sizes, L = model._sizes, len(model.layer_sizes) - 1
    WT, b = np.ascontiguousarray(model.weights[0].T), model.biases[0]  # rows of Wᵀ: `sparse_first_layer`
    rest = model._params[model._offsets[2, 0]:] if L > 1 else None  # W^2, b^2, ...: the dense sub-network
    rows = min(ROWS, X.shape[0])
    A1 = np.empty((rows, sizes[1]), model.dtype)
    threads = thread_count()  # one workspace per thread for `predict_outputs`' blocks of rows
    work = empty_on_a_line(threads * K.workspace_offsets(sizes[1:], K.predict_rows(rows, threads))[-1, 2],
                           model.dtype).reshape(threads, -1) if L > 1 else None
    predict = K.predict_kernel(rows, threads)
    rest_T = None  # the dense sub-network's transposed weights, for many rows (`predict_outputs_rows`)
    if L > 1 and predict is K.predict_outputs_rows:
        rest_T = K.transpose_weights(sizes[1:], rest, np.empty(K.transposed_size(sizes[1:]), model.dtype))
    for start in range(0, X.shape[0], rows):
        stop = min(start + rows, X.shape[0])
        a1 = A1[:stop - start]
        sparse_first_layer(indptr, indices, data, start, WT, b, codes[0] if L > 1 else K.IDENTITY, a1)
        if L == 1:
            K.output_activation(a1, codes[0], out[start:stop])
        elif rest_T is None:
            predict(a1, sizes[1:], codes[1:], rest, work, out[start:stop], model._smooth)
        else:
            predict(a1, sizes[1:], codes[1:], rest, work, rest_T, out[start:stop], model._smooth)


class SparseEpoch:
    """`model._Run.epoch`'s compiled call for CSR input: one workspace (with no dense a^0) per fit."""

    def __init__(self, run) -> None:
        self.run = run
        self.work = empty_on_a_line(workspace_size(run.model._sizes, run.batch_size), run.model.dtype)
        self.grads = run.grads if run.grads is not None else np.empty(0, run.model.dtype)

    def __call__(self, X, T, order, hyper) -> tuple[float, int]:
        run, m, opt = self.run, self.run.model, self.run.optimizer
        arrays = [m._params, *run.state]  # every vector an optimizer step reads elementwise
        for vector in arrays:
            transpose_first_layer(vector, m._sizes, m._offsets, True)
        try:
            loss_sum, correct, opt.steps = train_epoch_sparse(
                *csr_arrays(X), T, order, run.batch_size, m._sizes, m._codes, m._params, self.work, self.grads,
                run.fused, opt.code, hyper, run.state, opt.steps, *run.dropout, m._smooth, m._packed)
        finally:
            for vector in arrays:
                transpose_first_layer(vector, m._sizes, m._offsets, False)
        return loss_sum, correct


def loss_and_grads(model, X, T, grads: np.ndarray) -> float:
    """`MLP.loss_and_grads` for CSR X: the batch-mean loss of all rows, and ∂E/∂θ into `grads`."""
    from .kernels.sparse import sparse_forward_backward

    sizes = model._sizes
    sizes_0 = sizes.copy()
    sizes_0[0] = 0
    S = X.shape[0]
    work = empty_on_a_line(workspace_size(sizes, S), model.dtype)
    params = model._params.copy()
    transpose_first_layer(params, sizes, model._offsets, True)
    loss, _ = sparse_forward_backward(*csr_arrays(X), np.arange(S), T, sizes, sizes_0, model._codes, params,
                                      model._offsets, work, K.workspace_offsets(sizes_0, S), 1.0 / S, 0.0, grads,
                                      None, 0, model._smooth, model._packed)
    transpose_first_layer(grads, sizes, model._offsets, False)
    return float(loss)
