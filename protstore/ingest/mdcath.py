"""Reader of mdCATH-layout HDF5 files (one domain per file; see docs/domain.md section 2)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from ..selection import ss_fractions
from .cgmap import CA_AGGREGATE, ca_indices, ca_positions, residue_force_sums, residue_starts
from .source import FrameBlock, ProteinSource, StreamChecksum
from .units import FORCE_UNITS, LENGTH_UNITS, SourceUnits, canonical_unit
from .validate import FrameChecks, extent_problems, max_abs_per_frame

LAYOUT = "mdcath-only-protein-v1.0"
# bytes of source frames read, hashed, checked and mapped at a time (see FrameReader.pieces)
PIECE_BYTES = 1 << 20


def _declared_unit(dataset: h5py.Dataset, table: dict, where: str) -> str | None:
    """The canonical unit a dataset's ``unit`` attribute declares (None: no attribute)."""
    unit = dataset.attrs.get("unit", dataset.attrs.get("units"))
    return None if unit is None else canonical_unit(unit, table, where)


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value[()] if value.shape == () else b"".join(value.tolist())
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in dataset[()]],
                    dtype=object)


def pdb_atom_names(pdb_text: str) -> np.ndarray:
    """Atom names (PDB columns 13-16) of the ATOM/HETATM records, in order."""
    names = [line[12:16].strip() for line in pdb_text.splitlines()
             if line.startswith(("ATOM", "HETATM"))]
    return np.array(names, dtype=object)


def _runs(group: h5py.Group, temperatures, replicas, where: str
          ) -> tuple[list[tuple[float, int, str]], list[str]]:
    """(temperature, replica, h5 path) of the selected runs that exist, in sorted order, and
    one line per group that is not read, saying why."""
    runs, skipped = [], []
    for tname in _numeric_groups(group, "temperature", "", skipped):
        if temperatures is not None and int(tname) not in temperatures:
            skipped.append(f"{tname}: temperature not selected")
            continue
        for rname in _numeric_groups(group[tname], "replica", f"{tname}/", skipped):
            if replicas is not None and int(rname) not in replicas:
                skipped.append(f"{tname}/{rname}: replica not selected")
                continue
            runs.append((float(tname), int(rname), f"{tname}/{rname}"))
    if not runs:
        raise InputError(f"{where}: no temperature/replica runs selected "
                         f"(temperatures={temperatures}, replicas={replicas})"
                         + (f"; not read: {'; '.join(skipped)}" if skipped else ""))
    return runs, skipped


def _numeric_groups(group: h5py.Group, what: str, prefix: str, skipped: list[str]) -> list[str]:
    """Names of the child groups named by an integer (mdCATH's temperatures in K, replicas),
    in numeric order; any other child group goes to ``skipped`` with the reason."""
    names = []
    for key in group:
        if key.isdigit():
            names.append(key)
        elif isinstance(group.get(key, getlink=True), h5py.HardLink) and \
                isinstance(group[key], h5py.Group):
            skipped.append(f"{prefix}{key}: group name is not a {what} (an integer)")
    return sorted(names, key=int)


@dataclass(frozen=True)
class DatasetPlace:
    """Where an HDF5 dataset [frames, ...] is: its path in the file, shape, dtype, and the file
    offset of its bytes when they are stored as one plain run (else None)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int | None

    @classmethod
    def of(cls, dataset: h5py.Dataset) -> DatasetPlace:
        return cls(dataset.name, dataset.shape, dataset.dtype, _raw_offset(dataset))


class FrameReader:
    """Reads frame ranges ``[lo, hi)`` of an HDF5 dataset [frames, ...].

    A contiguous, unfiltered dataset (mdCATH's files are uncompressed) is read straight from
    its bytes in the file with ``os.preadv``, which releases the GIL: h5py holds it for the
    whole of a read, which would stall the threads that map and compress the frames meanwhile.
    Any other storage (chunked, filtered, external, not yet allocated) is read by h5py, from
    ``h5file`` (an open :class:`h5py.File`). ``stream`` (optional) is handed every range read
    from the file, to checksum it.
    """

    def __init__(self, place: DatasetPlace, fd: int, where: str,
                 stream: StreamChecksum | None = None, h5file: h5py.File | None = None):
        self.place, self.fd, self.where, self.stream, self.h5file = \
            place, fd, where, stream, h5file
        self.n_frames = place.shape[0]
        self.frame_bytes = int(np.prod(place.shape[1:])) * place.dtype.itemsize
        self.offset = place.offset

    def read(self, lo: int, hi: int, buffer: np.ndarray | None = None) -> np.ndarray:
        """Frames [lo, hi) in the dataset's dtype, read into ``buffer`` (uint8, large enough)
        if given (a view of it is returned)."""
        if self.offset is None:
            if self.stream is not None:
                self.stream.abandon()
            return self.h5file[self.place.name][lo:hi]
        shape = (hi - lo, *self.place.shape[1:])
        if buffer is None:
            out = np.empty(shape, self.place.dtype)
        else:
            out = buffer[:(hi - lo) * self.frame_bytes].view(self.place.dtype).reshape(shape)
        view = memoryview(out).cast("B")
        start, done = self.offset + lo * self.frame_bytes, 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], start + done)
            if n == 0:
                raise InputError(f"{self.where}: the file ends inside frames {lo}-{hi - 1} "
                                 f"(truncated?)")
            done += n
        if self.stream is not None:
            self.stream.update(start, view)
        return out

    def pieces(self, lo: int, hi: int, buffer: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Frames [lo, hi) in order as (first frame, frames [k, ...]), read into ``buffer``
        (uint8, one frame at least) as many whole frames at a time as it holds; each piece is
        only valid until the next is asked for. A piece small enough to stay in the CPU cache
        is copied there by the kernel and then hashed, checked and mapped from the cache: a
        block-sized buffer would send every pass to memory (3x the CPU time for the read
        alone). Storage read by h5py comes in one piece."""
        if self.offset is None:
            yield lo, self.read(lo, hi)
            return
        step = max(1, len(buffer) // self.frame_bytes)
        for a in range(lo, hi, step):
            yield a, self.read(a, min(a + step, hi), buffer)


def _raw_offset(dataset: h5py.Dataset) -> int | None:
    """File offset of a dataset's bytes when they are stored as one plain run, else None."""
    plist = dataset.id.get_create_plist()
    if (not hasattr(os, "preadv") or plist.get_layout() != h5py.h5d.CONTIGUOUS
            or plist.get_nfilters() or plist.get_external_count()
            or dataset.dtype.kind not in "fiu"):
        return None
    return dataset.id.get_offset()  # None while no space is allocated (all fill value)


def _read_beads(readers: list[tuple[str, FrameReader]], lo: int, hi: int, piece: np.ndarray,
                scale: tuple[float, float], ca: np.ndarray, starts: np.ndarray):
    """Frames [lo, hi) of one run, read piece by piece (``FrameReader.pieces``) and mapped.

    ``readers`` are the run's ("coords" | "forces", reader) in the order to read them;
    ``scale`` the (length, force) unit factors to Å and kcal/mol/Å. Returns bead positions and
    forces R, F [hi - lo, n_res, 3] float32 and each frame's largest all-atom |coordinate|
    [hi - lo] (:func:`~protstore.ingest.validate.max_abs_per_frame`).
    """
    b = hi - lo
    R = np.empty((b, len(starts), 3), np.float32)
    F = np.empty((b, len(starts), 3), np.float32)
    extent = np.empty(b, np.float64)
    for name, reader in readers:
        factor = np.float32(scale[0] if name == "coords" else scale[1])
        for a, frames in reader.pieces(lo, hi, piece):
            rows = slice(a - lo, a - lo + len(frames))
            if factor != 1:
                frames = frames * factor
            if name == "coords":
                R[rows] = ca_positions(frames, ca)
                extent[rows] = max_abs_per_frame(frames)
            else:
                residue_force_sums(frames, starts, out=F[rows])
    return R, F, extent


def open_mdcath(path: str | Path, *, temperatures: Iterable[int] | None = None,
                replicas: Iterable[int] | None = None,
                checks: FrameChecks = FrameChecks()) -> list[ProteinSource]:
    """Read topology and run shapes of every domain in an mdCATH file (no trajectory data yet).

    Frames are read later, in blocks, by each source's ``blocks(block_frames)``.
    """
    path = Path(path)
    temperatures = set(temperatures) if temperatures is not None else None
    replicas = set(replicas) if replicas is not None else None
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh:
        layout = fh.attrs.get("layout")
        if layout is not None and _text(layout) != LAYOUT:
            raise InputError(f"{path}: layout {_text(layout)!r} is not {LAYOUT!r}")
        domains = [k for k in fh if isinstance(fh[k], h5py.Group)]
        if not domains:
            raise InputError(f"{path}: no domain group in the file")
        return [_open_domain(path, fh[d], d, temperatures, replicas, checks)
                for d in domains]


def _open_domain(path, g, domain, temperatures, replicas, checks) -> ProteinSource:
    where = f"{path}:/{domain}"
    for key in ("resname", "resid", "chain", "pdbProteinAtoms"):
        if key not in g:
            raise InputError(f"{where}: missing dataset {key!r}")
    resname_atoms = _strings(g["resname"])
    chain_atoms = _strings(g["chain"])
    resid_atoms = np.asarray(g["resid"][()])
    if resid_atoms.dtype.kind not in "iu":
        raise InputError(f"{where}: dataset 'resid' has dtype {resid_atoms.dtype}, expected "
                         f"integers")
    resid_atoms = resid_atoms.reshape(-1).astype(np.int64)
    n_atoms = len(resname_atoms)
    if not (len(chain_atoms) == len(resid_atoms) == n_atoms):
        raise InputError(f"{where}: per-atom datasets resname/resid/chain differ in length "
                         f"({n_atoms}, {len(resid_atoms)}, {len(chain_atoms)})")
    names = pdb_atom_names(_text(g["pdbProteinAtoms"][()]))
    if len(names) != n_atoms:
        raise InputError(f"{where}: pdbProteinAtoms has {len(names)} atoms but the per-atom "
                         f"datasets have {n_atoms}")
    starts = residue_starts(chain_atoms, resid_atoms)
    ca = ca_indices(names, starts, where)
    n_res_attr = g.attrs.get("numResidues")
    if n_res_attr is not None and int(n_res_attr) != len(starts):
        raise InputError(f"{where}: numResidues={int(n_res_attr)} but (chain, resid) runs give "
                         f"{len(starts)} residues")

    runs, skipped = _runs(g, temperatures, replicas, where)
    info = []  # per run: frames, scale, places, declared units, whether its dssp is usable
    for temp, rep, key in runs:
        run = g[key]
        rw = f"{where}/{key}"
        for name in ("coords", "forces"):
            if name not in run:
                raise InputError(f"{rw}: missing dataset {name!r}")
        c, f = run["coords"], run["forces"]
        if c.ndim != 3 or c.shape[1:] != (n_atoms, 3):
            raise InputError(f"{rw}/coords: shape {c.shape}, expected (frames, {n_atoms}, 3)")
        if f.shape != c.shape:
            if f.ndim == 3 and f.shape[1:] == c.shape[1:]:
                raise InputError(f"{rw}: R/F frame-count mismatch (coords {c.shape[0]} frames, "
                                 f"forces {f.shape[0]})")
            raise InputError(f"{rw}/forces: shape {f.shape}, expected {c.shape}")
        for name, ds in (("coords", c), ("forces", f)):
            if ds.dtype.kind != "f":
                raise InputError(f"{rw}/{name}: dtype {ds.dtype}, expected floating point")
        declared = SourceUnits(
            _declared_unit(c, LENGTH_UNITS, f"{rw}/coords") or "angstrom",
            _declared_unit(f, FORCE_UNITS, f"{rw}/forces") or "kcal/mol/angstrom",
            declared="unit" in f.attrs or "units" in f.attrs)
        info.append({"frames": c.shape[0], "scale": declared.factors, "declared": declared,
                     "places": {"coords": DatasetPlace.of(c), "forces": DatasetPlace.of(f)},
                     "frame_bytes": n_atoms * 3 * (c.dtype.itemsize + f.dtype.itemsize),
                     "dssp": _dssp_problem(run, c.shape[0], len(starts))})

    provenance = {"path": str(path), "format": "mdcath-h5", "checksum": None, "entry": domain}

    def source(chosen: list[int], notes: tuple[str, ...] = ()) -> ProteinSource:
        """The domain with only the runs ``chosen`` (indices into ``runs``)."""
        mine = [(runs[i], info[i]) for i in chosen]
        problems = [f"{key}/dssp: {r['dssp']}" for (_, _, key), r in mine if r["dssp"]]
        has_ss = not problems
        # a file without any dssp says nothing (not every source has one); one with some does
        dssp_notes = () if has_ss or len(problems) == len(mine) and all(
            r["dssp"] == "missing" for _, r in mine) else \
            (f"{'; '.join(problems)} (so no run's secondary structure is stored)",)

        def blocks(block_frames: int):
            plain = all(p.offset is not None for _, run_info in mine
                        for p in run_info["places"].values())
            # reused (fresh memory is zeroed by the kernel); one frame at least
            piece = np.empty(max(PIECE_BYTES, max(r["frame_bytes"] for _, r in mine)), np.uint8)
            with open(path, "rb", buffering=0) as raw, \
                    (contextlib.nullcontext() if plain and not has_ss else
                     h5py.File(path, "r")) as fh:
                # the file's checksum from the bytes read for the frames (plus the rest)
                stream = StreamChecksum(raw.fileno()) if provenance["checksum"] is None else None
                for (temp, rep, key), run_info in mine:
                    readers = {name: FrameReader(place, raw.fileno(), f"{where}/{key}/{name}",
                                                 stream, fh)
                               for name, place in run_info["places"].items()}
                    in_file_order = sorted(readers.items(), key=lambda kv: kv[1].offset or 0)
                    # a run's DSSP is small (one byte per residue and frame): read at once
                    ss = ss_fractions(fh[f"{domain}/{key}/dssp"][()]) if has_ss else None
                    for lo in range(0, readers["coords"].n_frames, block_frames):
                        hi = min(lo + block_frames, readers["coords"].n_frames)
                        R, F, extent = _read_beads(in_file_order, lo, hi, piece,
                                                   run_info["scale"], ca, starts)
                        yield FrameBlock(R=R, F=F, temperature=np.full(hi - lo, temp, np.float32),
                                         replica=np.full(hi - lo, rep, np.int32),
                                         source_frame=np.arange(lo, hi, dtype=np.int32),
                                         problems=extent_problems(extent, F, checks),
                                         ss=None if ss is None else ss[lo:hi])
                if stream is not None:
                    provenance["checksum"] = stream.finish()

        return ProteinSource(
            protein_id=domain, origin=where,
            resname=resname_atoms[starts], resid=resid_atoms[starts], chain=chain_atoms[starts],
            sources=[provenance], cg_map=dict(CA_AGGREGATE),
            n_frames=sum(r["frames"] for _, r in mine),
            frame_bytes=max(r["frame_bytes"] for _, r in mine), blocks=blocks,
            units=_file_units([r["declared"] for _, r in mine]),
            not_read=(*skipped, *notes, *dssp_notes),
            runs=tuple((temp, rep, r["frames"]) for (temp, rep, _), r in mine),
            with_runs=lambda keep, notes=(): source([chosen[i] for i in keep], notes),
            has_ss=has_ss)

    return source(list(range(len(runs))))


def _dssp_problem(run: h5py.Group, n_frames: int, n_res: int) -> str | None:
    """Why a run's ``dssp`` dataset [frames, residues] (one DSSP letter each) cannot give
    its secondary structure ("missing", a wrong shape or type), None when it can."""
    if "dssp" not in run or not isinstance(run["dssp"], h5py.Dataset):
        return "missing"
    d = run["dssp"]
    if d.shape != (n_frames, n_res):
        return f"shape {d.shape}, expected ({n_frames}, {n_res})"
    if d.dtype.kind not in "SOU":
        return f"dtype {d.dtype}, expected DSSP letters"
    return None


def _file_units(per_run: list[SourceUnits]) -> SourceUnits:
    """The units of a domain's runs (each run was converted with its own): declared only when
    every run declares its force unit."""
    first = per_run[0]
    return SourceUnits(first.length, first.force, all(u.declared for u in per_run))
