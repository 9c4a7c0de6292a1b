import subprocess
import sys

import pytest

import fastbp.cli
from fastbp.cli import main
from fastbp.kernels.cache import has_compiled


@pytest.mark.slow
def test_train_defaults_reach_97_percent(capsys):
    assert main(["train", "--quiet"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 97.0
    assert "samples/s" in out


def test_train_options_and_per_epoch_lines(capsys):
    assert main(["train", "--hidden", "32", "--activation", "tanh", "--epochs", "2", "--batch-size", "8",
                 "--lr", "0.1", "--seed", "3", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "[64, 32, 10]" in out


def test_bad_option_gives_a_clear_error(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "argument --epochs: must be ≥ 1, got 0" in capsys.readouterr().err
    assert main(["train", "--lr", "-1"]) == 2
    assert "argument --lr: must be finite and > 0, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_adam_and_momentum_recipes(capsys):
    for optimizer, lr in (("adam", "0.001"), ("momentum", "0.02")):
        assert main(["train", "--quiet", "--optimizer", optimizer, "--lr", lr, "--epochs", "20", "--batch-size", "32"]) == 0
        accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split("%")[0])
        assert accuracy >= 97.0, optimizer


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "fastbp.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout


_RUN = """
import atexit, sys, threading
from fastbp.cli import run
atexit.register(lambda: print("exit handler ran", flush=True))
if sys.argv[1] == "thread":  # a thread a normal exit waits for: run must exit normally, after it
    threading.Thread(target=lambda: (__import__("time").sleep(0.5), print("thread finished", flush=True))).start()
sys.argv = ["fastbp", *sys.argv[2:]]
run()
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_the_command_exits_with_mains_code_after_the_exit_handlers(thread):
    """`cli.run`, the `fastbp` command, skips the interpreter's teardown: the exit code is main's, the output is
    flushed and the exit handlers run; with a non-daemon thread still running it exits as usual, after it."""
    bad = subprocess.run([sys.executable, "-c", _RUN, thread, "train", "--lr", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "lr" in bad.stderr and bad.stdout.splitlines()[-1] == "exit handler ran"
    assert ("thread finished" in bad.stdout) == (thread == "thread")
    ok = subprocess.run([sys.executable, "-c", _RUN, thread, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "train" in ok.stdout and ok.stdout.splitlines()[-1] == "exit handler ran"


def test_first_run_says_that_it_compiles(capsys, monkeypatch):
    for compiled in (False, True):
        monkeypatch.setattr(fastbp.cli, "has_compiled", lambda kernel: compiled)
        assert main(["train", "--quiet", "--epochs", "1"]) == 0
        out = capsys.readouterr().out
        assert ("compiling kernels (first run on this machine)" in out) is not compiled
        assert ("including compilation" in out) is not compiled


def test_has_compiled_reads_numbas_cache_index(tmp_path, monkeypatch):
    monkeypatch.setattr("numba.config.CACHE_DIR", str(tmp_path / "cache"))  # read when a dispatcher is made
    (tmp_path / "cached_kernel.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n"
                                               "    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from cached_kernel import twice
    assert not has_compiled(twice)
    assert twice(3) == 6
    assert has_compiled(twice)
    assert not has_compiled(lambda x: x)  # not a cached dispatcher
    # code cached for another CPU is not loaded on this one, so it does not count
    codegen = type(twice.targetctx.codegen())
    monkeypatch.setattr(codegen, "magic_tuple", lambda self: ("x86_64-unknown-linux-gnu", "another-cpu", "+sse2"))
    assert not has_compiled(twice)


def test_train_through_a_pipe_prints_plain_lines():
    """stdout not a terminal: one plain line per epoch, no progress bar and no carriage return anywhere."""
    proc = subprocess.run([sys.executable, "-m", "fastbp.cli", "train", "--epochs", "3", "--hidden", "16",
                           "--batch-size", "32"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert "test accuracy" in proc.stdout.splitlines()[-1]
