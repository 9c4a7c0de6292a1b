"""The public API: MLP construction, fit, predict, score, determinism and bad input."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import kernels as K
from fastbp.kernels import training
from fastbp.buffers import empty_on_a_line
from fastbp.validation import check_X


def test_weights_have_the_documented_shapes_and_init():
    m = fastbp.MLP([64, 128, 64, 10], activation="relu", output="softmax", seed=0)
    assert [W.shape for W in m.weights] == [(128, 64), (64, 128), (10, 64)]
    assert [b.shape for b in m.biases] == [(128,), (64,), (10,)]
    assert all(W.dtype == np.float32 for W in m.weights + m.biases)
    assert np.std(m.weights[0]) == pytest.approx(np.sqrt(2 / 64), rel=0.05)  # He
    glorot = np.sqrt(6 / (64 + 10))
    assert np.abs(m.weights[2]).max() <= glorot and np.abs(m.weights[2]).max() > 0.9 * glorot
    assert all((b == 0).all() for b in m.biases)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameters_workspaces_and_input_copies_start_on_a_cache_line(dtype):
    """NumPy's large arrays start 16 bytes past a 64-byte line; the arrays the kernels read and write
    must not (fastbp.buffers), and an input that needs no conversion must not be copied for it."""
    model = fastbp.MLP([784, 256, 10], dtype=dtype)
    assert model._params.ctypes.data % 64 == 0
    assert pickle.loads(pickle.dumps(model))._params.ctypes.data % 64 == 0
    for batch, copies in [(1, 1), (7, 2), (512, 2)]:
        work = model._workspace(batch, copies)
        assert work.ctypes.data % 64 == 0 and work.dtype == dtype
        assert work.size == copies * fastbp.kernels.workspace_offsets(model._sizes, batch)[-1, 2]
    other = np.float64 if dtype == np.float32 else np.float32
    X = np.random.default_rng(0).random((300, 784)).astype(other)
    converted = check_X(X, 784, dtype)
    assert converted.ctypes.data % 64 == 0 and converted.dtype == dtype and np.array_equal(converted, X.astype(dtype))
    X_ready = X.astype(dtype)
    assert check_X(X_ready, 784, dtype) is X_ready


def test_seed_fixes_initialisation_for_both_dtypes():
    a, b = fastbp.MLP([5, 4, 3], seed=7), fastbp.MLP([5, 4, 3], seed=7, dtype=np.float64)
    np.testing.assert_array_equal(a.weights[0], b.weights[0].astype(np.float32))
    assert not np.array_equal(a.weights[0], fastbp.MLP([5, 4, 3], seed=8).weights[0])


def test_standard_recipe_reaches_97_percent_on_digits(digits):
    X_train, X_test, y_train, y_test = digits
    m = fastbp.MLP([64, 128, 64, 10], seed=0)
    history = m.fit(X_train, y_train, epochs=40, batch_size=16, optimizer=fastbp.SGD(lr=0.05), verbose=0)
    assert m.score(X_test, y_test) >= 0.97
    assert history["loss"][-1] < history["loss"][0] / 10
    assert history["accuracy"][-1] > 0.99
    assert len(history["samples_per_second"]) == 40


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_fit_is_deterministic(digits, dtype, batch_size):
    X_train, _, y_train, _ = digits
    runs = []
    for _ in range(2):
        m = fastbp.MLP([64, 32, 10], activation="tanh", dtype=dtype, seed=3)
        m.fit(X_train, y_train, epochs=2, batch_size=batch_size, seed=11, verbose=0)
        runs.append(m)
    for W, V in zip(runs[0].weights + runs[0].biases, runs[1].weights + runs[1].biases):
        np.testing.assert_array_equal(W, V)


@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_does_not_depend_on_where_X_starts(digits, shuffle):
    """The same data 16 bytes past a cache line (where NumPy puts large arrays) and on one: bit-identical
    weights. Read in place (shuffle=False), X's rows reach the dot-product tiles at either offset; a sum
    whose order followed the address (a vectoriser peeling iterations to align) would break this."""
    X_train, _, y_train, _ = digits
    X_train = X_train.astype(np.float32)[:, :48]  # rows of 48 float32: 3 cache lines
    weights = []
    for offset in (0, 16):
        buffer = empty_on_a_line(X_train.size + 16, np.float32)
        X = buffer[offset // 4:offset // 4 + X_train.size].reshape(X_train.shape)
        X[...] = X_train
        assert X.ctypes.data % 64 == offset
        m = fastbp.MLP([48, 40, 10], seed=5)
        m.fit(X, y_train, epochs=1, batch_size=64, shuffle=shuffle, seed=2, verbose=0)
        weights.append(m._params.copy())
    np.testing.assert_array_equal(weights[0], weights[1])


_THREADS_SCRIPT = """
import json, numpy as np, fastbp
X_train, _, y_train, _ = fastbp.data.load_digits_split(seed=0)
out = {}
for batch in (1, 64):
    m = fastbp.MLP([64, 150, 23, 10], seed=1)  # 150 units: 3 groups of forward tiles (dense.GROUP), one partial
    m.fit(X_train, y_train, epochs=1, batch_size=batch, seed=2, verbose=0)
    out[batch] = [float(np.sum(W.astype(np.float64) * np.arange(W.size).reshape(W.shape))) for W in m.weights]
    out[str(batch) + "bytes"] = [W.tobytes().hex() for W in m.weights]
print(json.dumps(out))
"""


def test_bit_identical_for_one_and_two_threads():
    results = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True,
                              check=True)
        results.append(json.loads(proc.stdout))
    assert results[0] == results[1]


def test_predict_and_score_shapes(digits):
    X_train, X_test, y_train, y_test = digits
    m = fastbp.MLP([64, 16, 10], seed=0)
    m.fit(X_train, y_train, epochs=3, verbose=0)
    proba = m.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    labels = m.predict(X_test)
    assert labels.shape == (len(X_test),)
    assert m.score(X_test, y_test) == pytest.approx(np.mean(labels == y_test))


def test_predict_in_chunks_matches_one_pass():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500, 6))
    m = fastbp.MLP([6, 9, 4], activation="sigmoid", dtype=np.float64, seed=0)
    chunked = m.predict_proba(X)  # blocks of up to 64 rows, one run of them per thread
    whole = np.concatenate([m.predict_proba(X[i:i + 250]) for i in range(0, 2500, 250)])
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


@pytest.mark.parametrize("n_rows", [1, 7, 64, 130, 255])
def test_predict_blocks_are_bit_identical_to_one_forward_over_all_rows(n_rows):
    """`predict_outputs` gives each thread its own blocks of rows; below TRANSPOSE_MIN_ROWS every row still gets
    the arithmetic of one layer-by-layer `forward` over all of X, whatever the number of threads (workspaces)."""
    assert n_rows < K.TRANSPOSE_MIN_ROWS
    m = fastbp.MLP([30, 70, 130, 5], activation="tanh", seed=0)
    X = np.random.default_rng(n_rows).normal(size=(n_rows, 30)).astype(np.float32)
    sizes, L = m._sizes, len(m.layer_sizes) - 1
    woff = K.workspace_offsets(sizes, n_rows)
    work = m._workspace(n_rows)
    K.forward(sizes, m._codes, m._params, K.param_offsets(sizes), X, work, woff, n_rows,  # kernels split units
              smooth=m._smooth)
    want = np.empty((n_rows, 5), np.float32)
    K.output_activation(work[woff[L, 0]:woff[L, 0] + 5 * n_rows].reshape(n_rows, 5), m._codes[-1], want)
    for threads in (1, 2, 3):
        for kernel in (K.predict_outputs, K.predict_outputs_by_layer):  # `K.predict_kernel` picks one
            got = np.empty_like(want)
            rows = m._row_work(n_rows, threads)
            assert rows.WT is None  # few rows: no transposed weights
            kernel(X, sizes, m._codes, m._params, rows.work, got, m._smooth)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_rows_are_predicted_from_the_transposed_weights_bit_for_bit_whatever_their_neighbours(dtype):
    """From TRANSPOSE_MIN_ROWS rows on, `predict_outputs_rows` computes the layers wide enough for the row sums' panels
    from W^T (`dense_forward_rows`): close to the dot products of a few rows, and each row's result is the same bits
    for any number of threads and when rows are taken away in front of it or behind it. (The narrow output layer
    takes the dot products, whose register tiles group the rows by their position: 12 rows keep it for tiles of 3
    and of 4 samples.)"""
    m = fastbp.MLP([30, 70, 130, 5], activation="tanh", dtype=dtype, seed=0)
    n_rows = K.TRANSPOSE_MIN_ROWS + 45
    X = np.random.default_rng(1).normal(size=(n_rows, 30)).astype(dtype)
    sizes = m._sizes
    results = []
    for threads in (1, 2, 3):
        for rows in (X, X[12:], X[:K.TRANSPOSE_MIN_ROWS]):
            got = np.empty((rows.shape[0], 5), dtype)
            work = m._row_work(rows.shape[0], threads)
            assert work.kernel is K.predict_outputs_rows
            WT = K.transpose_weights(sizes, m._params, work.WT)
            K.predict_outputs_rows(rows, sizes, m._codes, m._params, work.work, WT, got, m._smooth)
            results.append(got)
    WT, start = K.transpose_weights(sizes, m._params, np.full(K.transposed_size(sizes), np.nan, dtype)), 0
    assert [W.shape[0] >= K.dense.panel_columns(dtype) for W in m.weights] == [True, True, False]
    for W in m.weights:  # the layers wide enough for a panel, transposed; not the output layer
        block = WT[start:start + W.size].reshape(W.T.shape)
        assert np.isnan(block).all() if W is m.weights[-1] else np.array_equal(block, W.T)
        start += W.size
    assert start == WT.size
    want = results[0]
    for got in results[3::3]:
        np.testing.assert_array_equal(got, want)
    for got in results[1::3]:
        np.testing.assert_array_equal(got, want[12:])
    for got in results[2::3]:
        np.testing.assert_array_equal(got, want[:K.TRANSPOSE_MIN_ROWS])
    few = np.concatenate([m.predict_proba(X[i:i + 100]) for i in range(0, n_rows, 100)])  # the dot products
    np.testing.assert_allclose(want, few, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)
    np.testing.assert_array_equal(m.predict_proba(X), want)


def test_a_layer_of_512_units_is_predicted_from_padded_rows_of_w_transposed():
    """A layer whose width is a multiple of PAD_MULTIPLE gets rows of W^T LINE elements longer
    (`padded_width`): many rows (W^T) predict what a few at a time (the dot products) do."""
    assert K.training.padded_width(512) == 512 + K.LINE and K.training.padded_width(70) == 70
    one = np.empty(1, np.float32)  # a W bigger than a core's L2 keeps the dot products
    assert K.dense.takes_row_sums(256, 784, one) and not K.dense.takes_row_sums(1024, 784, one)
    m = fastbp.MLP([20, 512, 3], seed=0)
    X = np.random.default_rng(0).normal(size=(K.TRANSPOSE_MIN_ROWS + 44, 20)).astype(np.float32)
    few = np.concatenate([m.predict_proba(X[i:i + 100]) for i in range(0, X.shape[0], 100)])
    np.testing.assert_allclose(m.predict_proba(X), few, rtol=1e-5, atol=1e-7)


def test_predict_picks_the_kernel_by_layer_for_a_single_block_of_rows(monkeypatch):
    """`K.predict_kernel` sends a few rows (one block, `K.predict_rows`) on several threads layer by layer
    (`predict_outputs_by_layer`), the rest to the per-thread blocks (`predict_outputs`), whose compiled code
    then has none of the parallel layer kernels (`dense_forward`) in it; predict_proba calls the one it picks."""
    assert K.predict_kernel(1, 2) is K.predict_outputs_by_layer
    assert K.predict_kernel(K.predict_rows(2, 2), 2) is K.predict_outputs_by_layer
    assert K.predict_kernel(200, 2) is K.predict_outputs and K.predict_kernel(1, 1) is K.predict_outputs
    assert K.predict_kernel(K.TRANSPOSE_MIN_ROWS, 2) is K.predict_outputs_rows
    assert K.predict_kernel(K.TRANSPOSE_MIN_ROWS, 1) is K.predict_outputs_rows
    assert "dense_forward_serial" in K.predict_outputs.py_func.__code__.co_names
    assert "dense_forward" not in K.predict_outputs.py_func.__code__.co_names
    m = fastbp.MLP([6, 5, 3], seed=0)
    X = np.random.default_rng(0).random((50, 6))
    called = []
    for name in ("predict_outputs", "predict_outputs_by_layer"):  # the names `predict_kernel` looks up
        kernel = getattr(training, name)
        monkeypatch.setattr(training, name,
                            lambda *args, kernel=kernel, name=name: called.append(name) or kernel(*args))
    monkeypatch.setattr(fastbp.model, "thread_count", lambda: 2)
    want = m.predict_proba(X)  # many rows, on 2 threads (as the workspaces say)
    np.testing.assert_allclose(m.predict_proba(X[:1]), want[:1], rtol=1e-5)
    assert called == ["predict_outputs", "predict_outputs_by_layer"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_the_fits_forward_predicts_the_bits_of_predict_outputs(activation, dtype):
    """`predict_outputs_by_fit_forward` (the training forward with no step pending, then the output) gives what
    `predict_outputs` gives, bit for bit, for the model's outputs and for the logits (`evaluate`'s codes)."""
    m = fastbp.MLP([30, 70, 130, 5], activation=activation, dtype=dtype, seed=0)
    logits = np.append(m._codes[:-1], K.IDENTITY_SE)
    for n_rows in (1, 7, 64, 130, 255):
        X = np.random.default_rng(n_rows).normal(size=(n_rows, 30)).astype(dtype)
        for codes in (m._codes, logits):
            want, got = np.empty((n_rows, 5), dtype), np.full((n_rows, 5), np.nan, dtype)
            work = m._workspace(K.predict_rows(n_rows, 2), copies=2).reshape(2, -1)
            K.predict_outputs(X, m._sizes, codes, m._params, work, want, m._smooth)
            K.predict_outputs_by_fit_forward(X, m._sizes, codes, m._params, m._workspace(n_rows), got, m._smooth)
            np.testing.assert_array_equal(got, want)


def test_predict_takes_the_fits_forward_while_predict_outputs_is_not_compiled(monkeypatch):
    """After a fit, a prediction of fewer than TRANSPOSE_MIN_ROWS rows in blocks (`predict_outputs`' rows) takes
    the fit's compiled forward when `predict_outputs` is compiled neither in this process nor on disk, with the
    same results; one row on two threads (`predict_outputs_by_layer`) and many rows keep their own kernels, and
    so do types for which no fit's forward is compiled."""
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 6), dtype=np.float32), np.arange(200) % 3
    m = fastbp.MLP([6, 9, 3], seed=0)
    m.fit(X, y, epochs=1, batch_size=16, optimizer=fastbp.SGD(lr=0.1), verbose=0)
    want, score, evaluated = m.predict_proba(X), m.score(X, y), m.evaluate(X, y)
    m.__dict__.pop("_row_work_local")
    monkeypatch.setattr(K.predict_outputs, "overloads", {})  # as in a process that has not compiled it ...
    real = fastbp.model.has_compiled
    monkeypatch.setattr(fastbp.model, "has_compiled", lambda kernel: kernel is not K.predict_outputs and real(kernel))
    monkeypatch.setattr(fastbp.model, "thread_count", lambda: 2)
    np.testing.assert_array_equal(m.predict_proba(X), want)  # ... nor has on disk
    assert m._row_work_local.kernel is K.predict_outputs_by_fit_forward
    assert m.score(X, y) == score
    assert m.evaluate(X, y) == evaluated  # the logits, through the same forward
    assert m._row_work_local.kernel is K.predict_outputs_by_fit_forward
    for rows, kernel in ((X[:1], K.predict_outputs_by_layer), (np.resize(X, (K.TRANSPOSE_MIN_ROWS, 6)), None)):
        m.predict_proba(rows)
        assert m._row_work_local.kernel is (kernel or K.predict_kernel(K.TRANSPOSE_MIN_ROWS, 2))
    # the forward's signature must be the fit's: other types (no fit has int32 parameters) would compile anew
    assert K.fit_forward_is_compiled(m._sizes, m._codes, m._params, m._offsets, m._smooth)
    assert not K.fit_forward_is_compiled(m._sizes, m._codes, m._params.astype(np.int32), m._offsets, m._smooth)
    monkeypatch.setattr(K, "fit_forward_is_compiled", lambda *args: False)
    m.__dict__.pop("_row_work_local")
    np.testing.assert_array_equal(m.predict_proba(X), want)
    assert m._row_work_local.kernel is K.predict_outputs


def test_binary_and_multilabel_sigmoid():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    y_multi = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0], axis=1).astype(float)
    multi = fastbp.MLP([4, 16, 2], activation="tanh", output="sigmoid", seed=0)
    multi.fit(X, y_multi, epochs=60, batch_size=16, optimizer=fastbp.SGD(lr=0.1), verbose=0)
    assert multi.predict(X).shape == (400, 2) and multi.score(X, y_multi) > 0.9
    binary = fastbp.MLP([4, 8, 1], output="sigmoid", seed=0)
    binary.fit(X, y_multi[:, 0], epochs=60, batch_size=16, optimizer=fastbp.SGD(lr=0.1), verbose=0)
    assert binary.predict(X).shape == (400,) and binary.score(X, y_multi[:, 0]) > 0.95


def test_regression_fits_a_smooth_function():
    rng = np.random.default_rng(2)
    X = rng.uniform(-2, 2, size=(512, 1))
    y = np.sin(X[:, 0])
    m = fastbp.MLP([1, 32, 1], activation="tanh", output="identity", dtype=np.float64, seed=0)
    history = m.fit(X, y, epochs=200, batch_size=32, optimizer=fastbp.SGD(lr=0.05), verbose=0)
    assert "accuracy" not in history
    assert m.predict(X).shape == (512,)
    assert m.score(X, y) > 0.97


def test_verbose_prints_one_line_per_epoch(capsys, digits):
    X_train, _, y_train, _ = digits
    fastbp.MLP([64, 8, 10]).fit(X_train, y_train, epochs=3, verbose=1)
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if "compil" not in line]  # first run
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3") and "samples/s" in lines[0]


def test_divergence_stops_and_keeps_last_finite_weights(digits):
    X_train, _, y_train, _ = digits
    m = fastbp.MLP([64, 32, 10], activation="identity", seed=0)
    with pytest.warns(RuntimeWarning, match="diverged in epoch"):
        history = m.fit(X_train * 1e3, y_train, epochs=5, optimizer=fastbp.SGD(lr=1e3), verbose=0)
    assert len(history["loss"]) < 5
    assert all(np.isfinite(W).all() for W in m.weights + m.biases)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(layer_sizes=[5]), ValueError, "at least an input and an output"),
    (dict(layer_sizes=[5, 0, 3]), ValueError, r"layer_sizes\[1\] must be ≥ 1"),
    (dict(layer_sizes=[5, 3], activation="swish"), ValueError, r"unknown activation 'swish'; choose one of \["),
    (dict(layer_sizes=[5, 3], output="softplus"), ValueError, "unknown output 'softplus'"),
    (dict(layer_sizes=[5, 4, 4, 3], activation=["relu"]), ValueError, "2 hidden layers"),
    (dict(layer_sizes=[5, 3], dtype=np.int32), TypeError, "float32 or np.float64"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastbp.MLP(**kwargs)


@pytest.mark.parametrize("X,y,kwargs,error,match", [
    (np.zeros((4, 3)), [0, 1, 2, 0], {}, ValueError, "X has 3 features"),
    (np.zeros(5), [0], {}, ValueError, "X must be 2-D"),
    (np.zeros((0, 5)), [], {}, ValueError, "X is empty"),
    (np.full((2, 5), np.nan), [0, 1], {}, ValueError, "X contains NaN"),
    (np.zeros((2, 5), complex), [0, 1], {}, TypeError, "X must hold real numbers"),
    (np.zeros((3, 5)), [0, 1], {}, ValueError, "y has 2 rows but X has 3"),
    (np.zeros((2, 5)), [0, 3], {}, ValueError, r"label 3, outside \[0, 3\)"),
    (np.zeros((2, 5)), [0, -1], {}, ValueError, "label -1"),
    (np.zeros((2, 5)), [0.5, 1], {}, ValueError, "non-integer class labels"),
    (np.zeros((2, 5)), [0, 1], dict(epochs=0), ValueError, "epochs must be ≥ 1"),
    (np.zeros((2, 5)), [0, 1], dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (np.zeros((2, 5)), [0, 1], dict(optimizer="sgd"), TypeError, "optimizer must be a fastbp.SGD"),
])
def test_bad_fit_input_raises_and_leaves_model_unchanged(X, y, kwargs, error, match):
    m = fastbp.MLP([5, 4, 3], seed=0)
    before = [W.copy() for W in m.weights + m.biases]
    with pytest.raises(error, match=match):
        m.fit(X, y, verbose=0, **kwargs)
    for W, saved in zip(m.weights + m.biases, before):
        np.testing.assert_array_equal(W, saved)


@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        fastbp.SGD(lr=lr)


def test_read_only_inputs_are_used_without_being_changed(digits):
    X_train, X_test, y_train, _ = digits
    X_ro, y_ro = X_train.astype(np.float32), y_train.copy()
    X_ro.flags.writeable = y_ro.flags.writeable = False
    before = X_ro.copy()
    m, ref = (fastbp.MLP([64, 8, 10], seed=0) for _ in range(2))
    m.fit(X_ro, y_ro, epochs=1, shuffle=False, verbose=0)
    ref.fit(X_train.astype(np.float32), y_train, epochs=1, shuffle=False, verbose=0)
    for W, V in zip(m.weights, ref.weights):
        np.testing.assert_array_equal(W, V)
    np.testing.assert_array_equal(X_ro, before)
    np.testing.assert_array_equal(m.predict_proba(X_ro), ref.predict_proba(X_train))


def test_batches_read_in_place_leave_X_unchanged(digits):
    X_train, _, y_train, _ = digits
    X = np.ascontiguousarray(X_train, dtype=np.float32)  # used without a copy
    before = X.copy()
    m = fastbp.MLP([64, 8, 10], seed=0)
    m.fit(X, y_train, epochs=2, batch_size=16, shuffle=False, verbose=0, validation_data=(X, y_train))
    m.loss_and_grads(X, y_train)
    m.predict_proba(X)
    np.testing.assert_array_equal(X, before)


def test_inputs_are_converted(digits):
    X_train, X_test, y_train, _ = digits
    m = fastbp.MLP([64, 8, 10], seed=0)
    m.fit(np.asfortranarray(X_train.astype(np.float64)), y_train.astype(np.int32), epochs=1, verbose=0)
    np.testing.assert_array_equal(m.predict_proba(X_test[::-1][::-1]), m.predict_proba(np.ascontiguousarray(X_test)))
    assert m.predict_proba((X_test * 16).astype(np.int64)).dtype == np.float32
