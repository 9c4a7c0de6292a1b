"""Sparse input: the compiled sparse first layer gives the weights and outputs of the same data dense."""
import numpy as np
import pytest
import scipy.sparse as sp

import fastbp
from fastbp import kernels as K
from fastbp.kernels.sparse import sparse_forward, sparse_weight_gradient
from fastbp.sklearn import MLPClassifier, MLPRegressor
from fastbp.validation import check_X

OPTIMIZERS = {"sgd": lambda: fastbp.SGD(lr=0.1), "momentum": lambda: fastbp.SGD(lr=0.05, momentum=0.9, nesterov=True),
              "adam": lambda: fastbp.Adam(lr=1e-2), "adamw": lambda: fastbp.AdamW(lr=1e-2, weight_decay=0.01)}


def _data(N=150, n=60, density=0.08, seed=0, n_out=4):
    rng = np.random.default_rng(seed)
    X = sp.random(N, n, density=density, format="csr", random_state=seed, data_rvs=rng.standard_normal)
    return X, rng.integers(0, n_out, N)


def _close(got, want):
    """Equal to 1e-12 relative to the array's scale (float64)."""
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _pair(sizes=(60, 24, 12, 4), dtype=np.float64, **kw):
    return [fastbp.MLP(list(sizes), activation=["relu", "tanh"][:len(sizes) - 2] or "relu", dtype=dtype, seed=3, **kw)
            for _ in range(2)]


@pytest.mark.parametrize("optimizer,sizes", [(name, (60, 24, 12, 4)) for name in sorted(OPTIMIZERS)]
                         + [("sgd", (60, 512, 512, 4))])  # hidden rows padded in the workspace (`row_stride`)
def test_sparse_fit_gives_the_dense_weights(optimizer, sizes):
    X, y = _data()
    dense, sparse = _pair(sizes)
    for m, data in ((dense, X.toarray()), (sparse, X)):
        m.fit(data, y, epochs=3, batch_size=16, optimizer=OPTIMIZERS[optimizer](), seed=1, verbose=0)
    for Wd, Ws in zip(dense.weights + dense.biases, sparse.weights + sparse.biases):
        _close(Ws, Wd)
    assert dense.optimizer.steps == sparse.optimizer.steps
    _close(sparse.predict_proba(X), dense.predict_proba(X.toarray()))


def test_many_sparse_rows_predict_the_dense_layers_from_their_transposes():
    """From TRANSPOSE_MIN_ROWS rows the dense layers after the sparse first layer take `predict_outputs_rows`, the
    70 -> 130 layer from its W^T: the same probabilities as the dense input's prediction, which takes it too."""
    X, _ = _data(N=K.TRANSPOSE_MIN_ROWS + 20)
    dense, sparse = _pair(sizes=(60, 70, 130, 4))
    assert K.predict_kernel(X.shape[0], 2) is K.predict_outputs_rows
    _close(sparse.predict_proba(X), dense.predict_proba(X.toarray()))


@pytest.mark.parametrize("settings", [dict(alpha=0.01, clip_norm=0.5), dict(validation_split=0.2)])
def test_sparse_penalty_clipping_validation_and_dropout(settings):
    X, y = _data(seed=2)
    dense, sparse = _pair(dropout=0.3)
    h = [m.fit(data, y, epochs=2, batch_size=32, optimizer=fastbp.SGD(lr=0.1), seed=4, verbose=0, **settings)
         for m, data in ((dense, X.toarray()), (sparse, X))]
    _close(sparse._params, dense._params)
    for key in h[0]:
        if key != "samples_per_second":
            _close(np.array(h[1][key]), np.array(h[0][key]))


def test_csc_coo_no_hidden_layer_and_evaluate():
    X, y = _data(seed=3)
    dense, sparse = _pair(sizes=(60, 4), output="sigmoid")
    Y = np.eye(4)[y]
    dense.fit(X.toarray(), Y, epochs=2, batch_size=8, optimizer=fastbp.Adam(lr=1e-2), verbose=0)
    sparse.fit(X.tocsc(), Y, epochs=2, batch_size=8, optimizer=fastbp.Adam(lr=1e-2), verbose=0)
    _close(sparse._params, dense._params)
    for form in (X.tocsc(), X.tocoo(), sp.csr_array(X)):
        _close(sparse.predict_proba(form), dense.predict_proba(X.toarray()))
    l_s, a_s = sparse.evaluate(X, Y)
    l_d, a_d = dense.evaluate(X.toarray(), Y)
    assert abs(l_s - l_d) <= 1e-12 * abs(l_d) and a_s == a_d
    assert sparse.score(X, Y) == dense.score(X.toarray(), Y)


def test_loss_and_grads_sparse_equals_dense():
    X, y = _data(N=40, seed=5)
    m = fastbp.MLP([60, 10, 4], activation="sigmoid", dtype=np.float64, seed=1)
    ls, dWs, dbs = m.loss_and_grads(X, y)
    ld, dWd, dbd = m.loss_and_grads(X.toarray(), y)
    assert abs(ls - ld) <= 1e-12 * ld
    for gs, gd in zip(dWs + dbs, dWd + dbd):
        _close(gs, gd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_against_a_float64_loop_nest(dtype):
    """sparse_forward and sparse_weight_gradient against the dense equations in float64 NumPy."""
    rng = np.random.default_rng(7)
    X, _ = _data(N=30, n=50, density=0.2)
    X = X.astype(dtype)
    rows = rng.permutation(30)[:13]
    W, b = rng.normal(size=(9, 50)).astype(dtype), rng.normal(size=9).astype(dtype)
    A = np.empty((13, 9), dtype)
    sparse_forward(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, rows, W.T.copy(), b, K.TANH, A)
    Xd = X.toarray().astype(np.float64)[rows]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(A, np.tanh(Xd @ W.T.astype(np.float64) + b), rtol=tol, atol=tol)
    D, G = rng.normal(size=(13, 9)).astype(dtype), rng.normal(size=(9, 50)).astype(dtype)
    want = 0.5 * G.astype(np.float64) - 0.25 * D.T.astype(np.float64) @ Xd
    GT = G.T.copy()  # the kernel takes Gᵀ (n_in, n_out)
    sparse_weight_gradient(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, rows, D, -0.25, 0.5, GT)
    np.testing.assert_allclose(GT.T, want, rtol=tol, atol=tol)
    GT[...] = np.nan  # β = 0 overwrites, whatever G held
    sparse_weight_gradient(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, rows, D, 1.0, 0.0, GT)
    np.testing.assert_allclose(GT.T, D.T.astype(np.float64) @ Xd, rtol=tol, atol=tol)


def test_thread_count_does_not_change_sparse_training():
    import numba

    X, y = _data(N=300, n=400, density=0.05)
    weights = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        m = fastbp.MLP([400, 200, 4], seed=0)
        m.fit(X, y, epochs=1, batch_size=64, optimizer=fastbp.Adam(), verbose=0)
        weights.append(m._params.copy())
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(*weights)


def test_sparse_validation():
    X, _ = _data()
    checked = check_X(X.tocsc(), 60, np.float32)
    assert sp.issparse(checked) and checked.format == "csr" and checked.dtype == np.float32
    bad = X.copy()
    bad.data[5] = np.nan
    m = fastbp.MLP([60, 4])
    before = m._params.copy()
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.fit(bad, np.zeros(150, int), verbose=0)
    np.testing.assert_array_equal(m._params, before)
    with pytest.raises(ValueError, match="features per sample"):
        m.predict_proba(X[:, :30])
    big = X.copy()
    big.data[0] = 1e300
    with pytest.raises(ValueError, match="overflows float32"):
        m.predict_proba(big)
    with pytest.raises(TypeError, match="real numbers"):
        m.predict_proba(X.astype(np.complex128))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_take_sparse_input():
    X, y = _data(seed=8)
    kw = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, dtype=np.float64)
    sparse, dense = MLPClassifier(**kw).fit(X, y), MLPClassifier(**kw).fit(X.toarray(), y)
    for cs, cd in zip(sparse.coefs_, dense.coefs_):
        _close(cs, cd)
    _close(sparse.predict_proba(X.tocsc()), dense.predict_proba(X.toarray()))
    assert (sparse.predict(X) == dense.predict(X.toarray())).all()
    target = X[:, 0].toarray().ravel()
    reg_s = MLPRegressor(solver="sgd", **kw).fit(X, target)
    reg_d = MLPRegressor(solver="sgd", **kw).fit(X.toarray(), target)
    _close(reg_s.predict(X), reg_d.predict(X.toarray()))


def test_parallel_branches_equal_one_thread():
    """Enough nonzeros x units for the kernels' parallel branches: the same bits on 1 and 2 threads, and
    the float64 reference."""
    import numba

    X, _ = _data(N=600, n=3000, density=0.05)  # 90,000 nonzeros x 128 units > SPARSE_PARALLEL_WORK
    X = X.astype(np.float32)
    ip, ix = X.indptr.astype(np.int64), X.indices.astype(np.int64)
    rng = np.random.default_rng(1)
    WT, b = rng.normal(size=(3000, 128)).astype(np.float32), rng.normal(size=128).astype(np.float32)
    rows = rng.permutation(600)
    D = rng.normal(size=(600, 128)).astype(np.float32)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        A, GT = np.empty((600, 128), np.float32), np.empty_like(WT)
        sparse_forward(ip, ix, X.data, rows, WT, b, K.RELU, A)
        sparse_weight_gradient(ip, ix, X.data, rows, D, 0.5, 0.0, GT)
        results.append((A, GT))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for got, want in zip(results[0], results[1]):
        np.testing.assert_array_equal(got, want)
    Xd = X.toarray().astype(np.float64)[rows]
    np.testing.assert_allclose(results[0][0], np.maximum(Xd @ WT + b, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(results[0][1], 0.5 * Xd.T @ D, rtol=1e-4, atol=1e-4)
