"""Compile fastbp's kernels ahead of time into its on-disk cache (`fastbp.compile`, `fastbp compile`).

A kernel is compiled for the argument types of each call that reaches it, so the surest way to
compile exactly what a later `fit`, `predict_proba` or `score` will load is to make those calls, on a
tiny network and a few rows: each *job* below trains one (dtype, optimizer) for one epoch and runs
every evaluation path once. Its work is microseconds; its cost is the compilation, which is saved in
the cache (`fastbp.kernels.cache`) for every later process of this machine, fastbp and Numba.

Jobs run in parallel worker processes (``spawn``) when asked: each compiles what it reaches first,
and a kernel another process is compiling is waited for and then loaded, never compiled twice
(`fastbp.kernels.cache.CheckedCache`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

#: the optimizers `compile` knows, by name: plain SGD runs the fused epoch kernel, the others the general one
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw", "rmsprop")
DTYPE_NAMES = ("float32", "float64")


@dataclass(frozen=True)
class Job:
    """One tiny training run: `optimizer` on `dtype`, through every hidden activation in `activations`."""
    dtype: str
    optimizer: str
    activations: tuple[str, ...]
    evaluate: bool  # also predict_proba, score, evaluate and loss_and_grads

    def __str__(self) -> str:
        return f"{self.dtype} {self.optimizer} {'/'.join(self.activations)}" + (" + predict" if self.evaluate else "")


def _optimizer(name: str):
    from .optim import SGD, Adam, AdamW, RMSprop
    return {"sgd": lambda: SGD(lr=0.01), "momentum": lambda: SGD(lr=0.01, momentum=0.9),
            "adam": lambda: Adam(lr=0.001), "adamw": lambda: AdamW(lr=0.001),
            "rmsprop": lambda: RMSprop(lr=0.001)}[name]()


def run_job(job: Job, on_compile=None) -> list[str]:
    """Make the calls of `job`; returns the names of the kernels it compiled in this process.
    on_compile(name) is called as each compilation starts."""
    import numpy as np
    from numba.core import event

    from .kernels.checks import all_finite
    from .kernels.training import TRANSPOSE_MIN_ROWS
    from .model import MLP

    compiled: list[str] = []

    class Listener(event.Listener):
        def on_start(self, ev):
            if on_compile is not None and _is_kernel(ev.data["dispatcher"]):
                on_compile(ev.data["dispatcher"].py_func.__qualname__)

        def on_end(self, ev):
            if _is_kernel(ev.data["dispatcher"]):
                compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    dtype = np.dtype(job.dtype).type
    rng = np.random.default_rng(0)
    X = rng.random((24, 5)).astype(dtype)
    y = np.arange(24) % 3
    model = MLP([5, *([4] * len(job.activations)), 3], activation=list(job.activations), dtype=dtype, seed=0)
    with event.install_listener("numba:compile", Listener()):
        # shuffled batches of 8 and a last one of 8: both of batch_rows' paths, as in any fit
        model.fit(X, y, epochs=1, batch_size=8, optimizer=_optimizer(job.optimizer), seed=0, verbose=0)
        if job.evaluate:
            model.fit(X, y, epochs=1, batch_size=8, optimizer=_optimizer(job.optimizer), seed=0, verbose=0,
                      validation_data=(X, y))
            model.predict_proba(X)
            model.predict_proba(X[:1])  # a few rows: `kernels.predict_kernel`'s other kernels
            model.predict_proba(np.resize(X, (TRANSPOSE_MIN_ROWS, X.shape[1])))  # ... and many rows
            model.score(X, y)
            model.evaluate(X, y)
            model.loss_and_grads(X[:4], y[:4])
            all_finite(X.reshape(-1))  # the check of big inputs (`validation._all_finite` leaves small ones to NumPy)
    return compiled


def _is_kernel(dispatcher) -> bool:
    """A fastbp kernel, not one of Numba's own implementations (of min, np.empty, ...) compiled on the way."""
    return dispatcher.py_func.__module__.startswith("fastbp") and "<locals>" not in dispatcher.py_func.__qualname__


def plan(dtypes: Sequence[str], activations: Sequence[str], optimizers: Sequence[str]) -> list[Job]:
    """The jobs that compile every kernel a fit with these settings, and its evaluation, reach.

    The kernels are compiled once for networks of relu and identity layers only and once for networks with any
    other activation (`kernels.smooth_flag`): one job per group named, per dtype and optimizer.
    """
    import numpy as np

    from .kernels import ACTIVATIONS, IDENTITY_SE, smooth_flag
    dtypes = _check_names(dtypes, DTYPE_NAMES, "dtypes")
    activations = _check_names(activations, sorted(ACTIVATIONS), "activations")
    optimizers = _check_names(optimizers, OPTIMIZER_NAMES, "optimizers")
    smooth = [smooth_flag(np.array([ACTIVATIONS[name], IDENTITY_SE])) is not None for name in activations]
    groups = [group for group in (tuple(a for a, s in zip(activations, smooth) if not s),
                                  tuple(a for a, s in zip(activations, smooth) if s)) if group]
    # the evaluation kernels depend on the dtype and the group only: the first job of each runs them
    return [Job(dtype, name, group, evaluate=i == 0)
            for dtype in dtypes for group in groups for i, name in enumerate(optimizers)]


def _check_names(values, allowed, argument: str) -> list[str]:
    values = [values] if isinstance(values, str) else [str(getattr(v, "__name__", v)) for v in values]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{argument}: unknown or empty {bad or values}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def compile(dtypes: Sequence[str] = ("float32",), activations: Sequence[str] = ("relu",),
            optimizers: Sequence[str] = ("sgd",), workers: int = 1, progress: bool = True) -> dict:
    """Compile the kernels that fits with these settings (and their predictions) need, into the cache.

    After it, the first `fit` of a new process with the same settings loads its kernels from the cache
    instead of compiling them (tens of seconds). Run it once per machine image: in a Dockerfile after
    ``pip install fastbp``, in a CI cache step, at the start of a notebook (docs/compile-cache.md).

    Parameters
    ----------
    dtypes : sequence of {"float32", "float64"}, default ("float32",)
    activations : sequence of str, default ("relu",)
        Hidden activations, as in `MLP`. Networks of relu and identity layers only run kernels compiled without
        the code of the others; naming any other (tanh, sigmoid, GELU) compiles the kernels that have it, which
        serve every network.
    optimizers : sequence of {"sgd", "momentum", "adam", "adamw", "rmsprop"}, default ("sgd",)
        "sgd" is the fused epoch kernel; the others (and SGD with an L2 penalty or clipping) share
        the general one, so naming one of them compiles it for all.
    workers : int, default 1
        Processes to compile in (spawned); more than the number of jobs is pointless. As with any
        spawned process, a script that asks for workers must call this under
        ``if __name__ == "__main__":``.
    progress : bool, default True
        A tqdm progress bar over the jobs, naming the kernel being compiled.

    Returns
    -------
    dict
        ``{"directory": cache directory or None, "seconds": wall time, "compiled": {job: [kernels]}}``.
        Directory None: no safe cache directory, so nothing is kept (a warning said why).
    """
    import concurrent.futures
    import multiprocessing

    from tqdm.auto import tqdm

    from .kernels.cache import cache_directory

    jobs = plan(dtypes, activations, optimizers)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer ≥ 1, got {workers!r}")
    start = time.perf_counter()
    compiled: dict[str, list[str]] = {}
    with tqdm(total=len(jobs), desc="fastbp compile", unit="job", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                bar.set_postfix_str(str(job))
                compiled[str(job)] = run_job(job, lambda name: bar.set_postfix_str(f"{job}: {name}"))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
                futures = {pool.submit(run_job, job): job for job in jobs}
                for future in concurrent.futures.as_completed(futures):
                    compiled[str(futures[future])] = future.result()
                    bar.set_postfix_str(f"done: {futures[future]}")
                    bar.update()
    return {"directory": cache_directory(), "seconds": time.perf_counter() - start, "compiled": compiled}


# -- the first fit's compilation, on two cores ----------------------------------------------------------

def _signatures_beside_train_epoch(dtype_name: str, smooth: bool = False,
                                   packed: bool = False) -> list[tuple[str, tuple]]:
    """(kernel, argument types) of the parts of a fit's call tree that a second process can compile
    while the first compiles `train_epoch`'s forward half: the batch's rows (first, as the first process
    reaches them about a second after the worker starts), the loss and backward pass, as
    `train_epoch` calls it (its last argument the literal False), the output activation with which `score`
    and `predict_proba` complete the fit's own forward on fewer than TRANSPOSE_MIN_ROWS rows
    (`kernels.predict_outputs_by_fit_forward`), and the kernel for one row on several threads, for a network
    with (smooth) or without tanh, sigmoid or GELU layers (`kernels.smooth_flag`), with (packed) or without
    a layer whose backward packs W (`kernels.packs_flag`). The types are those
    `fastbp.kernels.training` passes today: if a kernel's arguments change, the worker compiles a
    signature nobody loads (its time is lost, no result changes) until this list follows."""
    import numba
    import numpy as np
    from numba.core import types

    dtype = np.dtype(dtype_name)
    i1, i2 = numba.typeof(np.zeros(1, np.int64)), numba.typeof(np.zeros((1, 1), np.int64))
    f1, f2 = numba.typeof(np.zeros(1, dtype)), numba.typeof(np.zeros((1, 1), dtype))
    flag = types.boolean if smooth else types.none
    packs = types.boolean if packed else types.none
    return [
        # batch_rows(X, T, index, work, woff, sizes)
        ("batch_rows", (f2, f2, i1, f1, i2, i1)),
        # loss_and_backward(sizes, codes, params, poff, A0, T, work, woff, S, alpha, beta, out, weights, wb, p, key,
        #                   packed)
        ("loss_and_backward", (i1, i1, f1, i2, f2, f2, f1, i2, types.int64, types.float64, types.float64, f1,
                               types.literal(False), types.none, types.none, types.int64, packs)),
        # output_activation_serial(Z, code, out): after the fit's own forward, a first prediction's output
        ("output_activation_serial", (f2, types.int64, f2)),
        # predict_outputs_by_layer(X, sizes, codes, params, work, out, smooth), work (threads, size): one row at a
        # time on several threads (`kernels.predict_kernel`); last, as no fit waits for it
        ("predict_outputs_by_layer", (f2, i1, i1, f1, f2, f2, flag)),
    ]


def compile_signatures(dtype_name: str, smooth: bool = False, packed: bool = False) -> list[str]:
    """Compile `_signatures_beside_train_epoch` into the cache (run in a worker process)."""
    from . import kernels as K
    done = []
    for name, signature in _signatures_beside_train_epoch(dtype_name, smooth, packed):
        try:
            getattr(K, name).compile(signature)
            done.append(name)
        except Exception:  # noqa: BLE001  a stale signature: the main process compiles what it needs
            pass
    return done


def worker_main(dtype_name: str, smooth: bool = False, packed: bool = False) -> None:
    """The compile worker's whole life (`compile_beside`): `compile_signatures`, then exit at once.

    The collector stays off: the process lives seconds, and its full passes over Numba's objects cost
    time (`kernels.collector`). `os._exit` skips tearing down Numba's compiler state, 0.5-0.7 s of the core
    that the first epochs run on; every kernel is saved by then, and nothing is left to flush."""
    import gc
    import os
    gc.disable()
    compile_signatures(dtype_name, smooth, packed)
    os._exit(0)


#: the workers `compile_beside` started in this process, by (dtype name, smooth, packed)
_workers: dict[tuple[str, bool, bool], "subprocess.Popen"] = {}


def compile_beside(dtype, smooth: bool = False, packed: bool = False) -> "subprocess.Popen | None":
    """When the kernels of a fit of `dtype` with plain SGD (and tanh, sigmoid or GELU layers if `smooth`, a layer
    whose backward packs W if `packed`: `kernels.packs_flag`) are not in the cache, start compiling part of them in one worker process, into the cache, while this process
    compiles the rest; the compile locks (`fastbp.kernels.cache.CheckedCache`) make whichever process comes
    second load what the other compiled. Returns the worker (None when nothing is done: cached already, no
    cache directory, fewer than two CPUs, a frozen application, or ``FASTBP_COMPILE_WORKER=0`` in the
    environment); it is stopped when this process exits. `MLP.fit` calls it before a first epoch that compiles,
    and `fastbp train` before it loads its data. A second call for the same kernels returns the first's worker.

    The worker is a new interpreter (`subprocess`, the same isolation as multiprocessing's ``spawn``),
    told what to compile on its command line: multiprocessing's ``spawn`` would import the caller's
    main script again in the worker, running its top-level code (a script without an
    ``if __name__ == "__main__"`` guard would even start workers recursively).
    """
    import atexit
    import os
    import subprocess
    import sys

    import numpy as np

    from . import kernels as K
    from .kernels.cache import cache_directory, has_compiled

    key = (np.dtype(dtype).name, bool(smooth), bool(packed))
    if key in _workers:
        return _workers[key]
    if (os.environ.get("FASTBP_COMPILE_WORKER", "1").strip() == "0" or cache_directory() is None
            or (os.cpu_count() or 1) < 2 or getattr(sys, "frozen", False)  # frozen: sys.executable is the app
            or has_compiled(K.train_epoch)):
        return None
    # this very fastbp, wherever it was imported from: first on sys.path, before the working directory that
    # `python -c` puts there (a source tree of another fastbp in it would be compiled into another cache)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {root!r}); from fastbp.prebuild import worker_main; "
            f"worker_main({np.dtype(dtype).name!r}, {bool(smooth)}, {bool(packed)})")
    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, worker)
    _workers[key] = worker
    return worker


def _stop(worker) -> None:
    """Stop the worker if it still runs: what it has saved stays; a file it was writing is never
    seen half-written (Numba writes a temporary file, then renames it)."""
    if worker.poll() is None:
        worker.terminate()
        worker.wait()
