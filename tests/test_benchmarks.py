"""The benchmarks still run and still check themselves: every micro-benchmark once, untimed (each one
compares its kernel with NumPy), and the peers script's quick mode with the peers that are core
dependencies (scikit-learn; ONNX Runtime's inference too where the `peers` extra is installed), checking
that the libraries did the same job."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs benchmark scripts in a subprocess

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_micro_benchmarks_agree_with_numpy():
    done = run("-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-k", "not (train_epoch and numpy)")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_peers_quick_mode_runs_the_same_job(tmp_path):
    out = tmp_path / "peers.json"
    done = run("benchmarks/peers.py", "--quick", "--libraries", "fastbp", "sklearn", "onnxruntime", "--batches",
               "1", "64", "--json", str(out), "--plot", str(tmp_path / "peers.png"))
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    training, peak = results["training"], results["fma_peak_gflops"]
    assert {(r["library"], r["batch"]) for r in training} == {("fastbp", 1), ("fastbp", 64), ("sklearn", 64)}
    # nothing outruns the machine's FMA peak: a wrong FLOP count or a peak loop below the CPU's width would,
    # and NumPy's BLAS, which uses the whole width, is the check of the peak
    assert all(0 < r["gflops"] < peak for r in training)
    assert all(0 < gflops < peak for gflops in results["numpy_matmul_gflops"].values())
    assert "peak is wrong" not in done.stdout
    assert f" threads: {peak:.0f} GFLOP/s" in done.stdout
    inference = {r["library"]: r for r in results["inference"]}
    onnx = importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx")
    assert set(inference) == {"fastbp", "sklearn"} | ({"onnxruntime"} if onnx else set())
    assert all(r["seconds"] > 0 and 0 < r["single_seconds"] <= r["single_median_seconds"] for r in inference.values())
    assert all(r["max_abs_diff"] < 1e-5 for r in inference.values())  # the same weights, the same probabilities
    losses = {r["library"]: r["loss_after"] for r in training if r["batch"] == 64}
    assert abs(losses["fastbp"] - losses["sklearn"]) < 1e-3  # same weights, batches and lr: same loss
    assert (tmp_path / "peers.png").stat().st_size > 0


def _quick_peers_at_batch_64(tmp_path, *options: str) -> tuple[str, dict[str, float]]:
    """(report, {library: loss after the epoch}) of the peers' quick mode with fastbp and scikit-learn."""
    out = tmp_path / "peers.json"
    done = run("benchmarks/peers.py", "--quick", *options, "--libraries", "fastbp", "sklearn", "--batches", "64",
               "--json", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout, {r["library"]: r["loss_after"] for r in json.loads(out.read_text())["training"]}


def test_peers_adam_runs_the_same_job(tmp_path):
    report, losses = _quick_peers_at_batch_64(tmp_path, "--optimizer", "adam")
    assert "Adam lr 0.001" in report
    # scikit-learn adds Adam's eps before the bias correction, PyTorch and fastbp after: close, not equal
    assert abs(losses["fastbp"] - losses["sklearn"]) < 5e-3


def test_peers_runs_other_layer_sizes(tmp_path):
    report, losses = _quick_peers_at_batch_64(tmp_path, "--sizes", "64", "48", "32", "5")
    assert "MLP 64-48-32-5," in report
    assert abs(losses["fastbp"] - losses["sklearn"]) < 1e-3


def test_peers_activation_runs_the_same_job(tmp_path):
    report, losses = _quick_peers_at_batch_64(tmp_path, "--activation", "sigmoid")
    assert "sigmoid, SGD lr 0.01" in report
    assert abs(losses["fastbp"] - losses["sklearn"]) < 1e-3  # σ in both (scikit-learn's "logistic"): same loss


def test_two_threads_script_times_both_thread_counts(tmp_path):
    out = tmp_path / "two_threads.json"
    done = run("benchmarks/two_threads.py", "--seconds", "0", "--round-seconds", "0", "--samples", "64",
               "--batch", "16", "--json", str(out))
    assert done.returncode == 0, done.stderr[-4000:]  # it exits with an error if 1 and 2 threads differ
    rounds = json.loads(out.read_text())["rounds"]
    assert len(rounds) == 1
    assert rounds[0]["two_threads_s"] > 0 and rounds[0]["one_thread_s"] > 0
    assert rounds[0]["slow"] is False  # the only round is the run's best
    assert "1 rounds, 0 slow" in done.stdout


def test_vector_width_script_gives_each_kernel_all_its_arguments():
    """`benchmarks/vector_width.py` compiles each hot kernel for the types of its example arguments, where a
    default is not filled in: every argument must be there (compiling them all takes minutes, so it is not run)."""
    import inspect

    import numpy as np

    spec = importlib.util.spec_from_file_location("vector_width", ROOT / "benchmarks" / "vector_width.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scope = {"f32": lambda shape: np.empty(shape, np.float32)}
    exec(module.KERNELS, scope)
    for name, (kernel, args) in scope["KERNELS"].items():
        assert len(args) == len(inspect.signature(kernel.py_func).parameters), name


def test_step_profile_profiles_the_real_step():
    """`benchmarks/step_profile.py` exits with an error unless its timed step leaves `train_epoch`'s weights bit for
    bit; its table has every part, and the step's share of the FMA peak is below the peak."""
    done = run("benchmarks/step_profile.py", "--sizes", "64", "48", "32", "5", "--batches", "1", "16", "--steps", "8",
               "--rounds", "1", "--matmul-size", "256")
    assert done.returncode == 0, done.stderr[-4000:]
    for name in ("step + forward 1", "step + forward 3", "output and loss", "backward δ^1", "bias gradient, α δ^1"):
        assert done.stdout.count(f"| {name} |") == 2, name
    rates = [float(line.split(" µs, ")[1].split(" GFLOP/s")[0]) for line in done.stdout.splitlines()
             if line.startswith("**64-48-32-5, batch")]
    peak = float(done.stdout.split("FMA peak ")[1].split(" GFLOP/s")[0])
    assert len(rates) == 2 and all(0 < rate < peak for rate in rates)
    assert "NumPy's matmul of 256 x 256" in done.stdout
