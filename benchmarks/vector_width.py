"""How wide the vectors of fastbp's hot kernels are: zmm / ymm / xmm register mentions in their assembly.

Each hot kernel is compiled for float32 (C-contiguous arrays, Python-float scalars, as `bench_dense.py`
calls them) and its `inspect_asm()` searched for the registers it names: 512-bit zmm, 256-bit ymm,
128-bit xmm (xmm also holds scalars). Every count comes from a fresh subprocess with its own empty
Numba cache (a function loaded from the cache has no assembly to inspect), for three CPUs:

- the host, as Numba sees it;
- an AVX-512 CPU: NUMBA_CPU_NAME=skylake-avx512 and its AVX-512 features;
- an AVX2 CPU: NUMBA_CPU_NAME=haswell, no extra features;

each at FASTBP_VECTOR_WIDTH=512 (fastbp's default) and 256. The named CPUs are compiled for, never
run on: nothing is called in those processes, so this works on any x86-64 machine.

    python benchmarks/vector_width.py                            # print the Markdown tables
    python benchmarks/vector_width.py --notes benchmarks/NOTES.md  # and append them, dated, there
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the CPUs compiled for: name -> the Numba environment (None: the host's own)
CPUS = {
    "AVX-512 (skylake-avx512)": {
        "NUMBA_CPU_NAME": "skylake-avx512",
        "NUMBA_CPU_FEATURES": "+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd,+avx2,+fma,+avx"},
    "AVX2 (haswell)": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""},
}
WIDTHS = (512, 256)
REGISTERS = ("zmm", "ymm", "xmm")

#: the hot kernels, each with the example arguments whose Numba types make its float32 signature
#: (run in the child process: arrays are only typed, never passed to the kernel)
KERNELS = """
from fastbp import kernels as K
S, n_in, n_out, P = 8, 16, 4, 100
A, W, b, Z = f32((S, n_in)), f32((n_out, n_in)), f32(n_out), f32((S, n_out))
params, state = f32(P), f32((2, P))
KERNELS = {
    "dense_forward": (K.dense_forward, (A, W, b, K.RELU, Z, True)),
    "dense_forward_serial": (K.dense_forward_serial, (A, W, b, K.RELU, Z, True)),
    "dense_backward": (K.dense_backward, (Z, W, A, K.RELU, A, f32((1, K.PACK_ELEMENTS)))),
    "dense_weight_gradient": (K.dense_weight_gradient, (Z, A, 1.0, 1.0, W)),
    "dense_update_forward": (K.dense_update_forward, (Z, A, 1.0, A, W, b, K.RELU, Z, True)),
    "output_loss": (K.output_loss, (Z, Z, K.SOFTMAX_CE, Z, Z, f32(S))),
    "optimizer_step (SGD, Adam, AdamW)": (K.optimizer_step, (K.ADAM, params, params, state, K.hyper_parameters(), 1)),
    "adam_step": (K.adam_step, (params, params, state[0], state[1], 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 1)),
}
"""

CHILD = """
import json, sys
import numba, numpy as np

def f32(shape):
    return np.empty(shape, np.float32)

exec(sys.argv[1])
counts = {}
for name, (kernel, args) in KERNELS.items():
    signature = tuple(numba.typeof(a) for a in args)
    kernel.compile(signature)  # compile only: nothing runs
    asm = kernel.inspect_asm(signature)
    counts[name] = [asm.count("%" + r) for r in ("zmm", "ymm", "xmm")]
from llvmlite import binding
print(json.dumps(dict(cpu=numba.config.CPU_NAME or binding.get_host_cpu_name(), counts=counts)))
"""


def register_counts(cpu_env: dict | None, width: int) -> dict:
    """{"cpu": LLVM's CPU name, "counts": {kernel: [zmm, ymm, xmm]}} from a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(cpu_env or {}, FASTBP_VECTOR_WIDTH=str(width), PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        done = subprocess.run([sys.executable, "-c", CHILD, KERNELS], env=env, capture_output=True, text=True,
                              timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"compiling for {cpu_env or 'the host'} at width {width} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(by_width: dict[int, dict]) -> str:
    """A Markdown table: per kernel, zmm / ymm / xmm mentions at each FASTBP_VECTOR_WIDTH."""
    header = ["kernel"] + [f"{r} ({w})" for w in by_width for r in REGISTERS]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    kernels = next(iter(by_width.values()))["counts"]
    for kernel in kernels:
        cells = [f"`{kernel}`"] + [str(n) for w in by_width for n in by_width[w]["counts"][kernel]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(log=print) -> str:
    """The tables of every CPU; the compilations run side by side, one process each."""
    targets = {"host": None, **CPUS}
    log(f"compiling for {', '.join(targets)} at FASTBP_VECTOR_WIDTH={' and '.join(map(str, WIDTHS))} ...")
    with ThreadPoolExecutor(len(targets) * len(WIDTHS)) as pool:
        futures = {(title, width): pool.submit(register_counts, cpu_env, width)
                   for title, cpu_env in targets.items() for width in WIDTHS}
    sections = []
    for title, cpu_env in targets.items():
        by_width = {width: futures[title, width].result() for width in WIDTHS}
        cpu = by_width[WIDTHS[0]]["cpu"]
        runs = "compiled and inspected on this machine" if cpu_env is None else "compiled only, never run"
        sections += [f"**{title if cpu_env else f'Host ({cpu})'}** — LLVM CPU `{cpu}`, {runs}; register mentions "
                     "in `inspect_asm()` for float32, columns by FASTBP_VECTOR_WIDTH:", "", table(by_width), ""]
    return "\n".join(sections)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=Path, help="append the tables, dated, to this Markdown file")
    args = parser.parse_args(argv)
    text = report(lambda message: print(message, file=sys.stderr, flush=True))
    print(text)
    if args.notes:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/vector_width.py" + (f" --notes {args.notes}" if args.notes else "")
        with args.notes.open("a") as notes:
            notes.write(f"\n## Vector width of the hot kernels ({date})\n\n`{command}` · {_cpu_model()}\n\n{text}\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
