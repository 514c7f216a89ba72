"""Simulated ensembles against the store's reference frames (``protstore compare``)."""

from .run import CompareResult, compare, write_outputs

__all__ = ["CompareResult", "compare", "write_outputs"]
