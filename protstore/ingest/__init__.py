"""Ingest from source formats: mdCATH HDF5, predecessor NPZ, MD trajectories (MDAnalysis); CG map;
frame validation."""

from .api import ingest
from .pipeline import IngestOptions, IngestReport, ingest_protein
from .validate import FrameChecks

__all__ = ["FrameChecks", "IngestOptions", "IngestReport", "ingest", "ingest_protein"]
