"""TICA fitted on the reference ensemble and a free-energy surface over its first two
components.

The features are bead-pair distances (:func:`~protstore.compare.observables.pair_features`);
TICA is ``deeptime.decomposition.TICA`` (kinetic-map scaling, deeptime's default) at a lag of
``lagtime`` saved frames of the reference, fitted on the time-lagged pairs of each reference
run (one replica at one temperature, in ``source_frame`` order; a pair whose frames are not
exactly ``lagtime`` source frames apart, as across an excluded frame, is left out). The fitted
model projects reference and simulated frames alike.

The free energy of a 2-D histogram ``p`` (normalised counts on shared bins) is
``-kT ln p`` in kcal/mol at the reference temperature, shifted so its minimum is 0; empty
bins have no free energy (NaN in the array, blank in the plot, never in JSON).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ProtstoreError
from ..units import KB_KCAL_PER_MOL_K

LAGTIME = 1  # saved reference frames
MIN_PAIRS = 10  # time-lagged pairs the reference needs for a fit


class TicaModel(NamedTuple):
    """A fitted TICA projection: ``transform(features [F, P]) -> [F, 2]``."""

    model: object  # deeptime's CovarianceKoopmanModel
    lagtime: int
    n_pairs: int  # time-lagged pairs it was fitted on
    timescales: np.ndarray  # [2] implied timescales in saved frames; NaN where |λ| is not in (0, 1)

    def transform(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.transform(np.asarray(features, np.float64)))[:, :2]


def lagged_pairs(run: np.ndarray, source_frame: np.ndarray, lagtime: int) -> tuple[np.ndarray,
                                                                                     np.ndarray]:
    """Indices (t0 [M], t1 [M]) of the frame pairs of one run (``run`` [F] equal) whose
    ``source_frame`` [F] are exactly ``lagtime`` apart (frames in any order)."""
    run = np.asarray(run, np.int64)
    sf = np.asarray(source_frame, np.int64)
    key = (run - run.min(initial=0)) * (int(sf.max(initial=0)) + lagtime + 1) + sf
    order = np.argsort(key, kind="stable")
    pos = np.searchsorted(key[order], key + lagtime)
    pos = np.minimum(pos, len(key) - 1)
    found = key[order][pos] == key + lagtime if len(key) else np.zeros(0, bool)
    return np.flatnonzero(found), order[pos[found]]


def fit_tica(features: np.ndarray, run: np.ndarray, source_frame: np.ndarray, *,
             lagtime: int = LAGTIME, where: str = "the reference") -> TicaModel:
    """TICA on reference ``features`` [F, P] of frames in runs ``run`` [F] at ``source_frame``
    [F]; a :class:`ProtstoreError` when there are fewer than :data:`MIN_PAIRS` lagged pairs."""
    from deeptime.decomposition import TICA

    t0, t1 = lagged_pairs(run, source_frame, lagtime)
    if len(t0) < MIN_PAIRS:
        raise ProtstoreError(
            f"{where}: {len(t0)} pairs of frames {lagtime} frame(s) apart, too few for TICA "
            f"(at least {MIN_PAIRS}); use a smaller --tica-lag or --no-tica")
    X = np.asarray(features, np.float64)
    est = TICA(lagtime=lagtime, dim=2)
    est.partial_fit((X[t0], X[t1]))
    model = est.fetch_model()
    if model.output_dimension < 2:
        raise ProtstoreError(f"{where}: the features span fewer than 2 TICA components "
                             f"(too few distinct frames); use --no-tica")
    values = np.asarray(model.singular_values[:2], np.float64)
    # an implied timescale exists only for 0 < |λ| < 1: a finite sample can give |λ| >= 1
    # (no decay seen within the data), which has none
    decays = (np.abs(values) > 0) & (np.abs(values) < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = np.where(decays, -lagtime / np.log(np.where(decays, np.abs(values), 0.5)), np.nan)
    return TicaModel(model, lagtime, len(t0), ts)


def free_energy(counts: np.ndarray, temperature: float) -> np.ndarray:
    """-kT ln p (kcal/mol) of 2-D ``counts``, minimum 0, NaN where a bin is empty."""
    p = np.asarray(counts, np.float64)
    p = p / p.sum()
    with np.errstate(divide="ignore"):
        f = -KB_KCAL_PER_MOL_K * temperature * np.log(p)
    f[~np.isfinite(f)] = np.nan
    return f - np.nanmin(f)
