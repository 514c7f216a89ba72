"""Per-residue reductions of an evaluation (``protstore.evaluate.reduce.per_residue_tables``):
flox's grouped reductions against xarray's own (NumPy) groupby path, on a synthetic error
Dataset of the shape evaluate makes (P proteins of up to N_MAX beads, FRAMES frames each).

    python benchmarks/bench_reduce.py [--proteins 400] [--frames 50] [--n-max 120]
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np
import xarray as xr

from protstore.evaluate import reduce


def error_dataset(n_proteins: int, frames: int, n_max: int, seed: int = 0) -> xr.Dataset:
    """(sample, atom) errors with padding, the coordinates evaluate's Dataset carries."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(n_max // 4, n_max + 1, n_proteins)
    n = n_proteins * frames
    mask = np.arange(n_max)[None, :] < np.repeat(lengths, frames)[:, None]
    dF = rng.normal(size=(n, n_max, 3)).astype(np.float32)
    dF[~mask] = np.nan
    species = np.where(mask, rng.integers(0, 20, (n_proteins, n_max)).repeat(frames, 0), 21)
    resid = np.where(mask, np.arange(1, n_max + 1)[None, :], -1)
    position = np.where(mask, np.arange(n_max)[None, :], -1)
    from_c = np.where(mask, np.repeat(lengths, frames)[:, None] - 1 - position, -1)
    chunks = (frames * 8, -1)
    dims = ("sample", "atom")
    dFd = da.from_array(dF, chunks=(*chunks, -1))
    return xr.Dataset(
        {"dF": (dims + ("xyz",), dFd),
         "sq_error": (dims, (dFd.astype(np.float64) ** 2).sum(axis=-1))},
        coords={"protein": ("sample", np.repeat([f"p{i:05d}" for i in range(n_proteins)],
                                                frames).astype(object)),
                "frame": ("sample", np.tile(np.arange(frames), n_proteins)),
                "temperature": ("sample", rng.choice([320.0, 348.0, 379.0], n)),
                "bucket": ("sample", np.repeat(np.arange(n_proteins) % 4, frames)),
                "xyz": np.array(["x", "y", "z"], dtype=object),
                **{k: (dims, da.from_array(v, chunks=chunks)) for k, v in (
                    ("species", species), ("resid", resid), ("position", position),
                    ("position_from_c", from_c), ("mask", mask))}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proteins", type=int, default=400)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--n-max", type=int, default=120)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ds = error_dataset(args.proteins, args.frames, args.n_max).persist()
    print(f"# per_residue_tables: {args.proteins} proteins x {args.frames} frames, "
          f"N_max {args.n_max} (best of {args.repeat})")
    results, times = {}, {}
    flox_grouped = reduce.grouped

    def xarray_grouped(obj, by, func, dim=None):  # what reduce did before flox
        with xr.set_options(use_flox=False):
            return getattr(obj.groupby(by), func)(dim)

    for name, fn in (("xarray groupby (NumPy)", xarray_grouped), ("flox", flox_grouped)):
        reduce.grouped = fn
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tables = reduce.per_residue_tables(ds)
            best = min(best, time.perf_counter() - t0)
        results[name], times[name] = tables, best
    reduce.grouped = flox_grouped
    for key in results["flox"]:
        xr.testing.assert_allclose(results["flox"][key], results["xarray groupby (NumPy)"][key],
                                   rtol=1e-12)
    print(f"{'path':<24s} {'seconds':>8s}")
    for name, t in times.items():
        print(f"{name:<24s} {t:8.3f}")
    print(f"flox is {times['xarray groupby (NumPy)'] / times['flox']:.1f}x; the tables agree "
          f"(rtol 1e-12)")


if __name__ == "__main__":
    main()
