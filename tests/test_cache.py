"""The compile cache: fastbp installed read-only, with no writable home either, still imports, trains
correctly and reuses what it compiled, and a fit compiles each kernel once. One cold-cache subprocess
(~30 s on 2 idle cores: it compiles the training kernels)."""
import contextlib
import hashlib
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
proba = m.predict_proba(X)  # a first prediction of a few blocks of rows
predict = m._row_work_local.kernel
print(json.dumps({"file": fastbp.__file__, "cache": fastbp.kernels.cache.cache_directory(), "digest": digest.hexdigest(),
                  "proba": hashlib.sha256(proba.tobytes()).hexdigest(), "predict": predict.__name__,
                  "predict_outputs compiled": len(fastbp.kernels.predict_outputs.signatures)}))
"""


def _expected_digests() -> tuple[str, str]:
    """The script's digests of the weights and of predict_proba in this process, with whatever cache it uses, the
    second from `predict_outputs` itself."""
    out, names = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(_SCRIPT, names)
    m, X, K = names["m"], names["X"], fastbp.kernels
    proba = np.empty((X.shape[0], 3), np.float32)
    K.predict_outputs(X.astype(np.float32), m._sizes, m._codes, m._params, m._workspace(64, copies=2).reshape(2, -1),
                      proba, m._smooth)
    return json.loads(out.getvalue())["digest"], hashlib.sha256(proba.tobytes()).hexdigest()


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
    fastbp's checked frame around Numba's version, pickled, then the pickled (source stamp, {signature key: data file}))."""
    from fastbp.kernels.cache import unframe
    counts = {}
    for index in cache.rglob("*.nbi"):
        with io.BytesIO(unframe(index.read_bytes())) as f:
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
    want, want_proba = _expected_digests()

    cold = _run(site, env)  # compiles every kernel and writes them to the only writable place
    assert Path(cold["file"]).parent == site / "fastbp"
    assert Path(cold["cache"]).is_relative_to(tmpdir)
    assert cold["digest"] == want
    # a first prediction of a few blocks of rows took the fit's own forward and compiled no predict_outputs
    assert (cold["predict"], cold["predict_outputs compiled"], cold["proba"]) == (
        "predict_outputs_by_fit_forward", 0, want_proba)
    assert list(Path(cold["cache"]).rglob("*.nbi")), "nothing was cached"
    # one float32 fit, one signature per kernel: another one (say, from an argument that is sometimes a
    # literal constant) compiles the kernel and all it inlines again, seconds of cold start
    signatures = _cached_signatures(Path(cold["cache"]))
    assert {"dense.dense_update_forward", "training.forward_with_step", "training.train_epoch"} <= signatures.keys()
    compiled_again = {kernel: n for kernel, n in signatures.items() if n != 1}
    assert not compiled_again, f"kernels compiled for more than one signature: {compiled_again}"

    warm = _run(site, env)  # loads them back
    assert warm == cold


# -- a safe, self-healing cache (fastbp/kernels/cache.py) ------------------------------------------------

import warnings

import numba
import numpy as np
import pytest

from fastbp.kernels import cache as kcache
from fastbp.kernels.checks import all_finite

_TINY = "from numba import njit\n\n@njit\ndef affine(x):\n    return 2 * x + 1\n"


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Every candidate place under tmp_path: NUMBA_CACHE_DIR, XDG_CACHE_HOME and the temp dir."""
    root = {name: tmp_path / name for name in ("numba", "xdg", "tmp")}
    for path in root.values():
        path.mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(root["numba"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root["xdg"]))
    monkeypatch.setattr(tempfile, "tempdir", str(root["tmp"]))
    monkeypatch.setattr(kcache, "_warned", set())
    return root


import tempfile  # noqa: E402  (patched by the fixture above)


def _unsafe_places(places, how):
    """Make the fastbp directory of each place unusable in the way `how` says."""
    for name, root in places.items():
        place = root / ("fastbp" if name != "tmp" else f"fastbp-{os.getuid()}")
        place.mkdir()
        if how == "world-writable":
            place.chmod(0o777)
        elif how == "group-writable":
            place.chmod(0o770)
        else:  # owned by another user
            os.chown(place, 4242, 4242)


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "other uid"])
def test_a_cache_directory_another_user_could_write_is_refused(places, how):
    if how == "other uid" and os.getuid() != 0:
        pytest.skip("chown to another uid needs root (the patched-getuid test covers it)")
    _unsafe_places({"numba": places["numba"]}, how)
    directory, refused = kcache.choose_directory()
    assert len(refused) == 1 and str(places["numba"]) in refused[0]
    assert Path(directory).is_relative_to(places["xdg"])  # the next safe candidate
    assert stat.S_IMODE(Path(directory).stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(directory).parent.stat().st_mode) == 0o700


def test_no_safe_directory_compiles_in_memory_with_one_warning(places, monkeypatch):
    _unsafe_places(places, "world-writable")
    monkeypatch.setattr(kcache, "_saved_locators", None)
    monkeypatch.setattr(kcache, "_directory", kcache._directory)  # restored afterwards
    saved = numba.config.CACHE_LOCATOR_CLASSES
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert kcache.configure_cache() is None
        kcache.configure_cache()  # said once per process
    try:
        assert len(record) == 1 and record[0].category is kcache.CacheWarning
        assert "another user could write" in str(record[0].message) and "in memory" in str(record[0].message)
    finally:
        kcache.attach_caches()  # every kernel is attached already: this only restores Numba's setting
    assert numba.config.CACHE_LOCATOR_CLASSES == saved
    kernel = numba.njit(lambda x: 2 * x + 1)
    kcache.attach(kernel, kcache._directory)  # None here: compiled in memory
    assert isinstance(kernel._cache, numba.core.caching.NullCache)
    assert kernel(3) == 7 and not list(Path(places["tmp"]).rglob("*.nb*"))


def test_a_directory_owned_by_another_uid_is_refused(tmp_path, monkeypatch):
    own = tmp_path / "mine"
    own.mkdir(mode=0o700)
    assert kcache.unsafe_reason(own) is None
    monkeypatch.setattr(os, "getuid", lambda: own.stat().st_uid + 1)
    assert "owned by uid" in kcache.unsafe_reason(own)


def _tiny_kernel(tmp_path, directory, monkeypatch):
    """A fresh dispatcher of a tiny function (its own module), cached with fastbp's cache in directory."""
    module = tmp_path / "tiny_kernel.py"
    if not module.exists():
        module.write_text(_TINY)
        monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_kernel
    kernel = numba.njit(tiny_kernel.affine.py_func)
    kcache.attach(kernel, str(directory))
    return kernel


def _damages(raw: bytes) -> dict[str, bytes]:
    flipped = lambda i: raw[:i] + bytes([raw[i] ^ 0x40]) + raw[i + 1:]  # noqa: E731
    return {"empty": b"", "truncated": raw[:len(raw) // 2], "last byte cut": raw[:-1],
            "flipped in the middle": flipped(len(raw) // 2), "flipped last byte": flipped(len(raw) - 1),
            "flipped header": flipped(0)}


def test_every_damaged_cache_file_is_rebuilt_with_one_warning(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    kernel = _tiny_kernel(tmp_path, directory, monkeypatch)
    assert kernel(3) == 7 and kernel(2.5) == 6.0  # two signatures: an index and two data files
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".nbi", ".nbc"))
    assert [p.suffix for p in files].count(".nbc") == 2 and [p.suffix for p in files].count(".nbi") == 1
    good = {p: p.read_bytes() for p in files}
    for path in files:
        for damage, raw in _damages(good[path]).items():
            for p, content in good.items():
                p.write_bytes(content)
            path.write_bytes(raw)
            monkeypatch.setattr(kcache, "_warned", set())
            kernel = _tiny_kernel(tmp_path, directory, monkeypatch)
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                assert kernel(3) == 7 and kernel(2.5) == 6.0, (path.name, damage)
            assert [str(r.message).split(" is damaged")[0] for r in record] == \
                [f"fastbp: the compile cache file {path}"], (path.name, damage)
            assert sum(kernel.stats.cache_misses.values()) >= 1, (path.name, damage)  # recompiled
            rebuilt = _tiny_kernel(tmp_path, directory, monkeypatch)  # and the cache is whole again
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert rebuilt(3) == 7 and rebuilt(2.5) == 6.0
            assert sum(rebuilt.stats.cache_hits.values()) == 2, (path.name, damage)


def test_data_written_for_another_signature_is_not_loaded(tmp_path, monkeypatch):
    """Two writers racing (numba#10128) can leave an index naming a data file that holds another
    signature's code: the key stored in the data file catches it."""
    directory = tmp_path / "cache"
    kernel = _tiny_kernel(tmp_path, directory, monkeypatch)
    assert kernel(3) == 7 and kernel(2.5) == 6.0
    first, second = sorted(directory.rglob("*.nbc"))
    first.write_bytes(second.read_bytes())  # intact file, wrong signature
    kernel = _tiny_kernel(tmp_path, directory, monkeypatch)
    assert kernel(3) == 7 and kernel(2.5) == 6.0
    assert sum(kernel.stats.cache_misses.values()) == 1


def test_the_compile_lock_is_held_until_the_code_is_saved(tmp_path, monkeypatch):
    """A process waiting for another's compile lock then loads what the other saved, so the lock must outlast the
    save; a compilation that raises frees it. (Numba's `Event.is_failed` is True for a compilation that did not
    raise: taken as is, the lock fell before the save, and the waiting process compiled the kernel again.)"""
    import numba.core.errors
    kernel = _tiny_kernel(tmp_path, tmp_path / "cache", monkeypatch)
    held_at_save, save = [], kcache.CheckedFile.save

    def save_recording_the_lock(self, key, data):
        held_at_save.append(kernel._cache._lock_path in kcache._compile_locks._held)
        return save(self, key, data)

    monkeypatch.setattr(kcache.CheckedFile, "save", save_recording_the_lock)
    assert kernel(3) == 7
    assert held_at_save == [True]
    assert kernel._cache._lock_path not in kcache._compile_locks._held
    with pytest.raises(numba.core.errors.TypingError):
        kernel("three")
    assert kernel._cache._lock_path not in kcache._compile_locks._held


def test_a_real_kernel_heals_too(tmp_path, monkeypatch):
    """all_finite, a parallel fastbp kernel: every one of its files garbled, then the right answers."""
    directory = tmp_path / "cache"
    monkeypatch.setattr(kcache, "_warned", set())

    def fresh():
        kernel = numba.njit(all_finite.py_func, parallel=True)
        kcache.attach(kernel, str(directory))
        return kernel

    x = np.ones(100_000)
    assert fresh()(x)
    for path in directory.rglob("*.nb*"):
        raw = path.read_bytes()
        path.write_bytes(raw[:100] + bytes(b ^ 0xFF for b in raw[100:200]) + raw[200:])
    kernel = fresh()
    x[77_777] = np.nan
    with pytest.warns(kcache.CacheWarning, match="damaged"):
        assert not kernel(x)
    assert fresh()(np.ones(3)) and not fresh()(np.array([np.inf]))


_WARM_START = _SCRIPT + """
import sys
registries = "numba.np.arraymath" in sys.modules
dot = numba.njit(lambda a: a @ a)(np.ones((2, 2)))  # the user's own compilation afterwards: Numba loads them then
print(json.dumps({"digest": digest.hexdigest(), "registries": registries, "dot": float(dot.sum())}))
"""


def test_a_warm_start_runs_the_cached_kernels_without_numbas_registries():
    """Loading compiled code skips Numba's registries (`CheckedCache._checked_load`): a warm fit, then a
    compilation of the user's own that needs them (BLAS), in a process that shares this one's cache."""
    expected, _ = _expected_digests()  # the script's kernels are now in this process's cache
    assert fastbp.kernels.cache.cache_directory() is not None
    proc = subprocess.run([sys.executable, "-c", _WARM_START], capture_output=True, text=True)  # same environment, same cache
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"digest": expected, "registries": False, "dot": 8.0}


def test_compile_checks_its_arguments():
    from fastbp import prebuild
    jobs = prebuild.plan(["float32", "float64"], ["relu", "gelu", "identity"], ["sgd", "adam"])
    assert [str(j) for j in jobs] == [  # relu-like layers and the others compile apart (`kernels.smooth_flag`)
        "float32 sgd relu/identity + predict", "float32 adam relu/identity", "float32 sgd gelu + predict",
        "float32 adam gelu", "float64 sgd relu/identity + predict", "float64 adam relu/identity",
        "float64 sgd gelu + predict", "float64 adam gelu"]
    assert [str(j) for j in prebuild.plan("float32", "tanh", "sgd")] == ["float32 sgd tanh + predict"]
    assert set(fastbp.kernels.OPTIMIZERS) <= set(prebuild.OPTIMIZER_NAMES)  # every registered optimizer has a name
    for bad in ({"dtypes": ["float16"]}, {"optimizers": ["adagrad"]}, {"activations": []}, {"workers": 0}):
        with pytest.raises(ValueError):
            fastbp.compile(**{"progress": False, **bad})


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_the_workers_signatures_are_the_ones_a_fit_uses(activation):
    """`prebuild.compile_beside`'s worker compiles loss_and_backward and the predict kernels for the argument
    types a fit passes: read them off the kernels compiled for a fit, in this process or (when the fit
    loaded its kernels from the cache) in the cache's index."""
    from fastbp import kernels as K
    from fastbp import prebuild
    rng = np.random.default_rng(0)
    X = rng.random((40, 5), dtype=np.float32)
    model = fastbp.MLP([5, 4, 3], activation=activation, seed=0)
    model.fit(X, np.arange(40) % 3, epochs=1, batch_size=8, optimizer=fastbp.SGD(lr=0.1), verbose=0)
    model.predict_proba(X)
    model.predict_proba(X[:1])  # a few rows: predict_outputs_by_layer
    for name, signature in prebuild._signatures_beside_train_epoch("float32", smooth=activation != "relu"):
        kernel = getattr(K, name)
        cached = {key[0] for key in kernel._cache._cache_file._load_index()} if kcache.has_compiled(kernel) else set()
        assert signature in set(kernel.signatures) | cached, name


def test_a_first_fit_compiles_beside_when_the_worker_compiles_its_kernels(monkeypatch):
    """fit starts `prebuild.compile_beside` before a first epoch that compiles, for plain SGD on dense X with no
    sample weights and no dropout (the argument types the worker compiles), and for no other fit."""
    import fastbp.model
    from fastbp import prebuild
    calls = []
    monkeypatch.setattr(prebuild, "compile_beside", lambda dtype, smooth, packed: calls.append(np.dtype(dtype)))
    monkeypatch.setattr(fastbp.model, "_first_epoch_compiles", lambda run: True)
    X, y = np.random.default_rng(0).random((24, 5)), np.arange(24) % 3

    def fit(dropout=0.0, **options):
        fastbp.MLP([5, 4, 3], seed=0, dropout=dropout).fit(X, y, epochs=1, batch_size=8, verbose=0, **options)

    fit(optimizer=fastbp.SGD(lr=0.1))
    assert calls == [np.dtype(np.float32)]
    fit(optimizer=fastbp.Adam())
    fit(optimizer=fastbp.SGD(lr=0.1), sample_weight=np.ones(24))
    fit(optimizer=fastbp.SGD(lr=0.1), dropout=0.5)
    fit(optimizer=fastbp.SGD(lr=0.1), alpha=1e-3)  # an L2 penalty takes the general epoch kernel
    assert calls == [np.dtype(np.float32)]


def test_the_compile_worker_can_be_turned_off(monkeypatch):
    """`compile_beside` starts its worker unless FASTBP_COMPILE_WORKER=0 (here with every other condition met), once
    for each set of kernels."""
    import subprocess

    from fastbp import prebuild

    class Worker:  # what Popen returns, already finished
        def poll(self):
            return 0

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: started.append(args) or Worker())
    monkeypatch.setattr(kcache, "has_compiled", lambda kernel: False)
    monkeypatch.setattr(kcache, "cache_directory", lambda: "/nonexistent")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("FASTBP_COMPILE_WORKER", "0")
    assert prebuild.compile_beside(np.float32) is None and not started
    monkeypatch.delenv("FASTBP_COMPILE_WORKER")
    monkeypatch.setattr(prebuild, "_workers", {})  # none started yet in this process
    worker = prebuild.compile_beside(np.float32)
    assert isinstance(worker, Worker) and len(started) == 1
    # `fastbp train` starts it before loading its data, then fit asks again: the same worker, no second one
    assert prebuild.compile_beside(np.float32) is worker and len(started) == 1
    assert isinstance(prebuild.compile_beside(np.float32, smooth=True), Worker) and len(started) == 2


def test_fastbp_compile_fills_the_cache(capsys):
    """`fastbp compile` leaves train_epoch and the predict kernels in the cache, each with the argument
    types a fit of that dtype passes (the first fit then compiles nothing: benchmarks/startup.py), and
    the digits split of `fastbp train` (whose first run then needs no scikit-learn import)."""
    from fastbp import kernels as K
    from fastbp.cli import main
    split = fastbp.data._split_path(0.25, 0)
    if split and os.path.exists(split):
        os.remove(split)
    assert main(["compile", "--dtypes", "float32", "--optimizers", "sgd", "adam"]) == 0
    assert "kernels compiled" in capsys.readouterr().out
    if kcache.cache_directory() is None:
        pytest.skip("no safe cache directory on this machine: compiled in memory")
    for kernel in (K.train_epoch, K.train_epoch_optimizer, K.predict_outputs, K.predict_outputs_by_layer,
                   K.predict_outputs_rows, K.all_finite):
        assert kcache.has_compiled(kernel), kernel.py_func.__name__
    assert os.path.exists(split)
