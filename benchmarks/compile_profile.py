"""Where a cold start's compilation goes, per function, read off Numba's event API (`numba:compile`).

Runs a workload in this process with an empty cache (a new temporary NUMBA_CACHE_DIR, set before fastbp
is imported) and prints one row per compiled function: how many times it was compiled, for how many
distinct signatures, its own compile time (nested compilations of its callees subtracted) and its
inclusive time. Events of one function nest when a caller's type inference compiles a callee.

    python benchmarks/compile_profile.py                     # fastbp train --quiet --epochs 1
    python benchmarks/compile_profile.py --workload fit      # the reference job's fit + predict_proba
    python benchmarks/compile_profile.py --signatures        # also list each function's signatures
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time


def profile(workload: str) -> tuple[list[dict], float]:
    """([{function, signature, start, end, own}], wall seconds of the workload)."""
    from numba.core import event

    records, stack = [], []

    class Listener(event.Listener):
        def on_start(self, ev):
            stack.append({"function": ev.data["dispatcher"].py_func.__qualname__,
                          "module": ev.data["dispatcher"].py_func.__module__,
                          "signature": str(ev.data["args"]), "start": time.perf_counter(), "nested": 0.0})

        def on_end(self, ev):
            record = stack.pop()
            record["end"] = time.perf_counter()
            inclusive = record["end"] - record["start"]
            record["own"] = inclusive - record.pop("nested")
            if stack:
                stack[-1]["nested"] += inclusive
            records.append(record)

    start = time.perf_counter()
    with event.install_listener("numba:compile", Listener()):
        run(workload)
    return records, time.perf_counter() - start


def run(workload: str) -> None:
    import numpy as np

    import fastbp
    import fastbp.cli
    if workload == "train":
        fastbp.cli.main(["train", "--quiet", "--epochs", "1"])
    elif workload == "fit":
        rng = np.random.default_rng(0)
        X = rng.random((256, 784), dtype=np.float32)
        y = np.arange(256) % 10
        model = fastbp.MLP([784, 256, 128, 10], dtype=np.float32, seed=0)
        model.fit(X, y, epochs=1, batch_size=32, optimizer=fastbp.SGD(lr=0.01), verbose=0)
        model.predict_proba(X)
    else:
        raise ValueError(f"unknown workload {workload!r}")


def table(records: list[dict], wall: float, signatures: bool) -> str:
    by_function = collections.defaultdict(list)
    for r in records:
        by_function[f"{r['module'].rsplit('.', 1)[-1]}.{r['function']}"].append(r)
    rows = sorted(by_function.items(), key=lambda item: -sum(r["own"] for r in item[1]))
    lines = [f"{len(by_function)} functions, {len({(r['module'], r['function'], r['signature']) for r in records})} "
             f"signatures, {len(records)} compile events; workload {wall:.1f} s, of which compiling "
             f"{sum(r['own'] for r in records):.1f} s", "",
             "| function | compiles | signatures | own s | inclusive s |", "|---|---:|---:|---:|---:|"]
    for name, rs in rows:
        lines.append(f"| `{name}` | {len(rs)} | {len({r['signature'] for r in rs})} | "
                     f"{sum(r['own'] for r in rs):.2f} | {sum(r['end'] - r['start'] for r in rs):.2f} |")
        if signatures:
            lines.extend(f"|   {sig} | | | | |" for sig in sorted({r["signature"] for r in rs}))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["train", "fit"], default="train")
    parser.add_argument("--signatures", action="store_true", help="list the signatures of each function")
    args = parser.parse_args(argv)
    if "fastbp" in sys.modules:
        raise RuntimeError("run in a fresh process: fastbp must be imported after the cache is redirected")
    with tempfile.TemporaryDirectory(prefix="fastbp-profile-") as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        records, wall = profile(args.workload)
    print(table(records, wall, args.signatures))


if __name__ == "__main__":
    main()
