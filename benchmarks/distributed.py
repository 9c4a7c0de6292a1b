"""Data-parallel throughput on this machine: 2 ranks × 1 thread against 1 process × 1 and × 2 threads.

The reference job (784-256-128-10, relu, softmax, plain SGD lr 0.01, float32, random data; see
`reference_job.py`) at a global batch of 512, in rounds: each round runs every configuration once, one
after the other, so that a noisy neighbour slows all of them alike. Each run is a fresh process (or
`mpiexec` job) that trains one warm-up epoch (kernel cache load) and then `--epochs` timed epochs;
its throughput is the median of their samples per second. With MPI, the allreduce's share of the
epoch is measured in place (`history["allreduce_seconds"]`, which includes waiting for the slower rank),
and one allreduce of the parameter vector alone, after a barrier.

    python benchmarks/distributed.py [--rounds 3] [--samples 30720] [--epochs 3]

Configurations: ``1x1`` one process, 1 Numba thread (`fit`'s fused epoch); ``1x2`` one process, 2
threads; ``2x1`` ``mpiexec -n 2`` with `comm=`, 1 thread per rank; ``mpi1x1`` ``mpiexec -n 1`` with
`comm=`: the per-step loop and the unfused step on one rank, to separate their cost from the allreduce's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 512


def worker(samples: int, epochs: int, use_comm: bool) -> None:
    """Train the reference job; rank 0 prints one JSON line."""
    sys.path.insert(0, str(HERE))
    import fastbp
    from reference_job import LAYER_SIZES, LEARNING_RATE, reference_data

    comm = None
    if use_comm:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    X, y = reference_data(samples)
    model = fastbp.MLP(list(LAYER_SIZES), seed=0)
    history = model.fit(X, y, epochs=epochs + 1, batch_size=BATCH, optimizer=fastbp.SGD(lr=LEARNING_RATE),
                        shuffle=False, verbose=0, comm=comm)
    speeds = history["samples_per_second"][1:]
    result = {"samples_per_second": statistics.median(speeds)}
    if comm is not None:
        epoch_seconds = [samples / s for s in speeds]
        result["allreduce_share"] = statistics.median(
            a / e for a, e in zip(history["allreduce_seconds"][1:], epoch_seconds))
        result["allreduce_us_per_step"] = 1e6 * statistics.median(history["allreduce_seconds"][1:]) / (
            -(-samples // BATCH))
        result["allreduce_alone_us"] = allreduce_alone(comm, model._params.copy())
    import numba

    result["threads"] = numba.get_num_threads()
    if comm is None or comm.Get_rank() == 0:
        print(json.dumps(result), flush=True)


def allreduce_alone(comm, vector, repeats: int = 50) -> float:
    """Median µs of one in-place Allreduce of a parameter-sized vector, each after a barrier, so that it
    times the exchange alone and not a wait for the slower rank (which the in-place share includes)."""
    import time

    from mpi4py import MPI

    times = []
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, vector, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(comm.allgather(statistics.median(times)))


def worker_command(samples: int, epochs: int) -> tuple[list[str], dict]:
    """(command, environment) of one worker process of this script, NUMBA_NUM_THREADS left for the caller."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_NUM_THREADS", None)
    python = [sys.executable, str(Path(__file__).resolve()), "--worker", "--samples", str(samples),
              "--epochs", str(epochs)]
    return python, env


def launch(config: str, samples: int, epochs: int) -> dict:
    if config == "pair":  # two 1x1 processes at once, nothing shared: the most 2 ranks can reach on this machine
        return launch_pair(samples, epochs)
    python, env = worker_command(samples, epochs)
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    if config == "1x1":
        command, env["NUMBA_NUM_THREADS"] = python, "1"
    elif config == "1x2":
        command, env["NUMBA_NUM_THREADS"] = python, "2"
    elif config == "2x1":
        command = [mpiexec, "-n", "2", *python, "--comm"]  # fastbp gives each of the 2 ranks 1 of the 2 cores
    else:
        command, env["NUMBA_NUM_THREADS"] = [mpiexec, "-n", "1", *python, "--comm"], "1"
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def launch_pair(samples: int, epochs: int) -> dict:
    """Two independent 1 x 1 runs started together; their summed throughput. No communication and no waiting
    for each other: what the two cores give when each runs its own copy (shared L3, memory and clocks)."""
    python, env = worker_command(samples, epochs)
    env["NUMBA_NUM_THREADS"] = "1"
    procs = [subprocess.Popen(python, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    speeds = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pair failed:\n{err}")
        speeds.append(json.loads(out.strip().splitlines()[-1])["samples_per_second"])
    return {"samples_per_second": sum(speeds), "each": speeds, "threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=30720)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2", "mpi1x1", "pair"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--comm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.samples, args.epochs, args.comm)
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    for r in range(args.rounds):
        for config in args.configs:
            runs[config].append(launch(config, args.samples, args.epochs))
            print(f"round {r + 1} {config}: {json.dumps(runs[config][-1])}", flush=True)
    speed = {c: statistics.median(run["samples_per_second"] for run in runs[c]) for c in args.configs}
    print(f"\nreference job, global batch {BATCH}, {args.samples} samples, median of {args.rounds} rounds "
          f"x {args.epochs} epochs")
    for c in args.configs:
        line = f"  {c:>7}: {speed[c]:10,.0f} samples/s"
        if "allreduce_share" in runs[c][0]:
            share = statistics.median(run["allreduce_share"] for run in runs[c])
            step = statistics.median(run["allreduce_us_per_step"] for run in runs[c])
            alone = statistics.median(run["allreduce_alone_us"] for run in runs[c])
            line += (f"   allreduce {100 * share:4.1f}% of the epoch, {step:,.0f} µs per step "
                     f"(waiting for the slower rank included; alone, after a barrier: {alone:,.0f} µs)")
        print(line)
    if {"2x1", "1x1"} <= speed.keys():
        print(f"  2x1 / 1x1 = {speed['2x1'] / speed['1x1']:.2f}   (target ≥ 1.8)")
    if {"2x1", "1x2"} <= speed.keys():
        print(f"  2x1 / 1x2 = {speed['2x1'] / speed['1x2']:.2f}   (target ≥ 0.95)")
    if {"pair", "1x1"} <= speed.keys():
        print(f"  pair / 1x1 = {speed['pair'] / speed['1x1']:.2f}   (two independent 1x1 runs at once: the cores' own "
              f"scaling, no MPI)")
    if {"2x1", "pair"} <= speed.keys():
        print(f"  2x1 / pair = {speed['2x1'] / speed['pair']:.2f}   (what the allreduce and the per-step loop cost)")
    if {"2x1", "mpi1x1"} <= speed.keys():
        print(f"  2x1 / mpi1x1 = {speed['2x1'] / speed['mpi1x1']:.2f}   (the same per-step loop on 1 and 2 ranks)")


if __name__ == "__main__":
    main()
