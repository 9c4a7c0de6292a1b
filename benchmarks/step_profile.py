"""Where one SGD step of `MLP.fit` spends its time, measured inside the compiled step, kernel by kernel.

`timed_step` is `training.forward_with_step` followed by `training.loss_and_backward` (plain SGD, relu hidden
layers, no dropout or sample weights), with the CPU's cycle counter read between the kernel calls: no Python
and no dispatch between the parts, and the workspaces taking turns as in `train_epoch`. The batches are fresh
rows taken in order from the reference data (40,960 rows by default, 128 MB of float32: more than the L3 cache), as
`MLP.fit(shuffle=False)` reads them. Each part's time is its median over the steps; the step's is the median of the
whole steps.

Before any timing, the script checks that it profiles the real step: an epoch of `timed_step` calls must leave
the weights bit-identical to `train_epoch`'s on the same batches; it stops with an error if not.

The report ends with the machine's float32 FMA peak (`peers.fma_peak_gflops`) and the GFLOP/s of an outside
library on its best shape, NumPy's matmul (OpenBLAS) of two 4,096 x 4,096 matrices: the share of the peak that a
whole step, with its small layers and its loss, can be measured against.

    python benchmarks/step_profile.py                               # the reference network, batches 1 to 512
    python benchmarks/step_profile.py --sizes 784 1024 1024 10 --batches 64 512 --steps 100

The cycle counter is LLVM's `readcyclecounter` (x86's time-stamp counter, constant-rate), converted to seconds
by timing the whole run with `time.perf_counter`. x86-64 only.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

import fastbp
from fastbp import kernels as K
from fastbp.buffers import zeros_on_a_line
from fastbp.kernels import training as T
from peers import best_time, fma_peak_gflops
from reference_job import LEARNING_RATE, reference_data


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (rdtsc on x86), for compiled code."""
    def codegen(context, builder, signature, args):
        counter = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(counter, [])
    return types.int64(), codegen


@njit
def cycles() -> int:
    """`_cycles` from Python."""
    return _cycles()


@njit
def _lap(ticks, i, t0):
    """ticks[i] = cycles since t0; returns (now, i + 1)."""
    now = _cycles()
    ticks[i] = now - t0
    return now, i + 1


@njit
def timed_step(sizes, codes, params, poff, A0_prev, work_prev, A0, Tb, work, woff, lr, packed, ticks):
    """`forward_with_step` then `loss_and_backward` of `train_epoch`'s SGD step, each kernel call's cycles in
    `ticks`, in the order of `parts`. Returns the batch-mean loss."""
    L = sizes.shape[0] - 1
    S_prev, S = A0_prev.shape[0], A0.shape[0]
    t0, i = _cycles(), 0
    A_in = A0
    for l in range(1, L + 1):  # forward_with_step
        W, b = T._weights(params, poff, sizes, l)
        D_prev = T._buffer(work_prev, woff, sizes, l, T.D_, S_prev)
        A_prev = T._buffer(work_prev, woff, sizes, l - 1, T.A_, S_prev) if l > 1 else A0_prev
        A_out = T._buffer(work, woff, sizes, l, T.A_, S)
        code = codes[l - 1] if l < L else T.IDENTITY
        T.dense_update_forward(D_prev, A_prev, 1.0, A_in, W, b, T.dense_code(code), A_out, None)
        A_in = A_out
        t0, i = _lap(ticks, i, t0)
    loss, _ = T.output_and_loss(sizes, codes, Tb, work, woff, S, None)
    t0, i = _lap(ticks, i, t0)
    alpha = -lr / S
    for l in range(L, 0, -1):  # loss_and_backward, weights=False: W^l is left to the next forward_with_step
        W, g = T._weights(params, poff, sizes, l)
        D = T._buffer(work, woff, sizes, l, T.D_, S)
        if l > 1:
            A_in = T._buffer(work, woff, sizes, l - 1, T.A_, S)
            D_in = T._buffer(work, woff, sizes, l - 1, T.D_, S)
            if packed is None:
                T.dense_backward(D, W, A_in, T.dense_code(codes[l - 2]), D_in, None)
            else:
                T.dense_backward(D, W, A_in, T.dense_code(codes[l - 2]), D_in, T._packs(work, woff, sizes))
            t0, i = _lap(ticks, i, t0)
        T.bias_gradient(D, alpha, 1.0, g)
        T.scale_rows(D, alpha, sizes[l])
        t0, i = _lap(ticks, i, t0)
    return loss


def parts(sizes, S: int) -> list[tuple[str, int]]:
    """(name, FLOP) of each part of `timed_step`, in its order: multiply-adds x 2 in the steady state (the previous
    batch also had S rows), 0 for the parts that are not products."""
    L = len(sizes) - 1
    table = [(f"step + forward {l}", 2 * 2 * S * sizes[l] * sizes[l - 1]) for l in range(1, L + 1)]
    table.append(("output and loss", 0))
    for l in range(L, 0, -1):
        if l > 1:
            table.append((f"backward δ^{l - 1}", 2 * S * sizes[l] * sizes[l - 1]))
        table.append((f"bias gradient, α δ^{l}", 0))
    return table


class Run:
    """A network's arrays for one batch size: a new model's weights, the reference data, the workspaces."""

    def __init__(self, sizes, batch: int, steps: int):
        self.sizes = np.array(sizes, np.int64)
        model = fastbp.MLP(list(sizes), activation="relu", output="softmax", seed=0)
        self.codes, self.params0 = model._codes, model._params.copy()
        self.poff, self.woff = K.param_offsets(self.sizes), K.workspace_offsets(self.sizes, batch)
        self.packed = T.packs_flag(self.sizes)
        self.batch, self.steps = batch, steps
        X, y = reference_data(batch * steps, layer_sizes=tuple(sizes))
        self.X, self.T = X.astype(np.float32), np.eye(sizes[-1], dtype=np.float32)[y]

    def epoch(self, params) -> np.ndarray:
        """`steps` timed steps on the batches in order, then the last pending step; returns ticks (steps, parts)."""
        size = self.woff[-1, 2]
        work = zeros_on_a_line(2 * size, np.float32)  # aligned as `MLP.fit`'s
        ticks = np.zeros((self.steps, len(parts(self.sizes, self.batch))), np.int64)
        A0_prev, work_prev = self.X[:0], work[size:]
        for i in range(self.steps):
            rows = slice(i * self.batch, (i + 1) * self.batch)
            work_i = work[(i % 2) * size:(i % 2 + 1) * size]
            timed_step(self.sizes, self.codes, params, self.poff, A0_prev, work_prev, self.X[rows], self.T[rows],
                       work_i, self.woff, LEARNING_RATE, self.packed, ticks[i])
            A0_prev, work_prev = self.X[rows], work_i
        K.forward_with_step(self.sizes, self.codes, params, self.poff, A0_prev, work_prev, self.X[:0], work_prev,
                            self.woff, None, np.int64(0), None)
        return ticks

    def check_against_train_epoch(self) -> None:
        """Stop unless an epoch of `timed_step` leaves `train_epoch`'s weights, bit for bit."""
        ours, theirs = self.params0.copy(), self.params0.copy()
        self.epoch(ours)
        work = zeros_on_a_line(2 * self.woff[-1, 2], np.float32)
        K.train_epoch(self.X, self.T, np.arange(self.X.shape[0]), self.batch, self.sizes, self.codes, theirs, work,
                      LEARNING_RATE, None, None, 0, 0, None, self.packed)
        if not np.array_equal(ours, theirs):
            sys.exit(f"batch {self.batch}: the profiled step's weights differ from train_epoch's "
                     f"({hashlib.sha256(ours.tobytes()).hexdigest()[:12]} against "
                     f"{hashlib.sha256(theirs.tobytes()).hexdigest()[:12]}): the profile is not of the real step")


def profile(sizes, batch: int, steps: int, rounds: int) -> tuple[np.ndarray, float]:
    """(median µs of each part, median µs of a whole step) over `rounds` epochs of `steps` steps."""
    run = Run(sizes, batch, steps)
    run.check_against_train_epoch()
    parts, wholes = [], []
    for _ in range(rounds):
        c0, t0 = cycles(), time.perf_counter()
        ticks = run.epoch(run.params0.copy())
        us_per_tick = (time.perf_counter() - t0) / (cycles() - c0) * 1e6
        parts.append(ticks * us_per_tick)
        wholes.append(ticks.sum(axis=1) * us_per_tick)
    parts, wholes = np.concatenate(parts), np.concatenate(wholes)
    return np.median(parts, axis=0), float(np.median(wholes))


def matmul_gflops(n: int = 4096) -> float:
    """NumPy's (OpenBLAS's) float32 matmul of two n x n matrices, in GFLOP/s (`peers.best_time`)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    out = np.empty_like(a)
    return 2 * n ** 3 / best_time(lambda: np.matmul(a, a, out=out)) / 1e9


def table(sizes, batch: int, part_us: np.ndarray, step_us: float, peak: float) -> str:
    """A Markdown table of one batch size's parts."""
    names, flops = zip(*parts(sizes, batch))
    lines = [f"**{'-'.join(map(str, sizes))}, batch {batch}**: step {step_us:.1f} µs, "
             f"{sum(flops) / step_us / 1e3:.1f} GFLOP/s, {sum(flops) / step_us / 1e3 / peak:.0%} of the peak", "",
             "| part | µs | share | GFLOP/s | of peak |", "|---|---:|---:|---:|---:|"]
    for name, us, flop in zip(names, part_us, flops):
        rate = f"{flop / us / 1e3:.1f} | {flop / us / 1e3 / peak:.0%}" if flop else "– | –"
        lines.append(f"| {name} | {us:.1f} | {us / step_us:.0%} | {rate} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 256, 128, 10])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128, 512])
    parser.add_argument("--samples", type=int, default=40_960, help="rows per epoch (fewer at batch 1)")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (default: from --samples)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=4096, help="n of the outside library's n x n matmul")
    args = parser.parse_args(argv)
    if platform.machine() not in ("x86_64", "AMD64"):
        sys.exit("step_profile reads x86's time-stamp counter: x86-64 only")
    peak = fma_peak_gflops()
    for batch in args.batches:
        steps = args.steps or max(64, (args.samples // 8 if batch == 1 else args.samples) // batch)
        part_us, step_us = profile(args.sizes, batch, steps, args.rounds)
        print(table(args.sizes, batch, part_us, step_us, peak), end="\n\n")
    outside, n = matmul_gflops(args.matmul_size), args.matmul_size
    print(f"FMA peak {peak:.0f} GFLOP/s (`peers.fma_peak_gflops`); NumPy's matmul of {n:,} x {n:,} float32 "
          f"{outside:.0f} GFLOP/s, {outside / peak:.0%} of it.")


if __name__ == "__main__":
    main()
