"""EMA benchmark: post-hoc EMA over many checkpoints against simply reading them, and peak
memory against the number of checkpoints.

    python benchmarks/bench_ema.py [--checkpoints 50 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import jax
import numpy as np

from protstore.checkpoints import list_checkpoints, read_checkpoint, write_checkpoint
from protstore.ema import compute_ema
from protstore.model import default_priors, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[25, 100])
    ap.add_argument("--features", type=int, default=128, help="network width (sets params size)")
    args = ap.parse_args()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    model = load_model(options={"features": args.features, "hidden": args.features, "layers": 3})
    params = {"prior": default_priors(),
              "model": jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(0), {}))}
    leaves = jax.tree.leaves(params)
    size = sum(np.asarray(x).nbytes for x in leaves)
    print(f"params: {len(leaves)} leaves, {size / 2**20:.2f} MiB per checkpoint")
    print(f"{'checkpoints':>11s} {'write s':>8s} {'read all s':>10s} {'ema s':>7s} "
          f"{'ema/read':>8s} {'ema peak MiB':>12s}")
    rng = np.random.default_rng(0)
    for n in args.checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            t0 = time.perf_counter()
            for s in range(n):
                p = jax.tree.map(lambda x: (x + rng.normal(scale=1e-3, size=np.shape(x)))
                                 .astype(np.float32), params)
                write_checkpoint(run / "checkpoints" / f"step_{s * 10:08d}", p,
                                 {"kind": "checkpoint", "step": s * 10, "epoch": 0,
                                  "model": {"factory": "x:y", "options": {}}})
            t_write = time.perf_counter() - t0
            t0 = time.perf_counter()
            for path, _ in list_checkpoints(run):
                read_checkpoint(path)
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            compute_ema(run, Path(tmp) / "ema", decay=0.999, echo=lambda m: None)
            t_ema = time.perf_counter() - t0
            tracemalloc.start()  # a second pass for memory: tracing slows Python down
            compute_ema(run, Path(tmp) / "ema2", decay=0.999, echo=lambda m: None)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        print(f"{n:11d} {t_write:8.1f} {t_read:10.2f} {t_ema:7.2f} {t_ema / t_read:8.2f} "
              f"{peak / 2**20:12.1f}")


if __name__ == "__main__":
    main()
