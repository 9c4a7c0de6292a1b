"""Synchronous data-parallel training over MPI (mpi4py): `MLP.fit(..., comm=MPI.COMM_WORLD)`.

The semantics are those of Horovod and PyTorch DDP. Rank 0's initial weights and optimizer state are
broadcast; for every global batch of S samples each rank r computes, with the compiled
`kernels.forward_backward`, ``g_r = (1/S) Σ_{s in its share} ∂E_s/∂θ`` (the batch-mean gradient of its
share weighted by its share's size S_r/S); one in-place ``Allreduce`` (sum) of the flat gradient gives
every rank ``g = Σ_r g_r``, the gradient of the whole batch; then every rank applies the L2 penalty,
clipping and the compiled `kernels.optimizer_step` to the same g, so the weights stay identical on every
rank. `batch_size` is the global batch, so a job follows the same curve on any number of ranks.

Data: every rank passes the same (X, y) and takes its contiguous part of each global batch of the shared
permutation (``shard="global"``), or each rank passes only its own rows (``shard="local"``). Launch
with ``mpiexec -n P python script.py`` (docs/distributed.md). Needs ``pip install fastbp[mpi]``.
"""
from __future__ import annotations

import contextlib
import math
import mmap
import os
import sys
import time
from typing import Iterator

import numba
import numpy as np

from . import kernels as K
from .buffers import empty_on_a_line
from .kernels.optimizers import LR
from .parallel import parallel_section

#: rows per block when evaluating validation data: bounds the (rows, n_L) output buffers
VALIDATION_ROWS = 1 << 15
#: the environment variables that give the number of ranks on this node (MPICH/Hydra, Open MPI, Slurm)
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
_threads_said = False


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("comm= needs mpi4py and an MPI library: pip install 'fastbp[mpi]' "
                          "(mpi4py and MPICH's wheel)") from None
    return MPI


# ----------------------------------------------------------------------------- threads
def local_ranks() -> int | None:
    """The number of ranks the launcher started on this node, from its environment, or None."""
    for name in _LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def threads_per_rank(rank: int = 0) -> int:
    """Set Numba's thread count so that this node's ranks share its cores without oversubscribing them.

    ``max(1, cores // local ranks)``, the local rank count read from the launcher (MPICH's
    ``MPI_LOCALNRANKS``, Open MPI's ``OMPI_COMM_WORLD_LOCAL_SIZE``). An explicit ``NUMBA_NUM_THREADS``
    wins. Rank 0 says what it chose once per process, on stderr. Returns the thread count in use.
    """
    global _threads_said
    ranks = local_ranks()
    if "NUMBA_NUM_THREADS" in os.environ or ranks is None:
        return numba.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, min(cores // ranks, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    if rank == 0 and not _threads_said:
        print(f"fastbp: {ranks} ranks on this node share {cores} cores: {threads} Numba thread(s) per rank "
              "(set NUMBA_NUM_THREADS to choose)", file=sys.stderr, flush=True)
        _threads_said = True
    return threads


# ----------------------------------------------------------------------------- memory maps
def writeable_map(X):
    """A read-only ``np.memmap`` (``np.load(path, mmap_mode="r")``) mapped again copy-on-write, so that
    the input checks pass it through instead of copying it (they copy read-only arrays); anything else
    as it is. Copy-on-write pages are read from the file on first touch and never written back."""
    if not isinstance(X, np.memmap) or X.flags.writeable or not X.flags.c_contiguous or X.size == 0:
        return X
    mapping = getattr(X, "_mmap", None)
    if mapping is None or not X.filename:
        return X
    start = np.frombuffer(mapping, np.uint8).ctypes.data  # where the mapping of the file begins in memory
    mapped_from = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
    offset = mapped_from + (X.ctypes.data - start)
    return np.memmap(X.filename, dtype=X.dtype, mode="c", offset=offset, shape=X.shape, order="C")


# ----------------------------------------------------------------------------- the communicator
class Context:
    """One fit's communicator: the collective checks, broadcasts, reductions and the data split.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    shard : {"global", "local"}
        "global": every rank holds the same (X, y); "local": each rank holds only its own rows.
    """

    def __init__(self, comm, shard: str = "global") -> None:
        MPI = _mpi()
        if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py communicator such as MPI.COMM_WORLD, got {comm!r}")
        if shard not in ("global", "local"):
            raise ValueError(f"shard must be 'global' (every rank passes the same X, y) or 'local' (each rank "
                             f"passes its own rows), got {shard!r}")
        self.MPI, self.comm, self.shard = MPI, comm, shard
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.signature: dict = {}
        self.n_local: list[int] = []
        self.threads = threads_per_rank(self.rank)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collective checks
    @contextlib.contextmanager
    def checks(self) -> Iterator[None]:
        """Run the input checks of every rank, then compare `signature` across ranks in one allgather.

        A rank whose own checks fail shares its error, so every rank raises (a ValueError naming the rank
        on the others) instead of waiting for it in a later collective.
        """
        try:
            yield
        except (ValueError, TypeError) as exc:
            self.comm.allgather(("error", f"{type(exc).__name__}: {exc}"))
            raise
        reports = self.comm.allgather(("ok", {"shard": self.shard, **self.signature}))
        failed = [(r, what) for r, (status, what) in enumerate(reports) if status == "error"]
        if failed:
            raise ValueError("; ".join(f"rank {r} rejected its input ({what})" for r, what in failed))
        self._compare([what for _, what in reports])

    def _compare(self, signatures: list[dict]) -> None:
        for key, mine in signatures[0].items():
            values = [s[key] for s in signatures]
            if key == "n_samples":
                if self.shard == "global" and len(set(values)) > 1:
                    raise ValueError(f"with shard='global' every rank must pass the same X, but the ranks hold "
                                     f"{values} samples; pass the same data, or shard='local' for per-rank shards")
                self.n_local = [int(v) for v in values]
            elif any(v != mine for v in values):
                shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                raise ValueError(f"the ranks disagree on {key} ({shown}); every rank must build the same model "
                                 "and call fit with the same settings")

    # ------------------------------------------------------------------ broadcasts and reductions
    def broadcast_start(self, model, optimizer, state: np.ndarray) -> None:
        """Every rank starts from rank 0's weights and optimizer state (`state` bound to the model)."""
        self.comm.Bcast(model._params, root=0)
        self.comm.Bcast(state, root=0)
        optimizer.steps, optimizer.epochs = self.comm.bcast((optimizer.steps, optimizer.epochs), root=0)

    def sum(self, values) -> np.ndarray:
        """Σ over ranks of a few float64 numbers."""
        values = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on one."""
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

    def barrier(self) -> None:
        self.comm.Barrier()

    def root_result(self, function, *args):
        """`function(*args)` run on rank 0, its result (or its exception, raised on every rank) broadcast."""
        result = error = None
        if self.is_root:
            try:
                result = function(*args)
            except (OSError, ValueError, TypeError) as exc:
                error = exc
        result, error = self.comm.bcast((result, error), root=0)
        if error is not None:
            raise error
        return result

    # ------------------------------------------------------------------ data
    def split_rng(self, rng: np.random.Generator) -> np.random.Generator:
        """The generator for `validation_split`: the shared one with shard='global'; with shard='local' one
        of this rank's own, seeded from one draw of the shared one, whose state so stays the same on every
        rank (a permutation of a rank's own N_r rows would consume a different number of draws)."""
        if self.shard == "global":
            return rng
        return np.random.default_rng([int(rng.integers(2 ** 63)), self.rank])

    def epoch_order(self, rng: np.random.Generator, n: int, shuffle: bool) -> np.ndarray:
        """This epoch's sample order: the shared permutation (global), or this rank's own (local)."""
        if not shuffle:
            return np.arange(n)
        if self.shard == "global":
            return rng.permutation(n)
        return np.random.default_rng([int(rng.integers(2 ** 63)), self.rank]).permutation(n)

    def steps(self, n: int, batch_size: int) -> np.ndarray:
        """(steps, 3): row i holds [lo, hi), this rank's rows of step i in its epoch order, and S_i,
        the global batch of step i.

        global: step i is rows [iB, iB + S_i) of the shared order, and rank r takes the contiguous part
        [iB + rS_i/P, iB + (r+1)S_i/P) (rounded down). local: the steps are those of the total
        N = Σ_r N_r samples, and rank r splits its own order into as many contiguous, nearly equal parts.
        """
        P, r = self.size, self.rank
        if self.shard == "global":
            starts = np.arange(0, n, batch_size)
            sizes = np.minimum(batch_size, n - starts)
            lo, hi = starts + r * sizes // P, starts + (r + 1) * sizes // P
        else:
            counts = np.array(self.n_local, dtype=np.int64)
            n_steps = -(-int(counts.sum()) // batch_size)
            i = np.arange(n_steps + 1)
            bounds = i[:, None] * counts[None, :] // n_steps  # (steps + 1, P)
            sizes = np.diff(bounds, axis=0).sum(axis=1)
            lo, hi = bounds[:-1, r], bounds[1:, r]
        return np.stack([lo, hi, sizes], axis=1)

    def n_total(self, n: int) -> int:
        """Samples in one epoch over every rank."""
        return n if self.shard == "global" else int(sum(self.n_local))

    # ------------------------------------------------------------------ validation
    def validation_sums(self, model, X_val, T_val) -> tuple[float, float | None]:
        """(mean loss, accuracy) over the whole validation set, each rank evaluating its rows (its
        contiguous part with shard='global', its own rows with 'local') in blocks of VALIDATION_ROWS."""
        N = X_val.shape[0]
        lo, hi = (self.rank * N // self.size, (self.rank + 1) * N // self.size) if self.shard == "global" else (0, N)
        loss_sum = correct = 0.0
        for start in range(lo, hi, VALIDATION_ROWS):
            stop = min(start + VALIDATION_ROWS, hi)
            loss, accuracy = model._loss_and_accuracy(X_val[start:stop], T_val[start:stop])
            loss_sum += loss * (stop - start)
            correct += 0.0 if accuracy is None else accuracy * (stop - start)
        loss_sum, correct, n = self.sum([loss_sum, correct, hi - lo])
        return loss_sum / n, (None if model.output == "identity" else correct / n)


def signature(model, X, X_dtype: str, seed, epochs, batch_size, shuffle, optimizer, alpha, clip_norm, validation,
              stopper, checkpoint_every, resume) -> dict:
    """What every rank of a fit must agree on (`Context.checks` compares it), and its sample count."""
    settings = {k: (type(v).__name__ if callable(v) else v) for k, v in optimizer._settings().items()}
    return {"the input width (X.shape[1])": X.shape[1], "X's dtype": X_dtype,
            "layer_sizes": list(model.layer_sizes), "activations": list(model.activations), "output": model.output,
            "the model's dtype": np.dtype(model.dtype).name, "the model's seed": model.seed, "seed": seed,
            "epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
            "optimizer": (type(optimizer).__name__, settings),
            "alpha": alpha, "clip_norm": clip_norm, "validation": validation is not None,
            "patience": (stopper.patience, stopper.min_delta, stopper.monitor),
            "checkpoint_every": checkpoint_every, "resume": resume is not None, "n_samples": X.shape[0]}


class Run:
    """One data-parallel fit's buffers and its per-step loop (the counterpart of `model._Run`).

    A step: this rank's share through the compiled `K.forward_backward` (gradient scaled by 1/S of the
    global batch), ``Allreduce`` of the flat gradient (in place), then L2, clipping and
    `K.optimizer_step` on every rank. An epoch that diverges is undone on every rank.
    """

    def __init__(self, model, optimizer, batch_size: int, alpha: float, clip_norm: float | None,
                 ctx: Context, n: int):
        self.model, self.optimizer, self.batch_size, self.ctx = model, optimizer, batch_size, ctx
        self.state = optimizer.bind(model._params)
        self.plan = ctx.steps(n, batch_size)
        self.capacity = max(1, int((self.plan[:, 1] - self.plan[:, 0]).max(initial=1)))
        self.grads = empty_on_a_line(model._params.shape, model.dtype)
        self.work = model._workspace(self.capacity)
        self.poff = model._offsets
        self.woff = K.workspace_offsets(model._sizes, self.capacity)
        self.alpha, self.max_norm = alpha, clip_norm or 0.0
        self.diverged_loss = math.nan
        self.allreduce_seconds = 0.0

    def epoch(self, X, T, order, lr: float, history, sw=None) -> bool:
        """Train one epoch at learning rate `lr`, append its numbers (reduced over ranks) to history;
        False, with nothing changed on any rank, if it diverged. `sw`, sample weights, must be None
        (`MLP.fit` refuses them with comm)."""
        from .model import _Run  # its end of an epoch: the divergence check and the history

        m, opt, ctx = self.model, self.optimizer, self.ctx
        hyper = K.hyper_parameters(**opt.step_settings(lr), l2=self.alpha, max_norm=self.max_norm)
        saved = m._params.copy(), self.state.copy(), opt.steps
        self.allreduce_seconds = 0.0
        start = time.perf_counter()
        with parallel_section():
            loss_sum, correct = self._steps(X, T, order, hyper)
        seconds = time.perf_counter() - start
        loss_sum, correct = ctx.sum([loss_sum, correct])
        seconds = ctx.comm.allreduce(seconds, op=ctx.MPI.MAX)
        if not _Run.finish(self, loss_sum, correct, ctx.n_total(X.shape[0]), seconds, hyper[LR], saved, history):
            return False
        history.setdefault("allreduce_seconds", []).append(ctx.comm.allreduce(self.allreduce_seconds,
                                                                               op=ctx.MPI.MAX))
        return True

    def _steps(self, X, T, order, hyper) -> tuple[float, float]:
        """Every step of one epoch; returns this rank's (Σ S_r·E_r (+ the penalty, on rank 0), correct)."""
        m, opt, ctx = self.model, self.optimizer, self.ctx
        MPI, comm, grads = ctx.MPI, ctx.comm, self.grads
        l2, max_norm, root = hyper[K.optimizers.L2], hyper[K.optimizers.MAX_NORM], ctx.is_root
        loss_sum = correct = 0.0
        for lo, hi, S in self.plan:
            S_r = int(hi - lo)
            if S_r > 0:
                A0, Tb = K.batch_rows(X, T, order[lo:hi], self.work, self.woff, m._sizes)
                loss, right = K.forward_backward(m._sizes, m._codes, m._params, self.poff, A0, Tb, self.work,
                                                 self.woff, S_r, 1.0 / S, 0.0, grads, None, None, 0, m._smooth,
                                                 m._packed)
                loss_sum += loss * S_r
                correct += right
            else:  # a global batch smaller than the number of ranks leaves this rank nothing
                grads[...] = 0
            tick = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
            self.allreduce_seconds += time.perf_counter() - tick
            if l2 > 0:
                penalty = K.add_l2_penalty(m._params, self.poff, l2 / S, grads)
                loss_sum += penalty * S if root else 0.0  # the penalty counts once, not once per rank
            if max_norm > 0:
                K.clip_grad_norm(grads, max_norm)
            opt.steps += 1
            K.optimizer_step(opt.code, m._params, grads, self.state, hyper, opt.steps)
        return loss_sum, correct
