"""Packed samples at mdCATH-like lengths: padding, steps, diversity and the pair work a frame
costs, packed and unpacked, for plans of 1 to 5 buckets, through the real loader.

    python benchmarks/bench_packing.py [--proteins 400] [--frames 400] [--buffer-mib 112]
                                       [--batch-beads 4096] [--store PATH]

The store is bench_stream's (mdCATH-like lengths, 50-500 residues, data four times the
budget). Batches hold ``batch_beads // N_max`` samples a bucket (every step about the same
beads). Per plan and packing: the fraction of padded beads over an epoch, steps an epoch,
frames a step, distinct proteins per batch and per 100 batches against a uniform shuffle, the
pair entries a frame costs (steps x B x N_max^2 / frames: the O(N^2) part of a step, which
packing does not shrink within a bin), the layout time and the loader's frames/s of epoch 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def run(path: Path, args) -> None:
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig, make_plan
    from protstore.batching.sample import frames_in

    store = protstore.open_store(path)
    table = store.summary()
    lengths, frames = table["n_atoms"].to_dict(), table["n_frames"].to_dict()
    budget = args.buffer_mib << 20
    data = sum(24 * lengths[p] * frames[p] for p in lengths)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; {len(lengths)} proteins "
          f"(lengths {min(lengths.values())}-{max(lengths.values())}, mean "
          f"{np.mean(list(lengths.values())):.0f}), {args.frames} frames each; decoded R+F "
          f"{data / 2**20:,.0f} MiB = {data / budget:.1f}x buffer_bytes ({args.buffer_mib} MiB); "
          f"batch_beads {args.batch_beads}\n")
    print("| buckets | packing | padding | steps | frames/step | per batch vs uniform | "
          "per 100 batches vs uniform | pair entries/frame | layout s | frames/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_buckets in args.buckets:
        plan = make_plan(lengths, frames, strategy="optimal", n_buckets=n_buckets, split="none")
        for packing in (False, True):
            loader = BatchLoader(store, plan, LoaderConfig(
                batch_beads=args.batch_beads, buffer_bytes=budget, packing=packing))
            t = time.perf_counter()
            steps = loader.steps_per_epoch(1)
            t_layout = time.perf_counter() - t
            real = loader.real_beads_per_step(1) * steps
            slots = sum(loader.batch_size(k) * loader.n_max[k] for k, _ in loader.schedule(1))
            pairs = sum(loader.batch_size(k) * loader.n_max[k] ** 2
                        for k, _ in loader.schedule(1))
            div = loader.protein_diversity(1)
            weights = {k: loader._layout(k, 1).n_batches for k in div}
            mean = lambda f: sum(getattr(d, f) * weights[k] for k, d in div.items()) / sum(  # noqa: E731
                weights.values())
            t = time.perf_counter()
            n = sum(frames_in(b) for b in loader.epoch(1))
            rate = n / (time.perf_counter() - t)
            print(f"| {n_buckets} | {'yes' if packing else 'no'} | {1 - real / slots:.1%} | "
                  f"{steps} | {n / steps:.1f} | {mean('batch_ratio'):.3f} | "
                  f"{mean('steps_ratio'):.3f} | {pairs / n:,.0f} | {t_layout:.1f} | "
                  f"{rate:,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=400)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--buffer-mib", type=int, default=112)
    ap.add_argument("--batch-beads", type=int, default=4096)
    ap.add_argument("--buckets", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--store", type=Path, help="use (or build) the store here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "stream.zarr"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(Path(__file__).parent / "bench_stream.py"),
                            "--build-only", "--store", str(path), "--proteins",
                            str(args.proteins), "--frames", str(args.frames)], check=True)
        run(path, args)


if __name__ == "__main__":
    main()
