"""How correlated a run's consecutive frames are: a conformational time series and its integrated
autocorrelation time.

The coordinate is the distance RMS to the run's first frame,

    x_t = sqrt(mean over pairs (i, j) of (d_ij(t) - d_ij(0))²)     (Å; pairs |i - j| >= 3)

over a fixed subset of at most :data:`MAX_PAIRS` CA pairs: invariant to rotation and
translation (no superposition needed), it moves with any global change of shape, and it grows
for a run that drifts, which only lengthens the estimate (a conservative split). The integrated
autocorrelation time τ = 1 + 2 Σ_t ρ(t), in frames, is estimated with Sokal's automatic window
(the smallest window M with M >= 5 τ(M)), as implemented by emcee's
``emcee.autocorr.integrated_time``; τ >= 1 (uncorrelated frames give 1). A series too short for a
reliable estimate still gives the windowed value (the estimator's ``tol=0``): runs of a few
hundred frames get a lower bound, so splits built on it are the least they should be.
"""

from __future__ import annotations

import numpy as np

MAX_PAIRS = 2000
MIN_SEPARATION = 3  # beads closer in sequence than this move with their bonds, not the fold


def drms_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i [P], j [P]) the coordinate uses: every pair |i - j| >= 3, or an evenly
    strided subset of at most :data:`MAX_PAIRS` of them."""
    i, j = np.triu_indices(n_atoms, MIN_SEPARATION)
    if len(i) > MAX_PAIRS:
        keep = np.linspace(0, len(i) - 1, MAX_PAIRS).round().astype(np.int64)
        i, j = i[keep], j[keep]
    return i, j


def pair_distances(R: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """[frames, P] float64 distances (Å) of ``pairs`` in frames R [frames, atoms, 3]."""
    i, j = pairs
    R = np.asarray(R, np.float64)
    return np.linalg.norm(R[:, i] - R[:, j], axis=-1)


def integrated_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time (frames, >= 1) of the series x [T] (module docstring);
    1 for a series of fewer than 3 frames or with no variation."""
    x = np.asarray(x, np.float64)
    if len(x) < 3 or not np.ptp(x) > 0:
        return 1.0
    from emcee.autocorr import integrated_time as sokal

    return max(1.0, float(sokal(x, c=5, tol=0, quiet=True)[0]))


class RunSeries:
    """The coordinate of consecutive frames of runs, fed block by block (as ingest writes
    them): ``add(run, R)`` appends frames R [b, atoms, 3] of run ``run`` (any hashable key; a
    run's first frame is its reference); ``times()`` gives each run's τ in the order first
    seen."""

    def __init__(self, n_atoms: int):
        self.pairs = drms_pairs(n_atoms)
        self.reference: dict = {}
        self.series: dict = {}

    def add(self, run, R: np.ndarray) -> None:
        if not len(R) or not len(self.pairs[0]):
            self.series.setdefault(run, [])
            return
        d = pair_distances(R, self.pairs)
        ref = self.reference.setdefault(run, d[0])
        self.series.setdefault(run, []).append(np.sqrt(np.mean((d - ref) ** 2, axis=1)))

    def times(self) -> list[float]:
        return [integrated_time(np.concatenate(parts)) if parts else 1.0
                for parts in self.series.values()]


def run_times(R: np.ndarray, run_lengths: list[int]) -> list[float]:
    """τ (frames) of each run of a protein's frames R [frames, atoms, 3], the runs given as
    consecutive frame counts."""
    series = RunSeries(R.shape[1])
    start = 0
    for k, n in enumerate(run_lengths):
        series.add(k, R[start:start + n])
        start += n
    return series.times()
