"""Checkpoints of one-process fits: `fit(..., checkpoint=, checkpoint_every=, resume=)`."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp.checkpoint import load_checkpoint

ROOT = Path(fastbp.__file__).resolve().parent.parent

#: the job of these tests, as source: run here and in a child process that gets killed
JOB = textwrap.dedent("""
    import time
    import numpy as np
    import fastbp

    def job(optimizer="adam", epochs=6, dtype=np.float32, pause=0.0, **kwargs):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(3000, 20)).astype(dtype)
        y = (X[:, 0] > X[:, 1]).astype(int) + (X[:, 2] > 1)
        opt = {"adam": lambda: fastbp.Adam(lr=3e-3), "sgd": lambda: fastbp.SGD(lr=0.05),
               "momentum": lambda: fastbp.SGD(lr=0.02, momentum=0.9, nesterov=True)}[optimizer]()
        model = fastbp.MLP([20, 64, 32, 3], dtype=dtype, seed=1)
        history = model.fit(X, y, epochs=epochs, batch_size=25, optimizer=opt, seed=2, verbose=0,
                            validation_split=0.1, patience=20, callbacks=[lambda *a: time.sleep(pause)], **kwargs)
        return model, history
""")
namespace: dict = {}
exec(JOB, namespace)
job = namespace["job"]


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    path = tmp_path / "run.npz"
    child = subprocess.Popen(
        [sys.executable, "-c", JOB + f"\njob(checkpoint={str(path)!r}, checkpoint_every=1, pause=0.3)"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if path.exists() and int(load_checkpoint(path)["epoch"]) >= 2:
                break
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)  # in epoch 3 or 4: after a checkpoint, before the next
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, stderr
    saved = int(load_checkpoint(path)["epoch"])
    assert 2 <= saved < 6
    resumed, history = job(checkpoint=path, resume=path)
    uninterrupted, expected = job()
    assert np.array_equal(resumed._params, uninterrupted._params)
    assert history["val_loss"] == expected["val_loss"] and len(history["loss"]) == 6
    assert int(load_checkpoint(path)["epoch"]) == 6


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_resume_continues_exactly(tmp_path, optimizer):
    path = tmp_path / "run.npz"
    first, _ = job(optimizer, epochs=5, checkpoint=path, checkpoint_every=2)  # epochs 2, 4 and 5 written
    assert int(load_checkpoint(path)["epoch"]) == 5
    job(optimizer, epochs=2, checkpoint=path)
    resumed, history = job(optimizer, epochs=5, resume=path)
    assert np.array_equal(resumed._params, first._params)
    assert len(history["loss"]) == 5
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left behind


def test_finished_checkpoint_resumes_to_the_same_weights(tmp_path):
    path = tmp_path / "run.npz"
    done, _ = job(epochs=2, checkpoint=path)
    again, history = job(epochs=2, resume=path)
    assert np.array_equal(again._params, done._params) and len(history["loss"]) == 2


def test_resume_refuses_another_job_and_leaves_the_model(tmp_path):
    path = tmp_path / "run.npz"
    job(epochs=1, checkpoint=path)
    model = fastbp.MLP([20, 64, 32, 3], seed=5)
    before = model._params.copy()
    X, y = np.zeros((3000, 20), np.float32), np.zeros(3000, int)
    adam = fastbp.Adam(lr=3e-3)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, y, batch_size=50, optimizer=adam, validation_split=0.1, resume=path, verbose=0)
    with pytest.raises(ValueError, match="optimizer='Adam'"):
        model.fit(X, y, batch_size=25, validation_split=0.1, resume=path, verbose=0)
    with pytest.raises(ValueError, match="n_samples=2700"):  # no validation split: other samples
        model.fit(X, y, batch_size=25, optimizer=adam, resume=path, verbose=0)
    with pytest.raises(ValueError, match="layer_sizes"):
        fastbp.MLP([20, 8, 3]).fit(X, y, batch_size=25, resume=path, verbose=0)
    assert np.array_equal(model._params, before)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    model = fastbp.MLP([2, 2])
    with pytest.raises(ValueError, match="not a readable fastbp checkpoint"):
        model.fit(np.zeros((4, 2)), [0, 1, 0, 1], resume=bad, verbose=0)
    np.savez(tmp_path / "model.npz", W1=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a fastbp checkpoint"):
        model.fit(np.zeros((4, 2)), [0, 1, 0, 1], resume=tmp_path / "model.npz", verbose=0)
    with pytest.raises(FileNotFoundError):
        model.fit(np.zeros((4, 2)), [0, 1, 0, 1], resume=tmp_path / "missing.npz", verbose=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        model.fit(np.zeros((4, 2)), [0, 1, 0, 1], checkpoint=bad, checkpoint_every=0, verbose=0)
