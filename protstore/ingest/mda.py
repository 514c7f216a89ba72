"""Reader of MD engines' own files through MDAnalysis: a topology plus a trajectory with forces.

GROMACS TRR (+ TPR/GRO/PDB), Amber NetCDF with forces (+ PRMTOP), H5MD, LAMMPS dumps with
``fx fy fz`` (+ a LAMMPS data file), TNG, ... -- whatever MDAnalysis reads, as long as the
trajectory stores forces (``ts.has_forces``). One protein per trajectory: the atoms of
``select_atoms("protein")``, one bead per residue at its CA atom, bead force = sum of the
forces of all the residue's atoms (:mod:`protstore.ingest.cgmap`).

Units: a reader that knows its file's units (TRR, TNG: nm and kJ/mol/nm; Amber NetCDF: Å and
kcal/mol/Å; H5MD with ``unit`` attributes) converts them to MDAnalysis's base units, Å and
**kJ/mol/Å**; protstore then divides the forces by 4.184 to kcal/mol/Å. Those units count as
declared (by the reader): the physics checks of :mod:`protstore.ingest.units` warn, never
refuse. A reader that does not know them (LAMMPS dumps, H5MD without ``unit`` attributes)
hands over the file's raw numbers: then ``--length-units`` / ``--force-units`` declare them,
else they are assumed to be Å and kcal/mol/Å (LAMMPS ``units real``) and checked by physics,
as for NPZ files.

MD trajectories store no thermostat temperature: give it with ``--temperature K``, else the
frames are stored with an unknown temperature (NaN), as for NPZ files. MDAnalysis is an
optional dependency (``pip install 'protstore[mda]'``), imported only here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .cgmap import CA_AGGREGATE, ca_indices, ca_positions, residue_force_sums
from .source import FrameBlock, ProteinSource, file_checksum
from .units import FORCE_UNITS, LENGTH_UNITS, SourceUnits, canonical_unit
from .validate import FrameChecks, extent_problems, max_abs_per_frame

#: trajectory suffix -> MDAnalysis format. Formats without forces (XTC, DCD) are listed so that
#: such a file is refused for what it lacks, not as an unknown format.
MD_FORMATS = {".trr": "TRR", ".nc": "NCDF", ".ncdf": "NCDF", ".h5md": "H5MD",
              ".lammpstrj": "LAMMPSDUMP", ".dump": "LAMMPSDUMP", ".tng": "TNG",
              ".xtc": "XTC", ".dcd": "DCD"}
INSTALL = "pip install 'protstore[mda]'"


def _mdanalysis(where: str):
    try:
        import MDAnalysis
    except ImportError:
        raise InputError(f"{where}: reading MD trajectories needs MDAnalysis, which is not "
                         f"installed ({INSTALL})") from None
    return MDAnalysis


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _universe(mda, topology: Path, trajectory: Path, fmt: str | None, where: str):
    """The MDAnalysis Universe of the two files, or an InputError saying why not."""
    for path, what in ((topology, "topology"), (trajectory, "trajectory")):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such {what} file")
    kwargs = {"format": fmt} if fmt else {}
    try:
        with warnings.catch_warnings():  # MDAnalysis's notes on metadata protstore does not use
            warnings.simplefilter("ignore")
            return mda.Universe(str(topology), str(trajectory), **kwargs)
    except Exception as exc:  # noqa: BLE001 - MDAnalysis raises many types; one line each
        raise InputError(f"{where}: MDAnalysis cannot read it ({_one_line(exc)})") from None


def _reader_units(reader, length_units: str | None, force_units: str | None,
                  where: str) -> SourceUnits:
    """The units of the numbers MDAnalysis hands over (see the module docstring)."""
    known_length = reader.units.get("length") is not None
    known_force = reader.units.get("force") is not None
    for given, known, flag, native in ((length_units, known_length, "--length-units",
                                        reader.units.get("length")),
                                       (force_units, known_force, "--force-units",
                                        reader.units.get("force"))):
        if given is not None and known:
            raise InputError(f"{where}: the trajectory declares its unit ({native}), which "
                             f"MDAnalysis converts; {flag} applies only to files that do not")
    length = ("angstrom" if known_length or length_units is None
              else canonical_unit(length_units, LENGTH_UNITS, "--length-units"))
    if known_force:
        force = "kJ/mol/angstrom"  # MDAnalysis's base unit of force
    else:
        force = (canonical_unit(force_units, FORCE_UNITS, "--force-units") if force_units
                 else "kcal/mol/angstrom")
    return SourceUnits(length, force, declared=known_force or force_units is not None)


def _chains(residues) -> np.ndarray:
    """[n_res] chain of each residue: its atoms' chainID where the topology has them (PDB,
    TPR, mmCIF), else its segment id (PSF, PRMTOP and GRO give one segment, SYSTEM); split
    where the topology's bonds say a chain ends (:func:`_split_unbonded`)."""
    atoms = residues.atoms
    first = np.concatenate([[0], np.cumsum([len(r.atoms) for r in residues])[:-1]])
    labels = np.array([str(s) for s in residues.segids], dtype=object)
    if hasattr(atoms, "chainIDs"):
        ids = np.asarray(atoms.chainIDs, dtype=object)[first]
        if all(str(c).strip() for c in ids):
            labels = np.array([str(c).strip() for c in ids], dtype=object)
    return _split_unbonded(labels, np.asarray(residues.resids), residues)


def _split_unbonded(labels: np.ndarray, resids: np.ndarray, residues) -> np.ndarray:
    """``labels`` with a chain renamed ``LABEL_1``, ``LABEL_2``... at each pair of residues
    that the labels and resids call bonded (same label, resid + 1) but no bond of the topology
    joins: PRMTOP numbers the residues of all its chains in one run, in one segment, and a
    PDB without chain IDs reads as one chain X. Bonds are trusted only when they join most of
    those pairs (a PDB's CONECT records often hold the ligands' bonds only)."""
    atoms = residues.atoms
    candidate = (labels[1:] == labels[:-1]) & (np.diff(resids) == 1)
    if not hasattr(atoms, "bonds") or not candidate.any():
        return labels
    # residue (position in ``residues``) of every atom of the universe, -1 outside them
    of = np.full(residues.universe.atoms.n_atoms, -1, np.int64)
    of[atoms.indices] = np.repeat(np.arange(len(residues)), [len(r.atoms) for r in residues])
    pairs = of[np.asarray(atoms.bonds.indices, np.int64).reshape(-1, 2)]
    pairs = pairs[(pairs >= 0).all(axis=1) & (np.abs(pairs[:, 0] - pairs[:, 1]) == 1)]
    joined = np.zeros(len(residues) - 1, bool)
    joined[pairs.min(axis=1)] = True
    ends = candidate & ~joined
    if not ends.any() or np.count_nonzero(joined & candidate) < candidate.sum() / 2:
        return labels
    piece = np.concatenate([[0], np.cumsum(ends | ~candidate)])  # a new piece at every break
    out = labels.copy()
    for label in dict.fromkeys(labels):
        rows = np.flatnonzero(labels == label)
        if np.any(ends[rows[rows < len(ends)]]):  # this chain holds several
            numbers = {p: k + 1 for k, p in enumerate(dict.fromkeys(piece[rows]))}
            out[rows] = [f"{label}_{numbers[p]}" for p in piece[rows]]
    return out


def open_md(trajectory: str | Path, *, topology: str | Path | None,
            fmt: str | None = None, protein_id: str | None = None,
            temperature: float | None = None, length_units: str | None = None,
            force_units: str | None = None,
            checks: FrameChecks = FrameChecks()) -> list[ProteinSource]:
    """The protein of an MD trajectory with forces, read with MDAnalysis (module docstring).

    ``topology`` names the atoms (TPR, GRO, PDB, PRMTOP, PSF, LAMMPS data...); ``fmt`` is
    MDAnalysis's format name for the trajectory (default: from its suffix, :data:`MD_FORMATS`).
    Opens the files and reads the topology; frames are read later, in blocks, by the source's
    ``blocks(block_frames)``.
    """
    trajectory = Path(trajectory)
    if topology is None:
        raise InputError(f"{trajectory}: an MD trajectory needs its topology: give "
                         f"--topology FILE (TPR, GRO, PDB, PRMTOP, PSF, ...)")
    topology = Path(topology)
    where = f"{trajectory} (topology {topology})"
    mda = _mdanalysis(where)
    fmt = fmt or MD_FORMATS.get(trajectory.suffix.lower())
    u = _universe(mda, topology, trajectory, fmt, where)
    reader = u.trajectory
    if not reader.ts.has_forces:
        raise InputError(f"{trajectory}: the trajectory stores no forces ({reader.format} "
                         f"reader); force matching needs a trajectory written with forces")
    units = _reader_units(reader, length_units, force_units, where)
    protein = u.select_atoms("protein")
    if protein.n_atoms == 0:
        raise InputError(f"{where}: no protein atoms (select_atoms('protein') is empty)")

    residues = protein.residues
    counts = np.array([np.count_nonzero(r.atoms.names == "CA") for r in residues])
    not_read = []
    if protein.n_atoms < u.atoms.n_atoms:
        not_read.append(f"{u.atoms.n_atoms - protein.n_atoms} atoms outside "
                        f"select_atoms('protein') (solvent, ions, ligands)")
    capless = [f"{r.resname} {r.resid}" for r, c in zip(residues, counts) if c == 0]
    if capless:  # caps (ACE, NME, ...): no CA, so no bead
        not_read.append(f"{len(capless)} residue(s) without a CA atom, so without a bead, and "
                        f"their atoms' forces in none ({', '.join(capless[:5])}"
                        f"{', ...' if len(capless) > 5 else ''})")
        residues = residues[counts > 0]
    # the atoms residue by residue (topology order), as the CA map reads them
    atoms = residues.atoms
    sizes = np.array([len(r.atoms) for r in residues], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ca = ca_indices(np.asarray(atoms.names, dtype=object), starts, where)
    index = np.asarray(atoms.indices, dtype=np.int64)
    n_frames = len(reader)
    length_factor, force_factor = units.factors

    trajectory_entry = {"path": str(trajectory), "format": "mdanalysis-trajectory",
                        "checksum": None, "entry": str(reader.format if isinstance(
                            reader.format, str) else reader.format[0])}
    topology_entry = {"path": str(topology), "format": "mdanalysis-topology",
                      "checksum": file_checksum(topology), "entry": None}
    T = np.float32(np.nan if temperature is None else temperature)

    def read(lo: int, hi: int):
        """All-atom positions [b, n, 3] float32 Å and forces [b, n, 3] float64 kcal/mol/Å of
        the protein atoms in frames [lo, hi)."""
        pos = np.empty((hi - lo, len(index), 3), np.float32)
        frc = np.empty((hi - lo, len(index), 3), np.float64)
        try:
            for i, ts in enumerate(reader[lo:hi]):
                if not ts.has_forces:
                    raise InputError(f"{trajectory}: frame {ts.frame} stores no forces")
                pos[i] = ts.positions[index]
                frc[i] = ts.forces[index]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or damaged file: one line
            raise InputError(f"{trajectory}: frames {lo}-{hi - 1} do not read "
                             f"({_one_line(exc)})") from None
        if length_factor != 1.0:
            pos = (pos.astype(np.float64) * length_factor).astype(np.float32)
        if force_factor != 1.0:
            frc *= force_factor  # in float64: the bead force is rounded once, at the end
        return pos, frc

    def blocks(block_frames: int):
        for lo in range(0, n_frames, block_frames):
            hi = min(lo + block_frames, n_frames)
            pos, frc = read(lo, hi)
            R = ca_positions(pos, ca)
            F = residue_force_sums(frc, starts)
            yield FrameBlock(R=R, F=F, temperature=np.full(hi - lo, T, np.float32),
                             replica=np.zeros(hi - lo, np.int32),
                             source_frame=np.arange(lo, hi, dtype=np.int32),
                             problems=extent_problems(max_abs_per_frame(pos), F, checks))

    return [ProteinSource(
        protein_id=protein_id if protein_id is not None else trajectory.stem,
        origin=str(trajectory), resname=np.array([str(r) for r in residues.resnames],
                                                 dtype=object),
        resid=np.asarray(residues.resids, dtype=np.int64), chain=_chains(residues),
        sources=[trajectory_entry, topology_entry], cg_map=dict(CA_AGGREGATE),
        n_frames=n_frames, frame_bytes=len(index) * 3 * (4 + 8), blocks=blocks, units=units,
        not_read=tuple(not_read))]
