"""scikit-learn estimators backed by fastbp: `MLPClassifier` and `MLPRegressor`.

Parameter names and meanings follow ``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` where
fastbp has the feature; the stopping rule (``tol``, ``n_iter_no_change``, ``early_stopping``) is
scikit-learn's. Differences: the solvers are "sgd" and "adam" (no "lbfgs"); Adam adds ``epsilon`` to
``√u/√(1-β₂ᵗ)`` as PyTorch does; binary targets use two softmax units instead of one logistic unit;
``dtype`` (float32 by default) sets the precision of the network.

    >>> from fastbp.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50).fit(X, y)   # doctest: +SKIP
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .model import MLP, _check_dropout
from .optim import SGD, Adam, Optimizer
from .sparse_input import is_sparse

try:  # scikit-learn ≥ 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover
    def validate_data(estimator, X, y="no_validation", reset=True, **kwargs):
        return estimator._validate_data(X, y, reset=reset, **kwargs)

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "identity"}


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the stopping rule, fit and partial_fit."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, dtype=np.float32, dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.dropout = dropout

    # ------------------------------------------------------------------ public API
    def fit(self, X, y):
        """Train for up to `max_iter` epochs (from scratch unless `warm_start`); returns self.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,) or (n_samples, n_outputs)
            Class labels; a 0/1 indicator matrix for multi-label; real values for the regressor.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing from the current state; returns self.

        `classes` (classifier only) lists every class on the first call, as in scikit-learn.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices in scikit-learn's layout, ``coefs_[i]`` of shape (n_in, n_out): ``W^lᵀ``."""
        check_is_fitted(self, "model_")
        return [W.T for W in self.model_.weights]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        check_is_fitted(self, "model_")
        return list(self.model_.biases)

    def to_onnx(self, path=None, opset: int = 18):
        """The ONNX graph of the fitted network's outputs (`predict_proba` for the classifier, the
        predicted values as an (n_samples, n_outputs) matrix for the regressor), written to `path`
        when given; needs ``pip install fastbp[onnx]``. Class labels are not part of the graph:
        map the argmax through `classes_`."""
        check_is_fitted(self, "model_")
        return self.model_.to_onnx(path, opset)

    # ------------------------------------------------------------------ training
    def _fit(self, X, y, incremental: bool, classes=None):
        self._check_parameters()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin), accept_sparse=("csr", "csc"))
        # one dtype before the validation split; sparse X stays sparse (CSR)
        X = X.tocsr().astype(self.dtype, copy=False) if is_sparse(X) else np.ascontiguousarray(X, dtype=self.dtype)
        T = self._encode(y, first, classes)
        rng = check_random_state(self.random_state)
        if first:
            self._initialise(X.shape[1], T.shape[1], rng)
        validation, X, T = self._split(X, T, y, rng, incremental)
        batch_size = self._batch_size(X.shape[0])
        epochs = 1 if incremental else self.max_iter
        stopper = _SklearnStopping(self, validation, incremental)
        self.model_.dropout = _check_dropout(self.dropout)  # also after set_params on a warm start
        self.model_.fit(X, T, epochs=epochs, batch_size=batch_size, optimizer=self._optimizer,
                        shuffle=self.shuffle, seed=_seed(rng), verbose=2 if self.verbose else 0,
                        alpha=self.alpha, callbacks=[stopper])
        stopper.finish()
        return self

    def _initialise(self, n_features: int, n_outputs: int, rng: np.random.RandomState) -> None:
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        self.model_ = MLP(sizes, activation=_ACTIVATIONS[self.activation], output=self._output,
                          dtype=self.dtype, seed=_seed(rng))
        self._optimizer = self._make_optimizer()
        self.n_iter_, self.t_ = 0, 0
        self.loss_curve_, self.best_loss_, self._no_improvement_count = [], np.inf, 0
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_outputs

    def _make_optimizer(self) -> Optimizer:
        if self.solver == "sgd":
            return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _split(self, X, T, y, rng, incremental: bool):
        """(validation set or None, X to train on, T to train on), scikit-learn's early-stopping split."""
        if not self.early_stopping or incremental:
            return None, X, T
        stratify = y if isinstance(self, ClassifierMixin) and np.ndim(y) == 1 else None
        X_train, X_val, T_train, T_val = train_test_split(
            X, T, random_state=_seed(rng), test_size=self.validation_fraction,
            stratify=stratify)
        if X_train.shape[0] < 1 or X_val.shape[0] < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training or validation "
                             f"samples out of {X.shape[0]}")
        return (X_val, T_val), X_train, T_train

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        return max(1, min(self.batch_size, n_samples))

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        return [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)

    def _check_parameters(self) -> None:
        if any(not isinstance(n, numbers.Integral) or n < 1 for n in self._hidden_sizes()):
            raise ValueError(f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam', got {self.solver!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral) and self.batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
        if self.alpha < 0 or self.tol < 0:
            raise ValueError(f"alpha and tol must be ≥ 0, got alpha={self.alpha!r}, tol={self.tol!r}")
        _check_dropout(self.dropout)

    # ------------------------------------------------------------------ prediction helpers
    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), accept_sparse=("csr", "csc"))
        return self.model_.predict_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR/CSC, kept sparse (fastbp.sparse_input)
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: softmax + cross-entropy, or sigmoid + binary cross-entropy
    for multi-label targets (a 0/1 indicator matrix y), trained by fastbp's compiled kernels.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
    solver : {"adam", "sgd"}, default "adam"
    alpha : float, default 1e-4
        L2 penalty: a batch of S samples adds ``alpha/(2S) Σ_l ||W^l||²`` to its loss (scikit-learn's).
    batch_size : int or "auto", default "auto" = min(200, n_samples)
    learning_rate_init : float, default 1e-3
    max_iter : int, default 200
        Maximum number of epochs.
    shuffle : bool, default True
    random_state : int, RandomState or None
        Seeds the initialisation, the shuffling and the early-stopping split.
    tol : float, default 1e-4
    verbose : bool, default False
        One line per epoch.
    warm_start : bool, default False
        `fit` continues from the previous solution (and optimizer state) instead of starting over.
    momentum : float, default 0.9 (solver="sgd")
    nesterovs_momentum : bool, default True (solver="sgd")
    early_stopping : bool, default False
        Hold out `validation_fraction` of the data (stratified) and stop when its accuracy stops improving
        by `tol` for `n_iter_no_change` epochs; the best epoch's weights are kept.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float (solver="adam")
    n_iter_no_change : int, default 10
    dtype : np.float32 or np.float64, default np.float32
    dropout : float in [0, 1), default 0
        Inverted dropout on the hidden layers while training (not in scikit-learn); predictions use none.

    Attributes
    ----------
    classes_ : ndarray of the class labels (for multi-label: the column indices)
    model_ : fastbp.MLP, the trained network
    loss_curve_, n_iter_, t_, best_loss_, validation_scores_, best_validation_score_,
    n_features_in_, n_layers_, n_outputs_, out_activation_, coefs_, intercepts_ : as in scikit-learn
    """

    _output = "softmax"

    def predict(self, X) -> np.ndarray:
        """Class labels (n_samples,), or the 0/1 indicator matrix (n_samples, n_labels) for multi-label."""
        A = self._outputs(X)
        if self._multilabel:
            return (A > 0.5).astype(self.classes_.dtype if self.classes_.dtype.kind in "iu" else np.int64)
        return self.classes_[A.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), or each label's probability for multi-label."""
        return self._outputs(X).astype(np.float64)

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _encode(self, y, first: bool, classes) -> np.ndarray:
        """Targets T for the network; sets classes_ (and the output kind) on the first fit."""
        if np.ndim(y) == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column of labels, as scikit-learn accepts it
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {kind}; MLPClassifier takes class labels or a 0/1 "
                             "indicator matrix (use MLPRegressor for continuous targets)")
        multilabel = kind == "multilabel-indicator"
        if first:
            self._multilabel = multilabel
            self._output = "sigmoid" if multilabel else "softmax"
            if multilabel:
                self.classes_ = np.arange(y.shape[1])
            else:
                self.classes_ = np.unique(y if classes is None else np.asarray(classes))
            self.out_activation_ = "logistic" if multilabel else "softmax"
        if multilabel != self._multilabel or (multilabel and y.shape[1] != self.classes_.shape[0]):
            raise ValueError("y has a different kind or number of labels than the data this model was fit on")
        if multilabel:
            return np.ascontiguousarray(y, dtype=self.dtype)
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels {unseen.tolist()} not in classes_ {self.classes_.tolist()}; "
                             "pass every class to the first partial_fit with classes=...")
        index = np.searchsorted(self.classes_, y)
        T = np.zeros((y.shape[0], self.classes_.shape[0]), dtype=self.dtype)
        T[np.arange(y.shape[0]), index] = 1
        return T

    def _validation_score(self, X_val, T_val) -> float:
        A = self.model_.predict_proba(X_val)
        if self._multilabel:
            return accuracy_score(T_val > 0.5, A > 0.5)
        return accuracy_score(T_val.argmax(axis=1), A.argmax(axis=1))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: identity output + squared error ½||a - t||², trained by fastbp.

    Same parameters as `MLPClassifier`; `early_stopping` monitors R² on the held-out fraction.
    y may be (n_samples,) or (n_samples, n_outputs); `predict` returns the same shape.
    """

    _output = "identity"

    def predict(self, X) -> np.ndarray:
        """Predicted values, (n_samples,) when y was 1-D, else (n_samples, n_outputs)."""
        A = self._outputs(X).astype(np.float64)
        return A[:, 0] if self._y_1d else A

    def _encode(self, y, first: bool, classes) -> np.ndarray:
        if classes is not None:
            raise ValueError("classes is for classifiers; MLPRegressor.partial_fit takes (X, y)")
        y = np.asarray(y)
        if first:
            self._y_1d = y.ndim == 1
            self.out_activation_ = "identity"
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} outputs but the model was fit with {self.n_outputs_}")
        return np.ascontiguousarray(T, dtype=self.dtype)

    def _validation_score(self, X_val, T_val) -> float:
        return r2_score(T_val, self.model_.predict_proba(X_val))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _SklearnStopping:
    """scikit-learn's stopping rule as a fastbp callback, and the attributes it keeps.

    Without early stopping: an epoch counts as no improvement when its training loss is above
    best_loss_ - tol; more than n_iter_no_change such epochs in a row stop training. With early
    stopping the same rule runs on the validation score (accuracy or R²), and the best epoch's
    weights are restored at the end.
    """

    def __init__(self, estimator: _BaseMLP, validation, incremental: bool) -> None:
        self.estimator, self.validation, self.incremental = estimator, validation, incremental
        self.best_params, self.stopped, self.epochs = None, False, 0

    def __call__(self, epoch: int, history: dict, model: MLP) -> bool:
        est = self.estimator
        loss = history["loss"][-1]
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        self.epochs += 1
        est.loss_ = loss
        if self.validation is not None:
            score = est._validation_score(*self.validation)
            est.validation_scores_.append(score)
            improved = score > est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_, self.best_params = score, model._params.copy()
        else:
            improved = loss < est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        self.stopped = not self.incremental and est._no_improvement_count > est.n_iter_no_change
        return self.stopped

    def finish(self) -> None:
        est = self.estimator
        est.t_ = est._optimizer.steps
        if self.best_params is not None:
            est.model_._params[...] = self.best_params
        if not self.incremental and not self.stopped and self.epochs == est.max_iter:
            warnings.warn(f"Stochastic optimizer: maximum iterations ({est.max_iter}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning)


def _seed(rng: np.random.RandomState) -> int:
    """A fresh int seed from scikit-learn's RandomState (for fastbp's own np.random.Generator)."""
    return int(rng.randint(np.iinfo(np.int32).max))
