"""Generate the demo data set: CG Langevin trajectories written as mdCATH-layout HDF5 files.

Each residue gets a few pseudo-atoms (N, CA, C, O and side-chain atoms) so that the file has the
real mdCATH structure: the CA carries the bead position and the atoms' forces sum to the bead's
force (exact in float64) plus a zero-sum per-atom part. The bead force is the model's force plus
Gaussian noise, which mimics the irreducible noise of mapped all-atom forces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import jax
import numpy as np

from ..progress import progress_bar
from ..vocab import STANDARD_RESIDUES
from .cgworld import HYDROPHOBICITY, KB, Topology, WorldParams, helix, make_simulator

SIDE_CHAIN = {"GLY": [], "ALA": ["CB"]}
SOURCE_INDEX = "mdcath_source.h5"  # mdCATH's index of its files, which torchmd-net's loader reads
ALPHA_DSSP, BETA_DSSP = (b"H", b"G", b"I"), (b"E", b"B")
CHARMM_HIS = ("HSD", "HSE", "HSP")
ELEMENT_Z = {"N": 7, "C": 6, "O": 8}


@dataclass(frozen=True)
class DemoConfig:
    """What the generator makes (config as data).

    lengths : residues per protein; one protein per entry.
    two_chain : indices of proteins split into two chains (chain A then chain B, resid restart).
    temperatures, replicas : mdCATH-style runs per protein.
    frames : frames per run; stride : Langevin steps (0.01 ps each) between frames.
    equilibration : steps discarded at the start of every run.
    force_noise : kcal/mol/Å, std of the Gaussian noise on each bead-force component (the
        irreducible error floor of a perfect model).
    corrupt : append mdCATH-like corrupt frames (int32 overflow, all-zero) to one run of the
        first protein, which ingest must detect and exclude.
    cis_prolines : cis X-Pro peptide bonds (CA-CA ~2.9 Å) in each protein of at least
        ``cis_min_length`` residues, as real structures have them (~5% of X-Pro bonds).
    predecessor_length : residues of one more protein written as the predecessor's per-protein
        NPZ file, which stores no temperature (0: none); simulated at the first temperature.
    """

    lengths: Sequence[int] = (24, 45, 73, 118, 167, 236)
    two_chain: Sequence[int] = (3,)
    temperatures: Sequence[int] = (320, 348)
    replicas: int = 2
    frames: int = 100
    stride: int = 50
    equilibration: int = 1000
    force_noise: float = 1.0
    corrupt: bool = True
    cis_prolines: int = 1
    cis_min_length: int = 40
    predecessor_length: int = 30
    seed: int = 0
    world: WorldParams = field(default_factory=WorldParams)


def _pdb_line(serial, name, resname, chain, resid, xyz, element) -> str:
    name = name if len(name) == 4 else f" {name:<3}"
    return (f"ATOM  {serial:5d} {name:4s} {resname:>3s} {chain:1s}{resid:4d}    "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00          {element:>2s}")


def _atoms(resnames: Sequence[str]) -> list[list[str]]:
    return [["N", "CA", "C", "O"] + SIDE_CHAIN.get(r, ["CB", "CG"]) for r in resnames]


def simulate_protein(seq: Sequence[str], chain_ids: np.ndarray, temperatures: Sequence[float],
                     config: DemoConfig, key, cis_before: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Independent runs at ``temperatures`` [B]: (R, F) float64 [B, frames, N, 3], noise-free.
    ``cis_before`` [N] bool: the bond into bead i is a cis-peptide."""
    topo = Topology.from_chains(chain_ids, cis_before)
    h = np.array([HYDROPHOBICITY[r] for r in seq])
    run, force = make_simulator(h, topo, config.world, config.stride)
    kT = KB * np.asarray(temperatures, dtype=np.float64)
    start = helix(len(seq), config.world.r0)
    start = start + np.where(chain_ids[:, None] == chain_ids[0], 0.0, 12.0)  # part the chains
    R = np.repeat(start[None], len(kT), axis=0)
    V = np.zeros_like(R)
    F = force(R)
    Rs, Fs = [], []
    n_eq = max(1, config.equilibration // config.stride)
    for i in range(n_eq + config.frames):
        key, sub = jax.random.split(key)
        R, V, F = run(R, V, F, jax.random.split(sub, len(kT)), kT)
        if i >= n_eq:
            Rs.append(np.asarray(R))
            Fs.append(np.asarray(F))
    return np.stack(Rs, axis=1), np.stack(Fs, axis=1)


def write_mdcath_file(path: Path, domain: str, seq: Sequence[str], chain_ids: np.ndarray,
                      resids: np.ndarray, runs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
                      rng: np.random.Generator, charmm_names: Sequence[str]) -> None:
    """Write one domain in mdCATH layout from bead trajectories ``runs[(T, replica)] = (R, F)``."""
    atoms = _atoms(seq)
    n_per = np.array([len(a) for a in atoms])
    owner = np.repeat(np.arange(len(seq)), n_per)
    names = [n for a in atoms for n in a]
    is_ca = np.array([n == "CA" for n in names])
    offsets = rng.normal(scale=1.2, size=(len(names), 3))
    offsets[is_ca] = 0.0
    n_atoms = len(names)
    with h5py.File(path, "w") as fh:
        fh.attrs["layout"] = "mdcath-only-protein-v1.0"
        g = fh.create_group(domain)
        g.attrs["numChains"] = len(np.unique(chain_ids))
        g.attrs["numProteinAtoms"] = n_atoms
        g.attrs["numResidues"] = len(seq)
        g.create_dataset("chain", data=np.array([chain_ids[o] for o in owner], dtype="S"))
        g.create_dataset("element", data=np.array([n[0] for n in names], dtype="S"))
        g.create_dataset("resname", data=np.array([charmm_names[o] for o in owner], dtype="S"))
        g.create_dataset("resid", data=resids[owner].astype(np.int64))
        g.create_dataset("z", data=np.array([ELEMENT_Z[n[0]] for n in names], dtype=np.int64))
        first = next(iter(runs.values()))[0][0]
        pdb = ["MODEL        1"] + [
            _pdb_line(i + 1, names[i], charmm_names[owner[i]], str(chain_ids[owner[i]]),
                      int(resids[owner[i]]), first[owner[i]] + offsets[i], names[i][0])
            for i in range(n_atoms)] + ["ENDMDL", "END"]
        g.create_dataset("pdbProteinAtoms", data="\n".join(pdb))
        g.create_dataset("pdb", data="\n".join(pdb))
        g.create_dataset("psf", data="PSF (demo: not a full topology)")
        for (temp, rep), (R, F) in runs.items():
            run = g.require_group(str(temp)).create_group(str(rep))
            frames = len(R)
            jitter = rng.normal(scale=0.3, size=(frames, n_atoms, 3))
            jitter[:, is_ca] = 0.0
            coords = R[:, owner] + offsets[None] + jitter
            # split each bead force over its atoms: equal shares + a zero-sum random part
            share = F[:, owner] / n_per[owner][None, :, None]
            extra = rng.normal(scale=2.0, size=(frames, n_atoms, 3))
            extra -= (np.add.reduceat(extra, np.r_[0, np.cumsum(n_per)[:-1]], axis=1)
                      / n_per[None, :, None])[:, owner]
            forces = share + extra
            c = run.create_dataset("coords", data=coords.astype(np.float32))
            c.attrs["unit"] = "Angstrom"
            f = run.create_dataset("forces", data=forces.astype(np.float32))
            f.attrs["unit"] = "kcal/mol/Angstrom"
            run.create_dataset("box", data=np.eye(3, dtype=np.float32) * 10.0)
            rc = R - R.mean(axis=1, keepdims=True)
            run.create_dataset("gyrationRadius",
                               data=(np.sqrt((rc ** 2).sum(-1).mean(-1)) / 10).astype(np.float32))
            run.create_dataset("rmsd", data=np.zeros(frames, np.float32))
            run.create_dataset("rmsf", data=(rc.std(axis=0).sum(-1) / 10).astype(np.float32))
            run.create_dataset("dssp", data=np.full((frames, len(seq)), b"C", dtype="S1"))
            run.attrs["numFrames"] = frames


def corrupt_tail(path: Path, domain: str, temperature: int, replica: int) -> None:
    """Append two mdCATH-like corrupt frames: an int32 overflow (2.1e7 Å) and an all-zero one."""
    with h5py.File(path, "r+") as fh:
        run = fh[f"{domain}/{temperature}/{replica}"]
        for name in ("coords", "forces"):
            data = run[name][()]
            bad = np.stack([np.full_like(data[0], 2.147e7), np.zeros_like(data[0])])
            if name == "forces":
                bad = np.stack([data[-1], np.zeros_like(data[0])])
            attrs = dict(run[name].attrs)
            del run[name]
            ds = run.create_dataset(name, data=np.concatenate([data, bad]))
            ds.attrs.update(attrs)
        run.attrs["numFrames"] = run["coords"].shape[0]


def write_source_index(files: Sequence[Path], path: Path) -> None:
    """Write mdCATH's ``mdcath_source.h5`` for mdCATH-layout ``files``: per domain, the
    attributes ``numProteinAtoms``, ``numResidues``, ``numChains``, ``numNoHAtoms`` (atoms with
    z > 1), and per ``<temperature>/<replica>`` group ``numFrames``,
    ``min_gyration_radius``/``max_gyration_radius`` (nm, over the run's ``gyrationRadius``) and
    ``alpha``/``beta`` (residues in helix, DSSP H/G/I, and in strand, E/B, averaged over the
    run's ``dssp`` frames): what torchmd-net's ``MDCATH`` dataset reads to choose domains and
    runs before it opens ``mdcath_dataset_<domain>.h5``."""
    with h5py.File(path, "w") as index:
        for file in files:
            with h5py.File(file, "r") as fh:
                for domain, g in fh.items():
                    out = index.create_group(domain)
                    for key in ("numProteinAtoms", "numResidues", "numChains"):
                        out.attrs[key] = int(g.attrs[key])
                    out.attrs["numNoHAtoms"] = int((g["z"][()] > 1).sum())
                    for temp, reps in g.items():
                        if not isinstance(reps, h5py.Group):
                            continue
                        for rep, run in reps.items():
                            o = out.require_group(temp).create_group(rep)
                            o.attrs["numFrames"] = int(run.attrs["numFrames"])
                            gyr = run["gyrationRadius"][()]
                            o.attrs["min_gyration_radius"] = float(gyr.min())
                            o.attrs["max_gyration_radius"] = float(gyr.max())
                            dssp = run["dssp"][()]
                            o.attrs["alpha"] = float(np.isin(dssp, ALPHA_DSSP).sum(-1).mean())
                            o.attrs["beta"] = float(np.isin(dssp, BETA_DSSP).sum(-1).mean())


def make_demo_dataset(out_dir: str | Path, config: DemoConfig = DemoConfig(), *,
                      progress: bool = True) -> list[Path]:
    """Write one ``mdcath_dataset_<domain>.h5`` per protein into ``out_dir``, mdCATH's index
    of them (``mdcath_source.h5``, :func:`write_source_index`: torchmd-net's ``MDCATH`` dataset
    reads the directory as it is) and, with ``config.predecessor_length``, one
    ``predecessor_<name>.npz``; return the paths of the data files (not the index)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    key = jax.random.PRNGKey(config.seed)
    paths = []
    todo = [(i, n) for i, n in enumerate(config.lengths)]
    bar = progress_bar(total=len(todo), unit="protein",
                       desc="simulating demo proteins", disable=not progress)
    for i, n in todo:
        domain = f"demo{i:02d}n{n:03d}"
        seq = list(rng.choice(STANDARD_RESIDUES, size=n))
        if i in config.two_chain and n >= 8:
            cut = n // 2
            chain_ids = np.array(["A"] * cut + ["B"] * (n - cut))
            resids = np.r_[np.arange(1, cut + 1), np.arange(1, n - cut + 1)]
        else:
            chain_ids = np.array(["0"] * n)
            resids = np.arange(1, n + 1) + int(rng.integers(0, 30))
        cis = _cis_prolines(seq, chain_ids, config, rng)
        charmm = [rng.choice(CHARMM_HIS) if r == "HIS" else r for r in seq]
        labels = [(t, r) for t in config.temperatures for r in range(config.replicas)]
        key, sub = jax.random.split(key)
        R, F = simulate_protein(seq, chain_ids, [t for t, _ in labels], config, sub, cis)
        F = F + rng.normal(scale=config.force_noise, size=F.shape)
        runs = {lab: (R[k], F[k]) for k, lab in enumerate(labels)}
        bar.update()
        path = out_dir / f"mdcath_dataset_{domain}.h5"
        write_mdcath_file(path, domain, seq, chain_ids, resids, runs, rng, charmm)
        if config.corrupt and i == 0:
            corrupt_tail(path, domain, config.temperatures[-1], config.replicas - 1)
        paths.append(path)
    bar.close()
    write_source_index(paths, out_dir / SOURCE_INDEX)
    if config.predecessor_length:
        key, sub = jax.random.split(key)
        paths.append(write_predecessor_npz(out_dir, config, rng, sub))
    return paths


def _cis_prolines(seq: list[str], chain_ids: np.ndarray, config: DemoConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """[n] bool, the bond into bead i is cis: ``config.cis_prolines`` residues of a long enough
    protein become prolines whose peptide bond is cis (``seq`` is changed in place)."""
    n = len(seq)
    cis = np.zeros(n, bool)
    if n < config.cis_min_length:
        return cis
    inside = [i for i in range(2, n - 2) if chain_ids[i] == chain_ids[i - 1]]
    for i in rng.choice(inside, size=min(config.cis_prolines, len(inside)), replace=False):
        seq[i] = "PRO"
        cis[i] = True
    return cis


def write_predecessor_npz(out_dir: Path, config: DemoConfig, rng: np.random.Generator,
                          key) -> Path:
    """One protein in the predecessor's per-protein CG NPZ layout (docs/domain.md section 3:
    R, F, Z, resid, resname, mask, box, ca_indices, N_max; no pickled objects), with no
    temperature in it, as the predecessor's files are."""
    n = config.predecessor_length
    seq = list(rng.choice(STANDARD_RESIDUES, size=n))
    chain_ids = np.array(["A"] * n)
    R, F = simulate_protein(seq, chain_ids, [config.temperatures[0]], config, key)
    R, F = R[0], F[0] + rng.normal(scale=config.force_noise, size=F[0].shape)
    frames = len(R)
    path = out_dir / f"predecessor_pre{n:03d}.npz"
    np.savez(path, R=R.astype(np.float32), F=F.astype(np.float32),
             Z=np.full(n, 6, np.int32), resid=np.arange(1, n + 1, dtype=np.int32),
             resname=np.array(seq), mask=np.ones((frames, n), np.float32),
             box=np.repeat(np.eye(3, dtype=np.float32)[None] * 100.0, frames, axis=0),
             ca_indices=np.arange(n, dtype=np.int32), N_max=np.full(10, n, np.int32))
    return path
