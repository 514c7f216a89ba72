"""Training configuration as data: a frozen dataclass, read from JSON and saved into the run."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import json
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..model.energy import DEFAULT_MODEL
from ..store.schemas import check_document

SCHEDULES = ("interleaved", "sequential")
LOSS_WEIGHTINGS = ("bead", "frame")
# fields added after runs had been written, with the behaviour those older runs had
OLDER_RUNS = {"batch_beads": None, "early_stopping_patience": 0, "loss_weighting": "frame"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as ``RUN_DIR/config.json``).

    schedule : ``interleaved`` (one model and optimizer state, batches of all buckets mixed in
        every epoch) or ``sequential`` (the predecessor's: all epochs on bucket 0 from the
        initial params, then bucket 1 from bucket 0's params with a fresh optimizer, ...).
    epochs : epochs per phase (interleaved has one phase; sequential one per bucket).
    batch_size, batch_beads : samples per batch, or (``batch_beads``) max(1, batch_beads //
        N_max) samples in each bucket, so every step costs about the same and every real bead
        weighs about the same in the loss (docs/reference.md, "Loss weighting").
    loss_weighting : ``bead`` (the default): every real bead's force components weigh the same
        in an epoch, whatever its protein's size, so the epoch's loss is the pooled force MSE
        that validation reports (a step's squared errors over the epoch's mean real beads per
        step); ``frame``: every step's loss is the mean over its own real beads, so a frame of
        a 24-residue protein weighs as much as one of 236 residues and the beads of short
        proteins ~10x more (the predecessor's weighting).
    learning_rate, warmup_steps, weight_decay, clip_norm : AdamW with linear warmup and cosine
        decay to 1% over each phase, after global-norm gradient clipping.
    checkpoint_every_steps : extra checkpoints every N steps (0: only at epoch ends).
    early_stopping_patience : end a phase after this many validated epochs without a lower
        validation RMSE than its best so far, step 0 (the priors alone) included; 0 (the
        default): train every epoch, since ``best/`` is chosen on validation anyway and early
        stopping only saves time.
    model, model_options : the learned energy ``package.module:factory`` and its keyword options.
    """

    epochs: int = 3
    batch_size: int = 16
    batch_beads: int | None = None
    schedule: str = "interleaved"
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    clip_norm: float = 10.0
    seed: int = 0
    checkpoint_every_steps: int = 0
    model: str = DEFAULT_MODEL
    model_options: dict = field(default_factory=dict)
    buffer_chunks: int = 0
    prefetch: int = 4
    early_stopping_patience: int = 0
    loss_weighting: str = "bead"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, not "
                              f"{self.loss_weighting!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.batch_beads is not None and self.batch_beads < 1:
            raise ConfigError(f"batch_beads must be >= 1, not {self.batch_beads}")
        for name in ("warmup_steps", "checkpoint_every_steps", "prefetch", "buffer_chunks",
                     "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name, low in (("learning_rate", 0.0), ("clip_norm", 0.0), ("weight_decay", None)):
            value = float(getattr(self, name))
            if not math.isfinite(value) or (low is not None and value <= low) or value < 0:
                raise ConfigError(f"{name} must be a {'positive' if low is not None else 'non-negative'} "
                                  f"finite number, not {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "training config") -> "TrainConfig":
        """From a (partial) config document, checked against schemas/train_config.json."""
        check_document(doc, "train_config", where)
        return cls(**doc)

    @classmethod
    def of_run(cls, path) -> "TrainConfig":
        """A run's own ``config.json``: a field it lacks was written before that field existed
        and takes the value those runs had (not today's default)."""
        doc = _read_document(path)
        return cls.from_dict({**{k: v for k, v in OLDER_RUNS.items() if k not in doc}, **doc},
                             str(path))

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        return cls.from_dict(_read_document(path), str(path))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def hash(self) -> str:
        doc = self.to_dict()
        # fields that came later, at the value runs before them had: older runs' hashes stay
        # valid
        for name, before in OLDER_RUNS.items():
            if doc[name] == before:
                del doc[name]
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _read_document(path) -> dict:
    from ..store.location import as_location

    try:
        return json.loads(as_location(path).read_bytes(""))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ConfigError(f"{path}: cannot read training config ({exc})") from None
