"""Frame validation: which frames of a block are corrupt, and why (one short reason each)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameChecks:
    """Thresholds of the ingest checks (config as data; all in store units).

    max_abs_coordinate : Å; mdCATH's int32-overflow frames sit near 2.1e7 Å.
    ca_ca_range : Å, allowed distance of consecutive CA beads of one chain (a cis-proline
        sits near 2.9-3.0 Å, trans near 3.8 Å).
    max_abs_force : kcal/mol/Å, per bead force component.
    force_rms_range : kcal/mol/Å, allowed median over frames of the per-frame bead-force RMS;
        outside it the forces are most likely in other units (kJ/mol/nm is 41.84x larger).
    """

    max_abs_coordinate: float = 1e4
    ca_ca_range: tuple[float, float] = (2.5, 4.5)
    max_abs_force: float = 1e4
    force_rms_range: tuple[float, float] = (0.5, 1e3)


def atom_problems(coords: np.ndarray, forces: np.ndarray, checks: FrameChecks) -> list[str | None]:
    """Per-frame problems of [b, n, 3] arrays: NaN/inf, overflow, all-zero coordinates.

    ``coords`` may be all-atom or bead positions; ``forces`` all-atom or bead forces (a bead
    force is a sum over atoms, non-finite iff one of them is, so the cheaper bead array does).
    """
    return extent_problems(max_abs_per_frame(coords), forces, checks)


def max_abs_per_frame(x: np.ndarray) -> np.ndarray:
    """[b] max |x| over each frame of ``x`` [b, ...]: NaN if a value is NaN, 0 for an all-zero
    frame. Two passes, no temporaries: max and min propagate NaN, and
    max(|x|) = max(max x, -min x)."""
    flat = x.reshape(len(x), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(flat.max(axis=1, initial=0.0), -flat.min(axis=1, initial=0.0))


def extent_problems(extent: np.ndarray, forces: np.ndarray,
                    checks: FrameChecks) -> list[str | None]:
    """Per-frame problems from the frames' largest |coordinate| [b] (:func:`max_abs_per_frame`)
    and forces [b, n, 3]."""
    b = len(extent)
    out: list[str | None] = [None] * b
    with np.errstate(invalid="ignore", over="ignore"):
        finite_c = np.isfinite(extent)
        finite_f = np.isfinite(forces.reshape(b, -1).sum(axis=1, dtype=np.float64))
    zero = extent == 0
    for i in np.flatnonzero(~finite_c | ~finite_f | (extent > checks.max_abs_coordinate) | zero):
        if not finite_c[i]:
            out[i] = "non-finite coordinates"
        elif not finite_f[i]:
            out[i] = "non-finite forces"
        elif zero[i]:
            out[i] = "all-zero coordinates"
        else:
            out[i] = (f"|coordinate| {extent[i]:.3g} Å exceeds {checks.max_abs_coordinate:g} Å "
                      f"(corrupt frame)")
    return out


def bonded_to_next(chain: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """[N-1] bool: bead i and bead i+1 are consecutive residues of one chain (no resid gap)."""
    chain = np.asarray(chain)
    resid = np.asarray(resid)
    return (chain[1:] == chain[:-1]) & (np.diff(resid) == 1)


def bead_problems(R: np.ndarray, F: np.ndarray, bonded: np.ndarray, checks: FrameChecks,
                  resid: np.ndarray) -> list[str | None]:
    """Per-frame problems of bead arrays [b, N, 3]: CA-CA distances, huge bead forces.

    ``bonded`` [N-1] (:func:`bonded_to_next`) says which consecutive beads are bonded.
    """
    b = len(R)
    out: list[str | None] = [None] * b
    lo, hi = checks.ca_ca_range
    if bonded.any():
        diff = R[:, 1:] - R[:, :-1]  # slices, not a gather of pairs: 20x faster
        diff *= diff
        d2 = diff[..., 0] + diff[..., 1] + diff[..., 2]  # squared distances: no sqrt per pair
        with np.errstate(invalid="ignore"):
            bad = ((d2 < lo * lo) | (d2 > hi * hi)) & bonded
        for i in np.flatnonzero(bad.any(axis=1)):
            k = int(np.flatnonzero(bad[i])[0])
            out[i] = (f"CA-CA distance {np.sqrt(d2[i, k]):.2f} Å between residues {resid[k]} "
                      f"and {resid[k + 1]} outside [{lo:g}, {hi:g}] Å")
    fmax = max_abs_per_frame(F)
    for i in np.flatnonzero(fmax > checks.max_abs_force):
        out[i] = out[i] or f"|force| {fmax[i]:.3g} kcal/mol/Å exceeds {checks.max_abs_force:g}"
    return out


def force_rms(F: np.ndarray) -> np.ndarray:
    """[b] RMS of bead force components per frame, kcal/mol/Å."""
    if not len(F):
        return np.zeros(0)
    return np.sqrt(np.mean(np.square(F, dtype=np.float64).reshape(len(F), -1), axis=1))


def force_units_problem(rms: np.ndarray, checks: FrameChecks) -> str | None:
    """A reason when the median per-frame force RMS suggests forces in other units."""
    if not len(rms):
        return None
    med = float(np.median(rms))
    lo, hi = checks.force_rms_range
    if lo <= med <= hi:
        return None
    hint = ("kJ/mol/nm is 41.84x kcal/mol/Å" if med > hi
            else "eV/Å or Hartree/Bohr values are 23-1185x smaller than kcal/mol/Å")
    return (f"median bead-force RMS {med:.3g} kcal/mol/Å is outside [{lo:g}, {hi:g}]: forces "
            f"are probably in other units ({hint})")
