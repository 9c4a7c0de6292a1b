"""ONNX export: ONNX Runtime's outputs equal fastbp's predict_proba, for every activation and output."""
import numpy as np
import pytest

import fastbp
from fastbp import kernels as K
from fastbp.onnx import HIDDEN_OPS
from fastbp.sklearn import MLPClassifier, MLPRegressor

onnx = pytest.importorskip("onnx")  # the test extra installs both; a bare install skips with a reason
ort = pytest.importorskip("onnxruntime")


def _run(proto, X):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"X": X})[0]


def _trained(activation, output, dtype, seed=0):
    rng = np.random.default_rng(seed)
    m = fastbp.MLP([7, 12, 9, 4], activation=[activation, "relu" if activation != "relu" else "tanh"],
                   output=output, dtype=dtype, seed=seed)
    X = rng.normal(size=(60, 7))
    y = {"softmax": rng.integers(0, 4, 60), "sigmoid": rng.integers(0, 2, (60, 4)).astype(float),
         "identity": rng.normal(size=(60, 4)), "poisson": rng.poisson(1.0, (60, 4)).astype(float)}[output]
    m.fit(X, y, epochs=3, batch_size=16, verbose=0, optimizer=fastbp.Adam(lr=1e-2))
    return m, rng.normal(size=(33, 7)).astype(dtype)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity", "poisson"])
@pytest.mark.parametrize("activation", sorted(K.ACTIVATIONS))
def test_onnx_runtime_matches_predict_proba_float32(activation, output, tmp_path):
    m, X = _trained(activation, output, np.float32)
    path = tmp_path / "m.onnx"
    proto = m.to_onnx(path)
    onnx.checker.check_model(onnx.load(str(path)))
    got = _run(proto, X)
    assert got.dtype == np.float32 and got.shape == (33, 4)
    np.testing.assert_allclose(got, m.predict_proba(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_run(proto, X[:1]), m.predict_proba(X[:1]), rtol=1e-6, atol=1e-6)  # batch is dynamic


@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_onnx_float64(output):
    m, X = _trained("tanh", output, np.float64)
    got = _run(m.to_onnx(), X)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, m.predict_proba(X), rtol=1e-12, atol=1e-12)


def test_no_hidden_layer_and_every_activation_has_an_op():
    assert set(K.ACTIVATIONS) <= set(HIDDEN_OPS)
    m = fastbp.MLP([3, 2], output="sigmoid")
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(m.to_onnx(), X), m.predict_proba(X), atol=1e-6)


def test_activation_without_op_raises_clearly(monkeypatch):
    m = fastbp.MLP([3, 4, 2])
    monkeypatch.setattr(m, "activations", ["swish"])
    with pytest.raises(NotImplementedError, match="swish.*no ONNX operator"):
        m.to_onnx()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_export():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(80, 5)), rng.integers(0, 3, 80)
    clf = MLPClassifier(hidden_layer_sizes=(8,), activation="logistic", max_iter=3, random_state=0).fit(X, y)
    Xt = X[:20].astype(np.float32)
    np.testing.assert_allclose(_run(clf.to_onnx(), Xt), clf.predict_proba(Xt), atol=1e-6)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, X[:, 0])
    np.testing.assert_allclose(_run(reg.to_onnx(), Xt)[:, 0], reg.predict(Xt), atol=1e-5)
