"""Two threads against one, in turns: shows the stretches in which this machine runs two threads slowly.

On the project's shared 2-core machine, for stretches of tens of seconds, every run on two threads is
slower (the reference job's epoch at batch 16 by half again, a parallel loop's start from 1.5 to
2.6 µs) while runs on one thread are unchanged. No process of ours runs then, and the kernel reports no
steal time. A comparison whose two sides fall in different stretches is off by up to 1.5x, so this
script makes them visible: for about a second each round trains the reference job (`reference_job.py`) on
two threads and on one, taking turns, and prints the best epoch of each (scaled to 60,000 samples) and
their ratio. A round whose two-thread epoch took more than `--slow` times the run's best is marked slow.

Every pair of epochs must end with bit-identical weights (fastbp's determinism rule); the script
stops with an error if they do not.

    python benchmarks/two_threads.py                        # 60 s at batch 16
    python benchmarks/two_threads.py --seconds 300 --batch 512 --samples 15360 --json two_threads.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

import fastbp
from fastbp.parallel import active_layer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_job import LAYER_SIZES, LEARNING_RATE, reference_data

FULL_EPOCH = 60_000


def epoch_seconds(X: np.ndarray, y: np.ndarray, batch: int, threads: int) -> tuple[float, np.ndarray]:
    """(seconds of one `fit` epoch scaled to 60,000 samples, the weights after it) on `threads` threads."""
    numba.set_num_threads(threads)
    model = fastbp.MLP(LAYER_SIZES, seed=0)
    start = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch, optimizer=fastbp.SGD(LEARNING_RATE), shuffle=False, verbose=0)
    seconds = (time.perf_counter() - start) * FULL_EPOCH / len(X)
    return seconds, np.concatenate([a.ravel() for a in model.weights + model.biases])


def run(seconds: float, batch: int, samples: int, slow: float, round_seconds: float = 1.0) -> list[dict]:
    """Rounds of `round_seconds` for `seconds` (at least one round), each printed as it ends: in a round,
    epochs on two threads and on one take turns, and each keeps its best."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        raise SystemExit("two_threads.py needs 2 threads: unset NUMBA_NUM_THREADS or set it to 2 or more")
    X, y = reference_data(samples)
    for threads in (2, 1):  # compile, and fill the caches
        epoch_seconds(X[:2 * batch], y[:2 * batch], batch, threads)
    rounds, end = [], time.time() + seconds
    while not rounds or time.time() < end:
        two = one = math.inf
        round_end = time.time() + round_seconds
        while math.isinf(one) or time.time() < round_end:
            seconds_two, weights_two = epoch_seconds(X, y, batch, 2)
            seconds_one, weights_one = epoch_seconds(X, y, batch, 1)
            if not np.array_equal(weights_two, weights_one):
                raise SystemExit("1 and 2 threads gave different weights: fastbp's determinism rule is broken")
            two, one = min(two, seconds_two), min(one, seconds_one)
        rounds.append({"time": time.strftime("%H:%M:%S"), "two_threads_s": two, "one_thread_s": one})
        print(f"{rounds[-1]['time']}  2 threads {two:.3f} s  1 thread {one:.3f} s  2/1 {two / one:.2f}", flush=True)
    best = min(r["two_threads_s"] for r in rounds)
    for r in rounds:
        r["slow"] = r["two_threads_s"] > slow * best
    return rounds


def summary(rounds: list[dict]) -> str:
    lines = [f"{len(rounds)} rounds, {sum(r['slow'] for r in rounds)} slow"]
    for name, group in (("fast", [r for r in rounds if not r["slow"]]), ("slow", [r for r in rounds if r["slow"]])):
        if group:
            two = statistics.median(r["two_threads_s"] for r in group)
            one = statistics.median(r["one_thread_s"] for r in group)
            lines.append(f"{name} rounds: median 2 threads {two:.3f} s, 1 thread {one:.3f} s, 2/1 {two / one:.2f}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep taking rounds")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4000, help="samples per epoch (times scaled to 60,000)")
    parser.add_argument("--slow", type=float, default=1.1,
                        help="a round is slow when its 2-thread epoch took more than this times the run's best")
    parser.add_argument("--round-seconds", type=float, default=1.0,
                        help="each round takes the best of its epochs over about this long")
    parser.add_argument("--json", help="write the rounds to this file")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    print(f"reference job at batch {args.batch}, {args.samples} samples a round, fastbp {fastbp.__version__}, "
          f"numba {numba.__version__}")
    rounds = run(args.seconds, args.batch, args.samples, args.slow, args.round_seconds)
    print(summary(rounds) + f"\nthreading layer: {active_layer()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "samples": args.samples, "rounds": rounds}, f, indent=1)
    return rounds


if __name__ == "__main__":
    main()
