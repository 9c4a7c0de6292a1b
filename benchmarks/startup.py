"""Start-up cost of fastbp, each case in fresh processes with new, empty HOME and NUMBA_CACHE_DIR.

- import: `python -c "import fastbp"` (nothing is compiled at import).
- train cold: `python -m fastbp.cli train --quiet`, from start to exit, with an empty cache: it compiles
  every kernel the fit and the final score need.
- train warm: the same command again, now loading those kernels from the cache.
- compile, then train: `python -m fastbp.cli compile` into a new empty cache (its time is shown apart),
  then the first `train` in it.
- reference fit cold / warm: the first `fit` (one epoch on 64 rows) + `predict_proba` of the reference
  network 784-256-128-10, float32, SGD, in one process: the time until training starts.
- jax jit (a peer, skipped when jax is not installed): the time jax takes to import and compile
  (`jax.jit(...).lower(...).compile()`) the same training step as `fastbp train`'s (64-128-64-10,
  relu, softmax cross-entropy, plain SGD on a batch of 16).

Each row gives the median wall time and the median CPU time (user + system of the process and its
children): on a machine that others share, the CPU time is the steadier of the two.

    python benchmarks/startup.py                   # 3 runs of each
    python benchmarks/startup.py --runs 5 --json startup.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the issue's targets, in seconds of wall time on an idle 2-core machine
TARGETS = {"import": 0.3, "train cold": 10.0, "train warm": 1.0, "train after compile": 2.0,
           "reference fit cold": 12.0}

REFERENCE_FIT = """
import numpy as np, fastbp
X = np.random.default_rng(0).random((64, 784), dtype=np.float32)
y = np.arange(64) % 10
model = fastbp.MLP([784, 256, 128, 10], activation="relu", output="softmax", dtype=np.float32, seed=0)
model.fit(X, y, epochs=1, batch_size=16, optimizer=fastbp.SGD(lr=0.01), shuffle=False, verbose=0)
model.predict_proba(X)
"""

JAX_STEP = """
import jax, jax.numpy as jnp
sizes = [64, 128, 64, 10]
key = jax.random.PRNGKey(0)
params = [(jax.random.normal(key, (m, n), jnp.float32) * 0.1, jnp.zeros(m, jnp.float32))
          for n, m in zip(sizes[:-1], sizes[1:])]
def loss(params, x, y):
    a = x
    for W, b in params[:-1]:
        a = jax.nn.relu(a @ W.T + b)
    W, b = params[-1]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(a @ W.T + b) * y, axis=1))
def step(params, x, y):
    grads = jax.grad(loss)(params, x, y)
    return [(W - 0.05 * gW, b - 0.05 * gb) for (W, b), (gW, gb) in zip(params, grads)]
x = jnp.zeros((16, 64), jnp.float32); y = jnp.zeros((16, 10), jnp.float32)
compiled = jax.jit(step).lower(params, x, y).compile()
jax.block_until_ready(compiled(params, x, y))
"""


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one process; raises RuntimeError if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fresh_env(root: Path) -> dict:
    """The environment with HOME, XDG_CACHE_HOME and NUMBA_CACHE_DIR under a new directory `root`."""
    (root / "home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME",)}
    env.update(HOME=str(root / "home"), NUMBA_CACHE_DIR=str(root / "numba"))
    return env


PY = [sys.executable]
TRAIN = PY + ["-m", "fastbp.cli", "train", "--quiet"]


def one_round() -> dict[str, tuple[float, float]]:
    """Every case once, each in its own new cache directories."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="fastbp-startup-") as tmp:
        tmp = Path(tmp)
        results["import"] = timed(PY + ["-c", "import fastbp"], fresh_env(tmp / "import"))
        env = fresh_env(tmp / "train")
        results["train cold"] = timed(TRAIN, env)
        results["train warm"] = timed(TRAIN, env)
        env = fresh_env(tmp / "compile")
        results["fastbp compile"] = timed(PY + ["-m", "fastbp.cli", "compile"], env)
        results["train after compile"] = timed(TRAIN, env)
        env = fresh_env(tmp / "reference")
        results["reference fit cold"] = timed(PY + ["-c", REFERENCE_FIT], env)
        results["reference fit warm"] = timed(PY + ["-c", REFERENCE_FIT], env)
        if importlib.util.find_spec("jax") is not None:
            results["jax jit (peer)"] = timed(PY + ["-c", JAX_STEP], fresh_env(tmp / "jax"))
    return results


def table(rounds: list[dict]) -> str:
    lines = [f"| case | wall s (median of {len(rounds)}) | CPU s | target (wall) |", "|---|---:|---:|---|"]
    for case in rounds[0]:
        wall = statistics.median(r[case][0] for r in rounds)
        cpu = statistics.median(r[case][1] for r in rounds)
        target = TARGETS.get(case)
        verdict = "" if target is None else f"≤ {target} s: {'met' if wall <= target else 'NOT met'}"
        lines.append(f"| {case} | {wall:.2f} | {cpu:.2f} | {verdict} |")
    lines.append("\nCPU s: user + system time of the process and its children (compile workers included).")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", "--warm-runs", type=int, default=3, help="rounds of every case; medians are shown")
    parser.add_argument("--json", type=Path, help="write every round's (wall, CPU) timings as JSON")
    args = parser.parse_args(argv)
    rounds = [one_round() for _ in range(args.runs)]
    print(table(rounds))
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    return rounds


if __name__ == "__main__":
    main()
