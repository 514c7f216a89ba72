"""Simulation throughput: ``protstore.simulate.simulate`` (checks on every saved frame, a
Zarr block written per block, the progress bookkeeping) against a bare jitted ``lax.scan`` of
the same vmapped BAOAB step on the same energy (protstore's integrator, and jax-md's
``simulate.nvt_langevin`` when jax-md is installed), in replica-steps per second, for proteins
of N beads (a generated CA chain; priors + protstore's network, freshly initialised).

    python benchmarks/bench_simulate.py [--sizes 50 100 200] [--replicas 8] [--steps 1000]
        [--save-every 100] [--block-frames 5] [--repeats 2]

Every timing follows a warm-up run of the same shapes (compilation excluded); each is the best
of ``--repeats``, the runs taken in turn. The ratio is protstore's time over the bare loop's
(1.0: no overhead; ``simulate`` includes reading the params and writing the whole trajectory).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import protstore
from protstore.checkpoints import write_checkpoint
from protstore.evaluate import load_params
from protstore.ingest import IngestOptions, ingest
from protstore.model import default_priors, load_model
from protstore.model.topology import build_topology
from protstore.simulate import SimulateConfig, baoab, internal_masses, simulate
from protstore.simulate import run as simrun
from protstore.units import KB_KCAL_PER_MOL_K
from protstore.vocab import STANDARD_RESIDUES

FACTORY = "protstore.model.network:schnet"


def make_world(tmp: Path, sizes) -> tuple:
    """A store with one helical-ish CA chain per size, and a checkpoint of priors + network."""
    store = protstore.open_store(tmp / "s.zarr", mode="a")
    rng = np.random.default_rng(0)
    for n in sizes:
        t = np.arange(n)
        # a helix-like chain: 3.8 Å bonds, 2.3 Å radius, 1.5 Å rise per residue
        R = np.stack([2.3 * np.cos(1.75 * t), 2.3 * np.sin(1.75 * t), 1.5 * t], -1)
        R = (R[None] + rng.normal(scale=0.05, size=(4, n, 3))).astype(np.float32)
        names = np.array([STANDARD_RESIDUES[i % 20] for i in range(n)])
        np.savez(tmp / f"n{n}.npz", R=R, F=rng.normal(scale=5.0, size=R.shape).astype(np.float32),
                 resname=names,
                 temperature=np.full(4, 300.0))
        ingest([tmp / f"n{n}.npz"], store, IngestOptions(), progress=False, log=lambda m: None)
    options = {"max_neighbors": 64}
    model = load_model(FACTORY, options)
    params = {"prior": default_priors(), "model": model.init(jax.random.PRNGKey(0),
                                                              {"force_rms": 1.0})}
    write_checkpoint(tmp / "ck", params, {"kind": "final", "step": 0, "epoch": 0,
                                          "model": {"factory": FACTORY, "options": options}})
    return protstore.open_store(tmp / "s.zarr"), tmp / "ck"


def bare_loops(store, ck, pid, config: SimulateConfig, block_frames: int) -> dict:
    """name -> a function that runs ``config.n_steps`` steps of R replicas (compiled here): a
    jitted lax.scan of protstore's vmapped step, and of jax-md's (if installed), on the
    engine's force."""
    mp = load_params(ck)
    eng = simrun.engine(mp.model, "full", block_frames)
    ds = store.protein(pid, chunks=None)
    n = ds.sizes["atom"]
    species = jnp.asarray(ds.species.values)
    topo = build_topology(jnp.asarray(ds.resid.values), jnp.zeros(n, jnp.int32),
                          jnp.ones(n), species)
    params = jax.tree.map(jnp.asarray, mp.params)
    mass = jnp.asarray(internal_masses(ds.species.values))
    R0 = jnp.broadcast_to(jnp.asarray(ds.R.values[0]), (config.n_replicas, n, 3))
    keys = jax.random.split(jax.random.PRNGKey(0), config.n_replicas)
    kT = KB_KCAL_PER_MOL_K * 300.0
    force = lambda R: eng.force(R, params, species, topo)  # noqa: E731
    loops = {"protstore BAOAB": baoab(force, config.dt, kT, config.friction)}
    try:
        from jax_md import simulate as md, space

        loops["jax-md nvt_langevin"] = md.nvt_langevin(force, space.free()[1], config.dt, kT,
                                                       gamma=config.friction)
    except ImportError:
        pass
    out = {}
    for name, (init, step) in loops.items():
        state = jax.jit(jax.vmap(lambda k, r: init(k, r, mass=mass)))(keys, R0)
        run = jax.jit(lambda s, step=step: jax.lax.scan(
            lambda c, _: (jax.vmap(step)(c), None), s, None, length=config.n_steps)[0])
        jax.block_until_ready(run(state))  # compile
        out[name] = lambda run=run, state=state: jax.block_until_ready(run(state))
    return out


def protstore_run(store, ck, pid, config: SimulateConfig, tmp: Path):
    """A function that runs ``simulate`` (after a warm-up run that compiles)."""
    simulate(store, ck, pid, tmp / "warm.zarr", config, progress=False, overwrite=True)
    return lambda: simulate(store, ck, pid, tmp / "t.zarr", config, progress=False,
                            overwrite=True)


def best_times(runs: dict, repeats: int) -> dict:
    """The best of ``repeats`` seconds of each run, taken in turn (the host is shared: a
    slow moment then hits every run alike rather than one)."""
    best = dict.fromkeys(runs, np.inf)
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    print(f"# protstore simulate throughput — {platform.node()}, {jax.devices()[0].device_kind}"
          f" ({jax.default_backend()}), {len(jax.devices())} device(s); jax {jax.__version__}")
    print(f"R = {ARGS.replicas} replicas, {ARGS.steps} steps, save every {ARGS.save_every}, "
          f"blocks of {ARGS.block_frames} frames; priors + SchNet (32 features, 2 layers, "
          "64 neighbour slots); best of "
          f"{ARGS.repeats}; replica-steps/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store, ck = make_world(tmp, ARGS.sizes)
        work = ARGS.replicas * ARGS.steps
        for i, n in enumerate(ARGS.sizes):
            config = SimulateConfig(n_steps=ARGS.steps, n_replicas=ARGS.replicas,
                                    save_every=ARGS.save_every, block_frames=ARGS.block_frames)
            runs = {"simulate": protstore_run(store, ck, f"n{n}", config, tmp),
                    **bare_loops(store, ck, f"n{n}", config, ARGS.block_frames)}
            t = best_times(runs, ARGS.repeats)
            bare = [k for k in t if k != "simulate"]
            if i == 0:
                print(f"{'N':>5s} {'simulate':>10s} " + " ".join(f"{k:>20s}" for k in bare) +
                      " " + " ".join(f"{'simulate / ' + k.split()[0]:>20s}" for k in bare))
            print(f"{n:5d} {work / t['simulate']:10.0f} " +
                  " ".join(f"{work / t[k]:20.0f}" for k in bare) + " " +
                  " ".join(f"{t['simulate'] / t[k]:20.3f}" for k in bare), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--block-frames", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    ARGS = parser.parse_args()
    main()
