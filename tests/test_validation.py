"""Bad input is refused before any training or inference kernel runs, with a message that names the argument,
what is wrong and the fix, and leaves the model unchanged; input that only needs converting is converted.

tests/test_model.py holds the first cases of each kind (against `fit`); these cover every entry point."""
import re

import numpy as np
import pytest

import fastbp
from fastbp.cli import main
from fastbp.kernels.checks import BLOCK, all_finite
from fastbp.validation import check_positive_int, check_positive_real, check_targets, check_X

N_IN, N_OUT = 5, 3


def _model(output="softmax", dtype=np.float32):
    return fastbp.MLP([N_IN, 4, N_OUT if output == "softmax" else 2], output=output, dtype=dtype, seed=0)


def _entry_points(m):
    """Every public method that takes data, as f(X, y)."""
    return {
        "fit": lambda X, y: m.fit(X, y, epochs=1, verbose=0),
        "partial_fit": m.partial_fit,
        "fit validation_data": lambda X, y: m.fit(GOOD_X, GOOD_Y[m.output], epochs=1, verbose=0,
                                                  validation_data=(X, y)),
        "evaluate": m.evaluate,
        "loss_and_grads": m.loss_and_grads,
        "score": m.score,
        "predict": lambda X, y: m.predict(X),
        "predict_proba": lambda X, y: m.predict_proba(X),
    }


def _named(entry, match, argument):
    """`match` for `entry`: validation data may be called X/y or validation_data[0]/[1] in the messages."""
    if entry != "fit validation_data":
        return match
    index = {"X": 0, "y": 1}[argument]
    return re.sub(rf"\b{argument}\b", rf"(?:{argument}|validation_data\\[{index}\\])", match)


def _assert_refused(m, call, X, y, error, match):
    before = [p.copy() for p in m.weights + m.biases]
    with pytest.raises(error, match=match):
        call(X, y)
    for p, saved in zip(m.weights + m.biases, before):
        np.testing.assert_array_equal(p, saved)


GOOD_X = np.zeros((2, N_IN))
GOOD_Y = {"softmax": [0, 1], "sigmoid": np.eye(2), "identity": np.eye(2)}
BAD_X = {
    "1-D": (np.zeros(N_IN), ValueError, r"X must be 2-D .*got 1-D .*X\.reshape\(1, -1\)"),
    "3-D": (np.zeros((2, N_IN, 1)), ValueError, "X must be 2-D .*got 3-D"),
    "scalar": (3.0, ValueError, "X must be 2-D .*got 0-D"),
    "narrow": (np.zeros((2, N_IN - 1)), ValueError, rf"X has 4 features .*has {N_IN}; pass X with shape"),
    "wide": (np.zeros((2, N_IN + 7)), ValueError, "X has 12 features"),
    "empty": (np.zeros((0, N_IN)), ValueError, "X is empty .*pass at least one sample"),
    "nan": (np.where(np.eye(2, N_IN, 1) > 0, np.nan, 0.0), ValueError,
            r"X contains NaN or infinity \(first at X\[0, 1\] = nan\); remove or impute"),
    "-inf": (np.full((2, N_IN), -np.inf), ValueError, "X contains NaN or infinity"),
    "overflows float32": (np.full((2, N_IN), 1e39), ValueError,
                          r"X\[0, 0\] = 1e\+39 overflows float32 .*rescale X or use a float64 model"),
    "complex": (np.zeros((2, N_IN), complex), TypeError, r"X must hold real numbers .*np\.asarray\(X, dtype=float\)"),
    "strings": (np.full((2, N_IN), "1.5"), TypeError, "X must hold real numbers .*got dtype <U3"),
    "objects": (np.full((2, N_IN), None), TypeError, "X must hold real numbers .*got dtype object"),
    "datetimes": (np.zeros((2, N_IN), "datetime64[s]"), TypeError, "X must hold real numbers"),
    "ragged": ([[0.0] * N_IN, [0.0]], ValueError, "X could not be read as an array .*rectangular"),
}


ALL_ENTRIES = ["fit", "partial_fit", "fit validation_data", "evaluate", "loss_and_grads", "score", "predict",
               "predict_proba"]
TARGET_ENTRIES = ["fit", "partial_fit", "fit validation_data", "evaluate", "loss_and_grads", "score"]


@pytest.mark.parametrize("entry", ALL_ENTRIES)
@pytest.mark.parametrize("case", list(BAD_X))
def test_bad_X_is_refused_by_every_entry_point(entry, case):
    X, error, match = BAD_X[case]
    m = _model()
    _assert_refused(m, _entry_points(m)[entry], X, [0, 1], error, _named(entry, match, "X"))


BAD_LABELS = {
    "too few": ([0], "y has 1 rows but X has 2 samples; pass one target per sample"),
    "scalar": (1, "y has no rows but X has 2 samples"),
    "too high": ([0, 3], r"label 3, outside \[0, 3\) .*relabel the classes 0\.\.2"),
    "negative": ([-2, 0], r"label -2, outside \[0, 3\)"),
    "float label too high": ([0.0, 3.0], r"label 3\.0, outside"),
    "non-integer": ([0, 1.5], r"non-integer class labels \(e\.g\. 1\.5\); pass integers in \[0, 3\)"),
    "nan": ([0, np.nan], r"y contains NaN or infinity \(first at y\[1\] = nan\)"),
    "inf": ([np.inf, 0], "y contains NaN or infinity"),
    "column of labels": ([[0], [1]], r"got \(2, 1\); pass class labels as a 1-D array \(y\.ravel\(\)\)"),
    "one-hot too narrow": (np.eye(2), r"shape \(2, 3\) .*got \(2, 2\); pass class labels as a 1-D array, or one-hot"),
    "one-hot too wide": (np.eye(2, 4), r"got \(2, 4\)"),
    "3-D": (np.zeros((2, 3, 1)), r"y must be 1-D or 2-D, got 3-D"),
    "probability above 1": ([[1.5, -0.5, 0], [1, 0, 0]], r"must lie in \[0, 1\] .*y\[0, 0\] = 1\.5"),
    "rows not summing to 1": ([[0.5, 0.2, 0], [1, 0, 0]], r"row 0 sums to 0\.7; normalise the rows"),
    "multi-hot": ([[1, 1, 0], [1, 0, 0]], r"row 0 sums to 2; .*output='sigmoid' for multi-label"),
}


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_softmax_targets_are_refused(entry, case):
    y, match = BAD_LABELS[case]
    m = _model()
    _assert_refused(m, _entry_points(m)[entry], GOOD_X, y, ValueError, _named(entry, match, "y"))


@pytest.mark.parametrize("entry", TARGET_ENTRIES)
@pytest.mark.parametrize("output,y,error,match", [
    ("softmax", ["cat", "dog"], TypeError, "y must hold real numbers .*LabelEncoder"),
    ("softmax", np.zeros(2, complex), TypeError, "y must hold real numbers .*complex128"),
    ("sigmoid", [[0, 2], [1, 0]], ValueError, r"sigmoid output must lie in \[0, 1\] .*y\[0, 1\] = 2\.0; binarise"),
    ("sigmoid", [[0, -1e-3], [1, 0]], ValueError, r"must lie in \[0, 1\]"),
    ("sigmoid", [0, 1], ValueError, r"shape \(2, 2\) .*got \(2,\); pass one 0/1 column per output unit"),
    ("sigmoid", np.zeros((2, 3)), ValueError, r"shape \(2, 2\) .*got \(2, 3\)"),
    ("sigmoid", [[0, np.nan], [1, 0]], ValueError, r"y contains NaN or infinity \(first at y\[0, 1\]"),
    ("identity", [0.5, 1.5], ValueError, r"shape \(2, 2\) .*got \(2,\); pass one column per output unit"),
    ("identity", np.full((2, 2), 1e39), ValueError, r"y\[0, 0\] = 1e\+39 overflows float32"),
    ("identity", [[0, np.inf], [1, 0]], ValueError, "y contains NaN or infinity"),
])
def test_bad_sigmoid_identity_and_typed_targets_are_refused(entry, output, y, error, match):
    m = _model(output)
    _assert_refused(m, _entry_points(m)[entry], GOOD_X, y, error, _named(entry, match, "y"))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(epochs=-1), ValueError, "epochs must be ≥ 1, got -1; pass a positive whole number"),
    (dict(epochs=2.0), TypeError, "epochs must be an integer, got float 2.0"),
    (dict(epochs=True), TypeError, "epochs must be an integer, got bool"),
    (dict(epochs="3"), TypeError, "epochs must be an integer, got str"),
    (dict(batch_size=0), ValueError, "batch_size must be ≥ 1, got 0"),
    (dict(batch_size=-8), ValueError, "batch_size must be ≥ 1"),
    (dict(batch_size=None), TypeError, "batch_size must be an integer, got NoneType"),
])
def test_bad_fit_hyperparameters_are_refused(kwargs, error, match):
    m = _model()
    _assert_refused(m, lambda X, y: m.fit(X, y, verbose=0, **kwargs), GOOD_X, [0, 1], error, match)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(layer_sizes=[5, -2, 3]), ValueError, r"layer_sizes\[1\] must be ≥ 1, got -2"),
    (dict(layer_sizes=[5, 0]), ValueError, r"layer_sizes\[1\] must be ≥ 1"),
    (dict(layer_sizes=[5, 2.0, 3]), TypeError, r"layer_sizes\[1\] must be an integer, got float"),
    (dict(layer_sizes=7), TypeError, "layer_sizes must be a list of ints"),
    (dict(layer_sizes=[5, 4, 3], activation=["swish"]), ValueError,
     r"unknown activation 'swish'; choose one of \['gelu', 'identity', 'relu', 'sigmoid', 'tanh'\]"),
    (dict(layer_sizes=[5, 3], output="softmx"), ValueError,
     r"unknown output 'softmx'; choose one of \['identity', 'poisson', 'sigmoid', 'softmax'\]"),
    (dict(layer_sizes=[5, 3], dtype=np.float16), TypeError, "dtype must be np.float32 or np.float64, got float16"),
    (dict(layer_sizes=[5, 3], dtype=np.complex64), TypeError, "dtype must be np.float32 or np.float64"),
])
def test_bad_constructor_arguments_name_the_valid_choices(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastbp.MLP(**kwargs)


@pytest.mark.parametrize("lr,error", [("0.1", TypeError), (None, TypeError), (True, TypeError), (1j, TypeError),
                                      (-1e-9, ValueError), (float("-inf"), ValueError)])
def test_bad_learning_rate_types_and_values(lr, error):
    with pytest.raises(error, match="lr must be"):
        fastbp.SGD(lr=lr)


# ----------------------------------------------------------------------------- accepted and converted
def _reference_result(m, X, y):
    loss, dW, db = m.loss_and_grads(np.ascontiguousarray(X, m.dtype), y)
    return loss, dW + db


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("convert", [
    np.asfortranarray,
    lambda X: np.repeat(X, 2, axis=1)[:, ::2],                  # a strided view
    lambda X: X[::-1][::-1],                                     # negative strides, twice
    lambda X: X.astype(np.float64),
    lambda X: X.astype(np.float32),
    lambda X: X.astype(np.float16),
    lambda X: X.astype(">f8"),                                   # big-endian
    lambda X: X.tolist(),
], ids=["fortran", "strided", "reversed", "float64", "float32", "float16", "big-endian", "list"])
def test_convertible_X_gives_the_same_result(convert, dtype):
    rng = np.random.default_rng(0)
    X = (rng.integers(0, 8, size=(6, N_IN)) / 4).astype(dtype)  # exact in every float type
    y = rng.integers(0, N_OUT, 6)
    m = _model(dtype=dtype)
    want_loss, want_grads = _reference_result(m, X, y)
    loss, dW, db = m.loss_and_grads(convert(X), y)
    assert loss == want_loss
    for got, want in zip(dW + db, want_grads):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(m.predict_proba(convert(X)), m.predict_proba(X))


@pytest.mark.parametrize("X", [np.eye(4, N_IN, dtype=np.int64), np.eye(4, N_IN, dtype=np.uint8),
                               np.eye(4, N_IN, dtype=bool)], ids=["int64", "uint8", "bool"])
def test_integer_and_bool_X_are_converted(X):
    m = _model()
    want = m.predict_proba(X.astype(np.float32))
    np.testing.assert_array_equal(m.predict_proba(X), want)
    assert m.predict_proba(X).dtype == np.float32


@pytest.mark.parametrize("labels", [
    np.array([0, 2, 1, 2]), np.array([0, 2, 1, 2], np.uint8), np.array([0.0, 2.0, 1.0, 2.0]),
    [0, 2, 1, 2], np.eye(3)[[0, 2, 1, 2]], np.eye(3, dtype=np.int32)[[0, 2, 1, 2]],
], ids=["int64", "uint8", "whole floats", "list", "one-hot float", "one-hot int"])
def test_every_form_of_class_labels_gives_the_same_gradients(labels):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, N_IN))
    m = _model()
    want_loss, want_grads = _reference_result(m, X, np.array([0, 2, 1, 2]))
    loss, dW, db = m.loss_and_grads(X, labels)
    assert loss == want_loss
    for got, want in zip(dW + db, want_grads):
        np.testing.assert_array_equal(got, want)


def test_bool_targets_are_0_1_labels():
    X = np.random.default_rng(2).normal(size=(4, N_IN))
    multi = _model("sigmoid")
    y = np.array([[True, False], [False, False], [True, True], [False, True]])
    assert multi.loss_and_grads(X, y)[0] == multi.loss_and_grads(X, y.astype(float))[0]
    single = fastbp.MLP([N_IN, 3, 2], seed=0)
    assert single.loss_and_grads(X, y[:, 0])[0] == single.loss_and_grads(X, y[:, 0].astype(int))[0]


def test_soft_targets_in_the_unit_interval_are_accepted():
    X = np.random.default_rng(3).normal(size=(2, N_IN))
    assert np.isfinite(_model("sigmoid").loss_and_grads(X, [[0.25, 1.0], [0.0, 0.5]])[0])
    assert np.isfinite(_model().loss_and_grads(X, [[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])[0])


def test_messages_can_name_the_argument_the_caller_was_given():
    with pytest.raises(ValueError, match=r"X_val has 2 features .*pass X_val with shape"):
        check_X(np.zeros((3, 2)), N_IN, np.float32, name="X_val")
    with pytest.raises(ValueError, match=r"y_val holds the label 7, outside \[0, 3\)"):
        check_targets([0, 7], 2, 3, "softmax", np.float32, name="y_val")


def test_clean_input_is_used_without_a_copy():
    X = np.zeros((3, N_IN), np.float32)
    assert check_X(X, N_IN, np.float32) is X
    T = np.eye(3, dtype=np.float64)
    assert check_targets(T, 3, 3, "softmax", np.float64) is T
    assert check_X(X, N_IN, np.float64).dtype == np.float64


def test_scalar_checks_accept_numpy_scalars():
    assert check_positive_int(np.int64(3), "epochs") == 3 and type(check_positive_int(np.int32(3), "e")) is int
    assert check_positive_real(np.float32(0.5), "lr") == 0.5
    with pytest.raises(TypeError, match="epochs must be an integer, got bool"):
        check_positive_int(np.True_, "epochs")
    with pytest.raises(ValueError, match=r"lr must be finite and > 0, got nan; pass e\.g\. lr=0\.01"):
        check_positive_real(np.float64("nan"), "lr")


# ----------------------------------------------------------------------------- the command line
def _run_cli(capsys, args):
    """(exit code, stderr) of `fastbp train`: main returns 2 for a bad value, argparse exits 2 for a bad option."""
    try:
        code = main(["train", "--quiet", *args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--hidden", "0"], r"(layer_sizes\[1\]|argument --hidden:) must be ≥ 1, got 0"),
    (["--hidden", "16", "-3"], r"(layer_sizes\[2\]|argument --hidden:) must be ≥ 1, got -3"),
    (["--lr", "-1"], r"(lr|argument --lr:) must be finite and > 0, got -1"),
    (["--lr", "nan"], r"(lr|argument --lr:) must be finite and > 0, got nan"),
    (["--lr", "inf"], r"(lr|argument --lr:) must be finite and > 0, got inf"),
    (["--batch-size", "0"], r"(batch_size|argument --batch-size:) must be ≥ 1, got 0"),
    (["--epochs", "-2"], r"(epochs|argument --epochs:) must be ≥ 1, got -2"),
])
def test_cli_bad_values_exit_2_with_the_reason(capsys, args, message):
    code, err = _run_cli(capsys, args)
    assert code == 2 and re.search(message, err), err


@pytest.mark.parametrize("args", [["--hidden", "ten"], ["--activation", "swish"], ["--dtype", "float16"],
                                  ["--epochs", "1.5"]])
def test_cli_malformed_options_exit_2_through_argparse(capsys, args):
    code, err = _run_cli(capsys, args)
    assert code == 2 and "invalid" in err


# ----------------------------------------------------------------------------- saved files
# tests/test_io.py checks each kind of bad file once; these sweep every truncation and every byte.
def _tiny_model_file(tmp_path):
    m = fastbp.MLP([3, 2, 2], activation="tanh", seed=0)
    m.save(tmp_path / "model.npz")
    return m, (tmp_path / "model.npz").read_bytes()


def _positions(data: bytes) -> list[int]:
    """Every 4th byte offset, and every one of the last 256 (the zip's central directory)."""
    return sorted(set(range(0, len(data), 4)) | set(range(max(0, len(data) - 256), len(data))))


def test_every_truncation_of_a_saved_file_is_a_clear_value_error(tmp_path):
    _, data = _tiny_model_file(tmp_path)
    cut_file = tmp_path / "cut.npz"
    for cut in _positions(data):
        cut_file.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="fastbp model file"):
            fastbp.load(cut_file)


def test_every_flipped_byte_is_caught_or_harmless(tmp_path):
    """A flipped byte either fails the zip/npy checks (ValueError) or lies outside the data: never
    another exception, never a model with different weights."""
    model, data = _tiny_model_file(tmp_path)
    flipped_file = tmp_path / "flipped.npz"
    caught = 0
    for i in _positions(data):
        flipped = bytearray(data)
        flipped[i] ^= 0x5A
        flipped_file.write_bytes(bytes(flipped))
        try:
            loaded = fastbp.load(flipped_file)
        except ValueError:
            caught += 1
            continue
        assert loaded.layer_sizes == model.layer_sizes and loaded.activations == model.activations
        for p, q in zip(loaded.weights + loaded.biases, model.weights + model.biases):
            np.testing.assert_array_equal(p, q)
    assert caught > len(_positions(data)) // 2


class _TouchWhenUnpickled:
    """A pickle that creates a file when loaded: proof that loading ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_loading_never_unpickles(tmp_path):
    import pickle
    import zipfile

    marker = tmp_path / "code-ran"
    payload = _TouchWhenUnpickled(marker)
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(payload))
    _, data = _tiny_model_file(tmp_path)
    with zipfile.ZipFile(tmp_path / "object-member.npz", "w") as archive:  # a real model plus one pickled member
        with zipfile.ZipFile(tmp_path / "model.npz") as good:
            for name in good.namelist():
                if name != "W1.npy":
                    archive.writestr(name, good.read(name))
        with archive.open("W1.npy", "w") as member:
            np.lib.format.write_array(member, np.array([payload], dtype=object), allow_pickle=True)
    for name in ("pickle.npz", "object-member.npz"):
        with pytest.raises(ValueError):
            fastbp.load(tmp_path / name)
        assert not marker.exists(), f"loading {name} ran code"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5])
def test_the_finiteness_check_reads_every_block(n, dtype):
    """all_finite finds one NaN or ±inf wherever it is: first, last, either side of a block's edge."""
    big = np.finfo(dtype).max
    clean = np.full(n, big, dtype)  # x·0 is 0 for the largest finite values: no overflow
    clean[::2] = -np.finfo(dtype).smallest_subnormal
    assert all_finite(clean)
    for i in sorted({0, n // 2, n - 1} | {b + d for b in range(BLOCK, n, BLOCK) for d in (-1, 0)}):
        for bad in (np.nan, np.inf, -np.inf):
            x = clean.copy()
            x[i] = bad
            assert not all_finite(x), (i, bad)


def test_nan_past_the_first_block_of_a_large_X_is_refused():
    n = (1 << 20) // N_IN + 1  # more elements than one block of the finiteness check
    X = np.zeros((n, N_IN), np.float32)
    X[-1, -1] = np.nan
    with pytest.raises(ValueError, match=rf"X contains NaN or infinity \(first at X\[{n - 1}, {N_IN - 1}\]"):
        _model().fit(X, np.zeros(n, int), epochs=1, verbose=0)


def test_small_inputs_need_no_compiled_finiteness_check_until_one_exists(monkeypatch):
    """While `all_finite` is compiled neither here nor in the cache, an input below COMPILE_FROM_VALUES is checked by
    NumPy (a first run on small data waits for no compilation); a big one compiles the kernel, which then checks every
    input, small ones included."""
    import numba

    from fastbp import validation
    fresh = numba.njit(all_finite.py_func, parallel=True)  # a dispatcher that has compiled nothing yet
    monkeypatch.setattr(validation, "all_finite", fresh)
    monkeypatch.setattr(validation, "_kernel_in_cache", lambda: False)
    small = np.ones((10, N_IN), np.float32)
    assert validation._all_finite(small)
    small[3, 2] = np.nan
    assert not validation._all_finite(small)
    assert not fresh.signatures
    assert validation._all_finite(np.ones(validation.COMPILE_FROM_VALUES, np.float32))
    assert fresh.signatures

    def numpys_check(*args, **kwargs):
        raise AssertionError("NumPy's check ran")

    monkeypatch.setattr(np, "isfinite", numpys_check)
    assert not validation._all_finite(small)  # the kernel's answer
