"""Force-matching training over bucket plans: config, the jitted step, runs with checkpoints."""

from .config import SCHEDULES, TrainConfig
from ..errors import TrainingDiverged
from .loop import Run, TrainResult, train
from .rundir import RunDir
from .step import TrainState, make_eval_step, make_optimizer, make_train_step

__all__ = ["SCHEDULES", "Run", "RunDir", "TrainConfig", "TrainResult", "TrainState",
           "TrainingDiverged", "make_eval_step", "make_optimizer", "make_train_step", "train"]
