"""Bucket plans: which proteins go into which length bucket, and the train/validation split.

Boundaries are inclusive upper bounds: ``(100, 200)`` gives N <= 100, 100 < N <= 200, N > 200.
Each bucket pads to the longest protein in it (optionally rounded up to a multiple of K). The
cost of a padded frame is N_max (``linear``: per-bead work) or N_max² (``pair``: dense pair work);
waste = 1 - real cost / padded cost, with every protein weighted by its frame count.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import __version__
from ..errors import PlanError

COSTS = {"linear": 1, "pair": 2}
STRATEGIES = ("boundaries", "equal-count", "optimal")
SPLITS = ("none", "protein", "frame")
PLAN_DOC = "protstore_plan"


def frame_cost(n: np.ndarray | int, cost: str) -> np.ndarray:
    return np.asarray(n, dtype=np.float64) ** COSTS[cost]


def round_up(n: int, multiple: int | None) -> int:
    return int(-(-n // multiple) * multiple) if multiple else int(n)


def check_boundaries(boundaries: Sequence[int]) -> list[int]:
    """Validate inclusive upper bounds: positive integers, strictly increasing."""
    b = [int(x) for x in boundaries]
    if any(x != y for x, y in zip(b, boundaries)) or any(x <= 0 for x in b):
        raise PlanError(f"bucket boundaries must be positive integers, got {list(boundaries)}")
    if any(y <= x for x, y in zip(b, b[1:])):
        raise PlanError(f"bucket boundaries must be strictly increasing, got {b}")
    return b


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
    """Boundaries giving ~equal numbers of proteins per bucket (ties stay together)."""
    s = np.sort(np.asarray(lengths))
    cuts = [int(s[int(round(k * len(s) / n_buckets)) - 1]) for k in range(1, n_buckets)]
    return sorted(set(c for c in cuts if c < s[-1]))


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
    k_best = int(np.argmin(best[1:, m])) + 1
    cuts, j = [], m
    for k in range(k_best, 0, -1):
        i = arg[k, j]
        if i > 1:
            cuts.append(int(L[i - 2]))
        j = i - 1
    return sorted(cuts)


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


BLOCK_FRAMES = 50  # frames of a held-out block: 2 of its 50 touch training frames at most


@dataclass(frozen=True)
class Split:
    """Deterministic train/validation assignment (stored with the plan).

    mode ``protein``: whole proteins are held out (``val_proteins``, drawn bucket by bucket in
    proportion: :func:`stratified_proteins`); the split that measures generalisation to new
    proteins. ``frame``: a seeded fraction of every protein's frames, held out as contiguous
    blocks of ``block_frames`` frames of each run (``runs``: each protein's runs as frame
    counts, in store order), so that few validation frames are next to a training frame
    (consecutive MD frames are nearly the same sample; ``val_leakage`` is the fraction that
    are). Plans made before 0.5 held out single frames (no ``block_frames``).
    ``none``: everything is training data.
    """

    mode: str = "none"
    val_fraction: float = 0.0
    seed: int = 0
    val_proteins: list[str] = field(default_factory=list)
    block_frames: int | None = None
    runs: dict[str, list[int]] = field(default_factory=dict)
    val_leakage: float | None = None

    def frames(self, protein: str, n_frames: int, part: str) -> np.ndarray:
        """Sorted frame indices of ``protein`` in ``part`` ('train', 'val' or 'all')."""
        if part == "all" or self.mode == "none":
            return np.arange(n_frames) if part != "val" else np.arange(0)
        if self.mode == "protein":
            held = protein in self.val_proteins
            return np.arange(n_frames) if held == (part == "val") else np.arange(0)
        val = self.held_out(protein, n_frames)
        return np.flatnonzero(val if part == "val" else ~val)

    def held_out(self, protein: str, n_frames: int) -> np.ndarray:
        """[n_frames] bool: the frame split's validation frames of ``protein``."""
        rng = np.random.default_rng([self.seed, zlib.crc32(protein.encode())])
        n_val = int(round(self.val_fraction * n_frames))
        val = np.zeros(n_frames, dtype=bool)
        if self.block_frames is None:  # plans before 0.5: single frames
            val[rng.permutation(n_frames)[:n_val]] = True
            return val
        runs = self.runs.get(protein) or [n_frames]
        blocks = [(a, min(a + self.block_frames, start + n))
                  for start, n in zip(np.cumsum([0, *runs[:-1]]).tolist(), runs)
                  for a in range(start, start + n, self.block_frames)]
        taken = 0
        for b in rng.permutation(len(blocks)):
            if taken >= n_val:
                break
            a, e = blocks[b]
            e = min(e, a + n_val - taken)
            val[a:e] = True
            taken += e - a
        return val

    def leakage(self, frames: dict[str, int]) -> float | None:
        """Fraction of validation frames with a training frame of the same run next to them."""
        if self.mode != "frame":
            return None
        touching = total = 0
        for pid, n in frames.items():
            val = self.held_out(pid, n)
            same_run = np.ones(max(n - 1, 0), bool)  # frame i and i+1 in one run
            ends = np.cumsum(self.runs.get(pid) or [n])[:-1]
            same_run[ends - 1] = False
            near = np.zeros(n, bool)
            near[:-1] |= same_run & ~val[1:]
            near[1:] |= same_run & ~val[:-1]
            touching += int((val & near).sum())
            total += int(val.sum())
        return touching / total if total else None


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

    @property
    def proteins(self) -> list[str]:
        """All proteins of the plan, bucket by bucket; their positions are protein indices."""
        return [p for b in self.buckets for p in b.proteins]

    def total_waste(self) -> float:
        padded = sum(b.padded_cost for b in self.buckets)
        return 1.0 - sum(b.real_cost for b in self.buckets) / padded if padded else 0.0

    def to_doc(self) -> dict:
        doc = asdict(self)
        doc["buckets"] = [dict(asdict(b), waste=b.waste) for b in self.buckets]
        doc["split"] = {k: v for k, v in doc["split"].items()
                        if k not in ("block_frames", "runs", "val_leakage") or v not in (None, {})}
        doc["created_by"] = f"protstore {__version__}"
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "BucketPlan":
        buckets = [Bucket(**{k: v for k, v in b.items() if k != "waste"}) for b in doc["buckets"]]
        fields = {k: v for k, v in doc.items() if k not in ("buckets", "split", "created_by")}
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
        if self.split.mode == "protein":
            rows.append(f"validation proteins ({len(self.split.val_proteins)}): "
                        f"{' '.join(self.split.val_proteins)}")
        elif self.split.mode == "frame":
            s = self.split
            how = (f"in blocks of {s.block_frames} frames of each run" if s.block_frames
                   else "as single frames")
            leak = ("" if s.val_leakage is None else
                    f"; {s.val_leakage:.1%} of them are next to a training frame")
            rows.append(f"validation: {s.val_fraction:.0%} of each protein's frames, {how} "
                        f"(seed {s.seed}){leak}")
        return "\n".join(rows)


def make_plan(lengths: dict[str, int], frames: dict[str, int], *, name: str = "default",
              boundaries: Sequence[int] | None = None, n_buckets: int | None = 3,
              strategy: str = "equal-count", cost: str = "linear",
              pad_multiple: int | None = None, max_waste: float | None = None,
              max_buckets: int = 16, split: str = "none", val_fraction: float = 0.1,
              seed: int = 0, runs: dict[str, list[int]] | None = None,
              block_frames: int = BLOCK_FRAMES) -> BucketPlan:
    """Compute a bucket plan from protein lengths and frame counts (metadata only).

    ``boundaries`` wins over ``strategy``; with ``max_waste`` the number of buckets is the
    smallest K (up to ``max_buckets``) whose optimal plan wastes at most that fraction.
    ``runs``: each protein's runs as frame counts (the frame split holds out blocks of
    ``block_frames`` within runs; without them a protein is one run).
    """
    if cost not in COSTS:
        raise PlanError(f"cost must be one of {sorted(COSTS)}, not {cost!r}")
    if split not in SPLITS:
        raise PlanError(f"split must be one of {SPLITS}, not {split!r}")
    if pad_multiple is not None and pad_multiple < 1:
        raise PlanError(f"pad multiple must be a positive integer, not {pad_multiple}")
    if not lengths:
        raise PlanError("no proteins to plan (is the store empty?)")
    ids = sorted(lengths)
    L = np.array([lengths[p] for p in ids])
    Fr = np.array([frames[p] for p in ids], dtype=np.float64)
    if boundaries is not None:
        strategy = "boundaries"
        bounds = check_boundaries(boundaries)
    elif max_waste is not None:
        strategy = "optimal"
        for k in range(1, max_buckets + 1):
            bounds = optimal_boundaries(L, Fr, k, cost, pad_multiple)
            if waste(L, Fr, bounds, cost, pad_multiple) <= max_waste:
                break
    else:
        if not n_buckets or n_buckets < 1:
            raise PlanError(f"number of buckets must be >= 1, not {n_buckets}")
        if strategy == "equal-count":
            bounds = equal_count_boundaries(L, n_buckets)
        elif strategy == "optimal":
            bounds = optimal_boundaries(L, Fr, n_buckets, cost, pad_multiple)
        else:
            raise PlanError(f"strategy must be 'equal-count' or 'optimal', not {strategy!r}")
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
    val = []
    if split == "protein":
        val = stratified_proteins([b.proteins for b in buckets], val_fraction, seed)
    frames = {p: int(frames[p]) for p in ids}
    parts = Split(mode=split, val_fraction=float(val_fraction) if split != "none" else 0.0,
                  seed=seed, val_proteins=val)
    if split == "frame":
        if block_frames < 1:
            raise PlanError(f"block frames must be >= 1, not {block_frames}")
        runs = {p: [int(n) for n in (runs or {}).get(p) or [frames[p]]] for p in ids}
        bad = [p for p in ids if sum(runs[p]) != frames[p]]
        if bad:
            raise PlanError(f"protein {bad[0]!r}: runs of {sum(runs[bad[0]])} frames, but it has "
                            f"{frames[bad[0]]}")
        parts = replace(parts, block_frames=int(block_frames), runs=runs)
        parts = replace(parts, val_leakage=parts.leakage(frames))
    return BucketPlan(name=name, strategy=strategy, cost=cost, pad_multiple=pad_multiple,
                      boundaries=[int(b) for b in bounds], buckets=buckets, split=parts,
                      lengths=dict(lengths), frames=frames)


def stratified_proteins(buckets: list[list[str]], fraction: float, seed: int) -> list[str]:
    """Validation proteins drawn bucket by bucket, in proportion: ``round(fraction * n)`` of a
    bucket of n proteins, at least one of every bucket of two or more (so no bucket's
    validation figure is silently absent) and never all of one; seeded by ``seed``."""
    if not 0 < fraction < 1:
        raise PlanError(f"a protein split needs a validation fraction in (0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for proteins in buckets:
        n = len(proteins)
        n_val = min(max(1, int(round(fraction * n))), n - 1) if n >= 2 else 0
        val += rng.permutation(sorted(proteins))[:n_val].tolist()
    if not val:
        raise PlanError(f"a protein split needs a bucket of at least 2 proteins (buckets hold "
                        f"{[len(b) for b in buckets]})")
    return sorted(val)


def plan_from_store(store, **kwargs) -> BucketPlan:
    """:func:`make_plan` over every protein of ``store``, with each protein's runs (metadata;
    stores before 0.5 record no runs: their per-frame temperature and replica are read)."""
    table = store.summary()
    if kwargs.get("split") == "frame" and "runs" not in kwargs:
        kwargs["runs"] = {pid: protein_runs(store, pid) for pid in table.index}
    return make_plan(table["n_atoms"].to_dict(), table["n_frames"].to_dict(), **kwargs)


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
    from ..store.schemas import check_document

    doc = plan.to_doc()
    check_document(doc, "plan", f"plan {plan.name!r}")
    store.write_attrs_group(f"plans/{plan.name}", PLAN_DOC, doc, overwrite=overwrite)


def load_plan(store, name: str, *, check: bool = True) -> BucketPlan:
    """The plan ``name`` stored in ``store``; with ``check``, refused if stale
    (:func:`check_plan`)."""
    plan = BucketPlan.from_doc(store.read_attrs_group(f"plans/{name}", PLAN_DOC))
    if check:
        check_plan(store, plan)
    return plan


def check_plan(store, plan: BucketPlan) -> None:
    """Refuse a plan that no longer describes the store: a protein it names is gone, or has
    another number of frames than the plan was made for (a re-ingest): the split and the
    loader would follow the plan while the data have changed. Metadata only."""
    again = f"make the plan again (`protstore bucket --name {plan.name} --overwrite`)"
    for pid in plan.proteins:
        if pid not in store:
            raise PlanError(f"plan {plan.name!r} names protein {pid!r}, which is not in "
                            f"{store.url}: {again}")
        n = store.protein_doc(pid)["n_frames"]
        if n != plan.frames[pid]:
            raise PlanError(f"plan {plan.name!r} is stale: protein {pid!r} has {n} frames, the "
                            f"plan was made when it had {plan.frames[pid]}: {again}")
