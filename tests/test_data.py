"""fastbp.data.load_digits_split: scikit-learn's stratified split, kept in the cache directory so that later
calls need not import scikit-learn."""
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fastbp import data


def sklearn_split(test_size, seed, dtype):
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16.0).astype(dtype), y, test_size=test_size, random_state=seed, stratify=y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("test_size,seed", [(0.25, 0), (0.3, 7)])
def test_the_split_is_scikit_learns_bit_for_bit_computed_and_kept(tmp_path, monkeypatch, dtype, test_size, seed):
    monkeypatch.setattr("fastbp.kernels.cache.cache_directory", lambda: str(tmp_path))
    expected = sklearn_split(test_size, seed, dtype)
    for call in ("computed", "read back"):
        got = data.load_digits_split(test_size=test_size, seed=seed, dtype=dtype)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and np.array_equal(a, b), call
    assert len(list(tmp_path.glob("digits-split-*.npz"))) == 1


def test_a_damaged_kept_split_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setattr("fastbp.kernels.cache.cache_directory", lambda: str(tmp_path))
    data.load_digits_split()
    (path,) = tmp_path.glob("digits-split-*.npz")
    path.write_bytes(path.read_bytes()[:100])  # cut short, as by a killed writer
    got = data.load_digits_split()
    assert all(np.array_equal(a, b) for a, b in zip(got, sklearn_split(0.25, 0, np.float32)))
    assert data._read_split(str(path)) is not None  # rewritten whole


def test_without_a_cache_directory_it_splits_every_time(monkeypatch):
    monkeypatch.setattr("fastbp.kernels.cache.cache_directory", lambda: None)
    got = data.load_digits_split(seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(got, sklearn_split(0.25, 3, np.float32)))


@pytest.mark.slow
def test_a_later_process_does_not_import_scikit_learn(tmp_path):
    code = ("import sys, fastbp; X, _, y, _ = fastbp.data.load_digits_split(); "
            "print(X.shape[0], 'sklearn' in sys.modules)")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [run.stdout.split() for run in runs] == [["1347", "True"], ["1347", "False"]], runs[-1].stderr
