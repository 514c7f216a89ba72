"""Evaluation benchmark: jit+vmap force evaluation against per-frame ``jax.grad`` Python loops
(jitted once, and op by op without jit) on the same model and frames, and dask scaling from 1
to 2 workers.

    python benchmarks/bench_evaluate.py [--store demo-output/store.zarr] [--frames 64]
"""

from __future__ import annotations

import time

import jax
import numpy as np

from _demo import demo_args
from protstore.batching import BatchLoader, LoaderConfig
from protstore.evaluate import ModelParams, compute_per_residue_errors
from protstore.model import (DEFAULT_MODEL, ModelSpec, batch_forces, build_topology,
                             default_priors, load_model, total_energy)


def vmap_vs_loop(store, plan, params, n_frames: int, block: int) -> None:
    energy = total_energy(load_model())
    vmapped = jax.jit(batch_forces(energy))

    def eager_frame(params, R, species, resid, chain, mask):  # the predecessor: grad per frame
        return -jax.grad(energy, argnums=1)(params, R, species, mask,
                                            build_topology(resid, chain, mask))

    one_frame = jax.jit(eager_frame)

    print(f"\n## Forces: jit(vmap) over blocks of {block} frames vs per-frame jax.grad loops "
          f"(jitted, and eager: the predecessor's; {n_frames} frames per bucket)")
    print(f"{'bucket':>6s} {'N_max':>6s} {'vmap frames/s':>14s} {'jit loop f/s':>13s} "
          f"{'eager loop f/s':>15s} {'vs jit loop':>12s} {'vs eager':>9s} {'max |dF|':>9s}")
    for b in plan.buckets:
        loader = BatchLoader(store, plan, LoaderConfig(batch_size=block, buckets=(b.index,),
                                                       split="all", shuffle=False))
        batches = []
        for batch in loader.epoch(0):
            batches.append(batch)
            if len(batches) * block >= n_frames:
                break
        keys = ("R", "species", "resid", "chain", "mask")
        vmapped(params, *(batches[0][k] for k in keys)).block_until_ready()  # compile
        t0 = time.perf_counter()
        out_v = [vmapped(params, *(x[k] for k in keys)) for x in batches]
        jax.block_until_ready(out_v)
        t_v = time.perf_counter() - t0
        one_frame(params, *(batches[0][k][0] for k in keys)).block_until_ready()
        t0 = time.perf_counter()
        out_l = [one_frame(params, *(x[k][i] for k in keys)) for x in batches
                 for i in range(block)]
        jax.block_until_ready(out_l)
        t_l = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_eager = 2
        jax.block_until_ready([eager_frame(params, *(batches[0][k][i] for k in keys))
                               for i in range(n_eager)])
        t_e = (time.perf_counter() - t0) / n_eager
        n = len(batches) * block
        diff = np.abs(np.concatenate([np.asarray(o) for o in out_v]) -
                      np.stack([np.asarray(o) for o in out_l])).max()
        print(f"{b.index:6d} {b.n_max:6d} {n / t_v:14.0f} {n / t_l:13.0f} {1 / t_e:15.1f} "
              f"{t_l / t_v:11.2f}x {t_e * n / t_v:8.0f}x {diff:9.1e}")


def dask_scaling(store, plan, params) -> None:
    mp = ModelParams(params, ModelSpec(DEFAULT_MODEL))
    compute_per_residue_errors(store, mp, plan=plan, n_frames=8, workers=1)  # compile per shape
    print("\n## Per-residue evaluation of the validation split, local threads")
    print(f"{'workers':>7s} {'frames':>7s} {'time s':>7s} {'frames/s':>9s} {'speed-up':>9s}")
    base = None
    for workers in (1, 2):
        t0 = time.perf_counter()
        r = compute_per_residue_errors(store, mp, plan=plan, workers=workers)
        dt = time.perf_counter() - t0
        base = base or dt
        n = r.dataset.sizes["sample"]
        print(f"{workers:7d} {n:7d} {dt:7.2f} {n / dt:9.0f} {base / dt:8.2f}x")


def against_plain_loop(store, plan, params, repeat: int = 3) -> None:
    """``compute_per_residue_errors`` of the validation split (reading, padding, the census,
    the error Dataset and its tables) against a plain ``jit(vmap)`` loop over the same frames,
    read and padded beforehand, and the same params (forces only): medians of ``repeat``."""
    from protstore.batching.sample import BEAD_FIELDS
    from protstore.evaluate.compute import protein_static, select

    mp = ModelParams(params, ModelSpec(DEFAULT_MODEL))
    forces = jax.jit(batch_forces(total_energy(load_model())))
    blocks, block = [], 32
    for s in select(store, plan=plan, split="val"):
        static = protein_static(store, s.protein)
        R = store.protein(s.protein, chunks=None).R.values[s.frames]
        for start in range(0, len(s.frames), block):
            Rp = BEAD_FIELDS["R"].fill((block, s.n_max))
            part = R[start:start + block]
            Rp[:len(part), :s.n_atoms] = part
            Rp[len(part):, :s.n_atoms] = part[:1]
            rows = [np.broadcast_to(BEAD_FIELDS[k].padded(v, s.n_max), (block, s.n_max))
                    for k, v in (("species", static["species"]), ("resid", static["resid"]),
                                 ("chain", static["chain"]), ("mask", np.ones(s.n_atoms)))]
            blocks.append((Rp, *rows))
    n = sum(len(s.frames) for s in select(store, plan=plan, split="val"))
    for x in blocks:  # compile every shape
        forces(params, *x).block_until_ready()
    compute_per_residue_errors(store, mp, plan=plan)
    plain, ours = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready([forces(params, *x) for x in blocks])
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compute_per_residue_errors(store, mp, plan=plan)
        ours.append(time.perf_counter() - t0)
    t_plain, t_ours = float(np.median(plain)), float(np.median(ours))
    print(f"\n## compute_per_residue_errors vs a plain jit(vmap) loop ({n} validation frames, "
          f"blocks of {block}, medians of {repeat})")
    print(f"plain loop {n / t_plain:.0f} frames/s, compute_per_residue_errors {n / t_ours:.0f} "
          f"frames/s: {t_plain / t_ours:.2f}x")


def memory(store, plan, params) -> None:
    """Peak traced memory of ``evaluate`` (written to Zarr, reduced from it) for 1x and 5x the
    frames: bounded by the frame block, not by the number of frames."""
    import tempfile
    import tracemalloc

    from protstore.evaluate import EvalConfig, evaluate
    from protstore.checkpoints import write_checkpoint

    print("\n## Peak memory of `evaluate --mode per-residue` (tracemalloc: NumPy + Python)")
    print(f"{'frames':>7s} {'time s':>7s} {'peak MiB':>9s} {'errors on disk MiB':>19s}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(f"{tmp}/params", params, {
            "kind": "final", "step": 0, "epoch": 0,
            "model": {"factory": DEFAULT_MODEL, "options": {}}})
        for n_frames in (80, 400):
            tracemalloc.start()
            t0 = time.perf_counter()
            out = evaluate(store, ckpt, f"{tmp}/e{n_frames}",
                           EvalConfig(split="all", n_frames=n_frames, workers=1), plan=plan,
                           progress=False, echo=lambda m: None)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            size = sum(f.stat().st_size for f in out["paths"]["errors"].rglob("*") if f.is_file())
            n = out["result"].dataset.sizes["sample"]
            print(f"{n:7d} {dt:7.1f} {peak / 2**20:9.1f} {size / 2**20:19.1f}")


def main() -> None:
    args, store, plan = demo_args(__doc__, frames=64, block=32)
    model = load_model()
    params = {"prior": default_priors(),
              "model": model.init(jax.random.PRNGKey(0), {"force_rms": 5.0})}
    vmap_vs_loop(store, plan, params, args.frames, args.block)
    against_plain_loop(store, plan, params)
    dask_scaling(store, plan, params)
    memory(store, plan, params)


if __name__ == "__main__":
    main()
