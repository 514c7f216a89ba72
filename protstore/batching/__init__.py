"""Protein-aware batching: bucket plans, lazy padded views (``ds.prot``), the JAX batch loader.

Importing it also serves ``Store.plan`` and ``Store.bucket`` (as xarray serves accessors: the
store layer does not import batching).
"""

from ..store import Store
from . import accessor  # noqa: F401  (registers the ds.prot accessor)
from .plan import (BucketPlan, PlanError, Split, check_plan, load_plan, make_plan,
                   plan_from_store, save_plan)
from .loader import BatchLoader, LoaderConfig
from .spec import PlanSpec
from .views import bucket_view

__all__ = ["BatchLoader", "BucketPlan", "LoaderConfig", "PlanError", "PlanSpec", "Split", "bucket_view",
           "check_plan", "load_plan", "make_plan", "plan_from_store", "save_plan"]


def _store_plan(self: Store, name: str) -> BucketPlan:
    """The stored :class:`BucketPlan` ``name``, refused if stale (:func:`check_plan`)."""
    return load_plan(self, name)


def _store_bucket(self: Store, plan: BucketPlan | str, k: int, split: str = "all",
                  chunks: str | None = "auto"):
    """Lazy padded view (an ``xarray.Dataset``) of bucket ``k`` of ``plan`` (a plan or its
    name); see :func:`bucket_view`."""
    return bucket_view(self, self.plan(plan) if isinstance(plan, str) else plan, k, split, chunks)


for _name, _method in (("plan", _store_plan), ("bucket", _store_bucket)):
    _method.__name__ = _name
    _method.__qualname__ = f"Store.{_name}"
    setattr(Store, _name, _method)
del _name, _method
