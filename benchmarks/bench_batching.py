"""Batching benchmark: padding waste of bucket strategies, and batch-loader throughput.

    python benchmarks/bench_batching.py [--proteins 48] [--frames 800] [--batch 32]
                                        [--chunk-kib 256]

1. Padding waste (linear = per-bead work, pair = dense pair work) for one global N_max,
   3 equal-count buckets, 3 and 5 optimal buckets, on the demo data set's lengths and on an
   mdCATH-like distribution (5,398 domains, lognormal lengths with mean ~137, range 50-500).
2. Loader throughput: shuffled interleaved batches from an on-disk compressed store, against
   (a) gathering the same batches from data already in memory as NumPy arrays, and
   (b) reading one frame at a time from Zarr; and how diverse the batches are: mean distinct
   proteins and distinct (protein, temperature) runs per batch against a uniform shuffle's
   expectation. Each protein has 4 runs (temperatures) and spans several chunks
   (``--chunk-kib``), as mdCATH proteins span many. The order at mdCATH-like scale, with data
   larger than the loader's budget: ``benchmarks/bench_stream.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

import protstore
from protstore.batching import BatchLoader, LoaderConfig, make_plan
from protstore.batching.loader import _uniform_distinct
from protstore.demo import DemoConfig
from protstore.ingest import ingest


def diversity(loader: BatchLoader, epoch: int) -> tuple[float, float]:
    """(distinct proteins, distinct runs) per batch as fractions of a uniform shuffle's."""
    proteins = loader.protein_diversity(epoch)
    got = sum(d.batch for d in proteins.values()) / sum(d.batch_uniform for d in proteins.values())
    runs, expect = [], []
    counts: dict = {}
    sizes = {}
    for batch in loader.epoch(epoch):
        key = [(batch["bucket"], int(p), float(t))
               for p, t in zip(batch["protein_index"], batch["temperature"])]
        runs.append(len(set(key)))
        sizes[batch["bucket"]] = len(key)
        for k in key:
            counts[k] = counts.get(k, 0) + 1
    for bucket, B in sizes.items():
        n = np.array([c for (b, _, _), c in counts.items() if b == bucket])
        expect.append(_uniform_distinct(n, B))
    return got, float(np.mean(runs) / np.mean(expect))


STEADY_EPOCHS = 4


def later_epochs(loader: BatchLoader) -> float:
    """The median time of epochs 1..STEADY_EPOCHS of a loader that has run epoch 0."""
    times = []
    for epoch in range(1, STEADY_EPOCHS + 1):
        t = time.perf_counter()
        for _ in loader.epoch(epoch):
            pass
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def mdcath_like_lengths(n: int = 5398, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = 0.5
    mu = np.log(137) - sigma ** 2 / 2
    return np.clip(np.round(rng.lognormal(mu, sigma, size=n)), 50, 500).astype(int)


def waste_table(name: str, lengths: np.ndarray, frames: np.ndarray) -> None:
    L = {f"p{i}": int(n) for i, n in enumerate(lengths)}
    Fr = {f"p{i}": int(f) for i, f in enumerate(frames)}
    print(f"\n**{name}** ({len(L)} proteins, lengths {lengths.min()}-{lengths.max()}, "
          f"mean {lengths.mean():.0f})\n")
    print("| strategy | N_max per bucket | waste linear | waste pair |")
    print("|---|---|---|---|")
    cases = [("global N_max", dict(boundaries=[])),
             ("3 equal-count", dict(n_buckets=3, strategy="equal-count")),
             ("3 optimal", dict(n_buckets=3, strategy="optimal")),
             ("5 optimal", dict(n_buckets=5, strategy="optimal"))]
    for label, kw in cases:
        lin = make_plan(L, Fr, cost="linear", split="none", **kw)
        pair = make_plan(L, Fr, cost="pair", split="none", **kw)
        nmax = "/".join(str(b.n_max) for b in lin.buckets)
        if "optimal" in label:
            nmax += f" (pair: {'/'.join(str(b.n_max) for b in pair.buckets)})"
        print(f"| {label} | {nmax} | {100 * lin.total_waste():.1f}% | "
              f"{100 * pair.total_waste():.1f}% |")


def build_store(tmp: Path, n_proteins: int, frames: int, chunk_kib: int) -> protstore.Store:
    rng = np.random.default_rng(1)
    protstore.store.create_store(tmp / "bench.zarr",
                                 protstore.Encoding(chunk_bytes=chunk_kib << 10))
    temperature = np.repeat([320.0, 348.0, 379.0, 413.0], -(-frames // 4))[:frames]
    lengths = np.clip(mdcath_like_lengths(n_proteins, seed=2), 50, 300)
    paths = []
    for i, n in enumerate(lengths):
        R = np.zeros((frames, n, 3), np.float32)
        R[..., 0] = 3.8 * np.arange(n)
        R += rng.normal(scale=0.05, size=R.shape).astype(np.float32)
        F = rng.normal(scale=15, size=(frames, n, 3)).astype(np.float32)
        path = tmp / f"bench{i:03d}.npz"
        np.savez(path, R=R, F=F, resname=np.array(["ALA"] * n), temperature=temperature)
        paths.append(path)
    store = protstore.open_store(tmp / "bench.zarr", mode="a")
    ingest(paths, store, progress=False, log=lambda m: None)
    return tmp / "bench.zarr"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=48)
    ap.add_argument("--frames", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk-kib", type=int, default=256)
    ap.add_argument("--buffer-mib", type=int, default=LoaderConfig.buffer_bytes >> 20,
                    help="the loader's buffer_bytes in MiB")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")

    print("\n### 1. Padding waste")
    demo = np.array(DemoConfig().lengths)
    waste_table("demo data set", demo, np.full(len(demo), 400))
    md = mdcath_like_lengths()
    waste_table("mdCATH-like lengths", md, np.full(len(md), 25 * 440))

    print("\n### 2. Loader throughput")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_store(Path(tmp), args.proteins, args.frames, args.chunk_kib)
        # the first epoch counts from opening the store: it opens every protein
        t = time.perf_counter()
        store = protstore.open_store(path)
        table = store.summary()
        plan = make_plan(table["n_atoms"].to_dict(), table["n_frames"].to_dict(),
                         strategy="optimal", n_buckets=3, split="none")
        loader = BatchLoader(store, plan, LoaderConfig(batch_size=args.batch, seed=0,
                                                       buffer_bytes=args.buffer_mib << 20))
        batches, n_frames, nbytes = [], 0, 0
        for b in loader.epoch(0):
            batches.append((b["bucket"], b["protein_index"], b["frame"]))
            n_frames += len(b["protein_index"])
            nbytes += b["R"].nbytes + b["F"].nbytes
        t_loader = time.perf_counter() - t
        # later epochs of the same loader, proteins opened and buffers allocated (the steady
        # state of training): the median epoch of STEADY_EPOCHS
        t_steady = later_epochs(loader)
        div_new = diversity(loader, 2)
        chunks = np.mean([-(-plan.frames[p] // store.protein_readers(p)["R"].chunk)
                          for p in plan.proteins])

        # (a) the same batches gathered from memory (padded per-protein arrays, preloaded)
        mem = {}
        for i, pid in enumerate(plan.proteins):
            ds = store.protein(pid)
            k = next(b.index for b in plan.buckets if pid in b.proteins)
            n_max, n = plan.buckets[k].n_max, ds.sizes["atom"]
            R = np.zeros((ds.sizes["frame"], n_max, 3), np.float32)
            F = np.zeros_like(R)
            R[:, :n], F[:, :n] = ds.R.values, ds.F.values
            mem[i] = (R, F)
        t = time.perf_counter()
        for k, prot, frame in batches:
            R = np.stack([mem[p][0][f] for p, f in zip(prot, frame)])
            F = np.stack([mem[p][1][f] for p, f in zip(prot, frame)])
        t_mem = time.perf_counter() - t

        # (b) one frame at a time from Zarr (a sample of the batches, extrapolated)
        arrays = {i: zarr.open_group(store.url, path=f"proteins/{pid}", mode="r")
                  for i, pid in enumerate(plan.proteins)}
        sample = batches[: max(1, len(batches) // 20)]
        t = time.perf_counter()
        done = 0
        for k, prot, frame in sample:
            for p, f in zip(prot, frame):
                arrays[int(p)]["R"][int(f)]
                arrays[int(p)]["F"][int(f)]
                done += 1
        t_frame = (time.perf_counter() - t) * n_frames / done
        n_proteins = len(plan.proteins)

    mb = nbytes / 1e6
    print(f"\n{n_proteins} proteins (50-300 residues), {n_frames} training "
          f"frames per epoch, batch {args.batch}, 3 optimal buckets, interleaved, shuffled\n")
    print("| method | frames/s | MB/s (padded R+F) | vs in-memory |")
    print("|---|---|---|---|")
    print(f"| (a) gather from NumPy in memory (upper bound) | {n_frames / t_mem:,.0f} | "
          f"{mb / t_mem:,.0f} | 1.00 |")
    print(f"| protstore BatchLoader from the compressed store, first epoch (from opening the "
          f"store; opens every protein) | {n_frames / t_loader:,.0f} | {mb / t_loader:,.0f} | "
          f"{t_mem / t_loader:.2f} (target >= 0.5) |")
    print(f"| protstore BatchLoader, later epochs (steady state: median of {STEADY_EPOCHS}) | "
          f"{n_frames / t_steady:,.0f} | "
          f"{mb / t_steady:,.0f} | {t_mem / t_steady:.2f} (target >= 0.5) |")
    print(f"| (b) one frame at a time from Zarr | {n_frames / t_frame:,.0f} | "
          f"{mb / t_frame:,.0f} | {t_mem / t_frame:.3f} |")
    print(f"\nBatch diversity (each protein: 4 runs, {chunks:.1f} chunks on average), as a "
          f"fraction of a uniform shuffle's expectation:\n")
    print("| layout | distinct proteins per batch | distinct runs per batch |")
    print("|---|---|---|")
    print(f"| protstore loader (shuffle buffer) | {div_new[0]:.2f} (target >= 0.95) | "
          f"{div_new[1]:.2f} |")


if __name__ == "__main__":
    main()
