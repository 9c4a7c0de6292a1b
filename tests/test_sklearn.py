"""fastbp.sklearn estimators: scikit-learn's own estimator checks, meta-estimators, multi-label, regression."""
import pickle
import re
import warnings
from unittest import SkipTest

import numpy as np
import scipy.optimize
import pytest
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


#: checks scikit-learn skips for an optional dependency or a method these estimators do not have
NOT_APPLICABLE = re.compile("SCIPY_ARRAY_API is not set|pandas is not installed|does not have a decision_function")


# dtype=None: float64 for scikit-learn's float64 data, so that its check that integer sample weights equal
# repeated rows holds to its float64 tolerance (full batches summed in another order differ in rounding only)
@parametrize_with_checks([MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, learning_rate_init=0.01, dtype=None),
                          MLPRegressor(hidden_layer_sizes=(32,), max_iter=50, learning_rate_init=0.01, dtype=None)])
def test_scikit_learn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except SkipTest as skip:  # not a failure, but only for the reasons listed
        assert NOT_APPLICABLE.search(str(skip)), f"unexpected skip: {skip}"


@pytest.fixture(scope="module")
def small_digits():
    X_train, X_test, y_train, y_test = fastbp.data.load_digits_split(seed=0)
    return X_train[:600], X_test, y_train[:600], y_test


@pytest.mark.slow
def test_pipeline_grid_search_and_cross_validation(small_digits):
    X, _, y, _ = small_digits
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), batch_size=32, max_iter=20,
                                                                 random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    search = GridSearchCV(pipeline, {"mlpclassifier__solver": ["adam", "sgd"]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["mlpclassifier__solver"] in ("adam", "sgd")
    assert search.best_score_ > 0.85


@pytest.mark.slow
def test_classifier_reaches_97_percent_on_digits(small_digits):
    X_train, X_test, y_train, y_test = fastbp.data.load_digits_split(seed=0)
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), batch_size=32, max_iter=30, random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.97
    assert clf.classes_.tolist() == list(range(10)) and clf.n_iter_ == len(clf.loss_curve_) <= 30


def test_string_labels_and_probabilities(small_digits):
    X, X_test, y, _ = small_digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0).fit(X, names[y])
    assert clf.classes_.tolist() == sorted(names.tolist())
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(X_test), clf.classes_[proba.argmax(axis=1)])


def test_multilabel_targets_use_sigmoid_outputs():
    X, Y = make_multilabel_classification(n_samples=400, n_features=10, n_classes=4, random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, learning_rate_init=0.01, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.model_.output == "sigmoid"
    prediction = clf.predict(X)
    assert prediction.shape == Y.shape and set(np.unique(prediction)) <= {0, 1}
    assert clf.predict_proba(X).shape == Y.shape
    assert clf.score(X, Y) > 0.6  # subset accuracy
    assert np.mean(prediction == Y) > 0.9  # per-label accuracy


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    Y = np.stack([np.sin(X[:, 0]), X[:, 0] * X[:, 1]], axis=1)
    reg = MLPRegressor(hidden_layer_sizes=(64,), activation="tanh", max_iter=300, learning_rate_init=0.01,
                       batch_size=32, random_state=0, dtype=np.float64)
    assert reg.fit(X, Y[:, 0]).predict(X).shape == (400,)
    assert reg.score(X, Y[:, 0]) > 0.95
    assert reg.fit(X, Y).predict(X).shape == (400, 2)
    assert reg.score(X, Y) > 0.9


def test_repeated_partial_fit_equals_fit():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
    settings = dict(hidden_layer_sizes=(8,), shuffle=False, random_state=0, tol=0, n_iter_no_change=100,
                    dtype=np.float64)
    fitted = MLPClassifier(max_iter=5, **settings).fit(X, y)
    streamed = MLPClassifier(**settings)
    for _ in range(5):
        streamed.partial_fit(X, y, classes=[0, 1, 2])
    for W, V in zip(fitted.coefs_ + fitted.intercepts_, streamed.coefs_ + streamed.intercepts_):
        np.testing.assert_array_equal(W, V)
    assert streamed.n_iter_ == 1 and streamed.t_ == fitted.t_ == 5 * 120
    assert streamed.loss_curve_ == fitted.loss_curve_


def test_partial_fit_needs_every_class_first():
    clf = MLPClassifier(hidden_layer_sizes=(4,))
    clf.partial_fit(np.zeros((2, 3)), [0, 1], classes=[0, 1, 2])
    clf.partial_fit(np.ones((2, 3)), [2, 2])
    with pytest.raises(ValueError, match=r"labels \[7\] not in classes_"):
        clf.partial_fit(np.ones((2, 3)), [7, 2])


def test_warm_start_continues_instead_of_starting_over():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(200, 4)), rng.integers(0, 2, 200)
    warm = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    first_weights = warm.coefs_[0].copy()
    warm.fit(X, y)
    cold = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y).fit(X, y)
    assert warm.n_iter_ == 5 and len(warm.loss_curve_) == 10 and cold.n_iter_ == 5  # n_iter_ counts each fit
    assert warm.loss_curve_[5] < warm.loss_curve_[0]
    np.testing.assert_array_equal(cold.coefs_[0], MLPClassifier(hidden_layer_sizes=(16,), max_iter=5,
                                                                random_state=0).fit(X, y).coefs_[0])
    assert not np.array_equal(warm.coefs_[0], first_weights)


def test_early_stopping_keeps_the_best_validation_epoch(small_digits):
    X, _, y, _ = small_digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3, max_iter=200,
                        learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_stops_when_the_training_loss_stops_improving():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=1e-2, n_iter_no_change=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopping early means no convergence warning
        clf.fit(X, y)
    assert clf.n_iter_ < 500


def test_pickle_round_trip(small_digits):
    X, X_test, y, _ = small_digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X_test), clf.predict_proba(X_test))
    clone.partial_fit(X, y)  # the optimizer state (Adam's moments and step count) came along
    clf.partial_fit(X, y)
    for W, V in zip(clone.coefs_ + clone.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(W, V)
    assert clone.n_iter_ == clf.n_iter_ == 1 and clone.t_ == clf.t_ == 4 * len(X)


@pytest.mark.parametrize("params,match", [
    (dict(solver="newton"), "solver must be 'lbfgs', 'sgd' or 'adam'"),
    (dict(learning_rate="optimal"), "learning_rate must be 'constant', 'invscaling' or 'adaptive'"),
    (dict(n_iter_no_change=0), "n_iter_no_change must be a positive integer or np.inf"),
    (dict(dtype=np.int32), "dtype must be np.float32, np.float64 or None"),
    (dict(activation="swish"), "activation must be one of"),
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes must hold positive integers"),
    (dict(batch_size=0), "batch_size must be 'auto' or a positive integer"),
    (dict(max_iter=0), "max_iter must be a positive integer"),
    (dict(validation_fraction=1.0), r"validation_fraction must lie in \(0, 1\)"),
])
def test_bad_parameters_raise_on_fit(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(np.zeros((4, 2)), [0, 1, 0, 1])


# ----------------------------------------------------------------------------- against scikit-learn itself
def _start_from(estimator, coefs, intercepts):
    """Make `estimator` (fastbp's or scikit-learn's) start its first fit from the given weights."""
    initialise_name = "_initialise" if hasattr(estimator, "_initialise") else "_initialize"
    original = getattr(estimator, initialise_name)

    def initialise(*args, **kwargs):
        original(*args, **kwargs)
        if hasattr(estimator, "model_"):
            estimator.coefs_, estimator.intercepts_ = coefs, intercepts
        else:
            estimator.coefs_ = [W.copy() for W in coefs]
            estimator.intercepts_ = [b.copy() for b in intercepts]
    setattr(estimator, initialise_name, initialise)
    return estimator


def _random_weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    coefs = [rng.uniform(-0.5, 0.5, (n_in, n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    return coefs, [rng.uniform(-0.1, 0.1, n_out) for n_out in sizes[1:]]


def _regression_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2]


@pytest.mark.parametrize("learning_rate,tol", [("constant", 1e-4), ("invscaling", 1e-4), ("adaptive", 0.05)])
def test_sgd_learning_rate_schedules_follow_scikit_learn(learning_rate, tol):
    """Plain SGD from the same weights on the same batches: scikit-learn's loss curve and weights (float64).
    tol=0.05 with n_iter_no_change=2 makes "adaptive" divide the rate by 5 a few times within 25 epochs."""
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    X, y = _regression_data()
    settings = dict(hidden_layer_sizes=(5,), activation="tanh", solver="sgd", learning_rate=learning_rate,
                    learning_rate_init=0.2, power_t=0.25, momentum=0.0, batch_size=20, shuffle=False, alpha=1e-3,
                    max_iter=25, tol=tol, n_iter_no_change=2)
    coefs, intercepts = _random_weights([3, 5, 1])
    ours = _start_from(MLPRegressor(dtype=np.float64, **settings), coefs, intercepts).fit(X, y)
    theirs = _start_from(SkMLPRegressor(**settings), coefs, intercepts).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_ == ours.n_iter_ * len(X)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(ours._schedule.lr, theirs._optimizer.learning_rate, rtol=1e-12)
    for W, V in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(W, V, rtol=1e-9, atol=1e-12)
    if learning_rate == "adaptive":
        assert ours._schedule.lr < 0.2 / 5  # the rate was lowered at least twice


def _recorded_lbfgs_losses(monkeypatch, fit):
    """The loss of every function evaluation scipy's L-BFGS-B makes during fit()."""
    losses, minimize = [], scipy.optimize.minimize

    def recording(fun, x0, *args, **kwargs):
        def wrapped(theta, *fun_args):
            loss, grad = fun(theta, *fun_args)
            losses.append(float(loss))
            return loss, grad
        return minimize(wrapped, x0, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(scipy.optimize, "minimize", recording)
        fit()
    return losses


def test_lbfgs_follows_scikit_learn_loss_curve(monkeypatch):
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    rng = np.random.default_rng(4)
    X = rng.normal(size=(90, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)  # three classes: softmax outputs in both
    settings = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=1e-2, max_iter=30, tol=1e-12)
    coefs, intercepts = _random_weights([4, 6, 3], seed=1)
    ours = _start_from(MLPClassifier(dtype=np.float64, **settings), coefs, intercepts)
    theirs = _start_from(SkMLPClassifier(**settings), coefs, intercepts)
    our_losses = _recorded_lbfgs_losses(monkeypatch, lambda: ours.fit(X, y))
    their_losses = _recorded_lbfgs_losses(monkeypatch, lambda: theirs.fit(X, y))
    assert len(our_losses) == len(their_losses) > 30 and ours.n_iter_ == theirs.n_iter_ == 30
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-8)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6, atol=1e-8)


def test_lbfgs_options_and_no_partial_fit():
    X, y = _regression_data()
    reg = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=500, max_fun=7, random_state=0)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        reg.fit(X, y)
    assert reg.n_iter_ <= 7 and reg.loss_curve_ is None
    assert not hasattr(reg, "partial_fit")
    fitted = MLPRegressor(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(X, y)
    assert fitted.score(X, y) > 0.8


def test_poisson_loss_finds_poisson_regressors_optimum():
    from sklearn.linear_model import PoissonRegressor

    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    y = rng.poisson(np.exp(0.3 * X[:, 0] - 0.5 * X[:, 1] + 0.2))
    reference = PoissonRegressor(alpha=0.01, tol=1e-12, max_iter=1000).fit(X, y)
    # PoissonRegressor: (1/n) Σ half deviance + (a/2)||w||²; the MLP: (1/n) Σ half deviance + α/(2n)||W||²
    ours = MLPRegressor(loss="poisson", hidden_layer_sizes=(), solver="lbfgs", alpha=0.01 * len(X), tol=1e-12,
                        max_iter=1000, dtype=np.float64, random_state=0).fit(X, y)
    assert ours.out_activation_ == "exp" and ours.model_.layer_sizes == [3, 1]
    np.testing.assert_allclose(ours.coefs_[0][:, 0], reference.coef_, atol=1e-4)
    assert ours.intercepts_[0][0] == pytest.approx(reference.intercept_, abs=1e-4)
    np.testing.assert_allclose(ours.predict(X), reference.predict(X), rtol=1e-4)
    with pytest.raises(ValueError, match="needs targets y ≥ 0"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)


def test_poisson_gradient_matches_central_differences():
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(7, 3)), rng.poisson(2.0, 7)
    model = fastbp.MLP([3, 4, 1], activation="tanh", output="poisson", dtype=np.float64, seed=0)
    loss, dW, db = model.loss_and_grads(X, y)
    h, flat = 1e-6, np.concatenate([g.ravel() for pair in zip(dW, db) for g in pair])
    numeric = np.empty_like(model._params)
    for p in range(model._params.size):
        saved = model._params[p]
        model._params[p] = saved + h
        up = model.loss_and_grads(X, y)[0]
        model._params[p] = saved - h
        numeric[p] = (up - model.loss_and_grads(X, y)[0]) / (2 * h)
        model._params[p] = saved
    np.testing.assert_allclose(flat, numeric, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="must be ≥ 0"):
        model.fit(X, -y, verbose=0)


# ----------------------------------------------------------------------------- sample_weight and class_weight
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_weight_two_equals_a_repeated_row(solver):
    X, y = _regression_data(40)
    w = np.ones(40)
    w[[3, 17]] = 2
    X2, y2 = np.vstack([X, X[[3, 17]]]), np.concatenate([y, y[[3, 17]]])
    settings = dict(hidden_layer_sizes=(6,), solver=solver, batch_size="auto", shuffle=False, max_iter=15, alpha=0.1,
                    learning_rate_init=0.05, random_state=0, dtype=np.float64)
    weighted = MLPRegressor(**settings).fit(X, y, sample_weight=w)
    repeated = MLPRegressor(**settings).fit(X2, y2)
    for W, V in zip(weighted.coefs_ + weighted.intercepts_, repeated.coefs_ + repeated.intercepts_):
        np.testing.assert_allclose(W, V, rtol=1e-10, atol=1e-13)
    assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-12)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_weights_of_one_are_no_weights_bit_for_bit(solver, small_digits):
    X, _, y, _ = small_digits
    settings = dict(hidden_layer_sizes=(16,), solver=solver, momentum=0.0, batch_size=32, max_iter=3, alpha=0.0,
                    learning_rate_init=0.01, random_state=0)
    plain = MLPClassifier(**settings).fit(X, y)
    ones = MLPClassifier(**settings).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(plain.model_._params, ones.model_._params)
    assert plain.loss_curve_ == ones.loss_curve_
    plain.partial_fit(X, y)
    ones.partial_fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(plain.model_._params, ones.model_._params)


def test_mlp_fit_sample_weight_two_equals_a_repeated_row():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    w = np.ones(30)
    w[5] = 2
    first, second = (fastbp.MLP([4, 8, 3], dtype=np.float64, seed=2) for _ in range(2))
    first.fit(X, y, epochs=4, batch_size=64, shuffle=False, verbose=0, alpha=0.01, sample_weight=w,
              optimizer=fastbp.SGD(0.1, momentum=0.5))
    second.fit(np.vstack([X, X[5:6]]), np.append(y, y[5]), epochs=4, batch_size=64, shuffle=False, verbose=0,
               alpha=0.01, optimizer=fastbp.SGD(0.1, momentum=0.5))
    np.testing.assert_allclose(first._params, second._params, rtol=1e-12, atol=1e-14)
    loss, dW, _ = first.loss_and_grads(X, y, sample_weight=w)
    loss2, dW2, _ = first.loss_and_grads(np.vstack([X, X[5:6]]), np.append(y, y[5]))
    assert loss == pytest.approx(loss2, rel=1e-13)
    np.testing.assert_allclose(dW[0], dW2[0], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="negative"):
        first.fit(X, y, sample_weight=-w, verbose=0)


def test_class_weight_is_a_sample_weight_per_class():
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(80, 3)), np.repeat([0, 1, 2], [50, 20, 10])
    settings = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0, dtype=np.float64)
    for class_weight in ("balanced", {0: 1.0, 1: 3.0, 2: 0.5}):
        weighted = MLPClassifier(class_weight=class_weight, **settings).fit(X, y)
        explicit = MLPClassifier(**settings).fit(X, y, sample_weight=compute_sample_weight(class_weight, y))
        np.testing.assert_allclose(weighted.model_._params, explicit.model_._params, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


# ----------------------------------------------------------------------------- scikit-learn's semantics
def test_counters_follow_scikit_learn():
    X, y = _regression_data(150)
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, warm_start=True, random_state=0)
    reg.fit(X, y)
    assert (reg.n_iter_, reg.t_, len(reg.loss_curve_)) == (3, 450, 3)
    reg.fit(X, y)
    assert (reg.n_iter_, reg.t_, len(reg.loss_curve_)) == (3, 900, 6)
    reg.partial_fit(X, y)
    assert (reg.n_iter_, reg.t_) == (1, 1050)
    endless = MLPRegressor(hidden_layer_sizes=(4,), max_iter=30, tol=10.0, n_iter_no_change=np.inf, random_state=0)
    assert endless.fit(X, y).n_iter_ == 30
    early = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, early_stopping=True, random_state=0).fit(X, y)
    assert early.best_loss_ is None and len(early.validation_scores_) == 5


def test_partial_fit_draws_a_new_shuffle_each_call(monkeypatch):
    X, y = _regression_data()
    reg = MLPRegressor(hidden_layer_sizes=(4,), random_state=0).partial_fit(X, y)
    seeds, fit = [], reg.model_.fit
    monkeypatch.setattr(reg.model_, "fit", lambda *a, **k: seeds.append(k["seed"]) or fit(*a, **k))
    reg.partial_fit(X, y)
    reg.partial_fit(X, y)
    assert seeds[0] != seeds[1]


def test_class_checks_on_later_calls():
    X, y = np.random.default_rng(9).normal(size=(30, 2)), np.arange(30) % 3
    clf = MLPClassifier(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    clf.partial_fit(X, y, classes=[2, 1, 0])  # the same classes again: fine
    with pytest.raises(ValueError, match="is not the same as on the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    warm = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, warm_start=True).fit(X, y)
    for labels in (y % 2, np.where(y == 2, 3, y)):  # a subset, then a new class
        with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
            warm.fit(X, labels)


def test_validation_set_of_one_sample_raises():
    X, y = _regression_data(8)  # 10 % of 8 samples: one to validate on
    with pytest.raises(ValueError, match="validation set is too small"):
        MLPRegressor(early_stopping=True, validation_fraction=0.1).fit(X, y)


def test_divergence_under_early_stopping_warns_and_keeps_finite_weights():
    X, y = _regression_data(100)
    reg = MLPRegressor(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=5.0, momentum=0.9,
                       early_stopping=True, max_iter=50, random_state=0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        reg.fit(X * 100, y * 1e4)
    assert np.isfinite(reg.model_._params).all()
    assert all(np.isfinite(s) or np.isnan(s) for s in reg.validation_scores_)


def test_float32_overflow_message():
    with pytest.raises(ValueError, match="overflow the model's float32.*dtype=np.float64"):
        MLPClassifier().fit(np.array([[1e39, 0.0], [0.0, 1.0]]), [0, 1])
    MLPClassifier(hidden_layer_sizes=(2,), max_iter=1, dtype=np.float64).fit(np.array([[1e39, 0.], [0., 1.]]), [0, 1])


def test_verbose_prints_scikit_learns_lines(capsys):
    X, y = _regression_data()
    MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"Iteration 1, loss = \d+\.\d{8}", lines[0]) and lines[1].startswith("Iteration 2, loss = ")


def test_regressor_column_target_predicts_a_vector():
    from sklearn.exceptions import DataConversionWarning

    X, y = _regression_data()
    with pytest.warns(DataConversionWarning):
        reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y[:, None])
    assert reg.predict(X).shape == (len(X),)  # as scikit-learn


def test_coefs_and_intercepts_are_settable():
    X, y = _regression_data()
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    reg.coefs_ = [np.zeros((3, 4)), np.zeros((4, 1))]
    reg.intercepts_ = [np.zeros(4), np.array([1.5])]
    np.testing.assert_allclose(reg.predict(X), 1.5)
    assert np.all(reg.model_.weights[0] == 0)
    with pytest.raises(ValueError, match="shapes"):
        reg.coefs_ = [np.zeros((4, 3)), np.zeros((4, 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_none_follows_the_input(dtype):
    X, y = _regression_data()
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype=None, random_state=0).fit(X.astype(dtype), y)
    assert reg.model_.dtype == dtype and reg.coefs_[0].dtype == dtype and reg.predict(X.astype(dtype)).dtype == dtype
    default = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X.astype(dtype), y)
    assert default.model_.dtype == np.float32 and default.predict(X).dtype == np.float64


def test_mlp_fit_lbfgs_reaches_a_stationary_point():
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    model = fastbp.MLP([3, 5, 2], activation="tanh", dtype=np.float64, seed=0)
    start = model.evaluate(X, y)[0]
    result = model.fit_lbfgs(X, y, max_iter=500, tol=1e-9, alpha=0.1)
    assert result.success and result.fun < start
    loss, dW, db = model.loss_and_grads(X, y)  # at the final weights, without the penalty
    W = model.weights
    penalised = np.concatenate([np.concatenate([(g + 0.1 / 40 * w).ravel(), h]) for g, w, h in zip(dW, W, db)])
    np.testing.assert_allclose(penalised, result.jac, rtol=1e-9, atol=1e-13)  # the gradient scipy saw, at result.x
    assert np.abs(penalised).max() < 1e-4  # stationary (scipy stops on its relative loss reduction first)
    assert result.fun == pytest.approx(loss + 0.05 / 40 * sum((w ** 2).sum() for w in W), rel=1e-12)
