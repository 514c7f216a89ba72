"""Reader of the predecessor pipeline's NPZ files (docs/domain.md section 3).

Two shapes: a per-protein CG file (R, F [T, N, 3]) and a combined/bucketed padded file
(R, F [T_total, N_max, 3] with ``protein_id``/``n_atoms``/``mask``), which is split back into its
proteins with the padding removed. Species are always re-derived from residue names.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError, PickleRefusedError
from .source import FrameBlock, ProteinSource
from .units import FORCE_UNITS, LENGTH_UNITS, SourceUnits, canonical_unit
from .validate import FrameChecks, atom_problems

REQUIRED = ("R", "F", "resname")
NPZ_MAP = {"name": "precomputed", "position": "as stored in the NPZ file (R)",
           "force": "as stored in the NPZ file (F)"}


# A member may expand to at most this many times its compressed size once it is this large:
# positions and forces compress ~1.2-3x, so a larger ratio is a zip bomb, refused before it is
# expanded into memory.
MAX_EXPANSION = 200
EXPANSION_CHECKED_BYTES = 64 << 20


class Member(NamedTuple):
    """An .npz member as its zip entry and .npy header declare it (nothing decompressed but the
    header)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    file_size: int  # bytes once decompressed
    compress_size: int


def npz_members(path: Path) -> dict[str, Member]:
    """The members of an .npz file by key, from their headers: refused when a member is not a
    ``.npy`` array or would expand more than :data:`MAX_EXPANSION` times."""
    found = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise InputError(f"{path}: member {info.filename!r} is not a .npy array (an .npz "
                                 f"holds only .npy members)")
            if (info.file_size >= EXPANSION_CHECKED_BYTES
                    and info.file_size > MAX_EXPANSION * max(info.compress_size, 1)):
                raise InputError(
                    f"{path}: member {info.filename!r} expands from {info.compress_size} to "
                    f"{info.file_size} bytes (over {MAX_EXPANSION}x; real positions and forces "
                    f"compress ~3x): refused as a zip bomb, nothing was expanded")
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(fh)
            if not dtype.hasobject and np.prod(shape, dtype=np.int64) * dtype.itemsize \
                    > info.file_size:
                raise InputError(f"{path}: member {info.filename!r} declares a {shape} "
                                 f"{dtype} array but holds only {info.file_size} bytes")
            found[info.filename[:-4]] = Member(tuple(shape), dtype, info.file_size,
                                               info.compress_size)
    return found


def _check_declared(path: Path, members: dict[str, Member]) -> None:
    """R and F as their headers declare them, before anything is read."""
    missing = [k for k in REQUIRED if k not in members]
    if missing:
        raise InputError(f"{path}: missing required key(s) {', '.join(missing)} "
                         f"(needs R, F, resname)")
    for name in ("R", "F"):
        m = members[name]
        if len(m.shape) != 3 or m.shape[-1] != 3:
            raise InputError(f"{path}: {name} has shape {m.shape}, expected (frames, atoms, 3)")
        if m.dtype.kind != "f":
            raise InputError(f"{path}: {name} has dtype {m.dtype}, expected floating point")


def _load(path: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    try:
        members = npz_members(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    pickled = [k for k, m in members.items() if m.dtype.hasobject]
    if pickled and not allow_pickle:
        raise PickleRefusedError(
            f"{path}: keys {', '.join(pickled)} hold pickled Python objects, and unpickling can "
            f"run arbitrary code; pass --allow-pickle only if you trust this file")
    _check_declared(path, members)
    try:
        with np.load(path, allow_pickle=allow_pickle) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: an array does not read ({type(exc).__name__}: {exc})") from None
    return arrays


def _as_str(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(values)],
                    dtype=object)


def _check_vectors(R, F, where: str) -> None:
    for name, a in (("R", R), ("F", F)):
        if a.ndim != 3 or a.shape[-1] != 3:
            raise InputError(f"{where}: {name} has shape {a.shape}, expected (frames, atoms, 3)")
        if a.dtype.kind != "f":
            raise InputError(f"{where}: {name} has dtype {a.dtype}, expected floating point")
    if R.shape[0] != F.shape[0]:
        raise InputError(f"{where}: R/F frame-count mismatch (R {R.shape[0]}, F {F.shape[0]})")
    if R.shape != F.shape:
        raise InputError(f"{where}: R shape {R.shape} != F shape {F.shape}")
    if R.shape[0] == 0 or R.shape[1] == 0:
        raise InputError(f"{where}: R and F hold no {'frames' if R.shape[0] == 0 else 'atoms'} "
                         f"(shape {R.shape})")


def _integers(values, name: str, n: int, where: str) -> np.ndarray:
    """[n] int64 from ``values`` (integers, or floats holding integers), else an InputError."""
    a = np.asarray(values)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise InputError(f"{where}: {name} has dtype {a.dtype}, expected integers")
    a = a.reshape(-1)
    if len(a) != n:
        raise InputError(f"{where}: {name} has {len(a)} entries for {n} atoms")
    return a.astype(np.int64)


def _temperatures(arrays: dict, rows: np.ndarray, default: float | None,
                  where: str) -> np.ndarray:
    """[len(rows)] float32 K of the given frames: the file's ``temperature`` (one value or one
    per frame), else ``default``, else NaN (unknown)."""
    if "temperature" not in arrays:
        return np.full(len(rows), np.nan if default is None else default, np.float32)
    t = np.asarray(arrays["temperature"])
    if t.dtype.kind not in "iuf":
        raise InputError(f"{where}: temperature has dtype {t.dtype}, expected numbers (K)")
    t = t.astype(np.float32).reshape(-1)
    n_frames = len(arrays["R"])
    if len(t) not in (1, n_frames):
        raise InputError(f"{where}: temperature has {len(t)} values for {n_frames} frames "
                         f"(give one, or one per frame)")
    if not (np.isfinite(t) & (t > 0)).all():
        raise InputError(f"{where}: temperature holds values that are not positive finite "
                         f"kelvin ({t[~(np.isfinite(t) & (t > 0))][0]})")
    return np.broadcast_to(t, (n_frames,))[rows]


def _source(protein_id, where, resname, resid, chain, sources, R, F, rows, temperature,
            checks, units: SourceUnits) -> ProteinSource:
    length, force = units.factors

    def converted(a: np.ndarray, factor: float) -> np.ndarray:
        if factor == 1.0:
            return np.asarray(a, dtype=np.float32)
        return (np.asarray(a, dtype=np.float64) * factor).astype(np.float32)

    def blocks(block_frames: int):
        for lo in range(0, len(rows), block_frames):
            idx = rows[lo:lo + block_frames]
            Rb = converted(R[idx], length)
            Fb = converted(F[idx], force)
            yield FrameBlock(R=Rb, F=Fb, temperature=temperature[lo:lo + block_frames],
                             replica=np.zeros(len(idx), np.int32),
                             source_frame=idx.astype(np.int32),
                             problems=atom_problems(Rb, Fb, checks))

    return ProteinSource(protein_id=protein_id, origin=where, resname=resname, resid=resid,
                         chain=chain, sources=sources, cg_map=dict(NPZ_MAP), n_frames=len(rows),
                         frame_bytes=R[0].nbytes + F[0].nbytes, blocks=blocks, units=units)


def open_npz(path: str | Path, *, allow_pickle: bool = False,
             protein_id: str | None = None, temperature: float | None = None,
             length_units: str | None = None, force_units: str | None = None,
             checks: FrameChecks = FrameChecks()) -> list[ProteinSource]:
    """The proteins in one NPZ file (per-protein or combined/padded)."""
    path = Path(path)
    units = SourceUnits(
        canonical_unit(length_units, LENGTH_UNITS, "--length-units") if length_units else
        "angstrom",
        canonical_unit(force_units, FORCE_UNITS, "--force-units") if force_units else
        "kcal/mol/angstrom", declared=force_units is not None)
    arrays = _load(path, allow_pickle)
    R, F = arrays["R"], arrays["F"]
    _check_vectors(R, F, str(path))
    if "protein_id" in arrays or "n_atoms" in arrays:
        if protein_id is not None:
            raise InputError(f"{path}: a combined file holds many proteins; --id applies only "
                             f"to per-protein files")
        return _split_combined(path, arrays, temperature, checks, units)

    n = R.shape[1]
    resname = _as_str(arrays["resname"])
    if resname.size != n:
        if resname.size == R.shape[0] * n:  # [T, N]: constant per frame in these files
            resname = resname.reshape(R.shape[0], n)[0]
        else:
            raise InputError(f"{path}: resname has {resname.size} entries for {n} atoms")
    resid = _integers(arrays.get("resid", np.arange(1, n + 1)), "resid", n, str(path))
    chain = _as_str(arrays["chain"])[:n] if "chain" in arrays else np.full(n, "A", dtype=object)
    rows = np.arange(R.shape[0])
    pid = protein_id if protein_id is not None else path.stem
    sources = [{"path": str(path), "format": "npz-protein", "checksum": None, "entry": None}]
    return [_source(pid, str(path), resname, resid, chain, sources, R, F, rows,
                    _temperatures(arrays, rows, temperature, str(path)), checks, units)]


def _split_combined(path: Path, arrays: dict, temperature, checks, units: SourceUnits):
    R, F = arrays["R"], arrays["F"]
    t_total, n_max = R.shape[:2]
    pids = np.asarray(arrays.get("protein_id", np.zeros(t_total, np.int64))).reshape(-1)
    mask = np.asarray(arrays["mask"]) if "mask" in arrays else None
    if "n_atoms" in arrays:
        n_atoms = np.asarray(arrays["n_atoms"]).reshape(-1).astype(np.int64)
    elif mask is not None:
        n_atoms = (mask > 0).sum(axis=1)
    else:
        raise InputError(f"{path}: combined file needs n_atoms or mask to remove padding")
    if len(pids) != t_total or len(n_atoms) != t_total:
        raise InputError(f"{path}: protein_id/n_atoms have {len(pids)}/{len(n_atoms)} entries "
                         f"for {t_total} frames")
    resname_all = np.asarray(arrays["resname"])
    resid_all = np.asarray(arrays["resid"]) if "resid" in arrays else None
    paths = _as_str(arrays["paths"]) if "paths" in arrays else None
    names_from_paths = paths is not None and len(set(Path(p).stem for p in paths)) == len(paths)

    sources = []
    for p in dict.fromkeys(pids.tolist()):
        rows = np.flatnonzero(pids == p)
        where = f"{path}: protein_id {p}"
        ns = np.unique(n_atoms[rows])
        if len(ns) != 1:
            raise InputError(f"{where}: n_atoms varies across its frames ({ns.tolist()})")
        n = int(ns[0])
        if not 0 < n <= n_max:
            raise InputError(f"{where}: n_atoms={n} outside 1..{n_max}")
        if mask is not None:
            m = mask[rows] > 0
            bad = np.flatnonzero(~m[:, :n].all(axis=1) | m[:, n:].any(axis=1))
            if len(bad):
                raise InputError(f"{where}: mask disagrees with n_atoms={n} at frame "
                                 f"{int(rows[bad[0]])}")
        first = rows[0]
        resname = _as_str(resname_all[first] if resname_all.ndim == 2 else resname_all)[:n]
        if len(resname) != n:
            raise InputError(f"{where}: resname has {len(resname)} entries for {n} atoms")
        resid = _integers((resid_all[first] if resid_all.ndim == 2 else resid_all)[:n]
                          if resid_all is not None else np.arange(1, n + 1), "resid", n, where)
        chain = np.full(n, "A", dtype=object)
        pid = (Path(paths[p]).stem if names_from_paths and 0 <= p < len(paths)
               else f"{path.stem}_{p}")
        src = [{"path": str(path), "format": "npz-combined", "checksum": None,
                "entry": int(p)}]
        sources.append(_source(pid, where, resname, resid, chain, src, R[:, :n], F[:, :n], rows,
                               _temperatures(arrays, rows, temperature, str(path)), checks, units))
    return sources
