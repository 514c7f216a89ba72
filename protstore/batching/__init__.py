"""Protein-aware batching: bucket plans, lazy padded views (``ds.prot``), the JAX batch loader."""

from . import accessor  # noqa: F401  (registers the ds.prot accessor)
from .plan import (BucketPlan, PlanError, Split, check_plan, load_plan, make_plan,
                   plan_from_store, save_plan)
from .loader import BatchLoader, LoaderConfig
from .views import bucket_view

__all__ = ["BatchLoader", "BucketPlan", "LoaderConfig", "PlanError", "Split", "bucket_view",
           "check_plan", "load_plan", "make_plan", "plan_from_store", "save_plan"]
