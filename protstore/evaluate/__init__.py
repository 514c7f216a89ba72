"""Force-error analysis: vmapped forces over frame blocks (dask), per-residue reductions, reports."""

from .compute import RMSE_CONVENTION, error_dataset, forces_block, select
from .config import EVAL_MODES, EVAL_SPLITS, EvalConfig
from .params import ModelParams, load_params
from .reduce import overall_metrics, per_bead, per_residue_tables, pooled, pooled_by_sample
from .run import PerResidueResult, compute_per_residue_errors, evaluate, scheduler

__all__ = ["EVAL_MODES", "EVAL_SPLITS", "EvalConfig", "ModelParams", "PerResidueResult", "RMSE_CONVENTION",
           "compute_per_residue_errors", "error_dataset", "evaluate", "forces_block",
           "load_params", "overall_metrics", "per_bead", "per_residue_tables", "pooled",
           "pooled_by_sample",
           "scheduler", "select"]
