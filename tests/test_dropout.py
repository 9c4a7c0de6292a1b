"""Inverted dropout on the hidden layers: p = 0 is no dropout, the masks follow from the seed whatever
the thread count, the gradient under a fixed mask matches central finite differences, predict uses none."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import fastbp
from fastbp import kernels as K
from fastbp.kernels.dropout import dropout_mask, step_key
from fastbp.sklearn import MLPClassifier, MLPRegressor

OPTIMIZERS = {"sgd": lambda: fastbp.SGD(lr=0.05), "momentum": lambda: fastbp.SGD(lr=0.05, momentum=0.9),
              "adam": lambda: fastbp.Adam(lr=1e-2)}


def _data(seed=0, N=90, n_in=6, n_out=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, n_in)), rng.integers(0, n_out, N)


def _fit(p, optimizer, dtype=np.float32, threads=None, seed=3, epochs=2):
    X, y = _data()
    m = fastbp.MLP([6, 40, 30, 3], activation=["relu", "tanh"], dtype=dtype, seed=1, dropout=p)
    before = numba.get_num_threads()
    numba.set_num_threads(threads or before)
    try:
        history = m.fit(X, y, epochs=epochs, batch_size=16, optimizer=OPTIMIZERS[optimizer](), seed=seed, verbose=0)
    finally:
        numba.set_num_threads(before)
    return m, history


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_p0_is_no_dropout_bit_for_bit(optimizer):
    """dropout=0 runs the kernels of a model without dropout: the same weights, bit for bit."""
    X, y = _data()
    a = fastbp.MLP([6, 40, 30, 3], activation=["relu", "tanh"], seed=1)
    a.fit(X, y, epochs=2, batch_size=16, optimizer=OPTIMIZERS[optimizer](), seed=3, verbose=0)
    b, _ = _fit(0.0, optimizer)
    np.testing.assert_array_equal(a._params, b._params)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_masks_reproducible_from_the_seed_and_thread_count(optimizer):
    m1, _ = _fit(0.3, optimizer, threads=1)
    m2, _ = _fit(0.3, optimizer, threads=2)
    m3, _ = _fit(0.3, optimizer)
    np.testing.assert_array_equal(m1._params, m2._params)
    np.testing.assert_array_equal(m1._params, m3._params)
    other, _ = _fit(0.3, optimizer, seed=4)  # another seed: other masks (and order)
    nodrop, _ = _fit(0.0, optimizer)
    assert not np.array_equal(m1._params, nodrop._params) and not np.array_equal(m1._params, other._params)


def test_mask_statistics_and_determinism():
    mask = dropout_mask(7, 11, 1, 200, 300, 0.25)
    assert abs(mask.mean() - 0.75) < 0.01
    np.testing.assert_array_equal(mask, dropout_mask(7, 11, 1, 200, 300, 0.25))
    for other in (dropout_mask(8, 11, 1, 200, 300, 0.25), dropout_mask(7, 12, 1, 200, 300, 0.25),
                  dropout_mask(7, 11, 2, 200, 300, 0.25)):
        assert 0.5 < (other == mask).mean() < 0.7  # independent bits agree with probability 0.75² + 0.25²
    assert dropout_mask(7, 11, 1, 20, 30, 0.0).all()


def _step(params, sizes, codes, X, T, p, key, grads):
    poff, S = K.param_offsets(sizes), X.shape[0]
    woff = K.workspace_offsets(sizes, S)
    return K.forward_backward(sizes, codes, params, poff, X, T, np.empty(woff[-1, 2]), woff, S, 1.0 / S, 0.0,
                              grads, None, p, key, K.smooth_flag(codes))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
def test_gradient_with_a_fixed_mask_matches_finite_differences(activation):
    """With the mask fixed (same seed and step), E(θ) is smooth; its central differences equal the gradient."""
    rng = np.random.default_rng(5)
    m = fastbp.MLP([5, 9, 7, 3], activation=activation, dtype=np.float64, seed=2)
    sizes, codes, params = m._sizes, m._codes, m._params.copy()
    params += 0.05 * rng.normal(size=params.shape)  # relu: keep away from kinks by chance only
    X, T = rng.normal(size=(8, 5)), np.eye(3)[rng.integers(0, 3, 8)]
    p, key = 0.4, step_key(9, 3)
    grads = np.empty_like(params)
    _step(params, sizes, codes, X, T, p, key, grads)
    scratch = np.empty_like(params)
    numeric = np.empty_like(params)
    h = 1e-6
    for i in range(params.size):
        plus, minus = params.copy(), params.copy()
        plus[i] += h
        minus[i] -= h
        numeric[i] = (_step(plus, sizes, codes, X, T, p, key, scratch)[0]
                      - _step(minus, sizes, codes, X, T, p, key, scratch)[0]) / (2 * h)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-7)
    # the mask really acts: the dropout gradient differs from the plain one
    plain = np.empty_like(params)
    _step(params, sizes, codes, X, T, None, 0, plain)
    assert not np.allclose(plain, grads)


def test_dropout_forward_equals_masked_reference():
    """The kernel's hidden activations are m ⊙ f(z) / (1 - p), with the mask of `dropout_mask`."""
    rng = np.random.default_rng(1)
    m = fastbp.MLP([4, 6, 2], activation="tanh", dtype=np.float64)
    X = rng.normal(size=(5, 4))
    sizes, p = m._sizes, 0.5
    woff = K.workspace_offsets(sizes, 5)
    work = np.empty(woff[-1, 2])
    K.forward(sizes, m._codes, m._params, K.param_offsets(sizes), X, work, woff, 5, p, step_key(1, 2), m._smooth)
    a1 = work[woff[1, 0]:woff[1, 0] + 30].reshape(5, 6)
    want = dropout_mask(1, 2, 1, 5, 6, p) * np.tanh(X @ m.weights[0].T + m.biases[0]) / (1 - p)
    np.testing.assert_allclose(a1, want, rtol=1e-12, atol=1e-15)


def test_predict_uses_no_dropout():
    X, y = _data()
    m, _ = _fit(0.5, "adam")
    copy = fastbp.MLP([6, 40, 30, 3], activation=["relu", "tanh"], seed=1)
    copy._params[...] = m._params
    np.testing.assert_array_equal(m.predict_proba(X), copy.predict_proba(X))
    np.testing.assert_array_equal(m.predict_proba(X), m.predict_proba(X))
    assert m.evaluate(X, y) == copy.evaluate(X, y)


def test_bad_dropout_rejected():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout"):
            fastbp.MLP([3, 4, 2], dropout=p)
    with pytest.raises(TypeError, match="dropout"):
        fastbp.MLP([3, 4, 2], dropout="0.5")
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(dropout=1.0).fit(*_data())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_dropout():
    X, y = _data()
    a = MLPClassifier(hidden_layer_sizes=(20,), max_iter=3, random_state=0, dropout=0.3).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(20,), max_iter=3, random_state=0, dropout=0.3).fit(X, y)
    c = MLPClassifier(hidden_layer_sizes=(20,), max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    assert a.model_.dropout == 0.3 and a.get_params()["dropout"] == 0.3
    r = MLPRegressor(hidden_layer_sizes=(20,), max_iter=3, random_state=0, dropout=0.2, solver="sgd").fit(X, X[:, 0])
    assert np.isfinite(r.predict(X)).all()


_COMPILE_FORWARD = """
import numpy as np, fastbp
from fastbp import kernels as K
from fastbp.kernels.dropout import dropout_forward
m = fastbp.MLP([4, 8, 3], seed=0)
X = np.ones((5, 4), np.float32)
woff = K.workspace_offsets(m._sizes, 5)
work = np.empty(woff[-1, 2], np.float32)
args = (m._sizes, m._codes, m._params, K.param_offsets(m._sizes), X, work, woff, 5)
K.forward(*args, None, np.int64(0))
print(len(dropout_forward.signatures))
K.forward(*args, 0.5, np.int64(0))
print(len(dropout_forward.signatures))
"""


def test_without_dropout_no_dropout_code_is_compiled(tmp_path):
    """p = None (what fit passes when dropout = 0) is a type of its own: Numba prunes the dropout branches and
    compiles no dropout kernel; p = 0.5 compiles it. In a new process with an empty cache, so that nothing is
    loaded ready-made."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", _COMPILE_FORWARD], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "1"]
