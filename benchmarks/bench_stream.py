"""The training stream at mdCATH-like scale: protein diversity of the loader's order, frames/s
and memory, with the store's data several times larger than the loader's ``buffer_bytes``.

    python benchmarks/bench_stream.py [--proteins 400] [--frames 400] [--buffer-mib 128]
                                      [--batch 32] [--buckets 5]

The store is made by protstore's own ingest and writer: lengths drawn like mdCATH's (lognormal,
mean ~137, 50-500 residues), 5 temperatures a protein, and chunks scaled so that each protein
spans as many chunks as it would in mdCATH (11,000 frames in the default 1 MiB chunks:
``chunk_bytes = 1 MiB x frames / 11,000``; 6 chunks at 50 residues, 63 at 500). Reported per
bucket: distinct proteins per batch and per 100 consecutive batches as fractions of a uniform
shuffle's expectation (``loader.protein_diversity``), for the loader and for protstore 0.6's
order (disjoint windows of 16 chunks, re-created here from the same units); then frames/s of
epoch 0 (opening every protein) and of a later epoch, and the process's peak RSS against the
budget. The store is built in a child process, so the peak RSS is the loader's run alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MDCATH_FRAMES = 11_000  # frames of an mdCATH domain (5 temperatures x 5 replicas x ~440)


def build(path: Path, n_proteins: int, frames: int) -> None:
    """An mdCATH-like store at ``path`` (NPZ sources ingested one at a time)."""
    import protstore
    from protstore.ingest import ingest

    from bench_batching import mdcath_like_lengths

    rng = np.random.default_rng(1)
    chunk = max(1024, round((1 << 20) * frames / MDCATH_FRAMES))
    protstore.store.create_store(path, protstore.Encoding(chunk_bytes=chunk))
    store = protstore.open_store(path, mode="a")
    temperature = np.repeat([320.0, 348.0, 379.0, 413.0, 450.0], -(-frames // 5))[:frames]
    src = path.parent / "src.npz"
    for i, n in enumerate(mdcath_like_lengths(n_proteins, seed=2)):
        R = np.zeros((frames, n, 3), np.float32)
        R[..., 0] = 3.8 * np.arange(n)
        R += rng.normal(scale=0.05, size=R.shape).astype(np.float32)
        F = rng.normal(scale=15, size=(frames, n, 3)).astype(np.float32)
        np.savez(src, R=R, F=F, resname=np.array(["ALA"] * n), temperature=temperature)
        os.replace(src, path.parent / f"d{i:04d}.npz")
        ingest([path.parent / f"d{i:04d}.npz"], store, progress=False, log=lambda m: None)
        (path.parent / f"d{i:04d}.npz").unlink()
        if i % 50 == 49:
            print(f"  built {i + 1}/{n_proteins}", file=sys.stderr, flush=True)


def windowed_order(loader, k: int, epoch: int, W: int = 16) -> np.ndarray:
    """protstore 0.6's order of bucket k (protein indices [S]): the bucket's units shuffled,
    taken W at a time as disjoint windows, interleaved in proportion within each."""
    rng = np.random.default_rng([loader.config.seed, epoch, k])
    units = loader._units[k]
    order = rng.permutation(len(units))
    out = []
    for w in range(0, len(order), W):
        chosen = [units[u] for u in order[w:w + W]]
        sizes = np.array([len(f) for _, f in chosen])
        unit = np.repeat(np.arange(len(sizes)), sizes)
        rank = np.arange(len(unit)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        key = (rank + rng.random(len(unit))) / sizes[unit]
        out.append(np.repeat([i for i, _ in chosen], sizes)[np.argsort(key)])
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=400)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--buffer-mib", type=int, default=112)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--buckets", type=int, default=5)
    ap.add_argument("--store", type=Path, help="use (or build) the store here")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build(args.store, args.proteins, args.frames)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "stream.zarr"
        if not path.exists():
            t = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, __file__, "--build-only", "--store", str(path),
                            "--proteins", str(args.proteins), "--frames", str(args.frames)],
                           check=True)
            print(f"built the store in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        run(path, args)


def run(path: Path, args) -> None:
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig, make_plan
    from protstore.batching.loader import sequence_diversity

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    store = protstore.open_store(path)
    table = store.summary()
    lengths, frames = table["n_atoms"].to_dict(), table["n_frames"].to_dict()
    plan = make_plan(lengths, frames, strategy="optimal", n_buckets=args.buckets, split="none")
    budget = args.buffer_mib << 20
    t = time.perf_counter()
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=args.batch, buffer_bytes=budget))
    n_frames = 0
    for batch in loader.epoch(0):
        n_frames += len(batch["frame"])
    t0 = time.perf_counter() - t
    t = time.perf_counter()
    for batch in loader.epoch(1):
        pass
    t1 = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    data = sum(24 * lengths[p] * frames[p] for p in plan.proteins)
    disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    chunks = np.mean([-(-frames[p] // store.encoding.frames_per_chunk(lengths[p]))
                      for p in plan.proteins])
    memory = loader.memory()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {len(plan.proteins)} proteins (lengths "
          f"{min(lengths.values())}-{max(lengths.values())}), {args.frames} frames each, "
          f"{chunks:.1f} chunks a protein on average; decoded R+F {data / 2**20:,.0f} MiB "
          f"({data / budget:.1f}x buffer_bytes = {args.buffer_mib} MiB), {disk / 2**20:,.0f} "
          f"MiB on disk; batch {args.batch}, {args.buckets} optimal buckets\n")
    print("| bucket | N_max | proteins | batches | distinct per batch vs uniform | "
          "per 100 batches vs uniform | 0.6's order: per batch / per 100 |")
    print("|---|---|---|---|---|---|---|")
    for k, d in loader.protein_diversity(1).items():
        old = sequence_diversity(windowed_order(loader, k, 1), loader.batch_size(k))
        print(f"| {k} | {loader.n_max[k]} | {len(plan.buckets[k].proteins)} | "
              f"{loader._layout(k, 1).n_batches} | {d.batch:.1f} / {d.batch_uniform:.1f} = "
              f"{d.batch_ratio:.3f} | {d.steps:.1f} / {d.steps_uniform:.1f} = "
              f"{d.steps_ratio:.3f} | {old.batch_ratio:.3f} / {old.steps_ratio:.3f} |")
    print(f"\nframes/s: epoch 0 (opening every protein, layouts included) "
          f"{n_frames / t0:,.0f}; epoch 1 {n_frames / t1:,.0f}")
    print(f"memory: the loader's accounting {memory['total'] / 2**20:.1f} MiB of "
          f"{args.buffer_mib} MiB (pools {memory['pools'] / 2**20:.1f}, read scratch "
          f"{memory['read_scratch'] / 2**20:.1f}, batches {memory['batches'] / 2**20:.1f}, "
          f"proteins {memory['proteins'] / 2**20:.1f}); peak RSS {rss / 2**20:,.0f} MiB, "
          f"{(rss - rss0) / 2**20:,.0f} MiB above the process before opening the store")


if __name__ == "__main__":
    main()
