"""Ingest: source files -> validated CG frames -> staged protein groups -> atomic commits."""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..progress import progress_bar, write_line

from .._version import __version__
from ..structure import radius_of_gyration
from ..errors import InputError, ProteinExistsError, ProtstoreError, SelectionError
from ..prefetch import prefetch
from ..selection import PROTEIN, SS_FIELDS, Selection
from ..timeseries import RunSeries
from ..store import Store
from ..vocab import canonical_resnames, species_ids
from .mda import MD_FORMATS, open_md
from .mdcath import open_mdcath
from .npz import open_npz
from .source import CHECKSUM, FrameBlock, ProteinSource, file_checksum
from .units import BondForceCheck, force_unit_problem, length_problem
from .validate import FrameChecks, bead_problems, bonded_to_next, force_rms, force_units_problem

H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


@dataclass(frozen=True)
class IngestOptions:
    """Everything that changes what ingest does (config as data).

    temperatures, replicas : mdCATH runs to take (None = all present).
    strict : a bad frame fails its protein instead of being excluded and recorded.
    overwrite : replace a protein already in the store from a different source.
    allow_pickle : read NPZ files that hold pickled objects (only for trusted files).
    allow_unknown : map unknown residue names to UNK instead of failing.
    protein_id : id for a single per-protein NPZ file or MD trajectory (default: the file stem).
    temperature : K, for NPZ files and MD trajectories, which do not store one (default: NaN,
        unknown).
    length_units, force_units : the units of NPZ files' R and F (default: Å and kcal/mol/Å,
        undeclared: then checked by physics, :mod:`protstore.ingest.units`); converted to store
        units and recorded in the protein document. mdCATH files declare theirs; so do most
        MD trajectories (through their MDAnalysis reader, :mod:`protstore.ingest.mda`).
    topology : the topology file of MD trajectories (TPR, GRO, PDB, PRMTOP, PSF, ...).
    md_format : MDAnalysis's format name of the trajectories (default: from the suffix);
        reads any file as an MD trajectory.
    block_bytes : source bytes read per frame block (bounds memory).
    break_claims : on object storage, take a protein over from a writer whose claim is live
        (one the user knows is dead; see :mod:`protstore.store.claims`).
    claim_wait_s : on object storage, wait up to this long (s) for a live claim to expire;
        None: no wait, except in a cluster ingest, whose retry of a killed task waits out the
        dead writer's lease (1.5 leases); 0: never wait.
    selection : which proteins, runs and frames to take (:class:`~protstore.selection.
        Selection`; its condition over :data:`~protstore.selection.INGEST_FIELDS`, evaluated
        before a protein's frames are read: a protein none of whose runs match is skipped, and
        an mdCATH file's runs that do not match are not read; its stride keeps the frames whose
        ``source_frame`` is a multiple of it). None: everything.
    """

    temperatures: tuple[int, ...] | None = None
    replicas: tuple[int, ...] | None = None
    strict: bool = False
    overwrite: bool = False
    allow_pickle: bool = False
    allow_unknown: bool = False
    protein_id: str | None = None
    temperature: float | None = None
    length_units: str | None = None
    force_units: str | None = None
    topology: str | None = None
    md_format: str | None = None
    block_bytes: int = 64 << 20
    checks: FrameChecks = FrameChecks()
    break_claims: bool = False
    claim_wait_s: float | None = None
    selection: Selection | None = None

    @property
    def stride(self) -> int:
        return self.selection.stride if self.selection is not None else 1


@dataclass
class IngestReport:
    """What happened to each protein and file; ``ok`` is False when anything failed."""

    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    not_selected: list[str] = field(default_factory=list)
    selection: str | None = None  # the --select condition, when one was given

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        chosen = f"{len(self.not_selected)} not selected by --select, " if self.selection \
            else ""
        out = [f"ingest: {len(self.written)} written, {len(self.replaced)} replaced, "
               f"{len(self.skipped)} skipped (already in store), {chosen}"
               f"{len(self.failed)} failed, {sum(self.excluded.values())} frames excluded"]
        out += [f"FAILED {what}: {why}" for what, why in self.failed.items()]
        return out


def open_sources(path: Path, options: IngestOptions) -> list[ProteinSource]:
    """The proteins of one source file, by its format (from the suffix, or ``md_format``)."""
    suffix = path.suffix.lower()
    if options.md_format is not None or (suffix not in H5_SUFFIXES + (".npz",) and (
            suffix in MD_FORMATS or options.topology is not None)):
        return open_md(path, topology=options.topology, fmt=options.md_format,
                       protein_id=options.protein_id, temperature=options.temperature,
                       length_units=options.length_units, force_units=options.force_units,
                       checks=options.checks)
    if suffix in H5_SUFFIXES:
        return open_mdcath(path, temperatures=options.temperatures,
                           replicas=options.replicas, checks=options.checks)
    if suffix == ".npz":
        return open_npz(path, allow_pickle=options.allow_pickle,
                        protein_id=options.protein_id, temperature=options.temperature,
                        length_units=options.length_units, force_units=options.force_units,
                        checks=options.checks)
    raise InputError(f"{path}: unknown source format (expected .h5/.hdf5 mdCATH, .npz, or an "
                     f"MD trajectory with --topology: {', '.join(sorted(MD_FORMATS))})")


def ingest_local(paths: Iterable[str | Path], store: Store,
                 options: IngestOptions = IngestOptions(), *, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> IngestReport:
    """Ingest source files into ``store`` in this process (see :func:`protstore.ingest.ingest`).
    """
    log = log or write_line
    report = IngestReport(selection=options.selection.expr if options.selection else None)
    for line in store.recover_staging():
        log(line)
    paths = [Path(p) for p in paths]
    hasher = ThreadPoolExecutor(1, thread_name_prefix="checksum")
    try:
        for path in progress_bar(paths, desc="files", unit="file", disable=not progress or len(paths) < 2):
            try:
                check_source_path(path)
                checksum = FileChecksum(hasher, path)
                sources = open_sources(path, options)
            except Exception as exc:  # noqa: BLE001 - any failure of one file: report, go on
                report.failed[str(path)] = failure(exc, str(path))
                log(f"error: {report.failed[str(path)]}")
                continue
            for source in sources:
                try:
                    status, n_excluded = ingest_protein(store, source, options, checksum,
                                                        progress=progress, log=log)
                except Exception as exc:  # noqa: BLE001 - any failure of one protein: go on
                    what = f"{source.origin} (protein {source.protein_id})"
                    report.failed[what] = failure(exc, what)
                    log(f"error: {report.failed[what]}")
                    continue
                getattr(report, status).append(source.protein_id)
                if n_excluded:
                    report.excluded[source.protein_id] = n_excluded
                if status == "skipped":
                    log(f"{source.protein_id}: already in the store from the same source; skipped")
                elif status == "not_selected":
                    log(f"{source.protein_id}: not selected by --select "
                        f"{options.selection.expr!r}; skipped")
    finally:
        hasher.shutdown(cancel_futures=True)
    return report


def check_source_path(path: Path) -> None:
    """An InputError unless ``path`` is a regular file (naming what it is instead)."""
    if path.is_file():
        return
    if not path.exists():
        raise InputError(f"{path}: no such file")
    kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, socket or device?)"
    raise InputError(f"{path}: {kind}, not a source file")


def failure(exc: BaseException, where: str) -> str:
    """One line saying what went wrong: a protstore error's own message (it names the place),
    else ``where`` and the exception (e.g. an OSError of a full disk)."""
    if isinstance(exc, ProtstoreError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{where}: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{where}: {type(exc).__name__}: {exc}"


class FileChecksum:
    """A source file's checksum, computed once on ``pool`` (hashing releases the GIL).

    ``start()`` begins it; ingest calls it once the frames are read (unless the reader hashed
    the file as it read it, :class:`~protstore.ingest.source.StreamChecksum`), so that the two
    do not compete for the disk. Calling the object returns the checksum (starting it if
    needed).
    """

    def __init__(self, pool: ThreadPoolExecutor, path: Path):
        self._pool, self._path = pool, path
        self._future = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._future is None:
                self._future = self._pool.submit(file_checksum, self._path)

    def __call__(self) -> str:
        self.start()
        return self._future.result()


def _start_unless_known(source: ProteinSource, checksum: FileChecksum) -> None:
    if not all(entry.get("checksum") for entry in source.sources):  # a reader may hash as it reads
        checksum.start()


def _then(items: Iterable, action: Callable[[], None]) -> Iterator:
    yield from items
    action()


def _existing_status(store: Store, source: ProteinSource, options: IngestOptions,
                     checksum: Callable[[], str]) -> str | None:
    existing = store.committed_doc(source.protein_id)
    if existing is None:
        return None
    _fill_checksums(source, checksum)
    old = {s["checksum"] for s in existing["sources"]}
    new = {s["checksum"] for s in source.sources}
    for algorithm in {c.split(":", 1)[0] for c in old} - {CHECKSUM}:  # an older store's
        new |= {file_checksum(s["path"], algorithm) for s in source.sources}
    if old <= new and not options.overwrite:
        if existing.get("frame_stride", 1) != options.stride:
            raise ProteinExistsError(
                f"protein {source.protein_id!r} is already in {store.url} from the same source "
                f"with frame stride {existing.get('frame_stride', 1)}, not "
                f"{options.stride}; pass --overwrite to ingest it again with this stride")
        return "skipped"
    if not options.overwrite:
        raise ProteinExistsError(
            f"protein {source.protein_id!r} is already in {store.url} from another source "
            f"({existing['sources'][0]['path']}); pass --overwrite "
            f"to replace it or --id to ingest it under another name")
    return "replace"


def _fill_checksums(source: ProteinSource, checksum: Callable[[], str]) -> None:
    for entry in source.sources:
        entry["checksum"] = entry.get("checksum") or checksum()


def select_source(source: ProteinSource, selection: Selection | None) -> ProteinSource | None:
    """``source`` with only the runs ``selection``'s condition keeps (its fields from the
    source's metadata: :data:`~protstore.selection.INGEST_FIELDS`; frames are not read), or
    None when it keeps none. Run fields need a reader that knows the runs beforehand (mdCATH);
    with another a :class:`SelectionError` names the protein."""
    if selection is None or selection.expr is None:
        return source
    pid, where = source.protein_id, f"{source.origin} (protein {source.protein_id})"
    runs = [n for _, _, n in source.runs]
    if selection.level > PROTEIN and not runs:
        late = sorted(selection.names - {"protein", "n_residues", "n_chains", "n_frames"})
        raise SelectionError(f"{where}: the source does not say its runs before its frames are "
                             f"read (mdCATH files do): select on {late[0]!r} when making a plan "
                             f"(protstore bucket --select)")
    values = {"protein": pid, "n_residues": len(source.resid), "n_chains": _n_chains(source.chain),
              "n_frames": int(source.n_frames),
              "temperature": np.array([t for t, _, _ in source.runs], np.float64),
              "replica": np.array([r for _, r, _ in source.runs], np.int64)}
    runs = runs or [int(source.n_frames)]
    kept = Selection(selection.expr).frames(runs, values)
    chosen = np.unique(np.searchsorted(np.cumsum(runs), kept, side="right")).tolist()
    if not chosen:
        return None
    if len(chosen) == len(runs):
        return source
    if source.with_runs is None:
        raise SelectionError(f"{where}: its reader cannot leave runs out: select on run fields "
                             f"when making a plan (protstore bucket --select)")
    notes = tuple(f"{t:g}/{r}: not selected by --select" for i, (t, r, _) in
                  enumerate(source.runs) if i not in chosen)
    return source.with_runs(chosen, notes)


def _n_chains(chains: np.ndarray) -> int:
    return int(1 + np.count_nonzero(chains[1:] != chains[:-1])) if len(chains) else 0


def _on_stride(block: FrameBlock, stride: int) -> FrameBlock:
    """The frames of ``block`` whose ``source_frame`` is a multiple of ``stride``."""
    if stride == 1:
        return block
    on = np.asarray(block.source_frame) % stride == 0
    if on.all():
        return block
    return FrameBlock(**block.keep(on), problems=[p for p, k in zip(block.problems, on) if k])


def ingest_protein(store: Store, source: ProteinSource, options: IngestOptions,
                   checksum: FileChecksum, *,
                   progress: bool = True, log: Callable[[str], None] = print) -> tuple[str, int]:
    """Validate, stage and commit one protein: the runs and frames of ``source`` that
    ``options.selection`` keeps (:func:`select_source`, then its stride).

    ``checksum()`` returns the source file's checksum; it is started once the frames are read.
    Returns ('written' | 'replaced' | 'skipped' | 'not_selected', number of frames excluded).
    """
    chosen = select_source(source, options.selection)
    if chosen is None:
        return "not_selected", 0
    source = chosen
    pid, where = source.protein_id, source.origin
    if _existing_status(store, source, options, checksum) == "skipped":
        store.ensure_listed(pid)  # a commit interrupted before its catalog entry
        return "skipped", 0
    try:
        resname = canonical_resnames(source.resname, allow_unknown=options.allow_unknown)
    except ProtstoreError as exc:
        raise InputError(f"{where}: protein {pid}: {exc}") from None
    bonded = bonded_to_next(source.chain, source.resid)
    block_frames = max(1, options.block_bytes // max(1, source.frame_bytes))
    # the next block is read, mapped and checked in threads while this one is written; the
    # first while the writer sets up
    blocks = prefetch(_then(source.blocks(block_frames), lambda: _start_unless_known(
        source, checksum)), depth=1, name="protstore-ingest")
    observables = ("rg", *SS_FIELDS) if source.has_ss else ("rg",)
    try:
        writer = store.writer(pid, max_frames=source.n_frames, resname=resname,
                              species=species_ids(resname), resid=source.resid,
                              chain=source.chain, take_over=options.break_claims,
                              wait_s=options.claim_wait_s or 0.0, observables=observables)
    except BaseException:
        blocks.close()
        raise
    excluded: list[dict] = []
    rms: list[np.ndarray] = []
    bond_forces = BondForceCheck()
    runs: list[dict] = []  # consecutive frames of one (temperature, replica), as stored
    series = RunSeries(len(source.resid))  # their autocorrelation times
    bar = progress_bar(total=source.n_frames, desc=pid, unit="frame", leave=False,
               disable=not progress)
    try:
        lengths_checked = False
        for whole in blocks:
            block = _on_stride(whole, options.stride)  # frames off the stride: not taken
            bar.update(len(whole.R))
            if not len(block.R):
                continue
            clean = np.array([p is None for p in block.problems], dtype=bool)
            if not lengths_checked and clean.any():  # before any frame is judged by the length
                wrong = length_problem(block.R[clean], bonded)
                if wrong:
                    raise InputError(f"{where}: protein {pid}: {wrong}")
                lengths_checked = True
            problems = bead_problems(block.R, block.F, bonded, options.checks, source.resid)
            problems = [a or b for a, b in zip(block.problems, problems)]
            bad = np.array([p is not None for p in problems], dtype=bool)
            for i in np.flatnonzero(bad):
                record = {"temperature": _maybe(block.temperature[i]),
                          "replica": int(block.replica[i]),
                          "source_frame": int(block.source_frame[i]), "reason": problems[i]}
                if options.strict:
                    raise InputError(f"{where}: protein {pid}: frame {record['source_frame']} "
                                     f"(T={record['temperature']}, replica {record['replica']}): "
                                     f"{record['reason']} (--strict)")
                excluded.append(record)
            kept = block.keep(~bad)
            ss = kept.pop("ss", None)
            extra = {"rg": radius_of_gyration(kept["R"]).astype(np.float32)}
            if source.has_ss:
                extra.update({name: ss[:, i] for i, name in enumerate(SS_FIELDS)})
            writer.append(**kept, **extra)
            rms.append(force_rms(kept["F"]))
            bond_forces.add(kept["R"], kept["F"], bonded, kept["temperature"])
            for run, a, b in _extend_runs(runs, kept["temperature"], kept["replica"]):
                series.add(run, kept["R"][a:b])
        bar.close()
        if writer.frames_queued == 0:
            common = collections.Counter(e["reason"] for e in excluded).most_common(1)
            if not excluded:  # no frame's source number is a multiple of the stride
                raise InputError(f"{where}: protein {pid}: no frame on the stride "
                                 f"{options.stride}")
            raise InputError(f"{where}: protein {pid}: all {source.n_frames} frames failed "
                             f"validation (most common: {common[0][0] if common else 'none'})")
        units = force_units_problem(np.concatenate(rms), options.checks)
        if units:
            raise InputError(f"{where}: protein {pid}: {units}")
        wrong, note, ratio = force_unit_problem(bond_forces, source.units)
        if wrong:
            raise InputError(f"{where}: protein {pid}: {wrong}")
        unit_check = {"ratio": ratio, "note": note}
        if None in bond_forces.sums:  # to check again when a temperature is given for them
            unit_check["unknown_temperature_sums"] = [float(x) for x in bond_forces.sums[None]]
        _fill_checksums(source, checksum)
        for run, tau in zip(runs, series.times()):
            run["autocorr_frames"] = round(tau, 3)
        doc = dict(_protein_doc(source, resname, excluded, unit_check), runs=runs)
        if options.stride > 1:
            doc["frame_stride"] = options.stride
        writer.finish(doc)
        status = store.commit(writer, overwrite=options.overwrite)
    except BaseException:
        bar.close()
        writer.abort()
        raise
    if excluded:
        _log_excluded(pid, excluded, log)
    if source.not_read:
        log(f"{pid}: not read from {source.origin}: {'; '.join(source.not_read)}")
    if note.startswith("warning") or (not source.units.declared and unit_check["ratio"] is None):
        log(f"{pid}: {note}")
    if None in writer.doc["temperatures"]:
        log(f"{pid}: the source stores no temperature: its frames are recorded with an unknown "
            f"temperature (NaN); fit-priors and train refuse them until you give --temperature "
            f"K there, or ingest again with --temperature K --overwrite")
    return status, len(excluded)


def _extend_runs(runs: list[dict], temperature: np.ndarray, replica: np.ndarray
                 ) -> list[tuple[int, int, int]]:
    """Append a block's frames to ``runs`` ({temperature, replica, n_frames}, in order);
    returns (run index, first, end) of the block's frames in each run it touches."""
    if not len(temperature):
        return []
    T = np.nan_to_num(np.asarray(temperature, np.float64), nan=-1.0)
    rep = np.asarray(replica)
    starts = np.concatenate([[0], np.flatnonzero((T[1:] != T[:-1]) | (rep[1:] != rep[:-1])) + 1])
    segments = []
    for a, b in zip(starts, [*starts[1:], len(T)]):
        key = (_maybe(temperature[a]), int(rep[a]))
        if runs and (runs[-1]["temperature"], runs[-1]["replica"]) == key:
            runs[-1]["n_frames"] += int(b - a)
        else:
            runs.append({"temperature": key[0], "replica": key[1], "n_frames": int(b - a)})
        segments.append((len(runs) - 1, int(a), int(b)))
    return segments


def _maybe(t) -> float | None:
    t = float(t)
    return None if np.isnan(t) else t


def _protein_doc(source: ProteinSource, resname, excluded, unit_check: dict) -> dict:
    return {
        "protein_id": source.protein_id,
        "n_atoms": len(resname),
        "n_frames": 0,  # filled by the writer
        "n_chains": _n_chains(source.chain),
        "temperatures": [],  # filled by the writer
        "sources": source.sources,
        "cg_map": source.cg_map,
        "source_units": source.units.as_doc(),
        "unit_check": unit_check,
        "excluded_frames": excluded,
        "nbytes_raw": 0,
        "nbytes_stored": 0,
        "created_by": f"protstore {__version__}",
    }


def _log_excluded(pid: str, excluded: list[dict], log) -> None:
    log(f"{pid}: excluded {len(excluded)} frame(s) (recorded in the protein's "
        f"excluded_frames):")
    for e in excluded[:5]:
        log(f"  T={e['temperature']} replica {e['replica']} frame {e['source_frame']}: "
            f"{e['reason']}")
    if len(excluded) > 5:
        log(f"  ... and {len(excluded) - 5} more")

