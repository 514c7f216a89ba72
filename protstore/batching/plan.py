"""Bucket plans: which proteins go into which length bucket, and the train/validation split.

Boundaries are inclusive upper bounds: ``(100, 200)`` gives N <= 100, 100 < N <= 200, N > 200.
Each bucket pads to the longest protein in it (optionally rounded up to a multiple of K). The
cost of a padded frame is N_max (``linear``: per-bead work) or N_max² (``pair``: dense pair work);
waste = 1 - real cost / padded cost, with every protein weighted by its frame count.

A plan may select frames (:class:`~protstore.selection.Selection`: a condition over protein,
run and frame fields, a stride, a cap per run): it records the selection and the frames it
keeps of each protein (as ranges), and everything else, buckets, frame counts, waste and the
train/validation/test split, is over those frames only; proteins it keeps no frame of are not
in the plan. :meth:`BucketPlan.part_frames` gives the stored frames of a part.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .._version import __version__
from ..errors import PlanError, SelectionError
from ..schemas import check_document
from ..selection import FIELDS, SS_FIELDS, Selection
from ..store.digest import json_digest
from .spec import COSTS, PlanSpec

PLAN_DOC = "protstore_plan"


def frame_cost(n: np.ndarray | int, cost: str) -> np.ndarray:
    return np.asarray(n, dtype=np.float64) ** COSTS[cost]


def round_up(n: int, multiple: int | None) -> int:
    return int(-(-n // multiple) * multiple) if multiple else int(n)


def assign(lengths: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """Bucket index of each length under inclusive upper bounds."""
    return np.searchsorted(np.asarray(boundaries), lengths, side="left")


def padded_cost(lengths, frames, boundaries, cost: str, pad_multiple: int | None = None) -> float:
    """Total padded cost of frames in buckets defined by ``boundaries``."""
    lengths = np.asarray(lengths)
    frames = np.asarray(frames, dtype=np.float64)
    idx = assign(lengths, boundaries)
    total = 0.0
    for k in np.unique(idx):
        sel = idx == k
        total += frame_cost(round_up(int(lengths[sel].max()), pad_multiple), cost) * frames[sel].sum()
    return float(total)


def waste(lengths, frames, boundaries, cost: str, pad_multiple: int | None = None) -> float:
    real = float((frame_cost(lengths, cost) * np.asarray(frames, np.float64)).sum())
    return 1.0 - real / padded_cost(lengths, frames, boundaries, cost, pad_multiple)


def equal_count_boundaries(lengths, n_buckets: int) -> list[int]:
    """Boundaries giving buckets as equal in protein count as ties allow (proteins of one
    length share a bucket): ``min(n_buckets, distinct lengths)`` buckets whose counts have the
    least sum of squares, and among those the cuts nearest ``round(k n / n_buckets)`` proteins
    (exactly there when no tie is in the way). Deterministic: lengths only.

    Dynamic programming over the distinct sorted lengths, as :func:`optimal_boundaries`, with
    the lexicographic cost (sum of squared counts, sum of squared cut offsets) in integers.
    """
    L, counts = np.unique(np.asarray(lengths), return_counts=True)
    S = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m, n = len(L), int(S[-1])
    K = min(n_buckets, m)
    target = [int(round(k * n / n_buckets)) for k in range(K + 1)]
    big = 2 ** 62  # unreachable; adding a squared count to it stays within int64
    sq = np.full((K + 1, m + 1), big)  # sum of squared counts of k buckets over lengths 1..j
    off = np.full((K + 1, m + 1), big)  # sum of squared offsets of their cuts from the targets
    arg = np.zeros((K + 1, m + 1), dtype=np.int64)
    sq[0, 0] = off[0, 0] = 0
    for k in range(1, K + 1):
        for j in range(k, m + 1) if k < K else [m]:
            i = np.arange(k, j + 1)  # bucket k holds distinct lengths i..j (1-based)
            cand = sq[k - 1, i - 1] + (S[j] - S[i - 1]) ** 2
            tied = np.flatnonzero(cand == cand.min())
            t = int(tied[np.argmin(off[k - 1, i[tied] - 1])])
            sq[k, j], arg[k, j] = cand[t], i[t]
            off[k, j] = off[k - 1, i[t] - 1] + (0 if k == K else (S[j] - target[k]) ** 2)
    return _cuts(L, arg, K)


def _cuts(L: np.ndarray, arg: np.ndarray, n_buckets: int) -> list[int]:
    """The boundaries of a dynamic programme's ``n_buckets`` buckets over the distinct sorted
    lengths ``L``: ``arg[k, j]`` is the first (1-based) length of bucket k when buckets 1..k
    hold lengths 1..j."""
    cuts, j = [], len(L)
    for k in range(n_buckets, 0, -1):
        i = arg[k, j]
        if i > 1:
            cuts.append(int(L[i - 2]))
        j = i - 1
    return sorted(cuts)


def optimal_boundaries(lengths, frames, n_buckets: int, cost: str,
                       pad_multiple: int | None = None) -> list[int]:
    """Exact minimum-padded-cost boundaries for at most ``n_buckets`` buckets.

    Dynamic programming over the distinct sorted lengths L_1 < ... < L_m with frame weights:
    best[k][j] = min_i best[k-1][i-1] + c(L_j) * (W_i + ... + W_j). O(K m²).
    """
    lengths = np.asarray(lengths)
    frames = np.asarray(frames, dtype=np.float64)
    L, inv = np.unique(lengths, return_inverse=True)
    W = np.bincount(inv, weights=frames, minlength=len(L))
    S = np.concatenate([[0.0], np.cumsum(W)])
    c = frame_cost([round_up(int(x), pad_multiple) for x in L], cost)
    m = len(L)
    K = min(n_buckets, m)
    best = np.full((K + 1, m + 1), np.inf)
    arg = np.zeros((K + 1, m + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, K + 1):
        for j in range(k, m + 1):
            # bucket k holds distinct lengths i..j (1-based), i from k..j
            i = np.arange(k, j + 1)
            cand = best[k - 1, i - 1] + c[j - 1] * (S[j] - S[i - 1])
            t = int(np.argmin(cand))
            best[k, j], arg[k, j] = cand[t], i[t]
    return _cuts(L, arg, int(np.argmin(best[1:, m])) + 1)


@dataclass(frozen=True)
class Bucket:
    index: int
    n_max: int
    proteins: list[str]
    n_frames: int
    padded_cost: float
    real_cost: float

    @property
    def waste(self) -> float:
        return 1.0 - self.real_cost / self.padded_cost if self.padded_cost else 0.0


BLOCK_FRAMES = 50  # frames of a held-out block when no run's autocorrelation time is known
#: frame split blocks of BLOCK_TAU τ frames: a block with training frames on both sides has 2τ
#: of its b frames within τ of one, 2τ / b = 5% (adjacent held-out blocks merge: fewer)
BLOCK_TAU = 40.0
LEAKAGE_TARGET = 0.05
PART_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Split:
    """Deterministic train/validation/test assignment (stored with the plan).

    mode ``protein``: whole proteins are held out (``val_proteins`` and ``test_proteins``,
    drawn bucket by bucket in proportion: :func:`stratified_proteins`); the split that measures
    generalisation to new proteins. ``frame``: a seeded fraction of every protein's frames,
    held out as contiguous blocks of each run: of ``block_frames`` frames when given, else of
    ``block_tau`` autocorrelation times of the run (``autocorr``: each run's τ in frames,
    :mod:`protstore.timeseries`), so that few held-out frames lie within one τ of a training
    frame (``leakage_tau`` is the fraction that do; ``val_leakage`` the fraction of validation
    frames next to a training frame). ``run``: whole runs (temperature, replica) of every
    protein with two or more are held out, for data whose runs are too short for blocks.
    ``none``: everything is training data. ``runs``: each protein's runs as frame counts, in
    store order. Validation chooses ``best/``; the test part reports the final figure. Plans
    made before 0.5 held out single frames (no ``block_frames``), before 0.7 had no test part.
    """

    mode: str = "none"
    val_fraction: float = 0.0
    seed: int = 0
    val_proteins: list[str] = field(default_factory=list)
    block_frames: int | None = None
    runs: dict[str, list[int]] = field(default_factory=dict)
    val_leakage: float | None = None
    test_fraction: float = 0.0
    test_proteins: list[str] = field(default_factory=list)
    block_tau: float | None = None
    autocorr: dict[str, list[float]] = field(default_factory=dict)
    leakage_tau: float | None = None

    @property
    def has_test(self) -> bool:
        """Whether a test part is held out."""
        return bool(self.test_proteins) or (self.mode in ("frame", "run")
                                            and self.test_fraction > 0)

    def frames(self, protein: str, n_frames: int, part: str) -> np.ndarray:
        """Sorted frame indices of ``protein`` in ``part`` ('train', 'val', 'test' or 'all')."""
        if part not in PART_CODES and part != "all":
            raise PlanError(f"split part must be one of {(*PART_CODES, 'all')}, not {part!r}")
        if part == "all":
            return np.arange(n_frames)
        if self.mode == "none":
            return np.arange(n_frames) if part == "train" else np.arange(0)
        if self.mode == "protein":
            held = (1 if protein in self.val_proteins else
                    2 if protein in self.test_proteins else 0)
            return np.arange(n_frames) if held == PART_CODES[part] else np.arange(0)
        return np.flatnonzero(self.labels(protein, n_frames) == PART_CODES[part])

    def held_out(self, protein: str, n_frames: int) -> np.ndarray:
        """[n_frames] bool: the frame split's validation frames of ``protein``."""
        return self.labels(protein, n_frames) == PART_CODES["val"]

    def _rng(self, protein: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(protein.encode())])

    def _run_starts(self, protein: str, n_frames: int) -> tuple[list[int], list[int]]:
        runs = self.runs.get(protein) or [n_frames]
        return np.cumsum([0, *runs[:-1]]).tolist(), list(runs)

    def labels(self, protein: str, n_frames: int) -> np.ndarray:
        """[n_frames] int8 of a frame or run split: 0 train, 1 validation, 2 test."""
        rng = self._rng(protein)
        out = np.zeros(n_frames, dtype=np.int8)
        if self.mode == "run":
            starts, runs = self._run_starts(protein, n_frames)
            n_val, n_test = held_counts(len(runs), self.val_fraction, self.test_fraction)
            order = rng.permutation(len(runs))
            for code, chosen in ((1, order[:n_val]), (2, order[n_val:n_val + n_test])):
                for r in chosen:
                    out[starts[r]:starts[r] + runs[r]] = code
            return out
        want = [(1, int(round(self.val_fraction * n_frames))),
                (2, int(round(self.test_fraction * n_frames)))]
        if self.block_frames is None and self.block_tau is None:  # plans before 0.5
            order = rng.permutation(n_frames)
            out[order[:want[0][1]]] = 1
            out[order[want[0][1]:want[0][1] + want[1][1]]] = 2
            return out
        # blocks in a seeded order fill validation, then test (from where validation stopped,
        # inside its last block: runs shorter than a block still get both)
        blocks = self.blocks(protein, n_frames)
        quota, taken = list(want), 0
        for b in rng.permutation(len(blocks)):
            a, e = blocks[b]
            while a < e and quota:
                code, n = quota[0]
                if taken >= n:
                    quota.pop(0)
                    taken = 0
                    continue
                end = min(e, a + n - taken)
                out[a:end] = code
                taken, a = taken + end - a, end
            if not quota:
                break
        return out

    def blocks(self, protein: str, n_frames: int) -> list[tuple[int, int]]:
        """The (first, end) frame ranges a frame split holds out from: each run cut into blocks
        of ``block_frames``, or of ceil(``block_tau`` × the run's τ) frames."""
        starts, runs = self._run_starts(protein, n_frames)
        taus = self.autocorr.get(protein) or [1.0] * len(runs)
        out = []
        for start, n, tau in zip(starts, runs, taus):
            b = self.block_frames or max(1, int(np.ceil(self.block_tau * tau)))
            out += [(a, min(a + b, start + n)) for a in range(start, start + n, b)]
        return out

    def leakage(self, frames: dict[str, int]) -> float | None:
        """Fraction of validation frames with a training frame of the same run next to them."""
        return self._near_training(frames, lambda pid, run: 1.0, parts=(1,))

    def leakage_within_tau(self, frames: dict[str, int]) -> float | None:
        """Fraction of held-out (validation and test) frames within one autocorrelation time of
        a training frame of the same run (None without every run's τ)."""
        if not all(pid in self.autocorr for pid in frames):
            return None
        return self._near_training(frames, lambda pid, run: self.autocorr[pid][run],
                                   parts=(1, 2))

    def _near_training(self, frames: dict[str, int], reach, parts) -> float | None:
        if self.mode not in ("frame", "run"):
            return None
        near = total = 0
        for pid, n in frames.items():
            labels = self.labels(pid, n)
            starts, runs = self._run_starts(pid, n)
            for r, (start, length) in enumerate(zip(starts, runs)):
                part = labels[start:start + length]
                held = np.flatnonzero(np.isin(part, parts))
                train = np.flatnonzero(part == 0)
                total += len(held)
                if not len(held) or not len(train):
                    continue
                k = np.clip(np.searchsorted(train, held), 1, len(train))
                gap = np.minimum(np.abs(train[k - 1] - held),
                                 np.abs(train[np.minimum(k, len(train) - 1)] - held))
                near += int((gap <= reach(pid, r)).sum())
        return near / total if total else None


def held_counts(n_runs: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Runs of a protein a run split holds out for validation and for test: the fractions of
    its runs rounded, at least one of each asked for while one run stays for training."""
    n_val = max(1, int(round(val_fraction * n_runs))) if val_fraction > 0 else 0
    n_test = max(1, int(round(test_fraction * n_runs))) if test_fraction > 0 else 0
    n_val = min(n_val, max(n_runs - 1, 0))
    n_test = min(n_test, max(n_runs - 1 - n_val, 0))
    return n_val, n_test


@dataclass(frozen=True)
class BucketPlan:
    """A named bucket plan: boundaries, buckets, split, and how it was made (all stored)."""

    name: str
    strategy: str
    cost: str
    pad_multiple: int | None
    boundaries: list[int]
    buckets: list[Bucket]
    split: Split
    lengths: dict[str, int]
    frames: dict[str, int]
    fingerprints: dict[str, str] = field(default_factory=dict)  # absent in older plans
    # the frames used, when chosen by a selection: its recipe and, per protein, the stored
    # frames it keeps as [start, stop, step] ranges (absent: every frame of every protein)
    selection: Selection | None = None
    selected: dict[str, list[list[int]]] = field(default_factory=dict)
    # the store version the plan was made from (:attr:`Store.version`; absent in older plans)
    store_version: str | None = None

    @property
    def proteins(self) -> list[str]:
        """All proteins of the plan, bucket by bucket; their positions are protein indices."""
        return [p for b in self.buckets for p in b.proteins]

    def used_frames(self, protein: str) -> np.ndarray:
        """Sorted indices [k] int64 of the stored frames of ``protein`` the plan uses: those its
        selection keeps, else all ``frames[protein]``."""
        if self.selection is None:
            return np.arange(self.frames[protein], dtype=np.int64)
        return frames_of_ranges(self.selected[protein])

    def n_used(self, protein: str) -> int:
        """Frames of ``protein`` the plan uses (``len(used_frames(protein))``)."""
        if self.selection is None:
            return int(self.frames[protein])
        return sum(len(range(*r)) for r in self.selected[protein])

    def part_frames(self, protein: str, part: str) -> np.ndarray:
        """Sorted stored-frame indices [k] int64 of ``protein`` in ``part`` ('train', 'val',
        'test' or 'all'): the split of the frames the plan uses (:meth:`used_frames`). What
        the loader, the bucket views, fit-priors and evaluate read."""
        used = self.used_frames(protein)
        return used[self.split.frames(protein, len(used), part)]

    def total_waste(self) -> float:
        padded = sum(b.padded_cost for b in self.buckets)
        return 1.0 - sum(b.real_cost for b in self.buckets) / padded if padded else 0.0

    def to_doc(self) -> dict:
        doc = asdict(self)
        doc["buckets"] = [dict(asdict(b), waste=b.waste) for b in self.buckets]
        optional = ("block_frames", "runs", "val_leakage", "test_fraction", "test_proteins",
                    "block_tau", "autocorr", "leakage_tau")  # absent at their defaults
        doc["split"] = {k: v for k, v in doc["split"].items()
                        if k not in optional or v not in (None, {}, [], 0.0)}
        if not self.fingerprints:
            del doc["fingerprints"]
        if self.store_version is None:
            del doc["store_version"]
        del doc["selected"]
        if self.selection is None:
            del doc["selection"]
        else:
            doc["selection"] = dict(self.selection.to_doc(), frames=self.selected)
        doc["created_by"] = f"protstore {__version__}"
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "BucketPlan":
        buckets = [Bucket(**{k: v for k, v in b.items() if k != "waste"}) for b in doc["buckets"]]
        fields = {k: v for k, v in doc.items()
                  if k not in ("buckets", "split", "created_by", "selection")}
        chosen = doc.get("selection")  # absent in plans without one (and older plans)
        if chosen is not None:
            fields.update(selection=Selection.from_doc(chosen), selected=chosen["frames"])
        return cls(buckets=buckets, split=Split(**doc["split"]), **fields)

    def table(self) -> str:
        """bucket, N_max, proteins, frames, padded cost, waste % (and the total)."""
        unit = "N_max" if self.cost == "linear" else "N_max^2"
        rows = [f"plan {self.name!r}: strategy {self.strategy}, cost {self.cost} ({unit} per "
                f"frame), boundaries {self.boundaries or 'none'}, split {self.split.mode}",
                f"{'bucket':>6} {'N_max':>6} {'proteins':>9} {'frames':>9} "
                f"{'padded cost':>13} {'waste %':>8}"]
        for b in self.buckets:
            rows.append(f"{b.index:>6} {b.n_max:>6} {len(b.proteins):>9} {b.n_frames:>9} "
                        f"{b.padded_cost:>13.4g} {100 * b.waste:>8.1f}")
        rows.append(f"{'total':>6} {'':>6} {sum(len(b.proteins) for b in self.buckets):>9} "
                    f"{sum(b.n_frames for b in self.buckets):>9} "
                    f"{sum(b.padded_cost for b in self.buckets):>13.4g} "
                    f"{100 * self.total_waste():>8.1f}")
        if self.selection is not None:
            used = sum(b.n_frames for b in self.buckets)
            rows.append(f"selection: {self.selection.describe()}: {used} of the "
                        f"{sum(self.frames.values())} stored frames of these proteins")
        s = self.split
        if s.mode == "protein":
            rows.append(f"validation proteins ({len(s.val_proteins)}): {' '.join(s.val_proteins)}")
            if s.test_proteins:
                rows.append(f"test proteins ({len(s.test_proteins)}): "
                            f"{' '.join(s.test_proteins)}")
        elif s.mode in ("frame", "run"):
            test = f", test {s.test_fraction:.0%}" if s.test_fraction else ""
            if s.mode == "run":
                how = "as whole runs (proteins with one run stay in training)"
            elif s.block_frames:
                how = f"in blocks of {s.block_frames} frames of each run"
            elif s.block_tau:
                how = f"in blocks of {s.block_tau:g} autocorrelation times of each run"
            else:
                how = "as single frames"
            rows.append(f"held out: validation {s.val_fraction:.0%}{test} of each protein's "
                        f"frames, {how} (seed {s.seed})")
            if s.val_leakage is not None:
                rows.append(f"  {s.val_leakage:.1%} of validation frames are next to a "
                            f"training frame")
            if s.leakage_tau is not None:
                taus = [t for v in s.autocorr.values() for t in v]
                verdict = ("" if s.leakage_tau <= LEAKAGE_TARGET else
                           f" (over the {LEAKAGE_TARGET:.0%} target: the runs are short for "
                           f"their correlation; --split run holds out whole runs)")
                rows.append(f"  {s.leakage_tau:.1%} of held-out frames lie within one "
                            f"autocorrelation time of a training frame (τ median "
                            f"{np.median(taus):.1f}, max {max(taus):.1f} frames){verdict}")
        return "\n".join(rows)


def make_plan(lengths: dict[str, int], frames: dict[str, int], spec: PlanSpec | None = None, *,
              runs: dict[str, list[int]] | None = None,
              autocorr: dict[str, list[float]] | None = None,
              fingerprints: dict[str, str] | None = None,
              fields: dict[str, dict | Callable[[], dict]] | None = None,
              **options) -> BucketPlan:
    """Compute a bucket plan from protein lengths and frame counts (metadata only), as
    ``spec`` (:class:`~protstore.batching.spec.PlanSpec`) says; ``options`` are PlanSpec fields
    that replace the spec's (``make_plan(L, F, n_buckets=2, split="frame")``).

    ``runs``: each protein's runs as frame counts (without them a protein is one run);
    ``autocorr``: each run's autocorrelation time in frames. The frame split holds out blocks
    of ``block_frames`` frames within runs, or (None) of :data:`BLOCK_TAU` τ of each run when
    every τ is known, else of :data:`BLOCK_FRAMES`. ``fingerprints``: each protein's
    :func:`protein_fingerprint`, recorded so that :func:`check_plan` notices a re-ingest.

    A ``selection`` keeps only some frames: proteins it keeps none of are left out, and
    buckets, waste, the split (blocks and runs of the kept frames; τ scaled to their spacing)
    are over the frames it keeps. ``fields``: per protein, the values of the fields its
    condition names (:meth:`Selection.frames`), or a callable giving them; ``protein``,
    ``n_residues``, ``n_frames``, ``run_frames`` and ``run_frame`` come from ``lengths``,
    ``frames`` and ``runs`` (:func:`plan_from_store` reads the others from the store).
    """
    spec = replace(spec or PlanSpec(), **options)
    name, boundaries, n_buckets, strategy = spec.name, spec.boundaries, spec.n_buckets, spec.strategy
    cost, pad_multiple, max_waste, max_buckets = (spec.cost, spec.pad_multiple, spec.max_waste,
                                                  spec.max_buckets)
    split, val_fraction, test_fraction, seed = (spec.split, spec.val_fraction, spec.test_fraction,
                                                spec.seed)
    block_frames, selection = spec.block_frames, spec.selection
    if not lengths:
        raise PlanError("no proteins to plan (is the store empty?)")
    stored = {p: int(frames[p]) for p in sorted(lengths)}
    all_runs = {p: [int(n) for n in (runs or {}).get(p) or [stored[p]]] for p in stored}
    bad = [p for p in stored if sum(all_runs[p]) != stored[p]]
    if bad:
        raise PlanError(f"protein {bad[0]!r}: runs of {sum(all_runs[bad[0]])} frames, but it has "
                        f"{stored[bad[0]]}")
    used = _select(selection, lengths, stored, all_runs, fields) if selection else None
    ids = [p for p in stored if used is None or len(used[p])]
    if not ids:
        raise PlanError(f"the selection ({selection.describe()}) keeps no frame of the "
                        f"{len(stored)} proteins")
    # per protein the frames used, as counts per run (runs left with none are dropped)
    if used is None:
        frames, use_runs = stored, all_runs
    else:
        frames, use_runs = {}, {}
        for p in ids:
            per_run = np.bincount(np.searchsorted(np.cumsum(all_runs[p]), used[p], side="right"),
                                  minlength=len(all_runs[p]))
            frames[p], use_runs[p] = int(per_run.sum()), per_run
        if autocorr:
            autocorr = {p: [max(1.0, float(t) * n / m) for t, n, m in
                            zip(autocorr[p], use_runs[p], all_runs[p]) if n]
                        for p in ids if len(autocorr.get(p) or ()) == len(all_runs[p])}
        use_runs = {p: [int(n) for n in c if n] for p, c in use_runs.items()}
    L = np.array([lengths[p] for p in ids])
    Fr = np.array([frames[p] for p in ids], dtype=np.float64)
    if boundaries is not None:
        strategy, bounds = "boundaries", list(boundaries)
    elif max_waste is not None:
        strategy = "optimal"
        for k in range(1, max_buckets + 1):
            bounds = optimal_boundaries(L, Fr, k, cost, pad_multiple)
            if waste(L, Fr, bounds, cost, pad_multiple) <= max_waste:
                break
    elif strategy == "equal-count":
        bounds = equal_count_boundaries(L, n_buckets)
    else:
        bounds = optimal_boundaries(L, Fr, n_buckets, cost, pad_multiple)
    idx = assign(L, bounds)
    buckets = []
    for k in np.unique(idx):
        members = [ids[i] for i in np.flatnonzero(idx == k)]
        n_max = round_up(int(L[idx == k].max()), pad_multiple)
        fr = float(Fr[idx == k].sum())
        buckets.append(Bucket(
            index=len(buckets), n_max=n_max,
            proteins=sorted(members, key=lambda p: (lengths[p], p)), n_frames=int(fr),
            padded_cost=float(frame_cost(n_max, cost) * fr),
            real_cost=float((frame_cost(L[idx == k], cost) * Fr[idx == k]).sum())))
    val = test = []
    if split == "protein":
        val, test = stratified_proteins([b.proteins for b in buckets], val_fraction, seed,
                                        test_fraction=test_fraction)
    held = split != "none"
    parts = Split(mode=split, val_fraction=float(val_fraction) if held else 0.0,
                  test_fraction=float(test_fraction) if held else 0.0, seed=seed,
                  val_proteins=val, test_proteins=test)
    if split in ("frame", "run"):
        taus = {p: [float(t) for t in autocorr[p]] for p in ids
                if autocorr and len(autocorr.get(p) or ()) == len(use_runs[p])}
        parts = replace(parts, runs={p: use_runs[p] for p in ids},
                        autocorr=taus if len(taus) == len(ids) else {})
        if split == "frame":
            if block_frames is None and not parts.autocorr:
                block_frames = BLOCK_FRAMES
            parts = replace(parts, block_frames=block_frames,
                            block_tau=None if block_frames else BLOCK_TAU)
        counts = {p: frames[p] for p in ids}
        parts = replace(parts, val_leakage=parts.leakage(counts),
                        leakage_tau=parts.leakage_within_tau(counts))
    return BucketPlan(name=name, strategy=strategy, cost=cost, pad_multiple=pad_multiple,
                      boundaries=[int(b) for b in bounds], buckets=buckets, split=parts,
                      lengths={p: lengths[p] for p in ids}, frames={p: stored[p] for p in ids},
                      fingerprints={p: str(fingerprints[p]) for p in ids} if fingerprints else {},
                      selection=selection,
                      selected={p: frame_ranges(used[p]) for p in ids} if used else {})


def _select(selection: Selection, lengths: dict[str, int], frames: dict[str, int],
            runs: dict[str, list[int]], fields) -> dict[str, np.ndarray]:
    """The stored frames ``selection`` keeps of each protein (:meth:`Selection.frames_of`)."""
    def values(p):
        given = (fields or {}).get(p) or {}
        given = given() if callable(given) else given
        out = {"protein": p, "n_residues": int(lengths[p]), "n_frames": frames[p], **given}
        missing = sorted(selection.names - set(out) - {"run_frames", "run_frame"})
        if missing:
            raise SelectionError(f"protein {p!r}: no value of {missing[0]!r} for the selection "
                                 f"{selection.expr!r} (plan_from_store reads every field from "
                                 f"the store)")
        return out

    return dict(selection.frames_of((p, runs[p], functools.partial(values, p)) for p in frames))


def frame_ranges(frames: np.ndarray) -> list[list[int]]:
    """Sorted distinct frame indices as [start, stop, step] ranges (Python's ``range``), the
    fewest a greedy left-to-right pass gives: one per run of a stride-only selection."""
    f = np.asarray(frames, np.int64)
    d = np.diff(f)
    change = np.flatnonzero(d[1:] != d[:-1]) + 1  # where a new step begins in d
    out, i = [], 0
    while i < len(f):
        if i == len(f) - 1:
            out.append([int(f[i]), int(f[i]) + 1, 1])
            break
        c = int(change[np.searchsorted(change, i, side="right")]) \
            if np.searchsorted(change, i, side="right") < len(change) else len(d)
        out.append([int(f[i]), int(f[c]) + 1, int(d[i])])
        i = c + 1
    return out


def frames_of_ranges(ranges: list[list[int]]) -> np.ndarray:
    """[k] int64 frame indices of :func:`frame_ranges`' ranges."""
    if not ranges:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(a, b, step, dtype=np.int64) for a, b, step in ranges])


def stratified_proteins(buckets: list[list[str]], fraction: float, seed: int, *,
                        test_fraction: float = 0.0) -> tuple[list[str], list[str]]:
    """Validation and test proteins drawn bucket by bucket, in proportion: ``round(fraction *
    n)`` of a bucket of n proteins (and ``round(test_fraction * n)`` for test), at least one of
    every bucket of two or more (three for test, so no bucket's figure is silently absent) and
    never all of one; seeded by ``seed``."""
    if not 0 < fraction < 1:
        raise PlanError(f"a protein split needs a validation fraction in (0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    val, test = [], []
    for proteins in buckets:
        n = len(proteins)
        n_val, n_test = held_counts(n, fraction, test_fraction)
        order = rng.permutation(sorted(proteins)).tolist()
        val += order[:n_val]
        test += order[n_val:n_val + n_test]
    if not val:
        raise PlanError(f"a protein split needs a bucket of at least 2 proteins (buckets hold "
                        f"{[len(b) for b in buckets]})")
    return sorted(val), sorted(test)


def plan_from_store(store, spec: PlanSpec | None = None, *, progress: bool = False,
                    runs: dict[str, list[int]] | None = None,
                    autocorr: dict[str, list[float]] | None = None,
                    fingerprints: dict[str, str] | None = None, **options) -> BucketPlan:
    """:func:`make_plan` over every protein of ``store`` as ``spec`` says (``options``: PlanSpec
    fields that replace the spec's), with each protein's runs and their autocorrelation times
    for frame and run splits (metadata; stores before 0.5 record no runs: their per-frame
    temperature and replica are read; before 0.7 no τ: it is measured from the positions,
    :func:`protein_autocorr`), and with a selection the values of the fields its condition
    names (:func:`protein_fields`; ``progress``: a bar while they are read)."""
    spec = replace(spec or PlanSpec(), **options)
    table = store.summary()
    selection = spec.selection
    if spec.split in ("frame", "run") or selection is not None:
        runs = runs or {pid: protein_runs(store, pid) for pid in table.index}
    if spec.split in ("frame", "run") and spec.block_frames is None and autocorr is None:
        autocorr = {pid: protein_autocorr(store, pid, runs[pid]) for pid in table.index}
    if fingerprints is None:
        fingerprints = {pid: protein_fingerprint(store.protein_doc(pid)) for pid in table.index}
    data = dict(runs=runs, autocorr=autocorr, fingerprints=fingerprints)
    if selection is None:
        return replace(make_plan(table["n_atoms"].to_dict(), table["n_frames"].to_dict(), spec,
                                 **data), store_version=store.version)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(table), desc="selecting", unit="protein", leave=False,
               disable=not progress)

    def values(pid):
        out = protein_fields(store, pid, selection.names, runs[pid])
        bar.update()
        return out

    try:
        return replace(make_plan(
            table["n_atoms"].to_dict(), table["n_frames"].to_dict(), spec,
            fields={pid: functools.partial(values, pid) for pid in table.index}, **data),
            store_version=store.version)
    finally:
        bar.close()


def protein_fields(store, pid: str, names, runs: list[int] | None = None) -> dict:
    """The values of the selection fields ``names`` of a stored protein, as
    :meth:`Selection.frames` takes them: per protein from its document (``protein``,
    ``n_residues``, ``n_chains``, ``n_frames``), per run from its document's runs
    (``temperature`` (NaN: unknown), ``replica``), per frame from its arrays: ``source_frame``,
    ``rg`` (the ``rg`` array ingest stores, else measured from R), ``helix``, ``sheet``,
    ``coil`` (stored at ingest from the source's DSSP: a protein without them is a
    :class:`SelectionError` naming it), and the ``*_mean`` of those over its frames. Reads
    only the arrays the names need."""
    names = set(names)
    doc = store.protein_doc(pid)
    out = {"protein": pid, "n_residues": int(doc["n_atoms"]), "n_chains": int(doc["n_chains"]),
           "n_frames": int(doc["n_frames"])}
    runs = runs if runs is not None else protein_runs(store, pid)
    if names & {"temperature", "replica"}:
        if len(doc.get("runs") or ()) == len(runs):
            out["temperature"] = np.array([np.nan if r["temperature"] is None else
                                           r["temperature"] for r in doc["runs"]], np.float64)
            out["replica"] = np.array([r["replica"] for r in doc["runs"]], np.int64)
        else:  # stores before 0.5: the per-frame arrays at each run's first frame
            readers = store.protein_readers(pid)
            first = np.cumsum([0, *runs[:-1]]).astype(np.int64)
            out["temperature"] = readers["temperature"].read_all().astype(np.float64)[first]
            out["replica"] = readers["replica"].read_all().astype(np.int64)[first]
    arrays = {n.removesuffix("_mean") for n in names} & {"source_frame", "rg", *SS_FIELDS}
    if not arrays:
        return out
    readers = store.protein_readers(pid)
    for name in sorted(arrays):
        if name in readers:
            value = readers[name].read_all()
        elif name == "rg":
            from ..structure import radius_of_gyration

            value = radius_of_gyration(readers["R"].read_all())
        else:
            raise SelectionError(
                f"protein {pid!r} has no {name!r} field: its source had no DSSP secondary "
                f"structure (only mdCATH files carry one; CA beads cannot be assigned one), or "
                f"it was ingested before protstore stored it: select without {name!r}")
        out[name] = np.asarray(value, np.float64)
        if f"{name}_mean" in FIELDS:
            out[f"{name}_mean"] = float(np.mean(out[name]))
    return out


def protein_fingerprint(doc: dict) -> str:
    """Short digest of the fields of a protein document that decide its frames: its sources
    (format, entry, checksum), bead and frame counts, coarse-graining map, source units, runs
    (temperature, replica, frames), temperatures, excluded frames and the ingest stride (when
    not 1: absent, the digest of an older document is unchanged). A re-ingest from other
    data changes it even when the frame count stays; fields measured from the data or about
    storage (τ, sizes, digests of array metadata, the writer's version) are left out."""
    return json_digest({
        "sources": [{k: s.get(k) for k in ("format", "entry", "checksum")}
                    for s in doc.get("sources") or []],
        "n_atoms": doc.get("n_atoms"), "n_frames": doc.get("n_frames"),
        "cg_map": (doc.get("cg_map") or {}).get("name"),
        "source_units": {k: (doc.get("source_units") or {}).get(k) for k in ("length", "force")},
        "runs": [{k: r.get(k) for k in ("temperature", "replica", "n_frames")}
                 for r in doc.get("runs") or []],
        "temperatures": doc.get("temperatures"),
        "excluded_frames": doc.get("excluded_frames"),
        **({"frame_stride": doc["frame_stride"]} if doc.get("frame_stride", 1) != 1 else {})},
        short=True)


def protein_autocorr(store, pid: str, runs: list[int]) -> list[float]:
    """Autocorrelation time (frames) of each run of ``pid``: recorded at ingest since 0.7,
    else measured from its positions (:mod:`protstore.timeseries`)."""
    doc_runs = store.protein_doc(pid).get("runs") or []
    if len(doc_runs) == len(runs) and all("autocorr_frames" in r for r in doc_runs):
        return [float(r["autocorr_frames"]) for r in doc_runs]
    from ..timeseries import run_times

    return run_times(store.protein_readers(pid)["R"].read_all(), runs)


def protein_runs(store, pid: str) -> list[int]:
    """Frame counts of a protein's runs (temperature, replica), in store order."""
    doc = store.protein_doc(pid)
    if "runs" in doc:
        return [r["n_frames"] for r in doc["runs"]]
    readers = store.protein_readers(pid)
    key = np.stack([np.nan_to_num(readers["temperature"].read_all().astype(np.float64), nan=-1),
                    readers["replica"].read_all().astype(np.float64)], 1)
    change = np.flatnonzero((key[1:] != key[:-1]).any(axis=1)) + 1
    return np.diff(np.concatenate([[0], change, [len(key)]])).tolist()


def save_plan(store, plan: BucketPlan, *, overwrite: bool = False) -> None:
    """Validate ``plan`` against ``schemas/plan.json`` and store it as ``plans/<name>``."""
    doc = plan.to_doc()
    check_document(doc, "plan", f"plan {plan.name!r}")
    store.write_attrs_group(f"plans/{plan.name}", PLAN_DOC, doc, overwrite=overwrite)


def load_plan(store, name: str, *, check: bool = True) -> BucketPlan:
    """The plan ``name`` stored in ``store``; with ``check``, refused if stale
    (:func:`check_plan`)."""
    doc = store.read_attrs_group(f"plans/{name}", PLAN_DOC)
    check_document(doc, "plan", f"{store.url}/plans/{name}")  # a damaged or edited plan
    plan = BucketPlan.from_doc(doc)
    if check:
        check_plan(store, plan)
    return plan


def check_plan(store, plan: BucketPlan) -> None:
    """Refuse a plan that no longer describes the store: a protein it names is gone, has
    another number of frames than the plan was made for, or (plans that record fingerprints)
    another :func:`protein_fingerprint` (a re-ingest from other data): the split and
    the loader would follow the plan while the data have changed. Metadata only."""
    chosen = f' --select "{plan.selection.expr}"' if plan.selection and plan.selection.expr \
        else ""
    again = f"make the plan again (`protstore bucket --name {plan.name}{chosen} --overwrite`)"
    for pid in plan.proteins:
        if pid not in store:
            raise PlanError(f"plan {plan.name!r} names protein {pid!r}, which is not in "
                            f"{store.url}: {again}")
        n = store.protein_doc(pid)["n_frames"]
        if n != plan.frames[pid]:
            raise PlanError(f"plan {plan.name!r} is stale: protein {pid!r} has {n} frames, the "
                            f"plan was made when it had {plan.frames[pid]}: {again}")
        made = plan.fingerprints.get(pid)
        if made is not None:
            now = protein_fingerprint(store.protein_doc(pid))
            if now != made:
                raise PlanError(f"plan {plan.name!r} is stale: protein {pid!r} was ingested again "
                                f"from other data (its sources, units, runs or excluded frames "
                                f"differ from those the plan was made from; fingerprint {made}, "
                                f"now {now}): {again}")
