"""The whole pipeline on all-atom MD of real proteins: OpenMM, implicit solvent, two temperatures.

Not part of ``make test`` (it needs packages protstore does not depend on, and CPU time):

    pip install openmm pdbfixer MDAnalysisTests
    python benchmarks/real_md.py --out real-md [--proteins 8] [--frames 70] [--interval-ps 1]

The MD can run elsewhere: ``--stage prepare`` writes the fixed structures, ``--stage simulate
--platform CUDA`` (OpenMM, NumPy and h5py only; ``pip install openmm[cuda13]``) the trajectory
files on a GPU machine, ``--stage pipeline`` runs protstore on them.

1. Structures: the single chains of MDAnalysisTests' ``dssp/`` folder (experimental PDB
   structures), 40-130 residues, no missing internal residues; 1UBQ, 4AKE, 1V6P, 2F4K, 2I39 and
   3II2 are never used (kept for independent checks).
2. PDBFixer adds missing heavy atoms and hydrogens (pH 7); OpenMM runs amber14-all with the GBn2
   implicit solvent, no cutoff, H-bond constraints, a 2 fs LangevinMiddle integrator (1/ps), at
   300 and 350 K: energy minimisation, 20 ps of equilibration, then ``--frames`` frames
   ``--interval-ps`` apart with all-atom positions and forces.
3. Each protein becomes an mdCATH-layout HDF5 file with forces in OpenMM's kJ/mol/nm, declared
   in their ``unit`` attribute (ingest converts them; its bond mean-force check must agree).
4. protstore: ingest, a bucket plan holding whole proteins out, fit-priors, train, EMA,
   evaluate. Printed: the held-out force RMSE of zero force, priors only, the trained model and
   its EMA, the fitted bond k against kT/var(trans CA-CA), and each protein's unit check.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

RESERVED = {"1UBQ", "4AKE", "1V6P", "2F4K", "2I39", "3II2"}
KB = 0.0019872041


def structures(max_proteins: int, seed: int, residues: tuple[int, int] = (40, 130)
               ) -> list[tuple[str, object]]:
    """(name, PDBFixer of one chain) for usable structures of MDAnalysisTests' dssp folder."""
    from pdbfixer import PDBFixer

    folder = resources.files("MDAnalysisTests") / "data" / "dssp"
    files = sorted(p for p in folder.iterdir() if p.name.lower().endswith((".pdb", ".pdb.gz")))
    rng = np.random.default_rng(seed)
    picked = []
    for path in rng.permutation(files):
        code = Path(str(path)).name.split(".")[0].upper()[:4]
        if code in RESERVED or code.lower() in {name for name, _ in picked}:
            continue
        try:
            fixer = _fixer(PDBFixer, Path(str(path)))
        except Exception as exc:  # noqa: BLE001 - a structure PDBFixer cannot read is skipped
            print(f"skip {code}: {type(exc).__name__}: {exc}")
            continue
        n = fixer.topology.getNumResidues()
        if residues[0] <= n <= residues[1]:
            picked.append((code.lower(), fixer))
            print(f"use {code}: {n} residues")
        if len(picked) == max_proteins:
            break
    return picked


def _fixer(PDBFixer, path: Path):
    import gzip

    text = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    fixer = PDBFixer(pdbfile=io.StringIO(text))
    chains = list(fixer.topology.chains())
    fixer.removeChains(range(1, len(chains)))
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingResidues()
    chain = list(fixer.topology.chains())[0]
    n_res = len(list(chain.residues()))
    internal = {k: v for k, v in fixer.missingResidues.items() if 0 < k[1] < n_res}
    if internal:
        raise ValueError(f"{len(internal)} internal gap(s)")
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(7.0)
    return fixer


def simulate(structure, temperatures, frames: int, interval_ps: float, seed: int,
             platform: str = "CPU", cutoff_nm: float | None = None, timestep_fs: float = 2.0,
             hydrogen_mass: float | None = None, equilibration_ps: float = 20.0) -> dict:
    """{T: (positions Å [F, n, 3], forces kJ/mol/nm [F, n, 3])} of a structure (anything with
    ``topology`` and ``positions``: a PDBFile, a PDBFixer).

    ``cutoff_nm`` None: no cutoff; else a non-periodic cutoff (nm) for the nonbonded and GB
    terms. ``hydrogen_mass`` (amu, e.g. 3) repartitions mass onto hydrogens so that a 4 fs
    ``timestep_fs`` is stable; it changes the dynamics, not the Boltzmann distribution or the
    forces."""
    import openmm
    from openmm import app, unit

    forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    options = {"nonbondedMethod": app.NoCutoff}
    if cutoff_nm is not None:
        options = {"nonbondedMethod": app.CutoffNonPeriodic,
                   "nonbondedCutoff": cutoff_nm * unit.nanometer}
    if hydrogen_mass is not None:
        options["hydrogenMass"] = hydrogen_mass * unit.amu
    system = forcefield.createSystem(structure.topology, constraints=app.HBonds, **options)
    dt_ps = timestep_fs / 1000.0
    steps = max(1, int(round(interval_ps / dt_ps)))
    out = {}
    for T in temperatures:
        integrator = openmm.LangevinMiddleIntegrator(T * unit.kelvin, 1.0 / unit.picosecond,
                                                     dt_ps * unit.picoseconds)
        integrator.setRandomNumberSeed(seed)
        sim = app.Simulation(structure.topology, system, integrator,
                             openmm.Platform.getPlatformByName(platform))
        sim.context.setPositions(structure.positions)
        sim.minimizeEnergy(maxIterations=500)
        sim.context.setVelocitiesToTemperature(T * unit.kelvin, seed)
        sim.step(max(0, int(round(equilibration_ps / dt_ps))))
        R, F = [], []
        for _ in range(frames):
            sim.step(steps)
            state = sim.context.getState(getPositions=True, getForces=True)
            R.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
            F.append(state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer))
        out[T] = (np.array(R, np.float32), np.array(F, np.float32))
    return out


def write_mdcath(path: Path, domain: str, topology, positions, runs: dict) -> None:
    """One domain in mdCATH layout; forces keep OpenMM's kJ/mol/nm, declared in ``unit``."""
    from openmm import app

    atoms = list(topology.atoms())
    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions, text)
    pdb = "MODEL        1\n" + "\n".join(line for line in text.getvalue().splitlines()
                                         if line.startswith(("ATOM", "HETATM")))
    with h5py.File(path, "w") as fh:
        fh.attrs["layout"] = "mdcath-only-protein-v1.0"
        g = fh.create_group(domain)
        g.attrs["numProteinAtoms"] = len(atoms)
        g.attrs["numResidues"] = topology.getNumResidues()
        g.attrs["numChains"] = topology.getNumChains()
        g["resname"] = np.array([a.residue.name for a in atoms], dtype="S")
        g["resid"] = np.array([int(a.residue.id) for a in atoms])
        g["chain"] = np.array([a.residue.chain.id for a in atoms], dtype="S")
        g["element"] = np.array([a.element.symbol for a in atoms], dtype="S")
        g["z"] = np.array([a.element.atomic_number for a in atoms])
        g["pdbProteinAtoms"] = pdb
        for T, (R, F) in runs.items():
            run = g.create_group(f"{int(T)}/0")
            run.create_dataset("coords", data=R).attrs["unit"] = "Angstrom"
            run.create_dataset("forces", data=F).attrs["unit"] = "kJ/(mol*nm)"
            run.attrs["numFrames"] = len(R)


def prepare(folder: Path, n: int, seed: int, residues: tuple[int, int] = (40, 130)
            ) -> list[Path]:
    """Fixed structures (PDB files with hydrogens) of ``n`` usable proteins in ``folder``."""
    from openmm import app

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fixer in structures(n, seed, residues):
        path = folder / f"{name}.pdb"
        with open(path, "w") as fh:
            app.PDBFile.writeFile(fixer.topology, fixer.positions, fh)
        paths.append(path)
    return paths


def simulate_structures(folder: Path, data: Path, args) -> None:
    """mdCATH-layout files in ``data`` from the PDB files in ``folder`` (needs only OpenMM,
    NumPy and h5py: it runs on a GPU machine without protstore)."""
    from openmm import app

    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for pdb_path in sorted(folder.glob("*.pdb")):
        path = data / f"mdcath_dataset_{pdb_path.stem}.h5"
        if path.exists():
            continue
        pdb = app.PDBFile(str(pdb_path))
        runs = simulate(pdb, args.temperatures, args.frames, args.interval_ps, args.seed,
                        args.platform, args.cutoff_nm, args.timestep_fs, args.hydrogen_mass,
                        args.equilibration_ps)
        write_mdcath(path, pdb_path.stem, pdb.topology, pdb.positions, runs)
        print(f"{pdb_path.stem}: {pdb.topology.getNumAtoms()} atoms simulated "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="real-md")
    parser.add_argument("--stage", choices=["all", "prepare", "simulate", "pipeline"],
                        default="all", help="prepare: fixed PDB files; simulate: MD into "
                        "mdCATH files (OpenMM only); pipeline: protstore on those files")
    parser.add_argument("--proteins", type=int, default=8)
    parser.add_argument("--residues", type=int, nargs=2, default=[40, 130],
                        metavar=("MIN", "MAX"), help="residue range of the structures used")
    parser.add_argument("--frames", type=int, default=70, help="frames per temperature")
    parser.add_argument("--interval-ps", type=float, default=1.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 350.0])
    parser.add_argument("--platform", default="CPU", help="OpenMM platform (CUDA on a GPU)")
    parser.add_argument("--cutoff-nm", type=float, default=None,
                        help="non-periodic cutoff of the nonbonded and GB terms (default none)")
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--hydrogen-mass", type=float, default=None,
                        help="amu; hydrogen mass repartitioning (3 allows --timestep-fs 4)")
    parser.add_argument("--equilibration-ps", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    if args.stage in ("all", "prepare"):
        prepare(out / "structures", args.proteins, args.seed, tuple(args.residues))
    if args.stage in ("all", "simulate"):
        simulate_structures(out / "structures", out / "data", args)
    if args.stage in ("all", "pipeline"):
        pipeline(out, sorted((out / "data").glob("mdcath_dataset_*.h5")), args)


def ingest_store(out: Path, files: list[Path]):
    """``out/store.zarr`` with ``files`` ingested (again: ingest skips what it holds), opened
    for writing plans; prints the ingest report and each protein's unit check."""
    import protstore
    from protstore.ingest import ingest

    path = out / "store.zarr"
    report = ingest(files, protstore.open_store(path, mode="a"), progress=False)
    print("\n".join(report.lines()))
    store = protstore.open_store(path, mode="r+")
    print("\n| protein | beads | frames | unit check (declared kJ/mol/nm) |\n|---|---|---|---|")
    for pid in store.proteins:
        d = store.protein_doc(pid)
        print(f"| {pid} | {d['n_atoms']} | {d['n_frames']} | {d['unit_check']['note']} |")
    return store


def pipeline(out: Path, files: list[Path], args) -> None:
    import protstore
    from protstore.batching import plan_from_store, save_plan
    from protstore.demo.pipeline import rmse_by_bucket
    from protstore.ema import compute_ema
    from protstore.evaluate import EvalConfig, evaluate
    from protstore.model.fit import CIS_MAX
    from protstore.train.priors import collect_samples
    from protstore.batching import LoaderConfig
    from protstore.train import TrainConfig, train

    store = ingest_store(out, files)
    if "real" not in store.plans():
        save_plan(store, plan_from_store(store, name="real", n_buckets=2, split="protein",
                                         val_fraction=0.25, seed=args.seed))
    store = protstore.open_store(store.url)
    plan = store.plan("real")
    print(plan.table())
    run = out / "run"
    if not (run / "final").exists():
        train(store, plan, run, TrainConfig(epochs=args.epochs, learning_rate=2e-3,
                                            checkpoint_every_steps=10,
                                            loader=LoaderConfig(batch_size=8)),
              resume=(run / "config.json").exists(), progress=False)
    priors = json.loads((run / "priors.json").read_text())
    samples = collect_samples(store, plan).arrays()
    results = {}
    for T in np.unique(samples["bond_kT"]):
        r = samples["bond"][(samples["bond_kT"] == T) & (samples["bond"] >= CIS_MAX)]
        results[f"{T / KB:.0f}"] = (T / r.var(), len(r))
    ema = out / "ema"
    if not ema.exists():
        compute_ema(run, ema, decay=0.99)
    ev = out / "eval"
    final = evaluate(store, run / "final", ev, EvalConfig(mode="full"), plan=plan,
                     progress=False, echo=lambda m: None)["result"].dataset
    prior = evaluate(store, run / "final", ev, EvalConfig(mode="prior-only", model_id="final"),
                     plan=plan, progress=False, echo=lambda m: None)["result"].dataset
    smoothed = evaluate(store, ema, ev, EvalConfig(mode="full"), plan=plan, progress=False,
                        echo=lambda m: None)["result"].dataset
    print("\nheld-out proteins:", ", ".join(plan.split.val_proteins))
    print("| model | force RMSE per component (kcal/mol/Å) |\n|---|---|")
    for name, ds, zero in (("zero force", final, True), ("priors only", prior, False),
                           ("priors + network, final", final, False),
                           ("priors + network, EMA 0.99", smoothed, False)):
        print(f"| {name} | {rmse_by_bucket(ds, zero=zero)['all']:.3f} |")
    bond = priors["params"]["bond"]
    print(f"\nfitted bond k = {bond['k']:.1f} kcal/mol/Å², r0 = {bond['r0']:.3f} Å; "
          f"{priors['fit']['bond_cis']} ")
    for T, (k, n) in results.items():
        print(f"kT/var(trans CA-CA) at {T} K: {k:.1f} kcal/mol/Å² ({n} bonds)")


if __name__ == "__main__":
    main()
