"""Optimizers, schedules, L2 and clipping: the compiled steps against the formulas, in float64.

The references below transcribe the update rules of ``torch.optim.SGD``/``Adam``/``AdamW``/``RMSprop``
(dampening 0, amsgrad off) and ``torch.nn.utils.clip_grad_norm_`` as PyTorch documents them.
"""
import math

import numpy as np
import pytest
from reference import loss_and_grads

import fastbp
from fastbp import kernels as K
from fastbp.kernels.common import PARALLEL_WORK


def sgd_reference(theta, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    g = g + weight_decay * theta
    if momentum:
        v[...] = momentum * v + g
        g = g + momentum * v if nesterov else v
    return theta - lr * g


def adam_reference(theta, g, m, u, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    if decoupled:
        theta = theta * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * theta
    m[...] = betas[0] * m + (1 - betas[0]) * g
    u[...] = betas[1] * u + (1 - betas[1]) * g * g
    denom = np.sqrt(u) / math.sqrt(1 - betas[1] ** t) + eps
    return theta - lr / (1 - betas[0] ** t) * m / denom


def rmsprop_reference(theta, g, state, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    """PyTorch's documented RMSprop algorithm; state rows as the kernel keeps them: v, then b (μ > 0), then g_ave."""
    v, b, g_ave = state[0], state[1] if momentum else None, state[-1] if centered else None
    if weight_decay:
        g = g + weight_decay * theta
    v[...] = alpha * v + (1 - alpha) * g * g
    v_tilde = v
    if centered:
        g_ave[...] = g_ave * alpha + (1 - alpha) * g
        v_tilde = v_tilde - g_ave ** 2
    if momentum > 0:
        b[...] = momentum * b + g / (np.sqrt(v_tilde) + eps)
        return theta - lr * b
    return theta - lr * g / (np.sqrt(v_tilde) + eps)


def reference_step(optimizer, theta, g, state, t):
    if isinstance(optimizer, fastbp.RMSprop):
        return rmsprop_reference(theta, g, state, optimizer.lr, optimizer.alpha, optimizer.eps, optimizer.weight_decay,
                                 optimizer.momentum, optimizer.centered)
    if isinstance(optimizer, fastbp.Adam):
        return adam_reference(theta, g, state[0], state[1], t, optimizer.lr, optimizer.betas, optimizer.eps,
                              optimizer.weight_decay, isinstance(optimizer, fastbp.AdamW))
    return sgd_reference(theta, g, state[0], optimizer.lr, optimizer.momentum, optimizer.nesterov,
                         optimizer.weight_decay)


OPTIMIZERS = [
    fastbp.SGD(lr=0.1),
    fastbp.SGD(lr=0.1, momentum=0.9),
    fastbp.SGD(lr=0.05, momentum=0.8, nesterov=True),
    fastbp.SGD(lr=0.1, momentum=0.5, weight_decay=0.01),
    fastbp.SGD(lr=0.1, weight_decay=0.1),
    fastbp.Adam(lr=0.01),
    fastbp.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    fastbp.AdamW(lr=0.01),
    fastbp.AdamW(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3),
    fastbp.RMSprop(lr=0.01),
    fastbp.RMSprop(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.1),
    fastbp.RMSprop(lr=0.005, momentum=0.8),
    fastbp.RMSprop(lr=0.002, alpha=0.95, centered=True),
    fastbp.RMSprop(lr=0.002, momentum=0.5, centered=True, weight_decay=0.01),
]


# from PARALLEL_WORK parameters up the steps run in parallel blocks; + 4465 leaves a partial last block
@pytest.mark.parametrize("P", [301, PARALLEL_WORK + 4465], ids=["serial", "parallel-blocks"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_step_kernel_matches_the_formula_over_many_steps(optimizer, P):
    rng = np.random.default_rng(0)
    theta = rng.normal(size=P)
    params, state = theta.copy(), np.zeros((optimizer.state_rows, P))
    ref_state = np.zeros((optimizer.state_rows, P))
    hyper = optimizer.hyper(0)
    for t in range(1, 31):
        g = rng.normal(size=P)
        K.optimizer_step(optimizer.code, params, g.copy(), state, hyper, t)
        theta = reference_step(optimizer, theta, g, ref_state, t)
    np.testing.assert_allclose(params, theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state, ref_state, rtol=1e-12, atol=1e-14)


def _flat_grads(model, X, y):
    """∂E/∂θ by the NumPy reference, flattened in the model's parameter layout."""
    T = np.eye(model.layer_sizes[-1])[y]
    _, dW, db = loss_and_grads(model.weights, model.biases, model.activations, model.output, X, T)
    return np.concatenate([np.concatenate([W.ravel(), b]) for W, b in zip(dW, db)])


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_fit_takes_the_reference_steps(optimizer):
    """Full-batch fit: epoch e is step t = e; each step equals the formula applied to the reference gradient."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    model = fastbp.MLP([5, 7, 3], activation="tanh", dtype=np.float64, seed=0)
    reference = fastbp.MLP([5, 7, 3], activation="tanh", dtype=np.float64, seed=0)
    state = np.zeros((optimizer.state_rows, reference._params.size))
    for t in range(1, 6):
        reference._params[...] = reference_step(optimizer, reference._params, _flat_grads(reference, X, y), state, t)
    fresh = type(optimizer)(**optimizer._settings())
    model.fit(X, y, epochs=5, batch_size=40, optimizer=fresh, shuffle=False, verbose=0)
    np.testing.assert_allclose(model._params, reference._params, rtol=1e-10, atol=1e-12)
    assert fresh.steps == 5 and fresh.epochs == 5


def test_l2_penalty_follows_scikit_learn():
    """A batch of S adds α/(2S) Σ||W||² to the loss and αW/S to ∂E/∂W; biases are not penalised."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)
    alpha, lr = 0.7, 0.1
    model = fastbp.MLP([4, 6, 2], dtype=np.float64, seed=1)
    expected = model._params - lr * _flat_grads(model, X, y)
    for W, (w0, b0) in zip(model.weights, model._offsets[1:-1]):
        expected[w0:b0] -= lr * alpha / 30 * W.ravel()
    penalty = alpha / 60 * sum((W ** 2).sum() for W in model.weights)
    data_loss, _ = model.evaluate(X, y)
    history = model.fit(X, y, epochs=1, batch_size=30, optimizer=fastbp.SGD(lr=lr), alpha=alpha, shuffle=False,
                        verbose=0)
    np.testing.assert_allclose(model._params, expected, rtol=1e-12)
    assert history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-12)


def test_l2_penalty_matches_scikit_learn_mlp_loss():
    """scikit-learn's MLPClassifier reports the same penalised loss at the same weights."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    model = fastbp.MLP([4, 5, 3], dtype=np.float64, seed=0)
    reference = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.3, batch_size=50, max_iter=1, solver="sgd",
                              learning_rate_init=1e-12, momentum=0, shuffle=False)
    with pytest.warns(Warning):  # ConvergenceWarning after one iteration
        reference.fit(X, y)
    reference.coefs_ = [W.T.copy() for W in model.weights]
    reference.intercepts_ = [b.copy() for b in model.biases]
    reference.partial_fit(X, y)  # the loss of one batch at our weights, then a negligible step
    history = model.fit(X, y, epochs=1, batch_size=50, optimizer=fastbp.SGD(lr=1e-12), alpha=0.3, shuffle=False,
                        verbose=0)
    assert history["loss"][0] == pytest.approx(reference.loss_curve_[-1], rel=1e-9)


def test_clip_grad_norm_kernel():
    rng = np.random.default_rng(4)
    g = rng.normal(size=1000)
    clipped = g.copy()
    norm = K.clip_grad_norm(clipped, 2.0)
    assert norm == pytest.approx(np.linalg.norm(g), rel=1e-12)
    np.testing.assert_allclose(clipped, g * 2.0 / (np.linalg.norm(g) + 1e-6), rtol=1e-12)
    small = g / np.linalg.norm(g)
    unchanged = small.copy()
    K.clip_grad_norm(unchanged, 2.0)
    np.testing.assert_array_equal(unchanged, small)


def test_fit_clips_every_step():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(64, 6)) * 50, rng.integers(0, 4, 64)
    model = fastbp.MLP([6, 8, 4], dtype=np.float64, seed=0)
    before = model._params.copy()
    model.fit(X, y, epochs=1, batch_size=64, optimizer=fastbp.SGD(lr=0.5), clip_norm=0.1, verbose=0)
    step = np.linalg.norm(model._params - before)
    assert step == pytest.approx(0.5 * 0.1, rel=1e-6)  # the raw gradient is far longer than 0.1


def test_fused_sgd_equals_the_optimizer_path():
    X_train, _, y_train, _ = fastbp.data.load_digits_split(seed=0, dtype=np.float64)
    fused = fastbp.MLP([64, 16, 10], dtype=np.float64, seed=0)
    fused.fit(X_train, y_train, epochs=2, batch_size=16, optimizer=fastbp.SGD(lr=0.05), verbose=0)
    general = fastbp.MLP([64, 16, 10], dtype=np.float64, seed=0)
    general.fit(X_train, y_train, epochs=2, batch_size=16, optimizer=fastbp.SGD(lr=0.05), clip_norm=1e9, verbose=0)
    np.testing.assert_allclose(general._params, fused._params, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [fastbp.SGD(lr=0.05, momentum=0.9), fastbp.Adam(lr=1e-3)], ids=repr)
def test_reference_recipes_reach_97_percent_on_digits(digits, optimizer):
    X_train, X_test, y_train, y_test = digits
    model = fastbp.MLP([64, 128, 64, 10], seed=0)
    history = model.fit(X_train, y_train, epochs=30, batch_size=32, optimizer=optimizer, seed=0, verbose=0)
    assert model.score(X_test, y_test) >= 0.97
    assert history["accuracy"][-1] > 0.99


def test_optimizer_state_carries_over_between_fits():
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(50, 5)), rng.integers(0, 3, 50)
    once, twice = (fastbp.MLP([5, 6, 3], dtype=np.float64, seed=0) for _ in range(2))
    once.fit(X, y, epochs=4, batch_size=8, optimizer=fastbp.Adam(lr=0.01), shuffle=False, verbose=0)
    adam = fastbp.Adam(lr=0.01)
    twice.fit(X, y, epochs=2, batch_size=8, optimizer=adam, shuffle=False, verbose=0)
    twice.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)  # optimizer=None: continue with adam
    np.testing.assert_array_equal(once._params, twice._params)
    assert twice.optimizer is adam and adam.steps == 4 * 7 and adam.epochs == 4


def test_optimizer_used_with_another_model_starts_over():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    adam = fastbp.Adam()
    fastbp.MLP([3, 4, 2], seed=0).fit(X, y, epochs=1, optimizer=adam, verbose=0)
    other = fastbp.MLP([3, 4, 2], seed=0)
    fresh = fastbp.MLP([3, 4, 2], seed=0)
    other.fit(X, y, epochs=1, optimizer=adam, verbose=0)
    fresh.fit(X, y, epochs=1, optimizer=fastbp.Adam(), verbose=0)
    np.testing.assert_array_equal(other._params, fresh._params)


@pytest.mark.parametrize("schedule,expected", [
    (fastbp.ConstantLR(0.1), [0.1, 0.1, 0.1, 0.1, 0.1]),
    (fastbp.StepLR(0.1, step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (fastbp.ExponentialLR(0.1, gamma=0.5), [0.1, 0.05, 0.025, 0.0125, 0.00625]),
    (fastbp.CosineLR(0.1, epochs=4, min_lr=0.02), [0.1, 0.02 + 0.08 * (1 + math.cos(math.pi / 4)) / 2, 0.06,
                                                   0.02 + 0.08 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.02]),
    (lambda epoch: 0.1 / (1 + epoch), [0.1, 0.05, 0.1 / 3, 0.025, 0.02]),
])
def test_schedules_set_each_epochs_learning_rate(schedule, expected):
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    history = fastbp.MLP([3, 4, 2], seed=0).fit(X, y, epochs=5, optimizer=fastbp.SGD(lr=schedule, momentum=0.5),
                                                verbose=0)
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-12)


def test_schedule_is_applied_in_the_step():
    """An epoch trained at ε = lr(e) moves the weights exactly like a constant ε of that value."""
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(24, 3)), rng.integers(0, 2, 24)
    scheduled, constant = (fastbp.MLP([3, 4, 2], dtype=np.float64, seed=0) for _ in range(2))
    scheduled.fit(X, y, epochs=2, optimizer=fastbp.SGD(lr=fastbp.StepLR(0.2, step_size=1, gamma=0.25)),
                  shuffle=False, verbose=0)
    constant.fit(X, y, epochs=1, optimizer=fastbp.SGD(lr=0.2), shuffle=False, verbose=0)
    constant.fit(X, y, epochs=1, optimizer=fastbp.SGD(lr=0.05), shuffle=False, verbose=0)
    np.testing.assert_array_equal(scheduled._params, constant._params)


def test_bad_schedule_value_names_the_epoch_before_training():
    model = fastbp.MLP([3, 2], seed=0)
    before = model._params.copy()
    with pytest.raises(ValueError, match="epoch 2: lr must be finite and > 0"):
        model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=5, optimizer=fastbp.SGD(lr=lambda e: 0.1 if e < 2 else -1),
                  verbose=0)
    np.testing.assert_array_equal(model._params, before)


@pytest.mark.parametrize("make,error,match", [
    (lambda: fastbp.SGD(lr=0.1, momentum=1.0), ValueError, r"momentum must lie in \[0, 1\)"),
    (lambda: fastbp.SGD(lr=0.1, nesterov=True), ValueError, "needs momentum > 0"),
    (lambda: fastbp.SGD(lr=0.1, weight_decay=-1), ValueError, "weight_decay must be ≥ 0"),
    (lambda: fastbp.SGD(lr="fast"), TypeError, "lr must be a real number or a callable"),
    (lambda: fastbp.Adam(betas=(0.9,)), TypeError, "betas must be a pair"),
    (lambda: fastbp.Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must lie in \[0, 1\)"),
    (lambda: fastbp.Adam(eps=float("nan")), ValueError, "eps must be finite"),
    (lambda: fastbp.AdamW(lr=0), ValueError, "lr must be finite and > 0"),
])
def test_bad_optimizer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(alpha=-0.1), ValueError, "alpha must be ≥ 0"),
    (dict(clip_norm=0), ValueError, "clip_norm must be > 0"),
    (dict(clip_norm="big"), TypeError, "clip_norm must be a real number"),
])
def test_bad_regularisation_arguments_leave_the_model_unchanged(kwargs, error, match):
    model = fastbp.MLP([3, 2], seed=0)
    before = model._params.copy()
    with pytest.raises(error, match=match):
        model.fit(np.zeros((4, 3)), [0, 1, 0, 1], verbose=0, **kwargs)
    np.testing.assert_array_equal(model._params, before)


def test_rmsprop_first_step_by_hand():
    """One step from zero state: u = (1-α)g², so θ moves by ε g / (√(1-α)|g| + eps) ≈ ε sign(g) / √(1-α)."""
    theta, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, -4.0, 0.0])
    params, state = theta.copy(), np.zeros((1, 3))
    optimizer = fastbp.RMSprop(lr=0.01, alpha=0.99, eps=1e-8)
    K.optimizer_step(optimizer.code, params, g.copy(), state, optimizer.hyper(0), 1)
    np.testing.assert_allclose(state[0], 0.01 * g * g, rtol=1e-14)
    np.testing.assert_allclose(params, theta - 0.01 * g / (np.sqrt(0.01) * np.abs(g) + 1e-8), rtol=1e-14)
    assert params[2] == theta[2]  # a zero gradient leaves its parameter alone


@pytest.mark.parametrize("optimizer,rows", [(fastbp.SGD(), 1), (fastbp.SGD(momentum=0.9), 1), (fastbp.Adam(), 2),
                                            (fastbp.AdamW(), 2), (fastbp.RMSprop(), 1),
                                            (fastbp.RMSprop(momentum=0.9), 2), (fastbp.RMSprop(centered=True), 2),
                                            (fastbp.RMSprop(momentum=0.9, centered=True), 3)], ids=repr)
def test_state_rows_fit_the_optimizer(optimizer, rows):
    assert optimizer.state_rows == rows
    assert optimizer.bind(np.zeros(7, np.float32)).shape == (rows, 7)


def test_rmsprop_trains_from_the_command_line_name():
    from fastbp.cli import OPTIMIZERS as CLI_OPTIMIZERS
    from fastbp.optim import OPTIMIZERS as CLASSES

    assert CLASSES["rmsprop"] is fastbp.RMSprop and isinstance(CLI_OPTIMIZERS["rmsprop"](0.01), fastbp.RMSprop)
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(64, 6)), rng.integers(0, 3, 64)
    model = fastbp.MLP([6, 8, 3], dtype=np.float32, seed=0)
    history = model.fit(X, y, epochs=15, batch_size=16, optimizer=fastbp.RMSprop(lr=0.01), verbose=0)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
