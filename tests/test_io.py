"""model.save / fastbp.load: exact round trip, atomic writes, and clear errors for bad files."""
import os
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp import io


def _saved_fields(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize("sizes,activation,output,dtype", [
    ([64, 32, 16, 10], ["relu", "tanh"], "softmax", np.float32),
    ([5, 3], "relu", "identity", np.float64),
    ([4, 6, 2], "sigmoid", "sigmoid", np.float64),
])
def test_round_trip_is_exact(tmp_path, sizes, activation, output, dtype):
    rng = np.random.default_rng(0)
    model = fastbp.MLP(sizes, activation=activation, output=output, dtype=dtype, seed=3)
    model._params[...] = rng.normal(size=model._params.size)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert (loaded.layer_sizes, loaded.activations, loaded.output, loaded.dtype, loaded.seed) == \
           (model.layer_sizes, model.activations, model.output, model.dtype, model.seed)
    assert loaded._params.tobytes() == model._params.tobytes()
    X = rng.normal(size=(7, sizes[0]))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_file_holds_plain_named_fields(tmp_path):
    model = fastbp.MLP([3, 4, 2], activation="tanh", seed=5)
    model.save(tmp_path / "m.npz")
    fields = _saved_fields(tmp_path / "m.npz")
    assert sorted(fields) == sorted(["format_version", "layer_sizes", "activations", "output", "dtype", "seed",
                                     "dropout", "W1", "b1", "W2", "b2"])
    assert fields["format_version"] == io.FORMAT_VERSION and fields["layer_sizes"].tolist() == [3, 4, 2]
    assert fields["activations"].tolist() == ["tanh"] and str(fields["output"]) == "softmax"
    assert str(fields["dtype"]) == "float32" and int(fields["seed"]) == 5
    assert fields["W1"].shape == (4, 3) and all(v.dtype != object for v in fields.values())


def test_trained_model_round_trip_keeps_predictions(tmp_path, digits):
    X_train, X_test, y_train, _ = digits
    model = fastbp.MLP([64, 16, 10], seed=0)
    model.fit(X_train, y_train, epochs=2, verbose=0)
    model.save(str(tmp_path / "digits.npz"))
    np.testing.assert_array_equal(fastbp.load(str(tmp_path / "digits.npz")).predict(X_test), model.predict(X_test))


def test_dropout_is_saved_and_a_file_without_it_loads_with_none(tmp_path):
    model = fastbp.MLP([3, 4, 2], seed=0, dropout=0.3)
    model.save(tmp_path / "m.npz")
    assert fastbp.load(tmp_path / "m.npz").dropout == 0.3
    older = _edited(tmp_path, dropout=None)  # written before the field existed
    assert fastbp.load(older).dropout == 0.0


def test_save_replaces_atomically_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = fastbp.MLP([3, 2], seed=0)
    old.save(path)
    before = path.read_bytes()

    def crash(file, **fields):
        file.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt  # the process is killed halfway through the write

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fastbp.MLP([3, 2], seed=1).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_save_over_an_existing_file(tmp_path):
    path = tmp_path / "model.npz"
    fastbp.MLP([3, 2], seed=0).save(path)
    second = fastbp.MLP([3, 5, 2], seed=1)
    second.save(path)
    assert fastbp.load(path).layer_sizes == [3, 5, 2]
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def _edited(tmp_path, **changes):
    """A valid model file with some fields replaced (None removes the field)."""
    fastbp.MLP([3, 4, 2], activation="relu", seed=0).save(tmp_path / "good.npz")
    fields = _saved_fields(tmp_path / "good.npz")
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    path = tmp_path / "edited.npz"
    np.savez(path, **fields)
    return path


@pytest.mark.parametrize("changes,match", [
    (dict(format_version=np.array(2)), "format_version 2 is not supported"),
    (dict(format_version=np.array(1.0)), "format_version must be an integer scalar"),
    (dict(layer_sizes=np.array([3, 0, 2])), "layer_sizes must be"),
    (dict(layer_sizes=np.array([3, 5, 2])), r"W1 has shape \(4, 3\), but layer_sizes needs \(5, 3\)"),
    (dict(activations=np.array(["swish"])), "activations holds 'swish'"),
    (dict(activations=np.array(["relu", "relu"])), "activations must be a string array of shape"),
    (dict(output=np.array("softplus")), "output holds 'softplus'"),
    (dict(dtype=np.array("float16")), "dtype holds 'float16'"),
    (dict(dtype=np.array("float64")), "W1 has dtype float32, but the file says dtype float64"),
    (dict(W2=np.full((2, 4), np.nan, np.float32)), "W2 contains NaN or infinity"),
    (dict(b1=np.zeros(3, np.float32)), r"b1 has shape \(3,\)"),
    (dict(W1=None), "missing field 'W1'"),
    (dict(output=None), r"missing field\(s\) \['output'\]"),
    (dict(extra=np.zeros(1)), r"unexpected field\(s\) \['extra'\]"),
    (dict(dropout=np.array(1.0)), r"dropout must be a float scalar in \[0, 1\)"),
    (dict(dropout=np.array([0.1])), r"dropout must be a float scalar"),
])
def test_hand_edited_files_raise_a_clear_error(tmp_path, changes, match):
    path = _edited(tmp_path, **changes)
    with pytest.raises(ValueError, match="is not a valid fastbp model file: " + match):
        fastbp.load(path)


def test_truncated_and_corrupt_files_raise_value_error(tmp_path):
    fastbp.MLP([64, 32, 10], seed=0).save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="may be truncated or corrupt"):
            fastbp.load(tmp_path / "cut.npz")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside W1's stored bytes: the zip CRC check fails
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError):
        fastbp.load(tmp_path / "flipped.npz")


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("format_version.npy", "w") as file:
            np.lib.format.write_array(file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="truncated or corrupt|pickle"):
        fastbp.load(path)


def test_a_single_npy_array_is_not_a_model(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        fastbp.load(tmp_path / "array.npy")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "nowhere.npz")
