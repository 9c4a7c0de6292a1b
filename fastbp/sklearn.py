"""scikit-learn estimators backed by fastbp: `MLPClassifier` and `MLPRegressor`.

Every parameter and attribute of ``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` (1.9) is here
with scikit-learn's meaning: the solvers "adam", "sgd" (with ``learning_rate`` "constant", "invscaling",
"adaptive" and ``power_t``) and "lbfgs" (scipy's L-BFGS-B with ``max_iter``, ``max_fun``, ``tol``, on
fastbp's compiled loss and gradient); ``loss="squared_error"|"poisson"``; ``sample_weight`` in ``fit`` and
``partial_fit`` (each batch's loss is Σ w_s E_s / Σ w_s, the penalty α/(2 Σ w_s) Σ ||W||², as scikit-learn);
the stopping rule (``tol``, ``n_iter_no_change`` including ``np.inf``, ``early_stopping``); ``n_iter_`` per
call, ``t_`` = samples seen, ``best_loss_`` None under early stopping; ``verbose`` prints
``Iteration N, loss = ...``; ``coefs_``/``intercepts_`` are views of the network's weights, and settable.
Added: ``dtype`` (float32 by default; None follows X as scikit-learn does) and, on the classifier,
``class_weight`` (a dict or "balanced"; not "balanced" in ``partial_fit``).

Differences from scikit-learn (deliberate)
------------------------------------------
- Binary targets use two softmax outputs, not one logistic unit: ``coefs_[-1]`` has two columns and
  ``out_activation_`` is "softmax". The probabilities are those of an equivalent model.
- Initialisation: He normal for relu layers, Glorot uniform otherwise, biases 0 (scikit-learn: Glorot
  uniform for weights and biases). Shuffling and the early-stopping split use fastbp's own draws, and the
  split is stratified for every single-label classification (scikit-learn: binary only). So the same
  ``random_state`` gives other (equally valid) weights than scikit-learn's.
- With an integer ``random_state``, the ``partial_fit`` calls after the first go on drawing from one
  RandomState, so each call shuffles differently; scikit-learn re-seeds from the integer on every call.
- ``dtype`` defaults to float32 whatever X is (fastbp's fast path); predictions then come as float64.
  ``dtype=None`` follows scikit-learn: float32 X gives a float32 network and predictions, else float64.
- Adam adds ``epsilon`` to ``√u/√(1-β₂ᵗ)`` (PyTorch's form), where scikit-learn adds it to ``√u`` with a
  bias-corrected step; the steps differ only where √u is near epsilon.
- SGD momentum keeps a velocity of gradients, ``θ ← θ - ε(g + μv)`` (PyTorch's form). At a constant
  learning rate the steps are scikit-learn's; after "invscaling"/"adaptive" change ε, the whole velocity
  moves at the new rate, where scikit-learn's velocity keeps the old rates. With momentum=0 they agree.
- An epoch whose loss or weights become non-finite is undone: training stops with a RuntimeWarning and the
  last finite weights (scikit-learn raises ValueError after the fit). A validation score of non-finite
  outputs is recorded as NaN, as scikit-learn does; scoring never raises.
- Multi-output squared error: the reported loss sums ½(a - t)² over the outputs; scikit-learn's averages
  it over the outputs (its gradient is the summed one, as here), so ``loss_`` differs by n_outputs.
- lbfgs leaves ``loss_curve_``, ``best_loss_``, ``validation_scores_`` and ``best_validation_score_`` at None
  (scikit-learn does not set them), and ``verbose`` prints one ``Iteration N, loss = ...`` line per L-BFGS
  iteration instead of scipy's own output. ``partial_fit`` does not exist for lbfgs, on either estimator.
- In float32 (the default), weight k equals k repeated rows only to float32 rounding, so scikit-learn's
  ``check_sample_weight_equivalence_on_dense_data`` (rtol 1e-7) passes with ``dtype=None`` or float64; every
  other estimator check passes in float32 too.
- Sparse X is not accepted (convert with ``X.toarray()``); Ctrl-C is not caught.

    >>> from fastbp.sklearn import MLPClassifier
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50).fit(X, y)   # doctest: +SKIP
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import kernels as K
from .model import MLP, _check_dropout
from .optim import SGD, Adam, Optimizer
from .sparse_input import is_sparse
from .validation import check_sample_weight

try:  # scikit-learn ≥ 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover
    def validate_data(estimator, X, y="no_validation", reset=True, **kwargs):
        return estimator._validate_data(X, y, reset=reset, **kwargs)

#: scikit-learn's activation names -> fastbp's: its "logistic" is the sigmoid; every other registered activation
#: (`fastbp.kernels.REGISTRY`) keeps its own name
_ACTIVATIONS = {"logistic": "sigmoid", **{name: name for name in K.ACTIVATIONS if name != "sigmoid"}}


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the stopping rule, fit and partial_fit."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=np.float32,
                 comm=None, dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.dtype = dtype
        self.comm = comm
        self.dropout = dropout

    # ------------------------------------------------------------------ public API
    def fit(self, X, y, sample_weight=None):
        """Train for up to `max_iter` epochs (lbfgs: iterations), from scratch unless `warm_start`; returns self.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like (n_samples,) or (n_samples, n_outputs)
            Class labels; a 0/1 indicator matrix for multi-label; real values for the regressor.
        sample_weight : array-like (n_samples,) of weights ≥ 0, default None
            Each batch's loss is Σ_s w_s E_s / Σ_s w_s, its L2 penalty α/(2 Σ_s w_s) Σ_l ||W^l||², as in
            scikit-learn; integer weights count a sample that many times.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices in scikit-learn's layout, ``coefs_[i]`` of shape (n_in, n_out): views of ``W^lᵀ``.

        Settable: assigning a list of such matrices writes them into the model's parameters.
        """
        check_is_fitted(self, "model_")
        return [W.T for W in self.model_.weights]

    @coefs_.setter
    def coefs_(self, values) -> None:
        self._set_parameters(values, [W.T for W in self.model_.weights] if hasattr(self, "model_") else None,
                             "coefs_")

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors, ``intercepts_[i]`` of shape (n_out,): views of ``b^l``; settable like `coefs_`."""
        check_is_fitted(self, "model_")
        return list(self.model_.biases)

    @intercepts_.setter
    def intercepts_(self, values) -> None:
        self._set_parameters(values, list(self.model_.biases) if hasattr(self, "model_") else None, "intercepts_")

    def _set_parameters(self, values, targets, name: str) -> None:
        if targets is None:
            raise AttributeError(f"{name} can be set only on a fitted estimator (it writes into model_); fit first")
        values = [np.asarray(v) for v in values]
        shapes = [t.shape for t in targets]
        if [v.shape for v in values] != shapes:
            raise ValueError(f"{name} must be {len(shapes)} arrays of shapes {shapes}, got "
                             f"{[v.shape for v in values]}")
        if not all(np.isfinite(v).all() for v in values):
            raise ValueError(f"{name} must be finite")
        for target, value in zip(targets, values):
            target[...] = value

    def to_onnx(self, path=None, opset: int = 18):
        """The ONNX graph of the fitted network's outputs (`predict_proba` for the classifier, the
        predicted values as an (n_samples, n_outputs) matrix for the regressor), written to `path`
        when given; needs ``pip install fastbp[onnx]``. Class labels are not part of the graph:
        map the argmax through `classes_`."""
        check_is_fitted(self, "model_")
        return self.model_.to_onnx(path, opset)

    # ------------------------------------------------------------------ training
    def _fit(self, X, y, sample_weight, incremental: bool, classes=None):
        self._check_parameters()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "model_") or not (incremental or self.warm_start)
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin), accept_sparse=("csr", "csc"))
        dtype = self._model_dtype(X) if first else self.model_.dtype
        X = _cast(X, dtype, "X")
        T = self._encode(y, first, classes, incremental, dtype)
        sw = self._sample_weight(sample_weight, y, X.shape[0], incremental, dtype)
        if sw is not None and is_sparse(X):  # the sparse kernels take no sample weights yet (docs/sklearn.md)
            warnings.warn("sample_weight or class_weight with sparse X: training on X.toarray(), since fastbp's "
                          "sparse first layer takes no sample weights yet", UserWarning, stacklevel=3)
            X = np.ascontiguousarray(X.toarray())
        if self.comm is not None and not isinstance(self.random_state, numbers.Integral):
            raise ValueError("comm needs an integer random_state, the same on every rank, so that every rank "
                             f"draws the same initialisation, split and shuffling; got {self.random_state!r}")
        if self.comm is not None and self.solver == "lbfgs":
            raise ValueError("comm (data-parallel training) works with solver='sgd' or 'adam', not 'lbfgs'")
        if first or not incremental:  # scikit-learn draws afresh on every fit; partial_fit calls share one
            self._random_state = check_random_state(self.random_state)
        rng = self._random_state
        if first:
            self._initialise(X.shape[1], T.shape[1], rng, dtype)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, T, sw)
        else:
            self._fit_stochastic(X, T, y, sw, rng, incremental)
        return self

    def _fit_stochastic(self, X, T, y, sw, rng, incremental: bool) -> None:
        if not incremental or not hasattr(self, "_optimizer"):  # scikit-learn starts a new optimizer per fit
            self._optimizer = self._make_optimizer()
        if self.loss_curve_ is None:  # an lbfgs fit before this warm start
            self._reset_stochastic_attributes()
        if self.early_stopping and self.validation_scores_ is None:  # early_stopping switched on for a warm start
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if not self.early_stopping and self.best_loss_ is None:  # ... or off
            self.best_loss_ = np.inf
        validation, X, T, sw = self._split(X, T, y, sw, rng, incremental)
        batch_size = self._batch_size(X.shape[0])
        epochs = 1 if incremental else self.max_iter
        stopper = _SklearnStopping(self, validation, incremental, X.shape[0])
        self.n_iter_ = 0  # per call, as scikit-learn counts
        self.model_.dropout = _check_dropout(self.dropout)  # also after set_params on a warm start
        self.model_.fit(X, T, epochs=epochs, batch_size=batch_size, optimizer=self._optimizer,
                        shuffle=self.shuffle, seed=_seed(rng), verbose=0, alpha=self.alpha, callbacks=[stopper],
                        sample_weight=sw, comm=self.comm)
        stopper.finish()

    def _fit_lbfgs(self, X, T, sw) -> None:
        """`MLP.fit_lbfgs`: scipy's L-BFGS-B with scikit-learn's options and penalty."""
        callback = None
        if self.verbose:
            iterations = []

            def callback(intermediate_result):
                iterations.append(intermediate_result.fun)
                print("Iteration %d, loss = %.8f" % (len(iterations), intermediate_result.fun))
        result = self.model_.fit_lbfgs(X, T, self.max_iter, self.max_fun, self.tol, alpha=self.alpha,
                                       sample_weight=sw, callback=callback)
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}): "
                          f"{result.message}. Increase max_iter or max_fun, or scale the data.", ConvergenceWarning)
        self.n_iter_ = min(result.nit, self.max_iter)
        self.loss_ = float(result.fun)

    def _initialise(self, n_features: int, n_outputs: int, rng: np.random.RandomState, dtype) -> None:
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        self.model_ = MLP(sizes, activation=_ACTIVATIONS[self.activation], output=self._output,
                          dtype=dtype, seed=_seed(rng))
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_outputs
        if self.solver == "lbfgs":  # as scikit-learn: the stochastic solvers' attributes only for them
            self.loss_curve_ = self.best_loss_ = self.validation_scores_ = self.best_validation_score_ = None
        else:
            self._reset_stochastic_attributes()

    def _reset_stochastic_attributes(self) -> None:
        self.loss_curve_, self._no_improvement_count = [], 0
        self.best_loss_ = None if self.early_stopping else np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None

    def _model_dtype(self, X: np.ndarray):
        """The network's dtype: `dtype`, or X's own (float32 or float64) when dtype=None, as scikit-learn."""
        if self.dtype is None:
            return X.dtype.type
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32, np.float64 or None (follow X), got {self.dtype!r}")
        return dtype.type

    def _make_optimizer(self) -> Optimizer:
        if self.solver == "sgd":
            self._schedule = _Schedule(self.learning_rate, self.learning_rate_init, self.power_t)
            return SGD(lr=self._schedule, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        self._schedule = _Schedule("constant", self.learning_rate_init, self.power_t)  # Adam: as scikit-learn
        return Adam(lr=self._schedule, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _split(self, X, T, y, sw, rng, incremental: bool):
        """(validation set or None, X, T, sample weights to train on): scikit-learn's early-stopping split."""
        if not self.early_stopping or incremental:
            return None, X, T, sw
        stratify = y if isinstance(self, ClassifierMixin) and np.ndim(y) == 1 else None
        arrays = (X, T) if sw is None else (X, T, sw)
        parts = train_test_split(*arrays, random_state=_seed(rng), test_size=self.validation_fraction,
                                 stratify=stratify)
        X_train, X_val, T_train, T_val = parts[:4]
        sw_train, sw_val = parts[4:] if sw is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError(f"The validation set is too small: validation_fraction={self.validation_fraction} of "
                             f"{X.shape[0]} samples leaves {X_val.shape[0]}; early stopping needs at least 2. "
                             "Increase validation_fraction or the size of the data set.")
        if sw_train is not None and not sw_train.sum() > 0:
            raise ValueError("the training part of the early-stopping split has only zero sample weights")
        return (X_val, T_val, sw_val), X_train, T_train, sw_train

    def _sample_weight(self, sample_weight, y, n_samples: int, incremental: bool, dtype):
        return check_sample_weight(sample_weight, n_samples, dtype)

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        return max(1, min(self.batch_size, n_samples))

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        return [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)

    def _check_parameters(self) -> None:
        if any(not isinstance(n, numbers.Integral) or n < 1 for n in self._hidden_sizes()):
            raise ValueError(f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("sgd", "adam", "lbfgs"):
            raise ValueError(f"solver must be 'lbfgs', 'sgd' or 'adam', got {self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError("learning_rate must be 'constant', 'invscaling' or 'adaptive', got "
                             f"{self.learning_rate!r}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, numbers.Integral) and self.batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        for name in ("max_iter", "max_fun", "n_iter_no_change"):
            value = getattr(self, name)
            if name == "n_iter_no_change" and value == np.inf:
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer" + (" or np.inf" if name[0] == "n" else "")
                                 + f", got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init!r}")
        if self.alpha < 0 or self.tol < 0 or self.power_t < 0:
            raise ValueError(f"alpha, tol and power_t must be ≥ 0, got alpha={self.alpha!r}, tol={self.tol!r}, "
                             f"power_t={self.power_t!r}")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum!r}")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.epsilon > 0):
            raise ValueError("beta_1 and beta_2 must lie in [0, 1) and epsilon must be > 0, got "
                             f"{self.beta_1!r}, {self.beta_2!r}, {self.epsilon!r}")
        _check_dropout(self.dropout)

    # ------------------------------------------------------------------ prediction helpers
    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), accept_sparse=("csr", "csc"))
        return self.model_.predict_proba(_cast(X, self.model_.dtype, "X"))

    def _output_dtype(self):
        """float64 for float32 networks when dtype is fixed (fastbp's default); the network's own with dtype=None."""
        return self.model_.dtype if self.dtype is None else np.float64

    def _validation_score_safe(self, X_val, T_val, sw_val) -> float:
        """The validation score, NaN (as scikit-learn records it) when the outputs are not finite."""
        A = self.model_.predict_proba(X_val)
        if not np.isfinite(A).all():
            return math.nan
        return float(self._validation_score(A, T_val, sw_val))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR/CSC, kept sparse (fastbp.sparse_input)
        return tags


def _stochastic(estimator: _BaseMLP) -> bool:
    if estimator.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers; {estimator.solver} is not "
                             "stochastic")
    return True


def _cast(A: np.ndarray, dtype, name: str) -> np.ndarray:
    """A (finite, validated) as a C-contiguous `dtype` array, or a sparse A as a `dtype` CSR matrix; a clear
    error when finite values overflow it."""
    with np.errstate(over="ignore"):
        out = A.tocsr().astype(dtype, copy=False) if is_sparse(A) else np.ascontiguousarray(A, dtype=dtype)
    values = (out.data, A.data) if is_sparse(A) else (out, A)
    if out.dtype != A.dtype and not np.isfinite(values[0]).all():
        raise ValueError(f"{name} holds finite values up to {np.abs(values[1]).max():.3g} that overflow the model's "
                         f"{np.dtype(dtype).name} (largest {np.finfo(dtype).max:.3g}); pass dtype=np.float64 "
                         f"(or dtype=None to follow {name}'s dtype), or scale {name}, e.g. with StandardScaler")
    return out


_PARAMETERS = """
    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default (100,)
    activation : str, default "relu"
        "relu", "tanh", "logistic", "identity", or another name in `fastbp.kernels.REGISTRY` (e.g. "gelu")
    solver : {"adam", "sgd", "lbfgs"}, default "adam"
        "lbfgs" is scipy's L-BFGS-B on the full-batch loss and gradient (fastbp's compiled kernels).
    alpha : float, default 1e-4
        L2 penalty: a batch adds ``alpha/(2 Σ_s w_s) Σ_l ||W^l||²`` to its loss (w_s = 1 without weights).
    batch_size : int or "auto", default "auto" = min(200, n_samples)
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant" (solver="sgd")
        "invscaling": ``learning_rate_init / (t + 1)^power_t`` after each epoch, t the samples seen (`t_`);
        "adaptive": divided by 5 each time the stopping rule would stop, until it is below 1e-6.
    learning_rate_init : float, default 1e-3
    power_t : float, default 0.5 (learning_rate="invscaling")
    max_iter : int, default 200
        Maximum number of epochs (lbfgs: iterations).
    shuffle : bool, default True
    random_state : int, RandomState or None
        Seeds the initialisation, the shuffling and the early-stopping split; one RandomState is drawn from
        on every `fit`, and kept across the `partial_fit` calls that follow.
    tol : float, default 1e-4
    verbose : bool, default False
        Prints ``Iteration N, loss = ...`` per epoch, as scikit-learn.
    warm_start : bool, default False
        `fit` continues from the previous weights (with a new optimizer, as scikit-learn) instead of starting over.
    momentum : float, default 0.9 (solver="sgd")
    nesterovs_momentum : bool, default True (solver="sgd")
    early_stopping : bool, default False
        Hold out `validation_fraction` of the data and stop when its score stops improving by `tol` for
        `n_iter_no_change` epochs; the best epoch's weights are kept.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float (solver="adam")
    n_iter_no_change : int or np.inf, default 10
    max_fun : int, default 15000 (solver="lbfgs": the most loss evaluations)
    dtype : np.float32, np.float64 or None, default np.float32
        Precision of the network. None follows X as scikit-learn does (float32 X → float32, else float64);
        predictions then come in that dtype, else in float64.
    comm : mpi4py communicator or None, default None
        Train data-parallel over its ranks (`MLP.fit`'s `comm`, docs/distributed.md): every rank calls
        `fit` with the same data and an integer `random_state`; `batch_size` is the global batch.
    dropout : float in [0, 1), default 0
        Inverted dropout on the hidden layers while training (not in scikit-learn); predictions use none.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron classifier: softmax + cross-entropy, or sigmoid + binary cross-entropy
    for multi-label targets (a 0/1 indicator matrix y), trained by fastbp's compiled kernels.
""" + _PARAMETERS + """    class_weight : dict, "balanced" or None, default None
        Multiplies each sample's weight by its class's weight; "balanced" uses
        n_samples / (n_classes · count of the class), as ``sklearn.utils.class_weight``.

    Attributes
    ----------
    classes_ : ndarray of the class labels (for multi-label: the column indices)
    model_ : fastbp.MLP, the trained network
    loss_, loss_curve_, n_iter_, t_, best_loss_, validation_scores_, best_validation_score_,
    n_features_in_, n_layers_, n_outputs_, out_activation_, coefs_, intercepts_ : as in scikit-learn
    """

    _output = "softmax"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, class_weight=None,
                 dtype=np.float32, comm=None, dropout=0.0):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         dtype=dtype, comm=comm, dropout=dropout)
        self.class_weight = class_weight

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current state; returns self.

        `classes` lists every class on the first call (as in scikit-learn); a later call may repeat it, but
        not change it.
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict(self, X) -> np.ndarray:
        """Class labels (n_samples,), or the 0/1 indicator matrix (n_samples, n_labels) for multi-label."""
        A = self._outputs(X)
        if self._multilabel:
            return (A > 0.5).astype(self.classes_.dtype if self.classes_.dtype.kind in "iu" else np.int64)
        return self.classes_[A.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), or each label's probability for multi-label."""
        return self._outputs(X).astype(self._output_dtype())

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _encode(self, y, first: bool, classes, incremental: bool, dtype) -> np.ndarray:
        """Targets T for the network; sets classes_ (and the output kind) on the first fit."""
        if np.ndim(y) == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column of labels, as scikit-learn accepts it
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {kind}; MLPClassifier takes class labels or a 0/1 "
                             "indicator matrix (use MLPRegressor for continuous targets)")
        multilabel = kind == "multilabel-indicator"
        if first:
            if incremental and classes is None and not multilabel:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._multilabel = multilabel
            self._output = "sigmoid" if multilabel else "softmax"
            if multilabel:
                self.classes_ = np.arange(y.shape[1])
            else:
                self.classes_ = np.unique(y if classes is None else np.asarray(classes))
            self.out_activation_ = "logistic" if multilabel else "softmax"
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"`classes={np.asarray(classes).tolist()}` is not the same as on the first call to "
                             f"partial_fit, was: {self.classes_.tolist()}")
        if multilabel != self._multilabel or (multilabel and y.shape[1] != self.classes_.shape[0]):
            raise ValueError("y has a different kind or number of labels than the data this model was fit on")
        if multilabel:
            return np.ascontiguousarray(y, dtype=dtype)
        present = np.unique(y)
        if not first and not incremental and not np.array_equal(present, self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as in the previous call "
                             f"to fit. Previously got {self.classes_.tolist()}, `y` has {present.tolist()}")
        unseen = np.setdiff1d(present, self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels {unseen.tolist()} not in classes_ {self.classes_.tolist()}; "
                             "pass every class to the first partial_fit with classes=...")
        index = np.searchsorted(self.classes_, y)
        T = np.zeros((y.shape[0], self.classes_.shape[0]), dtype=dtype)
        T[np.arange(y.shape[0]), index] = 1
        return T

    def _sample_weight(self, sample_weight, y, n_samples: int, incremental: bool, dtype):
        """sample_weight times the class weights (`class_weight`), checked."""
        sw = check_sample_weight(sample_weight, n_samples, dtype)
        if self.class_weight is None:
            return sw
        if self._multilabel:
            raise ValueError("class_weight is not supported for multi-label targets; pass sample_weight instead")
        if incremental and isinstance(self.class_weight, str):
            raise ValueError(f"class_weight={self.class_weight!r} is not supported for partial_fit (each call sees "
                             "only part of the data); pass a dict of class weights instead")
        y = column_or_1d(y)
        balanced = isinstance(self.class_weight, str)  # "balanced" counts the classes of y; a dict needs no y
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y if balanced else self.classes_)
        per_sample = weights[np.searchsorted(self.classes_, y)]
        return check_sample_weight(per_sample if sw is None else per_sample * sw, n_samples, dtype,
                                   "sample_weight × class_weight")

    def _validation_score(self, A, T_val, sw_val) -> float:
        if self._multilabel:
            return accuracy_score(T_val > 0.5, A > 0.5, sample_weight=sw_val)
        return accuracy_score(T_val.argmax(axis=1), A.argmax(axis=1), sample_weight=sw_val)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron regressor: identity output + squared error ½||a - t||², or an exp output +
    half the Poisson deviance (loss="poisson", targets ≥ 0), trained by fastbp.

    y may be (n_samples,) or (n_samples, n_outputs); `predict` returns the same shape. `early_stopping`
    monitors R² on the held-out fraction. Parameters as `MLPClassifier`'s (without class_weight), and
    loss : {"squared_error", "poisson"}, default "squared_error".
""" + _PARAMETERS + """
    Attributes
    ----------
    model_, loss_, loss_curve_, n_iter_, t_, best_loss_, validation_scores_, best_validation_score_,
    n_features_in_, n_layers_, n_outputs_, out_activation_, coefs_, intercepts_ : as in `MLPClassifier`
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=np.float32, comm=None,
                 dropout=0.0):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         dtype=dtype, comm=comm, dropout=dropout)
        self.loss = loss

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current state; returns self."""
        return self._fit(X, y, sample_weight, incremental=True)

    @property
    def _output(self) -> str:
        return "poisson" if self.loss == "poisson" else "identity"

    def predict(self, X) -> np.ndarray:
        """Predicted values, (n_samples,) when y was 1-D, else (n_samples, n_outputs)."""
        A = self._outputs(X).astype(self._output_dtype())
        return A[:, 0] if self._y_1d else A

    def _encode(self, y, first: bool, classes, incremental: bool, dtype) -> np.ndarray:
        if classes is not None:
            raise ValueError("classes is for classifiers; MLPRegressor.partial_fit takes (X, y)")
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss must be 'squared_error' or 'poisson', got {self.loss!r}")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # as scikit-learn: one column is one output, predicted as a 1-D array
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("loss='poisson' needs targets y ≥ 0 (counts or rates); use loss='squared_error' "
                             "for targets of either sign")
        if first:
            self._y_1d = y.ndim == 1
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self.model_.output != self._output:
            raise ValueError(f"loss={self.loss!r} differs from the loss this model was fit with; fit from scratch")
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and T.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {T.shape[1]} outputs but the model was fit with {self.n_outputs_}")
        return _cast(T, dtype, "y")

    def _validation_score(self, A, T_val, sw_val) -> float:
        return r2_score(T_val, A, sample_weight=sw_val)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _Schedule:
    """scikit-learn's learning-rate schedule of its SGD solver, as a fastbp learning rate (a callable).

    `model.fit` reads it when each epoch starts; `_SklearnStopping` updates it when each epoch ends:
    "invscaling" sets ``lr_init / (t + 1)^power_t``, t the samples seen; "adaptive" divides by 5 where
    the stopping rule would stop, and stops below 1e-6.
    """

    def __init__(self, kind: str, lr_init: float, power_t: float) -> None:
        self.kind, self.lr_init, self.power_t = kind, float(lr_init), float(power_t)
        self.lr = self.lr_init

    def __call__(self, epoch: int) -> float:
        return self.lr

    def iteration_ends(self, samples_seen: int) -> None:
        if self.kind == "invscaling":
            self.lr = self.lr_init / (samples_seen + 1) ** self.power_t

    def trigger_stopping(self, message: str, verbose: bool) -> bool:
        """True to stop; "adaptive" first lowers the rate instead."""
        if self.kind != "adaptive":
            if verbose:
                print(message + " Stopping.")
            return True
        if self.lr <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self.lr /= 5.0
        if verbose:
            print(message + " Setting learning rate to %f" % self.lr)
        return False

    def __repr__(self) -> str:
        return f"_Schedule({self.kind!r}, lr={self.lr})"


class _SklearnStopping:
    """scikit-learn's stopping rule as a fastbp callback, and the attributes it keeps.

    Without early stopping: an epoch counts as no improvement when its training loss is above
    best_loss_ - tol; more than n_iter_no_change such epochs in a row stop training (or lower the
    "adaptive" learning rate). With early stopping the same rule runs on the validation score
    (accuracy or R²), and the best epoch's weights are restored at the end.
    """

    def __init__(self, estimator: _BaseMLP, validation, incremental: bool, n_samples: int) -> None:
        self.estimator, self.validation, self.incremental = estimator, validation, incremental
        self.n_samples = n_samples
        self.best_params, self.stopped = None, False

    def __call__(self, epoch: int, history: dict, model: MLP) -> bool:
        est = self.estimator
        loss = history["loss"][-1]
        est.n_iter_ += 1
        est.loss_ = loss
        est.t_ += self.n_samples
        est.loss_curve_.append(loss)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, loss))
        if self.validation is not None:
            score = est._validation_score_safe(*self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print("Validation score: %f" % score)
            improved = not score < est.best_validation_score_ + est.tol  # NaN counts as improved, as scikit-learn
            if score > est.best_validation_score_:
                est.best_validation_score_, self.best_params = score, model._params.copy()
        else:
            improved = not loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        est._schedule.iteration_ends(est.t_)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            message = (f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} "
                       "consecutive epochs.")
            if est._schedule.trigger_stopping(message, est.verbose):
                self.stopped = True
            else:
                est._no_improvement_count = 0
        return self.stopped and not self.incremental

    def finish(self) -> None:
        est = self.estimator
        if self.best_params is not None:
            est.model_._params[...] = self.best_params
        if not self.incremental and not self.stopped and est.n_iter_ == est.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning)


def _seed(rng: np.random.RandomState) -> int:
    """A fresh int seed from scikit-learn's RandomState (for fastbp's own np.random.Generator)."""
    return int(rng.randint(np.iinfo(np.int32).max))
