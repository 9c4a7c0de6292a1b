"""MLP.fit's training features: validation, early stopping, callbacks, progress output, partial_fit."""
import io
import time

import numba
import numpy as np
import pytest

import fastbp


@pytest.fixture(scope="module")
def data():
    X_train, X_test, y_train, y_test = fastbp.data.load_digits_split(seed=0)
    return X_train[:500], X_test[:200], y_train[:500], y_test[:200]


def test_validation_data_is_evaluated_every_epoch(data):
    X, X_val, y, y_val = data
    model = fastbp.MLP([64, 16, 10], seed=0)
    history = model.fit(X, y, epochs=3, optimizer=fastbp.Adam(lr=1e-2), validation_data=(X_val, y_val), verbose=0)
    assert {k: len(v) for k, v in history.items()} == dict.fromkeys(
        ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "samples_per_second"], 3)
    val_loss, val_accuracy = model.evaluate(X_val, y_val)
    assert history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-6)
    assert history["val_accuracy"][-1] == pytest.approx(val_accuracy) == pytest.approx(model.score(X_val, y_val))


def test_evaluate_matches_the_reference_loss():
    from reference import loss_and_grads

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    model = fastbp.MLP([4, 5, 2], activation="tanh", output="identity", dtype=np.float64, seed=0)
    loss, accuracy = model.evaluate(X, y)
    expected, _, _ = loss_and_grads(model.weights, model.biases, model.activations, "identity", X, y)
    assert loss == pytest.approx(expected, rel=1e-12) and accuracy is None


def test_evaluate_is_the_same_for_one_and_two_threads():
    """`evaluate` takes the logits from `predict_outputs`' per-thread blocks of rows and the loss from
    `output_loss` over all rows: the same loss and accuracy, bit for bit, on one thread and on two."""
    from reference import loss_and_grads

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(1001, 30)), rng.integers(0, 5, 1001)
    # float64: float32 E_s would add up exactly in a float64 sum, in any order, and prove nothing
    model = fastbp.MLP([30, 40, 20, 5], activation="tanh", dtype=np.float64, seed=0)
    results = set()
    threads = numba.get_num_threads()
    try:
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            results.add(model.evaluate(X, y))
    finally:
        numba.set_num_threads(threads)
    assert len(results) == 1
    loss, accuracy = results.pop()
    expected, _, _ = loss_and_grads(model.weights, model.biases, model.activations, "softmax", X, np.eye(5)[y])
    assert loss == pytest.approx(expected, rel=1e-12)
    assert accuracy == np.mean(model.predict(X) == y)


def test_validation_split_holds_out_a_seeded_fraction(data):
    X, _, y, _ = data
    runs = [fastbp.MLP([64, 8, 10], seed=0).fit(X, y, epochs=2, validation_split=0.2, seed=4, verbose=0)
            for _ in range(2)]
    assert runs[0]["val_loss"] == runs[1]["val_loss"] and len(runs[0]["val_loss"]) == 2
    moved = fastbp.MLP([64, 8, 10], seed=0).fit(X, y, epochs=2, validation_split=0.2, seed=5, verbose=0)
    assert moved["val_loss"] != runs[0]["val_loss"]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(validation_split=1.0), ValueError, "leaves no training or no validation samples"),
    (dict(validation_split=-0.1), ValueError, "validation_split must be ≥ 0"),
    (dict(validation_split=0.2, validation_data=(np.zeros((2, 64)), [0, 1])), ValueError, "not both"),
    (dict(validation_data=np.zeros((2, 64))), TypeError, "validation_data must be a pair"),
    (dict(validation_data=(np.zeros((2, 63)), [0, 1])), ValueError, "X has 63 features"),
    (dict(validation_data=(np.zeros((2, 64)), [0, 10])), ValueError, "y holds the label 10"),
    (dict(patience=0), ValueError, "patience must be ≥ 1"),
    (dict(monitor="val_loss"), ValueError, r"monitor='val_loss' is not recorded by this fit"),
    (dict(callbacks=[print, 3]), TypeError, "callbacks must be callables"),
    (dict(verbose=-1), ValueError, "verbose must be 0"),
])
def test_bad_training_options_raise_before_training(data, kwargs, error, match):
    X, _, y, _ = data
    model = fastbp.MLP([64, 8, 10], seed=0)
    before = model._params.copy()
    with pytest.raises(error, match=match):
        model.fit(X, y, epochs=2, **kwargs)
    np.testing.assert_array_equal(model._params, before)


def test_early_stopping_restores_the_best_epoch(data):
    X, X_val, y, y_val = data
    snapshots = []
    model = fastbp.MLP([64, 64, 10], seed=0)
    history = model.fit(X, y, epochs=60, batch_size=16, optimizer=fastbp.Adam(lr=3e-2), validation_data=(X_val, y_val),
                        patience=3, callbacks=[lambda epoch, h, m: snapshots.append(m._params.copy())], verbose=0)
    epochs = len(history["val_loss"])
    best = int(np.argmin(history["val_loss"]))
    assert epochs < 60 and epochs == best + 4  # three epochs without improvement after the best one
    np.testing.assert_array_equal(model._params, snapshots[best])


def test_early_stopping_on_accuracy_with_min_delta(data):
    X, X_val, y, y_val = data
    history = fastbp.MLP([64, 16, 10], seed=0).fit(X, y, epochs=50, optimizer=fastbp.Adam(lr=1e-2),
                                                   validation_data=(X_val, y_val), monitor="val_accuracy",
                                                   patience=2, min_delta=0.05, verbose=0)
    accuracies = history["val_accuracy"]
    assert len(accuracies) < 50
    assert max(accuracies[-2:]) <= max(accuracies[:-2]) + 0.05


def test_callback_can_stop_training(data):
    X, _, y, _ = data
    seen = []

    def stop_at_three(epoch, history, model):
        seen.append((epoch, len(history["loss"]), isinstance(model, fastbp.MLP)))
        return epoch == 3

    history = fastbp.MLP([64, 8, 10], seed=0).fit(X, y, epochs=10, callbacks=[stop_at_three], verbose=0)
    assert len(history["loss"]) == 3 and seen == [(1, 1, True), (2, 2, True), (3, 3, True)]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_in_a_terminal_lines_elsewhere(capsys, monkeypatch, data):
    X, X_val, y, y_val = data
    model = fastbp.MLP([64, 8, 10], seed=0)
    model.fit(X, y, epochs=2, validation_data=(X_val, y_val), verbose=1)  # stdout is not a terminal here
    out, err = capsys.readouterr()
    lines = [line for line in out.strip().splitlines() if "compil" not in line]  # the first run compiles
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "val accuracy" in lines[1]
    assert "\r" not in out and err == ""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    model.fit(X, y, epochs=2, validation_data=(X_val, y_val), verbose=1)
    shown = terminal.getvalue()
    assert "samples/s" in shown and "loss=" in shown and "accuracy=" in shown  # the tqdm bar's postfix
    assert "2/2" in shown and "epoch 1/2" not in shown  # the bar alone, no lines
    monkeypatch.undo()
    model.fit(X, y, epochs=2, verbose=2)
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2 and err == ""
    model.fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_repeated_partial_fit_equals_fit(data):
    X, _, y, _ = data
    fitted = fastbp.MLP([64, 8, 10], seed=0)
    fitted.fit(X, y, epochs=3, batch_size=20, optimizer=fastbp.SGD(lr=0.05, momentum=0.9), shuffle=False, verbose=0)
    streamed = fastbp.MLP([64, 8, 10], seed=0)
    streamed.partial_fit(X, y, batch_size=20, optimizer=fastbp.SGD(lr=0.05, momentum=0.9), shuffle=False)
    for _ in range(2):
        streamed.partial_fit(X, y, batch_size=20, shuffle=False)  # continues with the same optimizer
    np.testing.assert_array_equal(streamed._params, fitted._params)
    assert streamed.optimizer.epochs == 3


def test_partial_fit_on_a_stream_of_chunks(data):
    X, X_test, y, y_test = data
    model = fastbp.MLP([64, 32, 10], seed=0)
    adam = fastbp.Adam(lr=3e-3)
    for _ in range(10):
        for start in range(0, len(X), 100):
            model.partial_fit(X[start:start + 100], y[start:start + 100], optimizer=adam)
    assert adam.epochs == 50 and model.score(X_test, y_test) > 0.85


def test_partial_fit_shuffles_reproducibly(data):
    X, _, y, _ = data
    runs = []
    for _ in range(2):
        model = fastbp.MLP([64, 8, 10], seed=0)
        for _ in range(2):
            model.partial_fit(X, y, optimizer=model.optimizer or fastbp.Adam())
        runs.append(model._params)
    np.testing.assert_array_equal(*runs)


def test_divergence_with_momentum_restores_weights_and_state(data):
    X, _, y, _ = data
    model = fastbp.MLP([64, 32, 10], activation="identity", seed=0)
    momentum = fastbp.SGD(lr=1e3, momentum=0.9)
    with pytest.warns(RuntimeWarning, match="diverged in epoch"):
        history = model.fit(X * 1e3, y, epochs=5, optimizer=momentum, verbose=0)
    assert len(history["loss"]) < 5
    assert np.isfinite(model._params).all() and np.isfinite(momentum.state).all()
    assert momentum.epochs == len(history["loss"])


def test_pickled_model_keeps_weights_as_views_and_continues_training(data):
    import pickle

    X, _, y, _ = data
    model = fastbp.MLP([64, 8, 10], seed=0)
    model.fit(X, y, epochs=1, optimizer=fastbp.Adam(), verbose=0)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.weights[0].base is clone._params or np.shares_memory(clone.weights[0], clone._params)
    model.fit(X, y, epochs=1, verbose=0)
    clone.fit(X, y, epochs=1, verbose=0)  # continues with its copy of the Adam state
    np.testing.assert_array_equal(clone._params, model._params)
    np.testing.assert_array_equal(clone.weights[1], model.weights[1])


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_says_that_the_first_epoch_compiles(terminal, monkeypatch):
    """While the first epoch compiles: the notice with the seconds elapsed and no ETA, then the epochs."""
    from fastbp.model import COMPILING, _Progress

    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    history = {"loss": [0.5], "samples_per_second": [1000.0]}
    with _Progress(1, 3, compiling=True) as progress:
        time.sleep(1.3)  # the clock ticks every second in a terminal
        for epoch in (1, 2, 3):
            progress.update(epoch, history)
    shown = stream.getvalue()
    if terminal:
        compiling = [part for part in shown.split("\r") if COMPILING in part]  # the clock's redraws
        assert any("00:01" in part for part in compiling) and all("<" not in part for part in compiling)  # no ETA
        assert "3/3" in shown and "epoch 1/3" not in shown
    else:
        assert "\r" not in shown
        lines = shown.splitlines()
        assert lines[0] == COMPILING and lines[1].startswith("kernels compiled (") and "s with epoch 1)" in lines[1]
        assert [line.split()[1] for line in lines[2:]] == ["1/3", "2/3", "3/3"]
