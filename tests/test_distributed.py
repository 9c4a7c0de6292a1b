"""Data-parallel training over MPI: `mpiexec -n 2` runs of tests/mpi_scripts/fit.py against one process.

The one-process references run here first, which also compiles the kernels into the cache that the
ranks then load. Every launch has a timeout.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastbp
import fastbp.cli
from fastbp.checkpoint import load_checkpoint
from fastbp.distributed import local_ranks, writeable_map
from fastbp.validation import check_X

SCRIPTS = Path(__file__).parent / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))
from jobs import OPTIMIZERS, estimator_job, job, job32  # noqa: E402

ROOT = Path(fastbp.__file__).resolve().parent.parent
TIMEOUT = 300  # seconds per launch: a cold kernel cache is compiled by the first test, not by the ranks


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def launch(mode: str, out: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_NUM_THREADS", None)
    return subprocess.run([mpiexec(), "-n", "2", sys.executable, str(SCRIPTS / "fit.py"), mode, str(out)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def one_process():
    return {**{name: job(name, np.float64)[0] for name in OPTIMIZERS}, "estimator": estimator_job()}


@pytest.fixture(scope="module")
def compare(one_process, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "compare.npz"
    proc = launch("compare", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Numba thread(s) per rank") == 1  # said once, by rank 0
    return dict(np.load(out))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_two_ranks_equal_one_process_float64(compare, one_process, name):
    assert compare[name + "_same"]  # identical on both ranks after every epoch
    assert relative(compare[name], one_process[name]) <= 1e-12
    assert not np.array_equal(compare[name], fastbp.MLP([12, 16, 8, 3], dtype=np.float64, seed=7)._params)


def test_estimator_with_comm_equals_one_process(compare, one_process):
    assert relative(compare["estimator"], one_process["estimator"]) <= 1e-12


def test_float32_bit_identical_across_launches(compare, tmp_path):
    proc = launch("job32", tmp_path / "again.npz")
    assert proc.returncode == 0, proc.stderr
    again = np.load(tmp_path / "again.npz")
    assert compare["job32_same"] and again["job32_same"]
    assert compare["job32"].dtype == np.float32
    assert np.array_equal(again["job32"], compare["job32"])
    assert np.array_equal(again["job32_val_loss"], compare["job32_val_loss"])


def test_dead_rank_ends_the_job_and_its_checkpoint_resumes(compare, tmp_path):
    out = tmp_path / "killed.npz"
    start = time.perf_counter()
    proc = launch("kill", out, timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode != 0  # rank 1 SIGKILLed itself after epoch 3; rank 0 must not wait for it
    assert not out.exists()
    assert seconds < 60
    checkpoint = load_checkpoint(str(out) + ".ckpt.npz")
    assert int(checkpoint["epoch"]) == 2 and int(checkpoint["ranks"]) == 2
    proc = launch("resume", out)
    assert proc.returncode == 0, proc.stderr
    resumed = np.load(out)
    assert np.array_equal(resumed["job32"], compare["job32"])  # as if never interrupted, bit for bit
    assert np.array_equal(resumed["job32_val_loss"], compare["job32_val_loss"])


def test_ranks_that_disagree_all_get_a_value_error(tmp_path):
    proc = launch("mismatch", tmp_path / "mismatch", timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = [dict(line.split(": ", 1) for line in (tmp_path / f"mismatch.rank{r}.txt").read_text().splitlines())
           for r in (0, 1)]
    expected = {"width": "input width", "dtype": "X's dtype", "seed": "the ranks disagree on seed",
                "shard": "the ranks disagree on shard"}
    for case, words in expected.items():
        for rank in (0, 1):
            assert got[rank][case].startswith("ValueError: the ranks disagree") and words in got[rank][case]
    assert got[0]["nan"].startswith("ValueError: rank 1 rejected its input (ValueError: X contains NaN")
    assert got[1]["nan"].startswith("ValueError: X contains NaN")


def test_local_shards_from_memory_maps(tmp_path):
    proc = launch("local", tmp_path / "local.npz")
    assert proc.returncode == 0, proc.stderr
    result = np.load(tmp_path / "local.npz")
    assert result["same"]
    assert result["loss"][-1] < result["loss"][0] and result["val_loss"][-1] < result["val_loss"][0]
    assert result["val_accuracy"][-1] > 0.6


def test_writeable_map_reads_the_file_without_copying(tmp_path):
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    for view in (mapped, mapped[7:13]):
        again = writeable_map(view)
        assert isinstance(again, np.memmap) and again.flags.writeable
        assert np.array_equal(again, view)
        checked = check_X(again, 3, np.float32)
        assert np.shares_memory(checked, again)  # passed through: no copy of the data
    model = fastbp.MLP([3, 4, 2], seed=0)
    model.fit(mapped, np.arange(20) % 2, epochs=1, verbose=0, validation_data=(mapped, np.arange(20) % 2))
    assert np.array_equal(np.load(tmp_path / "X.npy"), X)  # the file is never written


def test_threads_per_rank_reads_the_launcher(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE", raising=False)
    monkeypatch.setenv("MPI_LOCALNRANKS", "3")
    assert local_ranks() == 3
    monkeypatch.delenv("MPI_LOCALNRANKS")
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    assert local_ranks() is None


def test_job32_runs_in_one_process_with_a_checkpoint(tmp_path):
    params, same, val_loss = job32(str(tmp_path / "one.npz"))
    assert same and len(val_loss) == 5
    assert int(load_checkpoint(tmp_path / "one.npz")["epoch"]) == 5


def test_cli_distributed_prints_the_accuracy_of_one_process(capsys):
    argv = ["train", "--epochs", "3", "--quiet", "--dtype", "float64", "--optimizer", "momentum", "--lr", "0.02"]
    assert fastbp.cli.main(argv) == 0
    one = capsys.readouterr().out
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "fastbp.cli", *argv, "--distributed"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    accuracy = [line.split("|")[0] for text in (one, proc.stdout) for line in text.splitlines()
                if line.startswith("test accuracy")]
    assert len(accuracy) == 2 and accuracy[0] == accuracy[1], (one, proc.stdout)  # rank 0 alone prints
