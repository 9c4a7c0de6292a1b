"""fastbp.sklearn estimators: scikit-learn's own estimator checks, meta-estimators, multi-label, regression."""
import pickle
import re
import warnings
from unittest import SkipTest

import numpy as np
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


@parametrize_with_checks([MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, learning_rate_init=0.01),
                          MLPRegressor(hidden_layer_sizes=(32,), max_iter=50, learning_rate_init=0.01)])
def test_scikit_learn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except SkipTest as skip:  # not a failure, but only for the reasons listed
        assert NOT_APPLICABLE.search(str(skip)), f"unexpected skip: {skip}"


@pytest.fixture(scope="module")
def small_digits():
    X_train, X_test, y_train, y_test = fastbp.data.load_digits_split(seed=0)
    return X_train[:600], X_test, y_train[:600], y_test


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
    assert streamed.n_iter_ == 5 and streamed.loss_curve_ == fitted.loss_curve_


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
    assert warm.n_iter_ == 10 and len(warm.loss_curve_) == 10 and cold.n_iter_ == 5
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
    assert clone.n_iter_ == clf.n_iter_ == 4 and clone.t_ == clf.t_


@pytest.mark.parametrize("params,match", [
    (dict(solver="lbfgs"), "solver must be 'sgd' or 'adam'"),
    (dict(activation="swish"), "activation must be one of"),
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes must hold positive integers"),
    (dict(batch_size=0), "batch_size must be 'auto' or a positive integer"),
    (dict(max_iter=0), "max_iter must be a positive integer"),
    (dict(validation_fraction=1.0), r"validation_fraction must lie in \(0, 1\)"),
])
def test_bad_parameters_raise_on_fit(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(np.zeros((4, 2)), [0, 1, 0, 1])
