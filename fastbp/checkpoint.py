"""Checkpoints of a running fit: `MLP.fit(..., checkpoint="run.npz", checkpoint_every=k)` and `resume=`.

A checkpoint is one ``.npz`` of plain arrays (no pickles), written atomically (`io.write_npz_atomically`):
the flat parameters, the optimizer's state vectors and step/epoch counts, the epochs of this fit done,
the state of the generator that draws each epoch's permutation, the history and the early-stopping
state. Resuming with the same data, settings, rank and thread count continues exactly where the run
was: the weights at the end equal those of a run never interrupted, bit for bit (a run killed mid-epoch
redoes that epoch from the last checkpoint). Callbacks keep no state here: a callback that counts
epochs starts counting again.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .io import write_npz_atomically

FORMAT = "fastbp-checkpoint"
VERSION = 1


def save_checkpoint(path, model, optimizer, epoch: int, finished: bool, rng: np.random.Generator,
                    history: dict, stopper, batch_size: int, n_samples: int, ranks: int) -> None:
    """Write the state of a fit after `epoch` epochs to `path`, atomically (see the module docstring)."""
    best_params = stopper.best_params if stopper.best_params is not None else model._params[:0]
    write_npz_atomically(path, {
        "format": np.array(FORMAT), "version": np.array(VERSION, np.int64),
        "layer_sizes": np.array(model.layer_sizes, np.int64), "dtype": np.array(np.dtype(model.dtype).name),
        "optimizer": np.array(type(optimizer).__name__),
        "params": model._params, "optimizer_state": optimizer.state,
        "optimizer_steps": np.array(optimizer.steps, np.int64),
        "optimizer_epochs": np.array(optimizer.epochs, np.int64),
        "epoch": np.array(epoch, np.int64), "finished": np.array(finished),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
        "history": np.array(json.dumps(history)),
        "stop_best": np.array(stopper.best, np.float64), "stop_wait": np.array(stopper.wait, np.int64),
        "stop_best_params": best_params,
        "batch_size": np.array(batch_size, np.int64), "n_samples": np.array(n_samples, np.int64),
        "ranks": np.array(ranks, np.int64),
    })


def load_checkpoint(path) -> dict[str, np.ndarray]:
    """Every field of the checkpoint at `path`; FileNotFoundError, or ValueError for a file that is not one."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated, corrupt or foreign file
        raise ValueError(f"{path} is not a readable fastbp checkpoint: {type(exc).__name__}: {exc}") from None
    if fields.get("format") is None or str(fields["format"]) != FORMAT or int(fields.get("version", -1)) != VERSION:
        raise ValueError(f"{path} is not a fastbp checkpoint (version {VERSION}); pass a file written by "
                         "fit(..., checkpoint=path)")
    return fields


def restore(fields: dict[str, np.ndarray], path, model, optimizer, rng: np.random.Generator, history: dict,
            stopper, batch_size: int, n_samples: int) -> int:
    """Put the checkpoint `fields` (read from `path`) into the model, optimizer, generator, history and
    early stopping of a fit; returns the epochs it had done (all of them when it had finished).

    Raises ValueError, before changing anything, when the checkpoint belongs to another model or job.
    """
    expected = {"layer_sizes": list(model.layer_sizes), "dtype": np.dtype(model.dtype).name,
                "optimizer": type(optimizer).__name__, "batch_size": batch_size, "n_samples": n_samples}
    for key, value in expected.items():
        saved = fields[key].tolist()
        if saved != value:
            raise ValueError(f"{path} was written with {key}={saved!r}, but this fit has {key}={value!r}; "
                             "resume with the model, data and settings of the checkpointed run")
    saved_history = json.loads(str(fields["history"]))
    if set(saved_history) - {"allreduce_seconds"} != set(history) - {"allreduce_seconds"}:
        raise ValueError(f"{path} records {sorted(saved_history)}, but this fit records {sorted(history)}; "
                         "resume with the same validation settings")
    state = optimizer.bind(model._params)
    model._params[...] = fields["params"]
    state[...] = fields["optimizer_state"]
    optimizer.steps, optimizer.epochs = int(fields["optimizer_steps"]), int(fields["optimizer_epochs"])
    rng.bit_generator.state = json.loads(str(fields["rng_state"]))
    history.clear()
    history.update(saved_history)
    stopper.best, stopper.wait = float(fields["stop_best"]), int(fields["stop_wait"])
    best = fields["stop_best_params"]
    stopper.best_params = best.copy() if best.size else None
    return int(fields["epoch"]), bool(fields["finished"])
