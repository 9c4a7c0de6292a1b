"""The compile cache: fastbp installed read-only, with no writable home either, still imports, trains
correctly and reuses what it compiled, and a fit compiles each kernel once. One cold-cache subprocess
(~30 s on 2 idle cores: it compiles the training kernels)."""
import contextlib
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp

_SCRIPT = """
import hashlib, json, numba, numpy as np, fastbp
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 6)); y = rng.integers(0, 3, 64)
m = fastbp.MLP([6, 9, 3], activation="tanh", seed=0)
m.fit(X, y, epochs=2, batch_size=8, seed=1, verbose=0)
digest = hashlib.sha256(b"".join(p.tobytes() for p in m.weights + m.biases))
print(json.dumps({"file": fastbp.__file__, "cache": numba.config.CACHE_DIR, "digest": digest.hexdigest()}))
"""


def _expected_digest() -> str:
    """The script's result in this process, with whatever cache it uses."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(_SCRIPT, {})
    return json.loads(out.getvalue())["digest"]


def _unwritable(path: Path) -> Path:
    """A path no one can create files under, root included: a regular file stands where a directory should."""
    path.write_text("not a directory\n")
    return path


def _read_only_install(root: Path) -> Path:
    """A copy of the fastbp package whose __pycache__ directories cannot be created (as on a read-only install)."""
    site = root / "site"
    shutil.copytree(Path(fastbp.__file__).parent, site / "fastbp", ignore=shutil.ignore_patterns("__pycache__"))
    for package in [site / "fastbp", *(p for p in (site / "fastbp").iterdir() if p.is_dir())]:
        _unwritable(package / "__pycache__")
    for path in site.rglob("*"):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site


def _cached_signatures(cache: Path) -> dict[str, int]:
    """{kernel: number of compiled signatures} read from Numba's index files (`<module>.<kernel>-<line>.py3x.nbi`:
    Numba's version, pickled, then the pickled (source stamp, {signature key: data file}))."""
    counts = {}
    for index in cache.rglob("*.nbi"):
        with open(index, "rb") as f:
            pickle.load(f)
            _, overloads = pickle.loads(f.read())
        counts[index.name.split("-")[0]] = len(overloads)
    return counts


def _run(site: Path, env: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | env | {"PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, cwd=site)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_read_only_install_without_a_writable_home_caches_in_the_temp_dir(tmp_path):
    site = _read_only_install(tmp_path)
    blocked = _unwritable(tmp_path / "no-home")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"HOME": str(blocked), "XDG_CACHE_HOME": str(blocked), "TMPDIR": str(tmpdir)}
    want = _expected_digest()

    cold = _run(site, env)  # compiles every kernel and writes them to the only writable place
    assert Path(cold["file"]).parent == site / "fastbp"
    assert Path(cold["cache"]).is_relative_to(tmpdir)
    assert cold["digest"] == want
    assert list(Path(cold["cache"]).rglob("*.nbi")), "nothing was cached"
    # one float32 fit, one signature per kernel: another one (say, from an argument that is sometimes a
    # literal constant) compiles the kernel and all it inlines again, seconds of cold start
    signatures = _cached_signatures(Path(cold["cache"]))
    assert {"dense.dense_update_forward", "training.forward_with_step", "training.train_epoch"} <= signatures.keys()
    compiled_again = {kernel: n for kernel, n in signatures.items() if n != 1}
    assert not compiled_again, f"kernels compiled for more than one signature: {compiled_again}"

    warm = _run(site, env)  # loads them back
    assert warm == cold
