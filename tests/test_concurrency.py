"""Threads: fastbp runs on a thread-safe Numba threading layer, two Python threads training two
models at once get exactly the weights they get one after the other, and results do not depend on
the number of Numba threads for any optimizer path (tests/test_model.py covers plain SGD)."""
import json
import os
import pickle
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

import fastbp
from fastbp.parallel import THREAD_SAFE_LAYERS, active_layer, is_thread_safe, layer_loads, thread_count


def _fit(seed, X, y, dtype, optimizer):
    m = fastbp.MLP([64, 24, 10], activation="tanh", dtype=dtype, seed=seed)
    m.fit(X, y, epochs=3, batch_size=16, optimizer=optimizer(), seed=seed, verbose=0)
    return [p.copy() for p in m.weights + m.biases], m.predict_proba(X)


def _in_parallel(jobs):
    """Run each job in its own Python thread, all released at once; return their results in order."""
    barrier = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def run(i, job):
        barrier.wait()
        try:
            results[i] = job()
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_fastbp_chose_a_thread_safe_layer_when_one_loads():
    if os.environ.get("NUMBA_THREADING_LAYER", "threadsafe") != "threadsafe":  # the user's choice is left alone
        assert numba.config.THREADING_LAYER == os.environ["NUMBA_THREADING_LAYER"]
        return
    can_be_safe = any(layer_loads(layer) for layer in THREAD_SAFE_LAYERS)
    assert (numba.config.THREADING_LAYER == "threadsafe") == can_be_safe
    fastbp.MLP([3, 2]).fit(np.eye(3), [0, 1, 0], epochs=1, verbose=0)  # makes Numba start its threads
    assert (active_layer() in THREAD_SAFE_LAYERS) == can_be_safe == is_thread_safe()


def test_two_threads_training_at_once_equal_training_one_after_the_other(digits):
    X, _, y, _ = digits
    jobs = [lambda: _fit(1, X, y, np.float32, lambda: fastbp.SGD(lr=0.05)),
            lambda: _fit(2, X, y, np.float64, lambda: fastbp.SGD(lr=0.05, momentum=0.9)),
            lambda: _fit(3, X, y, np.float32, lambda: fastbp.Adam(lr=1e-3))]
    sequential = [job() for job in jobs]
    concurrent = _in_parallel(jobs)
    for (params, proba), (params_seq, proba_seq) in zip(concurrent, sequential):
        for p, q in zip(params, params_seq):
            np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(proba, proba_seq)


def test_one_model_predicted_from_many_threads(digits):
    X, X_test, y, _ = digits
    m = fastbp.MLP([64, 32, 10], seed=0)
    m.fit(X, y, epochs=2, verbose=0)
    want = m.predict_proba(X_test)
    for got in _in_parallel([lambda: m.predict_proba(X_test)] * 4):
        np.testing.assert_array_equal(got, want)


def test_predict_keeps_a_workspace_per_thread_and_size(digits):
    """predict_proba reuses its last workspace: threads predicting other row counts at the same time
    each get their own, a new size makes a new one, and the model still pickles."""
    X, X_test, y, _ = digits
    m = fastbp.MLP([64, 32, 10], seed=0)
    m.fit(X, y, epochs=1, verbose=0)
    sizes = [1, 7, 300, 1, len(X_test)]
    want = [pickle.loads(pickle.dumps(m)).predict_proba(X_test[:n]) for n in sizes]
    for _ in range(3):
        got = _in_parallel([lambda n=n: m.predict_proba(X_test[:n]) for n in sizes])
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m)).predict_proba(X_test), want[-1])


def test_thread_count_follows_set_num_threads_in_each_python_thread(digits):
    """`thread_count` reads Numba's count directly once its threads run: it must still see each
    set_num_threads, per Python thread, and predict_proba must size its workspaces by it."""
    X, X_test, y, _ = digits
    m = fastbp.MLP([64, 32, 10], seed=0)
    m.fit(X, y, epochs=1, verbose=0)  # Numba's threads are up
    # the per-thread workspaces, even where a fit's forward would stand in for an uncompiled `predict_outputs` (it takes
    # the fit's one workspace): which one runs depends on what earlier tests compiled
    m._fit_forward_can_predict = lambda: False
    before = numba.get_num_threads()
    want = m.predict_proba(X_test[:1])
    try:
        for n in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(n)
            assert thread_count() == numba.get_num_threads() == n
            np.testing.assert_array_equal(m.predict_proba(X_test[:1]), want)
            assert m._row_work_local.work.shape[0] == n  # one workspace per thread
            other = _in_parallel([thread_count])[0]  # a new Python thread starts from Numba's default
            assert other == numba.config.NUMBA_NUM_THREADS
    finally:
        numba.set_num_threads(before)


_THREADS_SCRIPT = """
import hashlib, json, numpy as np, fastbp
X, _, y, _ = fastbp.data.load_digits_split(seed=0)
Y = np.stack([y % 2, y > 4, y == 0], axis=1).astype(float)  # three binary labels per digit
recipes = {
    "f64 tanh sigmoid-out adam": (np.float64, "tanh", "sigmoid", Y, lambda: fastbp.Adam(lr=1e-3)),
    "f32 relu softmax momentum": (np.float32, "relu", "softmax", y, lambda: fastbp.SGD(lr=0.05, momentum=0.9)),
    "f32 sigmoid softmax adamw": (np.float32, "sigmoid", "softmax", y, lambda: fastbp.AdamW(lr=1e-3)),
}
out = {}
for name, (dtype, activation, output, target, optimizer) in recipes.items():
    for batch in (1, 64):
        m = fastbp.MLP([64, 27, 13, Y.shape[1] if output == "sigmoid" else 10], activation=activation,
                       output=output, dtype=dtype, seed=1)
        m.fit(X[:600], target[:600], epochs=1, batch_size=batch, optimizer=optimizer(), seed=2, verbose=0)
        digest = hashlib.sha256(b"".join(p.tobytes() for p in m.weights + m.biases))
        digest.update(m.predict_proba(X).tobytes())
        out[f"{name} batch {batch}"] = digest.hexdigest()
out["layer"] = fastbp.parallel.active_layer()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_optimizer_is_bit_identical_for_one_and_two_numba_threads():
    results = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    assert results[0] == results[1]
    assert len(results[0]) == 7


_WORKQUEUE_SCRIPT = """
import threading, numpy as np, fastbp, numba
from fastbp.parallel import is_thread_safe, active_layer
X, _, y, _ = fastbp.data.load_digits_split(seed=0)
assert numba.config.THREADING_LAYER == "workqueue" and not is_thread_safe()  # the user's choice stands

def train(seed):
    m = fastbp.MLP([64, 48, 10], seed=seed)
    for epoch in range(4):  # fastbp takes turns inside each compiled call (model.py's parallel_section)
        m.fit(X, y, epochs=1, batch_size=8, seed=epoch, verbose=0)
    return m.weights[0].copy()

sequential = [train(seed) for seed in (1, 2)]
results = {}
threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, train(s))) for s in (1, 2)]
for t in threads: t.start()
for t in threads: t.join()
assert all(np.array_equal(results[s], w) for s, w in zip((1, 2), sequential))
print(active_layer())
"""


@pytest.mark.slow
def test_parallel_section_serialises_training_on_the_workqueue_layer():
    """workqueue aborts the process when two threads run parallel kernels at once; fastbp's
    parallel_section makes them take turns instead."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "workqueue"


_OPENMP_LEVELS_SCRIPT = """
import numba, numpy as np
import fastbp
from fastbp.parallel import openmp_max_active_levels
numba.get_num_threads()  # Numba starts its threads by itself, before any call of fastbp's
started = openmp_max_active_levels()
fastbp.MLP([3, 2]).fit(np.eye(3), [0, 1, 0], epochs=1, verbose=0)
print(numba.threading_layer(), started, openmp_max_active_levels())
"""


@pytest.mark.skipif(not layer_loads("omp"), reason="Numba's omp layer does not load here (no GNU OpenMP runtime)")
@pytest.mark.parametrize("env, want", [({}, "1"), ({"OMP_MAX_ACTIVE_LEVELS": "3"}, "3"), ({"OMP_NESTED": "true"}, None)])
def test_the_omp_layer_leaves_openmp_without_nested_regions(env, want):
    """Numba's omp layer turns on nested OpenMP regions for the whole process when it starts its threads; in a
    process that also runs PyTorch, its MKL calls then start nested teams (2-10x slower epochs, benchmarks/NOTES.md).
    After fastbp's first fit, max-active-levels is OpenMP's default of 1, or what the user asked for."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NESTED", "OMP_MAX_ACTIVE_LEVELS")}
    proc = subprocess.run([sys.executable, "-c", _OPENMP_LEVELS_SCRIPT], env=dict(base, NUMBA_THREADING_LAYER="omp", **env),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    layer, started, after = proc.stdout.split()
    assert layer == "omp"
    assert after == (started if want is None else want)


_OPTIMIZER_SCRIPT = """
import hashlib, numpy as np
from fastbp import kernels as K
from fastbp.kernels.common import PARALLEL_WORK
out = []
for dtype in (np.float32, np.float64):
    for P in (64, 1000, 4099, PARALLEL_WORK + 4465):  # the last one runs in parallel blocks, one task each
        rng = np.random.default_rng(P)
        params, grads = rng.normal(size=P).astype(dtype), rng.normal(size=P).astype(dtype)
        m, u = np.zeros(P, dtype), np.zeros(P, dtype)
        for t in (1, 2, 3):
            K.adam_step(params, grads, m, u, 1e-3, 0.9, 0.999, 1e-8, 0.01, t == 2, t)
            K.sgd_step(params, grads, m, 0.01, 0.9, t == 3, 0.01)
        out.append(hashlib.sha256(params.tobytes() + m.tobytes() + u.tobytes()).hexdigest())
print(out)
"""


@pytest.mark.slow
def test_optimizer_steps_are_bit_identical_for_any_thread_count_however_they_are_compiled(tmp_path):
    """NUMBA_BOUNDSCHECK=1 compiles the steps differently. A parallel fast-math loop once rounded
    differently in its vector and scalar paths there, and the thread count decided which element
    took which path: 1 and 2 threads gave different weights. The steps now run in blocks of a fixed
    length, so an element's path does not depend on the thread count.

    Each run compiles afresh: under NUMBA_BOUNDSCHECK=1 (only), the parallel float64 steps loaded
    from Numba's cache round some elements differently from the same steps just compiled, whatever
    the thread count, which a shared cache would mistake for a difference between thread counts."""
    runs = [subprocess.run([sys.executable, "-c", _OPTIMIZER_SCRIPT], capture_output=True, text=True, check=True,
                           env=dict(os.environ, NUMBA_NUM_THREADS=threads, NUMBA_BOUNDSCHECK="1",
                                    NUMBA_CACHE_DIR=str(tmp_path / threads))).stdout
            for threads in ("1", "2")]
    assert runs[0] == runs[1]


def test_the_layer_survives_numba_rereading_its_settings(monkeypatch):
    """Numba's compiler re-reads every NUMBA_ variable once one has changed (`config.reload_config`): the
    layer fastbp chose must survive it, as it must survive a user setting NUMBA_CACHE_DIR after import."""
    before = numba.config.THREADING_LAYER
    monkeypatch.setenv("NUMBA_DEBUG_CACHE", "0")
    assert numba.njit(lambda x: x + 1)(1) == 2  # a compilation: Numba reloads its settings first
    assert numba.config.THREADING_LAYER == before
