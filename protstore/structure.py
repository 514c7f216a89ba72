"""Structural observables of bead coordinates (NumPy), shared by ingest, selection and compare."""

from __future__ import annotations

import numpy as np


def radius_of_gyration(R: np.ndarray) -> np.ndarray:
    """[F] mass-unweighted radius of gyration (Å): sqrt(mean_i |r_i - mean_j r_j|²)."""
    R = np.asarray(R, np.float64)
    d = R - R.mean(axis=-2, keepdims=True)
    return np.sqrt(np.mean(np.sum(d * d, axis=-1), axis=-1))
