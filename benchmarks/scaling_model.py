"""The scaling model of docs/distributed.md, as numbers: predicted efficiency of synchronous data-parallel
training on P ranks, and what overlapping the allreduce with the backward pass (DDP's buckets) could save.

Step time on P ranks:  T(P) = compute(B_local) + 2(P-1)/P · bytes / bandwidth + 2(P-1) · latency
(ring allreduce: a reduce-scatter and an allgather, each of P-1 steps moving bytes/P), and
efficiency E(P) = samples per second on P ranks / (P · samples per second on one rank without MPI).

    python benchmarks/scaling_model.py [--gflops 92] [--latency-us 5]

--gflops is one rank's sustained training FLOP rate: 92 GFLOP/s is one core of this machine on the
reference job at batch 512 (benchmarks/NOTES.md: 60,000 samples in 0.657 s on one thread, 1,007,104
FLOP per sample). A rank of c such cores is the same as one core on a network c times slower.
"""
from __future__ import annotations

import argparse

from reference_job import LAYER_SIZES, training_flops_per_sample

NETWORKS = {"reference 784-256-128-10": list(LAYER_SIZES), "wide 784-4096-4096-10": [784, 4096, 4096, 10]}
BANDWIDTHS_GBIT = (10, 25, 100)
RANKS = (2, 4, 8, 16, 32, 64)
BYTES = 4  # float32


def parameters(sizes: list[int]) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def allreduce_seconds(P: int, nbytes: float, gbit: float, latency: float) -> float:
    """Ring allreduce: 2(P-1)/P · bytes / bandwidth + 2(P-1) · latency."""
    return 2 * (P - 1) / P * nbytes / (gbit * 1e9 / 8) + 2 * (P - 1) * latency


def efficiency(sizes, P, batch_per_rank: float, gbit, flops, latency) -> float:
    """Per-rank throughput on P ranks over that of one rank without communication."""
    compute = batch_per_rank * training_flops_per_sample(sizes) / flops
    return compute / (compute + allreduce_seconds(P, parameters(sizes) * BYTES, gbit, latency))


def overlap_saving(sizes, P, batch_per_rank: float, gbit, flops, latency) -> float:
    """Upper bound on the fraction of the step that layer-wise overlap (one bucket per layer) saves.

    A timeline of one step: the forward pass, then for l = L..1 the weight gradient ∂W^l, after which
    layer l's bucket may start its allreduce, then δ^{l-1} (l ≥ 2; computed after ∂W^l so that each
    bucket is ready as early as it can be). The buckets go through the network one after the other, each
    taking its share of the allreduce time. Assumes the allreduce progresses while the kernels run."""
    L = len(sizes) - 1
    seconds = batch_per_rank / flops
    comm = allreduce_seconds(P, parameters(sizes) * BYTES, gbit, latency)
    clock = seconds * sum(2 * sizes[l - 1] * sizes[l] for l in range(1, L + 1))  # the forward pass
    network_free = 0.0
    for l in range(L, 0, -1):
        clock += seconds * 2 * sizes[l - 1] * sizes[l]  # ∂W^l: bucket l is ready
        share = (sizes[l - 1] * sizes[l] + sizes[l]) / parameters(sizes)
        network_free = max(network_free, clock) + share * comm
        if l > 1:
            clock += seconds * 2 * sizes[l - 1] * sizes[l]  # δ^{l-1}
    compute = batch_per_rank * training_flops_per_sample(sizes) / flops
    return (compute + comm - max(clock, network_free)) / (compute + comm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gflops", type=float, default=92.0)
    parser.add_argument("--latency-us", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    flops, latency = args.gflops * 1e9, args.latency_us * 1e-6
    for name, sizes in NETWORKS.items():
        print(f"{name}: {parameters(sizes):,} parameters ({parameters(sizes) * BYTES / 1e6:.2f} MB float32), "
              f"{training_flops_per_sample(sizes) / 1e6:.2f} MFLOP per sample")
    for title, per_rank in (("global batch", lambda P: args.batch / P), ("per-rank batch", lambda P: args.batch)):
        print(f"\nefficiency E(P), {title} {args.batch}, ranks of {args.gflops:g} GFLOP/s, "
              f"latency {args.latency_us:g} µs")
        header = "| P | " + " | ".join(f"{n.split()[0]} {g} Gb/s" for n in NETWORKS for g in BANDWIDTHS_GBIT) + " |"
        print(header)
        print("|" + "---|" * (1 + len(NETWORKS) * len(BANDWIDTHS_GBIT)))
        for P in RANKS:
            cells = [f"{efficiency(s, P, per_rank(P), g, flops, latency):.2f}" for s in NETWORKS.values()
                     for g in BANDWIDTHS_GBIT]
            print(f"| {P} | " + " | ".join(cells) + " |")
    print(f"\nideal layer-wise overlap at 25 Gb/s, global batch {args.batch}: largest saving of the step time")
    for name, sizes in NETWORKS.items():
        savings = {P: overlap_saving(sizes, P, args.batch / P, 25, flops, latency) for P in RANKS}
        best = max(savings, key=savings.get)
        print(f"  {name}: " + ", ".join(f"P={P} {100 * s:.1f}%" for P, s in savings.items())
              + f"  (largest at P={best})")


if __name__ == "__main__":
    main()
