"""Force-matching training over bucket plans: config, the jitted step, runs with checkpoints."""

from .config import SCHEDULES, TrainConfig
from .run import Run, TrainingDiverged, TrainResult, train
from .step import TrainState, make_eval_step, make_optimizer, make_train_step

__all__ = ["SCHEDULES", "Run", "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged",
           "make_eval_step", "make_optimizer", "make_train_step", "train"]
