"""Data writers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import xarray as xr

ATOMS = ("N", "CA", "C", "O")


def write_mdcath(path: Path, *, domain: str = "toy1", resnames=("MET", "HSD", "ALA", "GLY", "LYS"),
                 resids=None, chains=None, runs=((320, 0), (320, 1), (348, 0)), frames: int = 6,
                 force_scale: float = 10.0, coord_unit: str | None = "Angstrom",
                 force_unit: str | None = "kcal/mol/Angstrom", corrupt=None,
                 forces_frames: int | None = None, seed: int = 0, dssp=None) -> dict:
    """Write a small mdCATH-layout file with known atoms; return the ground truth.

    Each residue has atoms N, CA, C, O; CA beads sit 3.8 Å apart along x plus small noise.
    ``corrupt`` maps (T, replica, frame) -> 'nan' | 'overflow' | 'zero' | 'stretch'.
    ``dssp`` maps (T, replica) -> DSSP letters [frames, n_res] written as the run's ``dssp``
    (default: no dssp dataset).
    Returns {"ca": {(T, rep): [frames, n_res, 3]}, "force": {...}} computed with numpy.
    """
    rng = np.random.default_rng(seed)
    n_res = len(resnames)
    resids = np.arange(1, n_res + 1) if resids is None else np.asarray(resids)
    chains = np.array(["0"] * n_res) if chains is None else np.asarray(chains)
    n_atoms = n_res * len(ATOMS)
    owner = np.repeat(np.arange(n_res), len(ATOMS))
    names = list(ATOMS) * n_res
    truth = {"ca": {}, "force": {}}
    with h5py.File(path, "w") as fh:
        fh.attrs["layout"] = "mdcath-only-protein-v1.0"
        g = fh.create_group(domain)
        g.attrs["numResidues"] = n_res
        g.attrs["numProteinAtoms"] = n_atoms
        g.attrs["numChains"] = len(set(chains.tolist()))
        g.create_dataset("resname", data=np.array([resnames[o] for o in owner], dtype="S"))
        g.create_dataset("resid", data=resids[owner])
        g.create_dataset("chain", data=np.array([chains[o] for o in owner], dtype="S"))
        g.create_dataset("element", data=np.array([n[0] for n in names], dtype="S"))
        g.create_dataset("z", data=np.full(n_atoms, 6))
        pdb = ["MODEL        1"] + [
            f"ATOM  {i + 1:5d}  {names[i]:<3s} {resnames[owner[i]]:>3s} {chains[owner[i]]}"
            f"{resids[owner[i]]:4d}    {0:8.3f}{0:8.3f}{0:8.3f}  1.00  0.00           C"
            for i in range(n_atoms)]
        g.create_dataset("pdbProteinAtoms", data="\n".join(pdb))
        for temp, rep in runs:
            ca = np.zeros((frames, n_res, 3))
            ca[..., 0] = 3.8 * np.arange(n_res)
            ca = ca + rng.normal(scale=0.05, size=ca.shape)
            coords = np.repeat(ca, len(ATOMS), axis=1) + rng.normal(scale=1.0, size=(frames, n_atoms, 3))
            coords[:, 1::4] = ca  # the CA atoms
            coords = coords.astype(np.float32)
            forces = (rng.normal(scale=force_scale, size=(frames, n_atoms, 3))).astype(np.float32)
            for (ct, cr, cf), kind in (corrupt or {}).items():
                if (ct, cr) != (temp, rep):
                    continue
                if kind == "nan":
                    forces[cf, 3] = np.nan
                elif kind == "overflow":
                    coords[cf] = 2.147e7
                elif kind == "zero":
                    coords[cf] = 0.0
                elif kind == "stretch":
                    coords[cf, 4:] += np.float32(5.0)  # breaks the CA(0)-CA(1) distance
            run = g.require_group(str(temp)).create_group(str(rep))
            c = run.create_dataset("coords", data=coords)
            f = run.create_dataset("forces", data=forces[:forces_frames])
            if coord_unit:
                c.attrs["unit"] = coord_unit
            if force_unit:
                f.attrs["unit"] = force_unit
            run.attrs["numFrames"] = frames
            if dssp is not None and (temp, rep) in dssp:
                run.create_dataset("dssp", data=np.asarray(dssp[(temp, rep)], dtype="S1"))
            truth["ca"][(temp, rep)] = coords[:, 1::4]
            truth["force"][(temp, rep)] = forces.reshape(frames, n_res, len(ATOMS), 3).astype(
                np.float64).sum(axis=2).astype(np.float32)
    return truth


def as_format_2(root: Path) -> None:
    """Turn a store into what protstore 0.6 wrote (format 2): ``resname``, ``chain`` and ``xyz``
    as variable-length strings (zarr-python's ``string`` data type), with the groups'
    consolidated metadata, digests and the catalog to match."""
    import json

    import zarr

    import protstore
    from protstore.store.catalog import append_segment
    from protstore.location import Location
    from protstore.store.writer import write_group_metadata

    store = protstore.open_store(root)
    docs = {}
    for pid in store.proteins:
        ds = store.protein(pid, chunks=None)
        group = zarr.open_group(root / "proteins" / pid, mode="r+", use_consolidated=False)
        for name in ("resname", "chain", "xyz"):
            old = group[name]
            dims, compressors = old.metadata.dimension_names, old.compressors
            values = np.array(ds[name].values.tolist(), dtype=object)
            del group[name]
            group.create_array(name, shape=values.shape, chunks=values.shape, dtype=str,
                               dimension_names=dims, compressors=compressors)[...] = values
        doc = json.loads(ds.attrs["protstore_protein"])
        attrs = write_group_metadata(Location(root / "proteins" / pid),
                                     {"protstore_protein": doc}, list(group.array_keys()),
                                     record_digests="protstore_protein")
        docs[pid] = attrs["protstore_protein"]
    append_segment(Location(root), docs)
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["protstore"]["format_version"] = 2
    (root / "zarr.json").write_text(json.dumps(meta))


def same_protein(a: xr.Dataset, b: xr.Dataset) -> bool:
    """The same data, coordinates and protein document but for the digests of the arrays'
    metadata (which a migration changes)."""
    def doc(ds):
        return {k: v for k, v in ds.prot.doc.items() if k != "arrays_metadata"}

    return a.drop_attrs(deep=False).identical(b.drop_attrs(deep=False)) and doc(a) == doc(b)


def write_chain_store(tmp: Path, rng, lengths, n_frames: int, temperature, *, chunk_bytes: int,
                      noise: float, residues=("ALA",), prefix: str = "p"):
    """A store at ``tmp/s.zarr`` of proteins ``{prefix}00``, ``{prefix}01``... of ``lengths``
    beads: chains along x, 3.8 Å apart, with ``noise`` Å of Gaussian jitter, random forces of
    10 kcal/mol/Å, residues ``residues`` repeated, ``temperature(i)`` [n_frames] K; ingested
    from NPZ files, opened read-only."""
    import protstore
    from protstore.ingest import ingest

    protstore.store.create_store(tmp / "s.zarr", protstore.Encoding(chunk_bytes=chunk_bytes))
    paths = []
    for i, n in enumerate(lengths):
        R = (3.8 * np.arange(n)[None, :, None] * np.array([1.0, 0.0, 0.0])
             + rng.normal(scale=noise, size=(n_frames, n, 3))).astype(np.float32)
        F = rng.normal(scale=10, size=(n_frames, n, 3)).astype(np.float32)
        paths.append(tmp / f"{prefix}{i:02d}.npz")
        np.savez(paths[-1], R=R, F=F, resname=np.resize(np.array(residues), n),
                 temperature=temperature(i))
    ingest(paths, protstore.open_store(tmp / "s.zarr", mode="a"), progress=False,
           log=lambda m: None)
    return protstore.open_store(tmp / "s.zarr")
