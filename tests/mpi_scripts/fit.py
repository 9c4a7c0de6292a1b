"""Run by tests/test_distributed.py through ``mpiexec -n 2 python fit.py MODE OUT [...]``.

Modes:
- ``compare``: float64 SGD, momentum and Adam jobs, the float32 checkpointed job `job32` and the scikit-learn
  estimator's job; rank 0 writes
  each job's final weights and whether every rank held the same weights after every epoch to OUT (.npz);
- ``job32``: the float32 job alone (``resume`` continues it from its checkpoint; ``kill`` makes rank 1
  SIGKILL itself after epoch 3, when the checkpoint of epoch 2 is on disk);
- ``mismatch``: ranks that disagree (input width, dtype, seed, a NaN in one rank's shard); each rank
  writes one line per case with the error it got to OUT.rank<r>.txt;
- ``local``: shard="local" from memory maps of each rank's own rows, with validation data.
"""
import os
import sys

import numpy as np
from mpi4py import MPI

import fastbp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jobs import OPTIMIZERS, SameOnEveryRank, data, estimator_job, job, job32  # noqa: E402


comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def main(mode, out):
    if mode == "compare":
        results = {}
        for name in OPTIMIZERS:
            results[name], results[name + "_same"] = job(name, np.float64, comm)
        results["job32"], results["job32_same"], results["job32_val_loss"] = job32(out + ".ckpt.npz", comm)
        results["estimator"] = estimator_job(comm)
        if rank == 0:
            np.savez(out, **results)
    elif mode in ("job32", "kill", "resume"):
        resume = out + ".ckpt.npz" if mode == "resume" else None
        params, same, val_loss = job32(out + ".ckpt.npz", comm, resume=resume, kill=mode == "kill")
        if rank == 0:
            np.savez(out, job32=params, job32_same=same, job32_val_loss=val_loss)
    elif mode == "mismatch":
        X, y = data()
        cases = {
            "width": dict(X=X[:, :11 if rank else 12], sizes=[11 if rank else 12, 8, 3]),
            "dtype": dict(X=X.astype(np.float32) if rank else X),
            "seed": dict(seed=rank),
            "nan": dict(X=np.where(np.arange(12) == 5, np.nan, X) if rank else X, shard="local"),
            "shard": dict(shard="local" if rank else "global"),
        }
        lines = []
        for case, c in cases.items():
            model = fastbp.MLP(c.get("sizes", [12, 8, 3]), dtype=np.float64, seed=0)
            try:
                model.fit(c.get("X", X), y, epochs=1, seed=c.get("seed", 0), verbose=0, comm=comm,
                          shard=c.get("shard", "global"))
                lines.append(f"{case}: trained")
            except (ValueError, TypeError) as exc:
                lines.append(f"{case}: {type(exc).__name__}: {exc}")
        with open(f"{out}.rank{rank}.txt", "w") as file:  # a file per rank: the ranks' stdout lines may interleave
            file.write("\n".join(lines) + "\n")
    elif mode == "local":
        X, y = data(n=600)
        if rank == 0:
            for r, rows in enumerate(np.array_split(np.arange(600), 2)):
                np.save(f"{out}.X{r}.npy", X[rows].astype(np.float32))
        comm.Barrier()
        X_r = np.load(f"{out}.X{rank}.npy", mmap_mode="r")
        y_r = np.array_split(y, 2)[rank]
        model = fastbp.MLP([12, 16, 3], seed=7)
        check = SameOnEveryRank(comm)
        history = model.fit(X_r, y_r, epochs=4, batch_size=60, optimizer=fastbp.Adam(lr=1e-2), verbose=0, comm=comm,
                            shard="local", validation_data=(X_r, y_r), callbacks=[check])
        if rank == 0:
            np.savez(out, loss=history["loss"], val_loss=history["val_loss"], same=check.same,
                     val_accuracy=history["val_accuracy"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
