"""Saving and loading models: one ``.npz`` file of plain arrays, never pickles.

Fields: ``format_version`` (int), ``layer_sizes`` (int64, L+1), ``activations`` (str, L-1),
``output`` (str), ``dtype`` (str, "float32" or "float64"), ``seed`` (int64; an empty array when the
seed was not an integer), ``dropout`` (float64, the model's dropout probability; files written before
it existed load with 0), then ``W1, b1, ..., WL, bL`` in the model's dtype, ``W^l`` of shape (n_l, n_{l-1}).
Files are written to a temporary file in the same directory, flushed, fsync'ed and renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from . import kernels as K
from .model import MLP

FORMAT_VERSION = 1
_HEADER = ("format_version", "layer_sizes", "activations", "output", "dtype", "seed")
_OPTIONAL = ("dropout",)  # fields added after version 1 was first written: missing means the old default


def save(model: MLP, path: str | os.PathLike) -> None:
    """Write `model`'s architecture and weights to `path` (a ``.npz`` file), atomically.

    Parameters
    ----------
    model : MLP
    path : str or path-like
        The file to write, used exactly as given (no suffix is added); replaced if it exists.
    """
    write_npz_atomically(path, _fields(model))


def write_npz_atomically(path: str | os.PathLike, fields: dict[str, np.ndarray]) -> None:
    """``np.savez(path, **fields)`` through a temporary file in the same directory, fsync'ed and renamed
    over `path`: a crash at any moment leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **fields)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def load(path: str | os.PathLike) -> MLP:
    """The model saved at `path` by `MLP.save`, bit for bit.

    Every field is checked (format version, names, shapes, dtype, finiteness); a truncated, corrupt
    or hand-edited file raises ValueError saying what is wrong. Read with ``allow_pickle=False``.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a valid fastbp model file.
    """
    path = os.fspath(path)
    fields = _read(path)
    try:
        return _model_from(fields)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid fastbp model file: {exc}") from None


# ----------------------------------------------------------------------------- writing
def _fields(model: MLP) -> dict[str, np.ndarray]:
    seed = model.seed
    is_int = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    fields = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_sizes": np.array(model.layer_sizes, dtype=np.int64),
        "activations": np.array(model.activations, dtype=str).reshape(-1),
        "output": np.array(model.output),
        "dtype": np.array(np.dtype(model.dtype).name),
        "seed": np.array(seed if is_int else [], dtype=np.int64),
        "dropout": np.array(model.dropout, dtype=np.float64),
    }
    for l, (W, b) in enumerate(zip(model.weights, model.biases), start=1):
        fields[f"W{l}"], fields[f"b{l}"] = W, b
    return fields


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- reading
def _read(path: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, or a ValueError for anything that is not a readable .npz."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, pickled object arrays, ...
        raise _unreadable(path, exc) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive written by MLP.save")
    try:
        with archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zlib and CRC errors, truncated members, pickled object arrays
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable fastbp model file (.npz): {type(exc).__name__}: {exc}; "
                      "it may be truncated or corrupt")


def _model_from(fields: dict[str, np.ndarray]) -> MLP:
    missing = [name for name in _HEADER if name not in fields]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    version = _integer_scalar(fields["format_version"], "format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"format_version {version} is not supported (this fastbp reads version {FORMAT_VERSION})")
    sizes = _layer_sizes(fields["layer_sizes"])
    activations = _strings(fields["activations"], "activations", K.ACTIVATIONS, shape=(len(sizes) - 2,))
    output = _strings(fields["output"], "output", K.OUTPUTS, shape=())
    dtype = _strings(fields["dtype"], "dtype", {"float32": 0, "float64": 0}, shape=())
    seed = _seed(fields["seed"])
    dropout = _dropout(fields.get("dropout", np.array(0.0)))
    expected = set(_HEADER) | set(_OPTIONAL) | {f"{p}{l}" for l in range(1, len(sizes)) for p in "Wb"}
    unexpected = sorted(set(fields) - expected)
    if unexpected:
        raise ValueError(f"unexpected field(s) {unexpected} for {len(sizes) - 1} layers")
    model = MLP(sizes, activation=list(activations), output=str(output), dtype=np.dtype(str(dtype)).type,
                seed=seed if seed is not None else 0, dropout=dropout)
    model.seed = seed
    for l in range(1, len(sizes)):
        model.weights[l - 1][...] = _parameter(fields, f"W{l}", (sizes[l], sizes[l - 1]), model.dtype)
        model.biases[l - 1][...] = _parameter(fields, f"b{l}", (sizes[l],), model.dtype)
    return model


def _integer_scalar(value: np.ndarray, name: str) -> int:
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must be an integer scalar, got dtype {value.dtype} shape {value.shape}")
    return int(value)


def _layer_sizes(value: np.ndarray) -> list[int]:
    if value.ndim != 1 or value.shape[0] < 2 or not np.issubdtype(value.dtype, np.integer) or (value < 1).any():
        raise ValueError(f"layer_sizes must be ≥ 2 positive integers, got {value!r}")
    return [int(n) for n in value]


def _strings(value: np.ndarray, name: str, allowed: dict, shape: tuple) -> np.ndarray:
    if value.dtype.kind != "U" or value.shape != shape:
        raise ValueError(f"{name} must be a string array of shape {shape}, got dtype {value.dtype} shape {value.shape}")
    for item in value.reshape(-1):
        if str(item) not in allowed:
            raise ValueError(f"{name} holds {str(item)!r}; expected one of {sorted(allowed)}")
    return value


def _dropout(value: np.ndarray) -> float:
    if value.shape != () or value.dtype.kind != "f" or not 0 <= float(value) < 1:
        raise ValueError(f"dropout must be a float scalar in [0, 1), got {value!r}")
    return float(value)


def _seed(value: np.ndarray) -> int | None:
    if value.shape == (0,) and np.issubdtype(value.dtype, np.integer):
        return None
    return _integer_scalar(value, "seed")


def _parameter(fields: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    if name not in fields:
        raise ValueError(f"missing field {name!r}")
    value = fields[name]
    if value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, but layer_sizes needs {shape}")
    if value.dtype != np.dtype(dtype):
        raise ValueError(f"{name} has dtype {value.dtype}, but the file says dtype {np.dtype(dtype).name}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return value
