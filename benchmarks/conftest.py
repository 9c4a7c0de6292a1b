"""Fixtures of the micro-benchmarks, and a summary table of every group printed at the end of the run.

Each group holds one fastbp kernel (`impl="fastbp"`) and its NumPy equivalent (`impl="numpy"`) on the
same arrays; the summary gives their time ratio and the GFLOP/s of the contraction.
"""
from __future__ import annotations

import numpy as np
import pytest

#: (group, impl, flops, minimum seconds), filled as the benchmarks run
RESULTS: list[tuple[str, str, int, float]] = []


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def measure(benchmark):
    """`measure(group, impl, flops, function, *args, rounds=None)`: warm `function` up (compile) outside
    the timed region, then benchmark it in `group`. `flops` is the floating-point work of one call
    (0: not counted). `rounds` fixes the number of timed calls (for slow functions); by default
    pytest-benchmark calibrates."""

    def run(group: str, impl: str, flops: int, function, *args, rounds: int | None = None):
        function(*args)  # compile, or load from the on-disk cache, before timing
        benchmark.group = group
        benchmark.extra_info.update(impl=impl, flops=flops)
        if rounds is None:
            result = benchmark(function, *args)
        else:
            result = benchmark.pedantic(function, args=args, rounds=rounds, iterations=1)
        if benchmark.stats is not None:  # None under --benchmark-disable
            RESULTS.append((group, impl, flops, benchmark.stats.stats.min))
        return result

    return run


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """A markdown table: per group, fastbp vs numpy minimum times, their ratio and GFLOP/s."""
    if not RESULTS:
        return
    groups: dict[str, dict[str, tuple[int, float]]] = {}
    for group, impl, flops, best in RESULTS:
        groups.setdefault(group, {})[impl] = (flops, best)
    write = terminalreporter.write_line
    write("")
    write("fastbp kernels vs NumPy: `numpy` computes the same result, `matmul` is NumPy's matrix product for the")
    write("same contraction alone. Minimum time over the rounds; a time ratio > 1 means fastbp is slower.")
    write("")
    write("| group | fastbp µs | numpy µs | matmul µs | fastbp/numpy | fastbp/matmul | fastbp GFLOP/s "
          "| numpy GFLOP/s | matmul GFLOP/s |")
    write("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group, impls in groups.items():
        write(_summary_row(group, impls))


def _summary_row(group: str, impls: dict[str, tuple[int, float]]) -> str:
    flops = impls.get("fastbp", (0, 0))[0]
    best = {impl: impls[impl][1] if impl in impls else None for impl in ("fastbp", "numpy", "matmul")}

    def micros(t):
        return "–" if t is None else f"{t * 1e6:,.1f}"

    def ratio(t):
        return "–" if t is None or best["fastbp"] is None else f"{best['fastbp'] / t:.2f}"

    def gflops(t):
        return "–" if t is None or not flops else f"{flops / t / 1e9:.1f}"

    return (f"| {group} | {micros(best['fastbp'])} | {micros(best['numpy'])} | {micros(best['matmul'])} | "
            f"{ratio(best['numpy'])} | {ratio(best['matmul'])} | {gflops(best['fastbp'])} | {gflops(best['numpy'])} | "
            f"{gflops(best['matmul'])} |")
