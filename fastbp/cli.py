"""The `fastbp` command line: `fastbp train` trains an MLP on the bundled digits dataset."""
from __future__ import annotations

import argparse
import atexit
import functools
import math
import os
import sys
import threading
import time

import numpy as np

from . import prebuild
from .data import load_digits_split
from .kernels import (ACTIVATIONS, OUTPUTS, forward_backward, packs_flag, smooth_flag, train_epoch,
                      train_epoch_optimizer)
from .kernels.cache import has_compiled
from .model import COMPILING, MLP
from .optim import OPTIMIZERS as OPTIMIZER_CLASSES
from .optim import SGD

#: --optimizer name -> the optimizer, given the learning rate: every optimizer class with its defaults, and SGD
#: with momentum 0.9
OPTIMIZERS = {**{name: (lambda lr, cls=cls: cls(lr=lr)) for name, cls in OPTIMIZER_CLASSES.items()},
              "momentum": lambda lr: SGD(lr=lr, momentum=0.9)}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number {text!r}; pass an integer ≥ 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}; pass e.g. 0.05") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train an MLP on the UCI digits and report test accuracy and speed")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=[128, 64], metavar="N",
                       help="hidden layer sizes (default: 128 64)")
    train.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    train.add_argument("--epochs", type=_positive_int, default=40)
    train.add_argument("--batch-size", type=_positive_int, default=16)
    train.add_argument("--lr", type=_positive_float, default=0.05, help="learning rate")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd",
                       help="sgd (plain, the fused fast path), momentum (SGD, momentum 0.9), or another "
                            "optimizer with its default settings")
    train.add_argument("--seed", type=int, default=0, help="seeds initialisation, shuffling and the split")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--quiet", action="store_true", help="no progress display")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of `mpiexec -n P fastbp train --distributed` (fastbp[mpi]); "
                            "--batch-size is the global batch")
    build = commands.add_parser("compile", help="compile the kernels into the cache ahead of time (docs/compile-cache.md)")
    build.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32"])
    build.add_argument("--activations", nargs="+", choices=sorted(ACTIVATIONS), default=["relu"])
    build.add_argument("--optimizers", nargs="+", choices=prebuild.OPTIMIZER_NAMES, default=["sgd"])
    build.add_argument("--workers", type=_positive_int, default=1, help="processes compiling at once (default: 1)")
    build.add_argument("--all", action="store_true", help="every dtype, activation and optimizer")
    return parser


def _world(distributed: bool):
    """(MPI.COMM_WORLD, is rank 0) with --distributed, else (None, True)."""
    if not distributed:
        return None, True
    try:
        from mpi4py import MPI
    except ImportError:
        raise ValueError("--distributed needs mpi4py and an MPI: pip install 'fastbp[mpi]'") from None
    return MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank() == 0


def compile_kernels(args: argparse.Namespace) -> int:
    if args.all:
        args.dtypes, args.activations, args.optimizers = prebuild.DTYPE_NAMES, sorted(ACTIVATIONS), prebuild.OPTIMIZER_NAMES
    done = prebuild.compile(args.dtypes, args.activations, args.optimizers, workers=args.workers)
    load_digits_split()  # keeps the split `fastbp train` uses in the cache: its first run then imports no scikit-learn
    where = done["directory"] or "memory only (no safe cache directory: nothing was kept)"
    kernels = sorted({name for names in done["compiled"].values() for name in names})
    print(f"fastbp: {len(kernels)} kernels compiled in {done['seconds']:.1f} s; cache: {where}")
    return 0


def train(args: argparse.Namespace) -> int:
    comm, root = _world(args.distributed)
    say = functools.partial(print, flush=True) if root else (lambda *a, **k: None)  # only rank 0 prints
    dtype = np.dtype(args.dtype).type
    optimizer = OPTIMIZERS[args.optimizer](args.lr)
    # the epoch kernel fit runs: with no penalty and no clipping, as here, a fused optimizer's is train_epoch
    # (with comm, a step at a time: forward_backward)
    compiles = not has_compiled(forward_backward if comm else train_epoch if optimizer.fused else train_epoch_optimizer)
    if compiles and comm is None and optimizer.fused:
        # fit's compile worker (`prebuild.compile_beside`), started before the data load, 1 s in a first run
        smooth = smooth_flag(np.array([ACTIVATIONS[args.activation], OUTPUTS["softmax"]])) is not None
        packed = packs_flag([0, *args.hidden, 10]) is not None  # n_0 (0 here: no data yet) never counts
        prebuild.compile_beside(dtype, smooth, packed)
    X_train, X_test, y_train, y_test = load_digits_split(seed=args.seed, dtype=dtype)
    sizes = [X_train.shape[1], *args.hidden, 10]
    model = MLP(sizes, activation=args.activation, output="softmax", dtype=dtype, seed=args.seed)
    say(f"fastbp: {model} on UCI digits, {len(X_train)} train / {len(X_test)} test samples")
    if compiles and args.quiet:  # otherwise fit's progress display says so, with the seconds elapsed
        say(f"fastbp: {COMPILING}")
    start = time.perf_counter()
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                        seed=args.seed, verbose=0 if args.quiet else 1, comm=comm)
    seconds = time.perf_counter() - start
    speed = np.median(history["samples_per_second"])
    say(f"test accuracy {model.score(X_test, y_test):.2%}  |  {speed:,.0f} samples/s (median epoch)  |  "
        f"fit {seconds:.2f} s" + (" including compilation" if compiles else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad option: argparse has printed why
        return int(exit_.code or 0)
    try:
        return compile_kernels(args) if args.command == "compile" else train(args)
    except (ValueError, TypeError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The `fastbp` command (and ``python -m fastbp.cli``): `main`, then the exit handlers and a flush of the output,
    as at any exit, and an exit that skips tearing down the interpreter. Why: after a first run the interpreter holds
    Numba's compiler state, and freeing it took 0.4-0.7 s of a 12-s cold `fastbp train` (benchmarks/NOTES.md). A
    normal exit where that cannot be done safely: a thread that a normal exit would wait for still runs, or Python
    lacks the handler runner."""
    code = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    waited_for = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if run_exit_handlers is None or waited_for:
        sys.exit(code)
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
