"""How a bucket plan is made, as data: :class:`PlanSpec` (the choices of ``protstore bucket``
and :func:`~protstore.batching.plan.make_plan`, validated once, hashable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PlanError
from ..selection import Selection

COSTS = {"linear": 1, "pair": 2}  # name: the power of N_max a padded frame costs
STRATEGIES = ("boundaries", "equal-count", "optimal")
SPLITS = ("none", "protein", "frame", "run")


@dataclass(frozen=True)
class PlanSpec:
    """The recipe of a bucket plan (config as data; the data it is applied to, lengths,
    frames, runs, τ, comes separately).

    Buckets: ``boundaries`` (inclusive upper bounds in residues) win over ``strategy``
    (``equal-count`` or ``optimal`` for ``n_buckets``); with ``max_waste`` the fewest buckets,
    up to ``max_buckets``, whose optimal plan wastes at most that fraction of ``cost``
    (``linear``: N_max per frame, ``pair``: N_max²); ``pad_multiple`` rounds N_max up.
    Split: ``protein`` (whole proteins held out, stratified by bucket), ``frame`` (blocks of
    ``block_frames`` frames, or of several autocorrelation times, within runs), ``run`` (whole
    runs) or ``none``; ``val_fraction`` and ``test_fraction`` of the frames (proteins, for a
    protein split), drawn with ``seed``. ``selection`` keeps only some frames.
    """

    name: str = "default"
    boundaries: tuple[int, ...] | None = None
    n_buckets: int | None = 3
    strategy: str = "equal-count"
    cost: str = "linear"
    pad_multiple: int | None = None
    max_waste: float | None = None
    max_buckets: int = 16
    split: str = "protein"
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    block_frames: int | None = None
    selection: Selection | None = None

    def __post_init__(self):
        if self.boundaries is not None:
            object.__setattr__(self, "boundaries", tuple(check_boundaries(self.boundaries)))
        if self.cost not in COSTS:
            raise PlanError(f"cost must be one of {sorted(COSTS)}, not {self.cost!r}")
        if self.split not in SPLITS:
            raise PlanError(f"split must be one of {SPLITS}, not {self.split!r}")
        if self.strategy not in STRATEGIES[1:] and not (
                self.strategy == "boundaries" and self.boundaries is not None):
            raise PlanError(f"strategy must be 'equal-count' or 'optimal', not {self.strategy!r}")
        if self.pad_multiple is not None and self.pad_multiple < 1:
            raise PlanError(f"pad multiple must be a positive integer, not {self.pad_multiple}")
        if self.boundaries is None and self.max_waste is None and (
                not self.n_buckets or self.n_buckets < 1):
            raise PlanError(f"number of buckets must be >= 1, not {self.n_buckets}")
        if self.block_frames is not None and self.block_frames < 1:
            raise PlanError(f"block frames must be >= 1, not {self.block_frames}")
        if not 0 <= self.test_fraction < 1 or (
                self.split != "none" and self.val_fraction + self.test_fraction >= 1):
            raise PlanError(f"validation and test fractions must add up to less than 1, not "
                            f"{self.val_fraction} + {self.test_fraction}")
        if self.selection is not None and self.selection.everything:
            object.__setattr__(self, "selection", None)


def check_boundaries(boundaries: Sequence[int]) -> list[int]:
    """Validate inclusive upper bounds: positive integers, strictly increasing."""
    b = [int(x) for x in boundaries]
    if any(x != y for x, y in zip(b, boundaries)) or any(x <= 0 for x in b):
        raise PlanError(f"bucket boundaries must be positive integers, got {list(boundaries)}")
    if any(y <= x for x, y in zip(b, b[1:])):
        raise PlanError(f"bucket boundaries must be strictly increasing, got {b}")
    return b
