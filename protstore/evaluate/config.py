"""How to evaluate: :class:`EvalConfig`, a frozen dataclass holding every setting of
:func:`protstore.evaluate.evaluate` and its defaults (the command line builds it from its flags)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ..errors import ConfigError
from ..model.energy import MODES

EVAL_MODES = ("per-residue",) + MODES
#: the frames a split names: a plan's held-out parts, its training part, or every frame
EVAL_SPLITS = ("test", "val", "train", "all")


@dataclass(frozen=True)
class EvalConfig:
    """The settings of an evaluation (values checked on construction: a :class:`ConfigError`).

    mode : ``per-residue`` (errors of the full energy per bead, reduced per amino-acid type,
        chain position, protein and temperature) or an energy mode of
        :data:`~protstore.model.energy.MODES` (``full``, ``prior-only``, ``ml-only``: overall
        RMSE and MAE).
    split : ``test``/``val``/``train``/``all`` frames; None: with a plan, its test part when it
        holds one out, else validation; without a plan, every frame.
    proteins : the proteins to evaluate (default: all of the plan's, or of the store).
    n_frames : at most this many frames per protein, drawn with ``seed`` (None: all).
    seed : of that draw and of the samples an overall plot shows.
    frame_block : frames per dask task (padded to this many: one compilation per bucket shape).
    address : a dask.distributed scheduler to run on; None: local threads.
    workers : local threads (0: serially in this thread; None: dask's default).
    model_id : prefix of the output files (None: the params' file or directory name).
    model : ``package.module:factory`` of the model reading the params (None: the checkpoint's
        own when it is built in, protstore's network for a ``params.pkl``).
    allow_pickle : read a ``params.pkl`` (unpickling runs code from the file).
    """

    mode: str = "per-residue"
    split: str | None = None
    proteins: tuple[str, ...] | None = None
    n_frames: int | None = None
    seed: int = 0
    frame_block: int = 32
    address: str | None = None
    workers: int | None = None
    model_id: str | None = None
    model: str | None = None
    allow_pickle: bool = False

    def __post_init__(self):
        if self.mode not in EVAL_MODES:
            raise ConfigError(f"mode must be one of {EVAL_MODES}, not {self.mode!r}")
        if self.split is not None and self.split not in EVAL_SPLITS:
            raise ConfigError(f"split must be one of {EVAL_SPLITS}, not {self.split!r}")
        if self.proteins is not None:
            if isinstance(self.proteins, str) or not all(isinstance(p, str)
                                                          for p in self.proteins):
                raise ConfigError(f"proteins must be a sequence of protein ids, not "
                                  f"{self.proteins!r}")
            object.__setattr__(self, "proteins", tuple(self.proteins))  # hashable, immutable
        _integer("seed", self.seed)
        _integer("frame_block", self.frame_block, low=1)
        if self.n_frames is not None:
            _integer("n_frames", self.n_frames, low=1)
        if self.workers is not None:
            _integer("workers", self.workers, low=0)
        for name in ("address", "model_id", "model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string, not {value!r}")
        if not isinstance(self.allow_pickle, bool):
            raise ConfigError(f"allow_pickle must be True or False, not {self.allow_pickle!r}")


def _integer(name: str, value, low: int | None = None) -> None:
    """Refuse a ``value`` that is not an integer (bools neither) of at least ``low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) \
            or (low is not None and value < low):
        what = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}[low]
        raise ConfigError(f"{name} must be {what}, not {value!r}")
