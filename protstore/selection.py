"""Selecting proteins and frames the mdCATH way: a condition over per-protein, per-run and
per-frame fields, a frame stride and a cap on the frames of each run (:class:`Selection`).

The condition is pandas ``DataFrame.query`` syntax (``n_residues <= 300 and temperature in
(320, 348)``), evaluated with ``DataFrame.eval(engine="python")`` over a table whose columns
are exactly the fields it names (:data:`FIELDS`). Before that, :func:`parse_expression` checks
it: only field names, numbers, strings, ``True``/``False``, comparisons (chained too),
``in``/``not in`` a list or tuple, ``and``/``or``/``not``, ``&``/``|``/``~`` and arithmetic are
allowed; ``@`` (the caller's local variables), backtick names, attribute access (``.str``,
``__class__``), indexing and function calls are refused, so an expression can only compare
the fields with constants, never reach Python objects.

A protein's frames are selected in this order (:meth:`Selection.frames`):

1. ``stride`` K: every K-th stored frame of each run, counted from the run's first stored frame
   (frames 0, K, 2K, ... of the run's stored frames).
2. the condition: the frames whose fields make it true (a protein field keeps all or none of a
   protein's frames, a run field all or none of a run's).
3. ``max_frames_per_run`` M: of a run's frames left, M evenly spaced ones (the first and the
   last included: ``j (n - 1) // (M - 1)`` for j = 0..M-1; M = 1 keeps the first). Evenly
   spaced rather than the first M: every mdCATH run starts from the same structure, so the
   first frames of all runs are the most alike; spread frames sample the whole run.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import SelectionError

PROTEIN, RUN, FRAME = 0, 1, 2
LEVELS = ("protein", "run", "frame")


@dataclass(frozen=True)
class Field:
    """A field a selection can name: its level (:data:`PROTEIN`, :data:`RUN`, :data:`FRAME`)
    and what it is."""

    level: int
    help: str


FIELDS: dict[str, Field] = {
    "protein": Field(PROTEIN, "protein id (text: protein == 'x' or protein in ['x', 'y'])"),
    "n_residues": Field(PROTEIN, "beads of the protein (one per residue)"),
    "n_chains": Field(PROTEIN, "chains of the protein"),
    "n_frames": Field(PROTEIN, "stored frames of the protein, all runs (at ingest: the "
                               "source's frames)"),
    "rg_mean": Field(PROTEIN, "Å, mean radius of gyration over the protein's stored frames"),
    "helix_mean": Field(PROTEIN, "mean of helix over the protein's stored frames"),
    "sheet_mean": Field(PROTEIN, "mean of sheet over the protein's stored frames"),
    "coil_mean": Field(PROTEIN, "mean of coil over the protein's stored frames"),
    "temperature": Field(RUN, "K, of the frame's run (NaN when unknown: no comparison is true)"),
    "replica": Field(RUN, "replica of the frame's run"),
    "run_frames": Field(RUN, "stored frames of the frame's run (at ingest: the source's)"),
    "run_frame": Field(FRAME, "the frame's position among its run's stored frames, from 0"),
    "source_frame": Field(FRAME, "the frame's number in its source run (mdCATH: ns from the "
                                 "run's start)"),
    "rg": Field(FRAME, "Å, radius of gyration of the frame's beads (mass-unweighted, all "
                       "beads)"),
    "helix": Field(FRAME, "fraction of the frame's residues in a helix (DSSP H, G, I)"),
    "sheet": Field(FRAME, "fraction of the frame's residues in a strand (DSSP E, B)"),
    "coil": Field(FRAME, "fraction of the frame's other residues (1 - helix - sheet)"),
}
#: the fields ``protstore ingest --select`` knows before reading a protein's frames
INGEST_FIELDS = ("protein", "n_residues", "n_chains", "n_frames", "temperature", "replica",
                 "run_frames")
#: per-frame secondary-structure fractions, stored at ingest from a source's DSSP
SS_FIELDS = ("helix", "sheet", "coil")
HELIX_CODES = ("H", "G", "I")
SHEET_CODES = ("E", "B")
# rows of one table handed to DataFrame.eval (bounds memory when frames are selected)
ROWS_PER_EVAL = 1 << 20

_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
            ast.UAdd, ast.Invert, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div,
            ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr, ast.Compare, ast.Eq,
            ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load,
            ast.Constant, ast.Tuple, ast.List)
_REFUSED = {ast.Call: "a function call", ast.Attribute: "attribute access (.name)",
            ast.Subscript: "indexing ([...])", ast.Lambda: "a lambda",
            ast.NamedExpr: "an assignment"}
_GRAMMAR = ("fields, numbers, strings, comparisons, in / not in a list, and / or / not, "
            "& | ~ and arithmetic")


def parse_expression(expr: str, allowed: Iterable[str] = FIELDS) -> frozenset[str]:
    """The fields a selection expression names, once it is checked to be one that only
    compares fields with constants (module docstring); :class:`SelectionError` (one line)
    otherwise, or when it names a field not in ``allowed`` (the message lists them)."""
    allowed = list(allowed)
    if not isinstance(expr, str) or not expr.strip():
        raise SelectionError(f"selection {expr!r}: empty; give a condition such as "
                             f"'n_residues <= 300'")
    where = f"selection {expr!r}"
    for char, what in (("@", "local variables (@name)"), ("`", "backtick-quoted names")):
        if char in expr:
            raise SelectionError(f"{where}: {what} are not allowed")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise SelectionError(f"{where}: not an expression ({exc.msg} at column "
                             f"{exc.offset})") from None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (bool, int, float, str):
                raise SelectionError(f"{where}: the constant {node.value!r} is not allowed "
                                     f"(numbers and strings only)")
        elif not isinstance(node, _ALLOWED):
            what = next((w for t, w in _REFUSED.items() if isinstance(node, t)),
                        type(node).__name__)
            raise SelectionError(f"{where}: {what} is not allowed; a selection holds only "
                                 f"{_GRAMMAR}")
    unknown = sorted(names - set(allowed))
    if unknown:
        raise SelectionError(f"{where}: unknown field {unknown[0]!r} (text values need quotes); "
                             f"the fields are: {', '.join(allowed)}")
    return frozenset(names)


def evaluate(expr: str, table: pd.DataFrame) -> np.ndarray:
    """[len(table)] bool: ``expr`` (checked by :func:`parse_expression`) evaluated over
    ``table`` with pandas (``DataFrame.eval``, engine python); NA counts as false."""
    try:
        result = table.eval(expr, engine="python", parser="pandas")
    except Exception as exc:  # noqa: BLE001 - whatever pandas raises: one line
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelectionError(f"selection {expr!r} cannot be evaluated: {what}") from None
    if isinstance(result, bool | np.bool_):
        return np.full(len(table), bool(result))
    if isinstance(result, pd.Series) and pd.api.types.is_bool_dtype(result.dtype):
        return result.fillna(False).to_numpy(dtype=bool)
    what = getattr(result, "dtype", type(result).__name__)
    raise SelectionError(f"selection {expr!r} is not a condition (it gives {what} values, not "
                         f"true or false)")


def _positive(value, what: str, none_ok: bool) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise SelectionError(f"{what} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class Selection:
    """Which frames to use (module docstring): ``expr`` a pandas query condition over
    :data:`FIELDS` (None: every frame), ``stride`` K (every K-th stored frame of each run),
    ``max_frames_per_run`` M (at most M evenly spaced frames of each run; None: no cap)."""

    expr: str | None = None
    stride: int = 1
    max_frames_per_run: int | None = None

    def __post_init__(self):
        _positive(self.stride, "the frame stride", none_ok=False)
        _positive(self.max_frames_per_run, "the maximum of frames per run", none_ok=True)
        if self.expr is not None:
            parse_expression(self.expr)

    @property
    def names(self) -> frozenset[str]:
        """The fields the condition names."""
        return parse_expression(self.expr) if self.expr is not None else frozenset()

    @property
    def level(self) -> int:
        """The finest level of the fields named (:data:`PROTEIN` when none)."""
        return max((FIELDS[n].level for n in self.names), default=PROTEIN)

    @property
    def everything(self) -> bool:
        """Whether it keeps every frame (no condition, stride 1, no cap)."""
        return self.expr is None and self.stride == 1 and self.max_frames_per_run is None

    def describe(self) -> str:
        parts = [self.expr] if self.expr else []
        if self.stride > 1:
            parts.append(f"stride {self.stride}")
        if self.max_frames_per_run:
            parts.append(f"at most {self.max_frames_per_run} evenly spaced frames per run")
        return ", ".join(parts) or "every frame"

    def to_doc(self) -> dict:
        return {"expr": self.expr, "stride": int(self.stride),
                "max_frames_per_run": self.max_frames_per_run}

    @classmethod
    def from_doc(cls, doc: dict) -> Selection:
        return cls(doc.get("expr"), int(doc.get("stride", 1)), doc.get("max_frames_per_run"))

    def check_ingest(self) -> None:
        """Refuse what ingest cannot apply: fields known only once frames are read, and the cap
        on frames per run (evenly spaced frames need each run's validated frame count)."""
        late = sorted(self.names - set(INGEST_FIELDS))
        if late:
            raise SelectionError(
                f"selection {self.expr!r}: {late[0]!r} is not known before a protein's frames "
                f"are read; at ingest select on {', '.join(INGEST_FIELDS)} (select on "
                f"{late[0]} when making a plan: protstore bucket --select)")
        if self.max_frames_per_run is not None:
            raise SelectionError("the maximum of frames per run is a plan's choice (protstore "
                                 "bucket --max-frames-per-run), not ingest's: ingest keeps "
                                 "whole runs")

    def frames(self, runs: Sequence[int], values: Mapping[str, object]) -> np.ndarray:
        """Sorted frame indices [k] int64 that this selection keeps of one protein whose
        stored frames form ``runs`` (frame counts, in store order), given ``values`` of the
        fields it names: a scalar per protein field, an array [n_runs] per run field, an array
        [n_frames] per frame field (``run_frames`` and ``run_frame`` come from ``runs``)."""
        return next(iter(self.frames_of([(None, runs, values)])))[1]

    def frames_of(self, proteins: Iterable[tuple[object, Sequence[int], Mapping | Callable]]
                  ) -> Iterator[tuple[object, np.ndarray]]:
        """(key, :meth:`frames`) of every (key, runs, values) in ``proteins``, in order;
        ``values`` may be a callable giving them (called once, when the protein's turn comes).
        The condition is evaluated over many proteins' rows at a time (at most
        :data:`ROWS_PER_EVAL`), each protein with one row per protein, run or frame as the
        finest field it names needs."""
        batch: list[tuple[object, list[int], dict]] = []
        rows = 0
        for key, runs, values in proteins:
            runs = [int(n) for n in runs]
            values = values() if callable(values) else values
            batch.append((key, runs, values))
            rows += _rows(self.level, runs)
            if rows >= ROWS_PER_EVAL:
                yield from self._batch(batch)
                batch, rows = [], 0
        if batch:
            yield from self._batch(batch)

    def _batch(self, batch) -> Iterator[tuple[object, np.ndarray]]:
        masks = [np.ones(_rows(self.level, runs), bool) for _, runs, _ in batch]
        if self.expr is not None:
            columns = {name: np.concatenate([_column(name, self.level, runs, values)
                                             for _, runs, values in batch])
                       for name in sorted(self.names)}
            flat = evaluate(self.expr, pd.DataFrame(columns))
            masks = np.split(flat, np.cumsum([len(m) for m in masks])[:-1])
        for (key, runs, _), mask in zip(batch, masks):
            if self.level == PROTEIN:
                mask = np.repeat(mask, sum(runs))
            elif self.level == RUN:
                mask = np.repeat(mask, runs)
            yield key, self._cap(runs, np.flatnonzero(mask & (_run_frame(runs) % self.stride
                                                             == 0)))

    def _cap(self, runs: list[int], kept: np.ndarray) -> np.ndarray:
        M = self.max_frames_per_run
        if M is None:
            return kept.astype(np.int64)
        run = np.searchsorted(np.cumsum(runs), kept, side="right")
        out = []
        for r in np.unique(run):
            frames = kept[run == r]
            n = len(frames)
            if n > M:
                frames = frames[[0] if M == 1 else (np.arange(M) * (n - 1)) // (M - 1)]
            out.append(frames)
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def _rows(level: int, runs: list[int]) -> int:
    return 1 if level == PROTEIN else len(runs) if level == RUN else sum(runs)


def _run_frame(runs: list[int]) -> np.ndarray:
    """[n_frames] each frame's position in its run."""
    n = sum(runs)
    return np.arange(n) - np.repeat(np.cumsum([0, *runs[:-1]]), runs).astype(np.int64)


def _column(name: str, level: int, runs: list[int], values: Mapping) -> np.ndarray:
    """One protein's rows of field ``name`` at ``level``."""
    if name == "run_frames":
        value = np.asarray(runs)
    elif name == "run_frame":
        value = _run_frame(runs)
    else:
        value = values[name]
    field = FIELDS[name].level
    value = np.asarray(value, dtype=object if isinstance(value, str) else None)
    if field == PROTEIN:
        return np.full(_rows(level, runs), value.item(), dtype=value.dtype)
    if field == RUN and level == FRAME:
        return np.repeat(value, runs)
    return value


def ss_fractions(dssp: np.ndarray) -> np.ndarray:
    """[F, 3] float32 fractions of residues in helix (DSSP codes H, G, I), strand (E, B) and
    anything else, coil, of DSSP codes [F, N_res] (one letter per residue: bytes or text)."""
    codes = np.asarray(dssp)
    if codes.dtype.kind == "O":
        codes = np.array([[c.decode() if isinstance(c, bytes) else str(c) for c in row]
                          for row in codes], dtype="U")
    elif codes.dtype.kind == "S":
        codes = codes.astype("U")
    codes = np.char.strip(codes)
    helix = np.isin(codes, HELIX_CODES).mean(axis=1)
    sheet = np.isin(codes, SHEET_CODES).mean(axis=1)
    return np.stack([helix, sheet, 1.0 - helix - sheet], axis=1).astype(np.float32)
