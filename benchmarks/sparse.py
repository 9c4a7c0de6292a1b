"""Sparse input: one training epoch on a CSR matrix vs the same data dense, and sparse predict_proba vs
scikit-learn's MLPClassifier on the same sparse data, side by side in one run.

    PYTHONPATH=. python benchmarks/sparse.py [--rows 10000] [--features 20000] [--density 0.005]

Prints one line per measurement and the ratios. Each timing is the best of `--repeats` runs (the sparse and
dense epochs taking turns), after a warm-up call that compiles the kernels.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np
import scipy.sparse as sp

import fastbp


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-rows", type=int, default=None,
                        help="time the sparse-vs-dense epochs on the first this many rows (default: all)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = sp.random(args.rows, args.features, density=args.density, format="csr", dtype=np.float32, random_state=0)
    y = rng.integers(0, args.classes, args.rows)
    dense = X.toarray()
    sizes = [args.features, args.hidden, args.classes]
    print(f"X: {args.rows} x {args.features} CSR, density {args.density}, nnz {X.nnz}; network {sizes}, "
          f"batch {args.batch}, float32, {numba.get_num_threads()} threads")

    def epoch_seconds(data, optimizer) -> float:
        """One epoch's time as fit measures it (the compiled epoch call, for sparse input with its two transposes
        of W^1; not the model's construction)."""
        m = fastbp.MLP(sizes, seed=0)
        history = m.fit(data, y[:data.shape[0]], epochs=1, batch_size=args.batch, optimizer=optimizer(), verbose=0)
        return data.shape[0] / history["samples_per_second"][0]

    R = args.compare_rows or args.rows
    for name, optimizer in (("SGD", lambda: fastbp.SGD(lr=0.05)), ("Adam", lambda: fastbp.Adam(lr=1e-3))):
        for data in (X[:256], dense[:256]):  # compile
            epoch_seconds(data, optimizer)
        # sparse and dense take turns, so that a slow spell of this shared machine slows both alike
        times = {"sparse": [], "dense": []}
        for _ in range(args.repeats):
            times["sparse"].append(epoch_seconds(X[:R], optimizer))
            times["dense"].append(epoch_seconds(dense[:R], optimizer))
        t_sparse, t_dense = min(times["sparse"]), min(times["dense"])
        print(f"fit 1 epoch, {name:4s}, {R} rows, best of {args.repeats} taking turns: sparse {t_sparse:.3f} s "
              f"(median {statistics.median(times['sparse']):.3f}), dense {t_dense:.3f} s (median "
              f"{statistics.median(times['dense']):.3f}): sparse {t_dense / t_sparse:.1f}x faster")

    import warnings

    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MLPClassifier(hidden_layer_sizes=(args.hidden,), max_iter=1, random_state=0).fit(X, y)
    ours = fastbp.MLP(sizes, seed=0)
    ours.predict_proba(X[:10])  # compile
    t_ours = best_of(args.repeats, lambda: ours.predict_proba(X))
    t_theirs = best_of(args.repeats, lambda: theirs.predict_proba(X))
    t_ours_dense = best_of(args.repeats, lambda: ours.predict_proba(dense))
    print(f"predict_proba of {args.rows} sparse rows: fastbp {t_ours * 1e3:.1f} ms, scikit-learn "
          f"{t_theirs * 1e3:.1f} ms ({t_theirs / t_ours:.1f}x); fastbp on the dense copy {t_ours_dense * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
