"""Start-up cost of fastbp: `import fastbp` and the first `fit` of a new model, each in a fresh process.

- cold: NUMBA_CACHE_DIR points at a new, empty temporary directory, so every kernel the first fit
  and predict_proba need is compiled; the compile cost is this run's time minus a warm run's.
- warm: the same directory again, now holding the compiled kernels (the issue's target: import +
  first fit starts training within 1.5 s).
- default cache: without NUMBA_CACHE_DIR, fastbp's own on-disk cache, after one priming run.

The first fit trains one epoch on 64 samples of the reference network (about a millisecond of
work), so its time is the time until training starts.

    python benchmarks/startup.py                 # 1 cold run, 3 warm runs of each kind
    python benchmarks/startup.py --warm-runs 5 --json startup.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the target of the issue for import + first fit with a warm cache, in seconds
WARM_TARGET_SECONDS = 1.5

#: run in a fresh interpreter; prints the timings as JSON on its last line
CHILD = """
import json, time
start = time.perf_counter()
import fastbp
imported = time.perf_counter()
import numpy as np
X = np.random.default_rng(0).random((64, 784), dtype=np.float32)
y = np.arange(64) % 10
model = fastbp.MLP([784, 256, 128, 10], activation="relu", output="softmax", dtype=np.float32, seed=0)
model.fit(X, y, epochs=1, batch_size=16, optimizer=fastbp.SGD(lr=0.01), shuffle=False, verbose=0)
fitted = time.perf_counter()
model.predict_proba(X)
predicted = time.perf_counter()
print(json.dumps(dict(import_s=imported - start, first_fit_s=fitted - imported,
                      import_and_fit_s=fitted - start, first_predict_s=predicted - fitted)))
"""


def run_child(cache_dir: str | None) -> dict:
    """Timings of one fresh process; cache_dir None leaves NUMBA_CACHE_DIR unset (fastbp's default)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the start-up child process failed ({done.returncode}):\n{done.stderr[-2000:]}")
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    timings["process_s"] = wall
    return timings


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def measure(warm_runs: int, default_cache: bool) -> dict[str, dict | str]:
    """{"cold": timings, "warm": median timings, ["default cache": median timings]}; a kind whose
    process failed maps to the error message instead, and the others are still measured."""
    results: dict[str, dict | str] = {}

    def attempt(name, runs):
        try:
            results[name] = runs()
        except RuntimeError as error:
            results[name] = str(error).splitlines()[0]

    with tempfile.TemporaryDirectory(prefix="fastbp-startup-") as cache_dir:
        attempt("cold", lambda: run_child(cache_dir))
        attempt("warm", lambda: median_of([run_child(cache_dir) for _ in range(warm_runs)]))
    if default_cache:
        attempt("default cache", lambda: primed_median(None, warm_runs))
    return results


def primed_median(cache_dir: str | None, runs: int) -> dict:
    """Median timings of `runs` processes after one priming run, which compiles whatever the cache lacks."""
    run_child(cache_dir)
    return median_of([run_child(cache_dir) for _ in range(runs)])


def table(results: dict[str, dict | str], warm_runs: int) -> str:
    lines = ["| cache | import fastbp s | first fit s | import + first fit s | first predict_proba s | "
             "process s |", "|---|---:|---:|---:|---:|---:|"]
    for name, t in results.items():
        label = name if name == "cold" else f"{name} (median of {warm_runs})"
        if isinstance(t, str):
            lines.append(f"| {label} | {t} | | | | |")
            continue
        lines.append(f"| {label} | {t['import_s']:.2f} | {t['first_fit_s']:.2f} | {t['import_and_fit_s']:.2f} | "
                     f"{t['first_predict_s']:.2f} | {t['process_s']:.2f} |")
    cold, warm = results.get("cold"), results.get("warm")
    lines.append("")
    if isinstance(cold, dict) and isinstance(warm, dict):
        compile_s = (cold["import_and_fit_s"] + cold["first_predict_s"]
                     - warm["import_and_fit_s"] - warm["first_predict_s"])
        lines.append(f"compile cost (cold − warm, import + first fit + first predict_proba): {compile_s:.1f} s")
    if isinstance(warm, dict):
        verdict = "met" if warm["import_and_fit_s"] <= WARM_TARGET_SECONDS else "NOT met"
        lines.append(f"warm import + first fit: {warm['import_and_fit_s']:.2f} s; "
                     f"target ≤ {WARM_TARGET_SECONDS} s: {verdict}")
    lines.append("'process s' adds the interpreter's own start-up to the rest.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm processes per kind; the median is shown")
    parser.add_argument("--no-default-cache", action="store_true",
                        help="skip the runs with fastbp's own on-disk cache (they may write to it)")
    parser.add_argument("--json", type=Path, help="write the timings as JSON")
    args = parser.parse_args(argv)
    results = measure(args.warm_runs, not args.no_default_cache)
    print(table(results, args.warm_runs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
