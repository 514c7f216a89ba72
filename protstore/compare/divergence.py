"""Shared binning and the Jensen-Shannon divergence of two samples.

The divergence is in bits (log base 2), so it lies in [0, 1]: 0 for identical histograms, 1
for histograms with no occupied bin in common. It is computed from normalised histograms of
both samples on the same bins, with no pseudo-counts: a bin empty in one histogram adds
``½ p log2(p / m)`` from the other alone (m = (p + q) / 2), and a bin empty in both adds
nothing (0 log 0 = 0).

Bins (:func:`shared_edges`): ``n_bins`` equal bins over ``[lo, hi]``, where lo is the smallest
of the samples' 0.5th percentiles and hi the largest of their 99.5th, so that neither
sample's bulk is cut off however different their sizes; values outside are counted in the
edge bins (clipped), so every value counts. A periodic observable (dihedrals) uses its whole
period [-π, π) instead. When lo == hi (a constant observable) the range is lo ± 0.5.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

N_BINS = 50
PERCENTILES = (0.5, 99.5)


class Bins(NamedTuple):
    """Equal bins over [lo, hi]; ``periodic``: values are wrapped into [lo, hi)."""

    lo: float
    hi: float
    n: int
    periodic: bool = False

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n + 1)

    @property
    def centres(self) -> np.ndarray:
        e = self.edges
        return 0.5 * (e[:-1] + e[1:])

    def counts(self, values: np.ndarray) -> np.ndarray:
        """[n] counts of ``values`` (any shape, pooled); every value lands in a bin."""
        return np.bincount(self.index(values), minlength=self.n).astype(np.float64)

    def index(self, values: np.ndarray) -> np.ndarray:
        """[M] bin of each of the (flattened) ``values``."""
        v = np.asarray(values, np.float64).ravel()
        width = self.hi - self.lo
        if self.periodic:
            v = self.lo + np.mod(v - self.lo, width)
        k = np.floor((v - self.lo) / width * self.n).astype(np.int64)
        return np.clip(k, 0, self.n - 1)


def shared_edges(*samples: np.ndarray, n_bins: int = N_BINS,
                 period: tuple[float, float] | None = None) -> Bins:
    """Bins shared by the ``samples`` (any shapes, each pooled; see the module docstring);
    ``period`` (lo, hi) for a periodic observable."""
    if period is not None:
        return Bins(float(period[0]), float(period[1]), n_bins, True)
    flat = [np.asarray(x, np.float64).ravel() for x in samples]
    flat = [x for x in flat if x.size]
    lo = min(np.percentile(x, PERCENTILES[0]) for x in flat)
    hi = max(np.percentile(x, PERCENTILES[1]) for x in flat)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return Bins(float(lo), float(hi), n_bins)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between histograms ``p`` and ``q`` (counts or
    probabilities, same shape, any dims; each normalised to sum 1 here; neither all zero)."""
    p = np.asarray(p, np.float64).ravel()
    q = np.asarray(q, np.float64).ravel()
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(x):  # KL(x || m) in bits; x > 0 implies m > 0, x == 0 terms are 0
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def js_of_samples(a: np.ndarray, b: np.ndarray, bins: Bins) -> float:
    """JS divergence (bits) of the pooled values of ``a`` and ``b`` on ``bins``."""
    return js_divergence(bins.counts(a), bins.counts(b))


def counts_2d(x: np.ndarray, y: np.ndarray, bx: Bins, by: Bins) -> np.ndarray:
    """[bx.n, by.n] counts of the points (x[k], y[k]) on the bins of each axis."""
    flat = bx.index(x) * by.n + by.index(y)
    return np.bincount(flat, minlength=bx.n * by.n).reshape(bx.n, by.n).astype(np.float64)


def circular_mean(values: np.ndarray) -> float:
    """Mean direction (radians, -π..π) of angles: atan2(mean sin, mean cos)."""
    v = np.asarray(values, np.float64).ravel()
    return float(np.arctan2(np.mean(np.sin(v)), np.mean(np.cos(v))))
