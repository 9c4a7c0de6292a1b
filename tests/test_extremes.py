"""Numerical extremes through the whole model: logits of ±1e4, targets exactly 0 and 1, a single
class, a batch of one, saturated tanh/sigmoid units; and divergence, which must stop training
without losing the last finite weights. tests/test_kernels.py checks the kernels alone."""
import re
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import kernels as K
from reference import loss_and_grads as reference_loss_and_grads

DTYPES = [np.float32, np.float64]
# Logit rows z_s: a confident right or wrong answer, all equal and hugely negative, a tie at the top.
HUGE_LOGITS = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])


def _model_with_logits(Z, output, dtype):
    """A model without hidden layers whose logits on X = I are exactly Z: z_s = W e_s = W[:, s]."""
    m = fastbp.MLP([Z.shape[0], Z.shape[1]], output=output, dtype=dtype, seed=0)
    m.weights[0][...] = Z.T
    return m, np.eye(Z.shape[0], dtype=dtype)


def _assert_matches_reference(m, X, T, loss, dW, db, rtol):
    want_loss, want_dW, want_db = reference_loss_and_grads(m.weights, m.biases, m.activations, m.output, X, T)
    assert loss == pytest.approx(want_loss, rel=rtol)
    for got, want in zip(dW + db, want_dW + want_db):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_at_logits_of_1e4(dtype):
    m, X = _model_with_logits(HUGE_LOGITS, "softmax", dtype)
    labels = np.array([1, 0, 2])  # wrong by 2e4; equal logits; the tie's loser by 2e4
    loss, dW, db = m.loss_and_grads(X, labels)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in dW + db)
    # E_s = lse(z_s) - z_{s,t}: 2e4, log 3, 2e4 + log 2
    assert loss == pytest.approx((2e4 + np.log(3) + 2e4 + np.log(2)) / 3, rel=1e-6)
    # a^L = e^{z - max z} / Σ_c e^{z_c - max z} keeps ties at 1e4 exact; e^{z - lse(z)} was off by ulp(1e4) = 1e-3
    tol = 1e-9 if dtype == np.float64 else 1e-6
    _assert_matches_reference(m, X, np.eye(3)[labels], loss, dW, db, rtol=tol)
    assert np.isfinite(m.predict_proba(X)).all()
    np.testing.assert_allclose(m.predict_proba(X)[1], 1 / 3, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("top", [0.0, 100.0, 1e4, -1e4])
def test_softmax_is_exact_to_a_few_ulps_at_any_logit_size(dtype, top):
    Z = np.array([[top, top - 0.5, top - 3.0], [top, top, top]], dtype)
    T = np.eye(3, dtype=dtype)[[1, 0]]
    A, D, losses = np.empty_like(Z), np.empty_like(Z), np.empty(2, dtype)
    K.output_loss(Z, T, K.SOFTMAX_CE, A, D, losses)
    z = np.array([0.0, -0.5, -3.0])
    p = np.exp(z) / np.exp(z).sum()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(A, [p, np.full(3, 1 / 3)], rtol=4 * eps)
    np.testing.assert_allclose(losses, [-np.log(p[1]), np.log(3)], rtol=4 * eps)
    np.testing.assert_allclose(A.sum(axis=1), 1, atol=4 * eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_cross_entropy_at_logits_of_1e4(dtype):
    m, X = _model_with_logits(HUGE_LOGITS, "sigmoid", dtype)
    T = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype)  # targets exactly 0 and 1, right and wrong
    loss, dW, db = m.loss_and_grads(X, T)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in dW + db)
    _assert_matches_reference(m, X, T, loss, dW, db, rtol=1e-5)
    # δ = σ(z) - t is exactly 0 or ±1 when saturated, so ∂E/∂W = δᵀ X / S holds exact thirds
    delta = (HUGE_LOGITS > 0) * 1.0 + (HUGE_LOGITS == 0) * 0.5 - T
    np.testing.assert_array_equal(dW[0], (delta.T / 3).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_training_on_saturated_logits_stays_finite(output, dtype):
    m, X = _model_with_logits(HUGE_LOGITS, output, dtype)
    y = np.array([1, 0, 2]) if output == "softmax" else np.eye(3)
    history = m.fit(X, y, epochs=3, batch_size=2, optimizer=fastbp.SGD(lr=0.1), verbose=0)
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
    assert all(np.isfinite(p).all() for p in m.weights + m.biases)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturated_hidden_units_pass_no_gradient_and_no_nan(activation, dtype):
    rng = np.random.default_rng(0)
    m = fastbp.MLP([3, 5, 2], activation=activation, output="softmax", dtype=dtype, seed=0)
    m.weights[0][...] = 1e3 * np.array([1, -1, 1, -1, 1])[:, None]  # rows of ±1000
    X = rng.uniform(0.5, 1, size=(4, 3))  # so |z^1_k| = 1000 Σ_j x_j ≥ 1500: every hidden unit saturated
    with np.errstate(all="raise"):
        loss, dW, db = m.loss_and_grads(X, [0, 1, 1, 0])
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in dW + db)
    # f'(z) = 1 - a² = 0 (tanh) or a(1 - a) = 0 (sigmoid) at saturation: nothing reaches layer 1
    np.testing.assert_array_equal(dW[0], 0)
    np.testing.assert_array_equal(db[0], 0)
    _assert_matches_reference(m, X, np.eye(2)[[0, 1, 1, 0]], loss, dW, db, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_single_class_gives_zero_loss_and_leaves_the_weights(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 4))
    m = fastbp.MLP([4, 3, 1], output="softmax", dtype=dtype, seed=0)
    before = [p.copy() for p in m.weights + m.biases]
    loss, dW, db = m.loss_and_grads(X, np.zeros(10, int))
    assert loss == 0 and all((g == 0).all() for g in dW + db)  # a^L = e^{z - lse(z)} = 1 = t
    history = m.fit(X, np.zeros(10, int), epochs=2, batch_size=4, verbose=0)
    assert history["loss"] == [0.0, 0.0] and history["accuracy"] == [1.0, 1.0]
    for p, saved in zip(m.weights + m.biases, before):
        np.testing.assert_array_equal(p, saved)
    assert (m.predict(X) == 0).all() and m.score(X, np.zeros(10, int)) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
def test_a_batch_of_one_sample(output, dtype):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1, 6))
    T = {"softmax": np.eye(3)[[2]], "sigmoid": np.array([[0.0, 1.0, 1.0]]), "identity": rng.normal(size=(1, 3))}[output]
    m = fastbp.MLP([6, 5, 3], activation="tanh", output=output, dtype=dtype, seed=0)
    loss, dW, db = m.loss_and_grads(X, T)
    _assert_matches_reference(m, X, T, loss, dW, db, rtol=1e-5 if dtype == np.float32 else 1e-12)
    history = m.fit(X, T, epochs=3, batch_size=64, verbose=0)  # batch_size is clipped to the one sample
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert m.predict_proba(X).shape == (1, 3)


# ----------------------------------------------------------------------------- divergence
def _diverging_fit(m, X, y, epochs, lr):
    """fit that must warn about divergence; returns (history, the epoch the warning names)."""
    with pytest.warns(RuntimeWarning, match=r"training diverged in epoch \d+ .*Lower the learning rate") as record:
        history = m.fit(X, y, epochs=epochs, batch_size=16, optimizer=fastbp.SGD(lr=lr), seed=5, verbose=0)
    message = next(str(w.message) for w in record if "diverged" in str(w.message))
    return history, int(re.search(r"diverged in epoch (\d+)", message).group(1)), message


def test_divergence_in_a_later_epoch_keeps_exactly_the_previous_epochs_weights(digits):
    X, _, y, _ = digits
    model = lambda: fastbp.MLP([64, 32, 10], activation="identity", dtype=np.float64, seed=0)  # noqa: E731
    diverged = model()
    history, epoch, message = _diverging_fit(diverged, X, y, epochs=8, lr=2.0)
    assert epoch >= 2, "this recipe should train at least one finite epoch before diverging"
    assert f"kept the weights from the end of epoch {epoch - 1}" in message
    assert len(history["loss"]) == epoch - 1 and np.isfinite(history["loss"]).all()
    # the same fit stopped one epoch earlier, on purpose, ends with bit-identical weights
    stopped = model()
    stopped.fit(X, y, epochs=epoch - 1, batch_size=16, optimizer=fastbp.SGD(lr=2.0), seed=5, verbose=0)
    for p, q in zip(diverged.weights + diverged.biases, stopped.weights + stopped.biases):
        np.testing.assert_array_equal(p, q)
    # and the model is still usable: predicting, scoring, training on with a sane learning rate
    assert np.isfinite(diverged.predict_proba(X)).all()
    diverged.fit(X, y, epochs=1, optimizer=fastbp.SGD(lr=0.01), verbose=0)
    assert all(np.isfinite(p).all() for p in diverged.weights + diverged.biases)


def test_divergence_in_the_first_epoch_keeps_the_initial_weights(digits):
    X, _, y, _ = digits
    m = fastbp.MLP([64, 32, 10], activation="identity", seed=0)
    initial = [p.copy() for p in m.weights + m.biases]
    history, epoch, _ = _diverging_fit(m, X, y, epochs=3, lr=2.0)
    assert epoch == 1 and history["loss"] == []
    for p, saved in zip(m.weights + m.biases, initial):
        np.testing.assert_array_equal(p, saved)


def test_partial_fit_that_diverges_changes_nothing(digits):
    X, _, y, _ = digits
    m = fastbp.MLP([64, 32, 10], activation="identity", seed=0)
    m.partial_fit(X, y, optimizer=fastbp.SGD(lr=0.01))
    trained = [p.copy() for p in m.weights + m.biases]
    with pytest.warns(RuntimeWarning, match="diverged in epoch 1"):
        m.partial_fit(X * 100, y, optimizer=fastbp.SGD(lr=10.0))
    for p, saved in zip(m.weights + m.biases, trained):
        np.testing.assert_array_equal(p, saved)


def test_a_diverged_fit_raises_when_warnings_are_errors(digits):
    X, _, y, _ = digits
    m = fastbp.MLP([64, 32, 10], activation="identity", seed=0)
    initial = [p.copy() for p in m.weights + m.biases]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="diverged in epoch 1"):
            m.fit(X, y, epochs=2, optimizer=fastbp.SGD(lr=2.0), verbose=0)
    for p, saved in zip(m.weights + m.biases, initial):
        np.testing.assert_array_equal(p, saved)
