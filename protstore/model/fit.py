"""Fit the priors by Boltzmann inversion on a plan's training split (domain notes section 4).

For each term the observed distribution p(x) is histogrammed, corrected for the Jacobian
(bonds and pairs / r², angles / sin θ), inverted, U(x) = -kB T ln p(x), and the prior's form is
fitted by count-weighted least squares:

- bond: U = ½ k (r - r0)² + c, fitted on the trans well only: bonds shorter than
  :data:`CIS_MAX` (cis-peptides, CA-CA ~2.9 Å) are counted and left out, and only the bins
  within :data:`WELL_KT` kT of the trans minimum are used, so a few outliers cannot flatten k.
  The cis X-Pro bonds get a well of their own (k_cis = kT / var, r0_cis their median), which
  the prior uses as a double well on X-Pro bonds (:func:`~protstore.model.priors.bond_energies`).
  Its weight w_cis is solved for (:func:`cis_weight`, a 1-D quadrature) so that the double
  well's own Boltzmann distribution r² exp(-U / kT) has the data's cis fraction of X-Pro bonds
  (at least 10⁻³; 5% when the data have no X-Pro bond): w_cis is not that fraction, the two
  wells differ in width and in r²;
- angle: a Chebyshev series (degree :data:`~protstore.model.priors.ANGLE_DEGREE`) in c = cos θ
  on the data's range of c (its 5·10⁻⁴ and 1 - 5·10⁻⁴ quantiles), fitted to the histogram of
  c itself (uniform bins in c: the density of c is p(θ) / sin θ, the Jacobian-corrected one).
  The fit is constrained so that U rises out of both ends of the range (slope at least kT per
  range width, outwards), and beyond them the prior continues along the tangent with a
  stiffening: the minimum lies inside the data and nothing outside can be a well. A basis of
  Chebyshev polynomials on the data's own range keeps the coefficients the size of the
  potential's features (a Fourier series in θ fitted on part of [0, π] needed large
  coefficients that cancel);
- dihedral: linear least squares on a Fourier basis (n = 1..3), converted to
  k_n (1 + cos(nφ - γ_n));
- repulsion: ε (σ/r)^p with ε = kB T, so σ is where the wall is kT high. The pair histogram
  (fixed 0.1 Å bins) is inverted; the reference is its lowest well-sampled point (the contact
  peak), the wall the bins below the first that comes within 0.5 kT of it, and ln(U - U_ref)
  is fitted against ln r on the wall's bins between :data:`WALL_KT` kT above it (weighted by
  their counts): the slope is -p (clipped to 4..12) and σ the fitted line's crossing of kT.
  Every bin used holds at least e^-4 of the peak's density, so σ is an interpolation within
  well-sampled data, not an extrapolation into the sparse tail of close contacts (which moved
  σ by several percent between random halves of the same data).

Temperatures: every frame's own temperature is used. Frames are grouped by temperature, each
group is inverted at its own kT, and one set of shape parameters is fitted to all groups at
once with an offset per group (a potential is defined up to a constant at each T); the wall is
fitted per temperature and its σ and p averaged with the groups' counts as weights, ε = kB T̄.
Frames of unknown temperature (NPZ files store none) are refused unless a temperature is given
for exactly them (``unknown_temperature=``, ``--temperature``). Only the geometry is needed,
read through the batch loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from ..batching import BatchLoader, BucketPlan, LoaderConfig
from ..errors import ProtstoreError
from ..store.layout import KB_KCAL_PER_MOL_K
from ..store.location import as_location
from ..store.schemas import dumps_document
from .geometry import bond_angles, bond_lengths, dihedral_angles, pair_distances
from .priors import ANGLE_DEGREE, N_FOURIER, angle_energies
from .topology import build_topology

PRIORS_DOC = "protstore_priors"
PAIR_RANGE = 12.0  # Å: non-bonded distances beyond this say nothing about the wall
CIS_MAX = 3.3  # Å: consecutive CA beads closer than this are a cis-peptide (trans ~3.8, cis ~2.9)
CIS_R0 = 2.9  # Å: the cis well's centre when the data show too few cis bonds to fit one
CIS_MIN = 30  # cis observations needed to fit the cis well's width and centre
W_CIS_DEFAULT = 0.05  # cis fraction of X-Pro bonds in real proteins, when the data have no X-Pro
WELL_KT = 3.0  # the trans bond well is fitted where U is within this many kT of its minimum
MIN_COUNT = 5  # histogram bins with fewer observations are not fitted
ANGLE_TAIL = 5e-4  # the angle prior's range of cos θ: these quantiles of the data
ANGLE_BINS = 60  # histogram bins in cos θ over that range
ANGLE_STIFFEN = 400.0  # k_out = this × kT / (range of cos θ)²: +½ kT at 5% of the range beyond it
WALL_KT = (0.5, 4.0)  # the repulsive wall is fitted where U is this many kT above the contact peak
PAIR_BIN = 0.1  # Å: bins of the pair histogram (fixed, so random subsets share them)


@dataclass
class Samples:
    """Observed geometry of the training frames: flat arrays of real terms, each observation
    with the kT (kcal/mol) of its frame."""

    bond: list = field(default_factory=list)
    bond_prolyl: list = field(default_factory=list)  # per bond observation: an X-Pro bond
    angle: list = field(default_factory=list)
    dihedral: list = field(default_factory=list)
    pair: list = field(default_factory=list)
    bond_kT: list = field(default_factory=list)
    angle_kT: list = field(default_factory=list)
    dihedral_kT: list = field(default_factory=list)
    pair_kT: list = field(default_factory=list)
    temperature: list = field(default_factory=list)  # per frame, K

    def add(self, name: str, values: np.ndarray, present: np.ndarray, kT: np.ndarray) -> None:
        """Observations ``values[present]`` ([frames, terms]) of frames with ``kT`` [frames]."""
        getattr(self, name).append(values[present])
        per_frame = kT.reshape(-1, *([1] * (values.ndim - 1)))
        getattr(self, f"{name}_kT").append(np.broadcast_to(per_frame, values.shape)[present])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.__dict__.items()}


@jax.jit
def _geometry(R, resid, chain, mask, species):
    def one(R, resid, chain, mask, species):
        topo = build_topology(resid, chain, mask, species)
        return (bond_lengths(R, topo.bond), topo.bond, topo.prolyl,
                bond_angles(R, topo.angle), topo.angle,
                dihedral_angles(R, topo.dihedral), topo.dihedral,
                pair_distances(R, topo.pair), topo.pair)
    return jax.vmap(one)(R, resid, chain, mask, species)


def unknown_temperature_proteins(store, plan: BucketPlan) -> list[str]:
    """Proteins of the plan's training split with frames of unknown temperature (metadata)."""
    return [p for p in plan.proteins
            if len(plan.part_frames(p, "train"))
            and None in store.protein_doc(p)["temperatures"]]


def check_temperatures(store, plan: BucketPlan, unknown_temperature: float | None) -> None:
    """Refuse a fit on frames of unknown temperature unless a temperature for them is given,
    and a given temperature that the frames' forces contradict: their protein documents keep
    what the bond mean-force identity needs (``protstore.ingest.units``), so it is checked
    again at that temperature for the proteins whose units were not declared."""
    if unknown_temperature is not None:
        if not 0 < float(unknown_temperature) < float("inf"):
            raise ProtstoreError(f"temperature must be positive kelvin, not {unknown_temperature}")
        from ..ingest.units import recheck_ratio

        for pid in unknown_temperature_proteins(store, plan):
            doc = store.protein_doc(pid)
            sums = doc.get("unit_check", {}).get("unknown_temperature_sums")
            if sums is None or doc.get("source_units", {}).get("declared"):
                continue
            ratio, why = recheck_ratio(sums, unknown_temperature)
            if ratio is not None and not 0.5 <= ratio <= 2.0:
                raise ProtstoreError(
                    f"protein {pid}: at --temperature {unknown_temperature:g} K its forces are "
                    f"{ratio:.3g}x what physics expects of kcal/mol/Å (bond mean-force check, "
                    f"{why}): the temperature, or the force unit it was ingested in, is wrong "
                    f"(ingest it again with --force-units UNIT --overwrite)")
        return
    unknown = unknown_temperature_proteins(store, plan)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                          else "")
        raise ProtstoreError(
            f"plan {plan.name!r}: protein(s) {shown} have frames of unknown temperature (their "
            f"source stored none), and Boltzmann inversion needs kT: give --temperature K to "
            f"fit-priors/train (it applies to exactly those frames), or ingest them again with "
            f"--temperature K")


def collect_samples(store, plan: BucketPlan, *, max_frames: int = 20000,
                    temperature: float | None = None, unknown_temperature: float | None = None,
                    seed: int = 0) -> Samples:
    """Geometry of up to ``max_frames`` random training frames of ``plan`` (all buckets).

    ``temperature``: only frames at this temperature (K); ``unknown_temperature``: the
    temperature (K) of frames stored without one (else such frames are refused)."""
    if max_frames < 1:
        raise ProtstoreError(f"max_frames must be >= 1, not {max_frames}")
    check_temperatures(store, plan, unknown_temperature)
    # the whole split in every process (not a share of it): the fit is the same everywhere
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=32, split="train", last="pad",
                                                   seed=seed, process_index=0,
                                                   process_count=1))
    out = Samples()
    used = 0
    for batch in loader.epoch(0):
        T = batch["temperature"].astype(np.float64)
        if unknown_temperature is not None:
            T = np.where(np.isnan(T), float(unknown_temperature), T)
        keep = batch["sample_mask"] > 0
        if temperature is not None:
            keep &= np.isclose(T, temperature)
        if not keep.any():
            continue
        r, rb, rp, th, ta, ph, pd_, d, dp = (np.asarray(x)[keep] for x in _geometry(
            batch["R"], batch["resid"], batch["chain"], batch["mask"], batch["species"]))
        kT = KB_KCAL_PER_MOL_K * T[keep]
        out.add("bond", r, rb, kT)
        out.bond_prolyl.append(rp[rb])
        out.add("angle", th, ta, kT)
        out.add("dihedral", ph, pd_, kT)
        out.add("pair", d, dp & (d < PAIR_RANGE), kT)
        out.temperature.append(T[keep])
        used += int(keep.sum())
        if used >= max_frames:
            break
    if not used:
        where = f" at {temperature} K" if temperature is not None else ""
        raise ProtstoreError(f"plan {plan.name!r}: no training frames{where} to fit priors on")
    return out


def _groups(x: np.ndarray, kT) -> list[tuple[float, np.ndarray]]:
    """(kT, observations at it) per temperature, to the kelvin (``kT`` a scalar or one per
    observation; frames whose temperatures differ by less than 1 K are one group, at their
    mean kT)."""
    kT = np.broadcast_to(np.asarray(kT, np.float64), np.shape(x))
    kelvin = np.round(kT / KB_KCAL_PER_MOL_K)
    return [(float(kT[kelvin == t].mean()), x[kelvin == t]) for t in np.unique(kelvin)]


def inverted(x: np.ndarray, bins: np.ndarray, kT: float, jacobian=None):
    """(centres, U(centre) in kcal/mol, counts) of the Boltzmann-inverted histogram of x."""
    counts, edges = np.histogram(x, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    p = counts / max(counts.sum(), 1) / np.diff(edges)
    if jacobian is not None:
        p = p / jacobian(centres)
    ok = counts > 0
    U = np.full_like(centres, np.nan)
    U[ok] = -kT * np.log(p[ok])
    return centres, U, counts


def _joint_fit(curves: list[dict], basis: Callable, use: Callable,
               constraints: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Shape coefficients of ``U = basis(x) @ coef + offset_g`` fitted to the Boltzmann-inverted
    ``curves`` (one per temperature group g, each with its own offset), count-weighted, over the
    bins ``use(curve)`` selects; each curve gets its fitted ``offset``. ``constraints``
    (G [m, n_shape], h [m]): the fit subject to G @ coef >= h (m small: every set of active
    constraints is tried, and the best fit that satisfies all is kept)."""
    rows, targets, weights, groups = [], [], [], []
    for g, c in enumerate(curves):
        sel = use(c)
        rows.append(basis(c["x"][sel]))
        targets.append(c["U"][sel])
        weights.append(c["counts"][sel].astype(np.float64))
        groups.append(np.full(int(sel.sum()), g))
    A, y, w, g = (np.concatenate(v) for v in (rows, targets, weights, groups))
    onehot = (g[:, None] == np.arange(len(curves))[None, :]).astype(np.float64)
    sw = np.sqrt(w)
    n_shape = A.shape[1]
    A = np.concatenate([A, onehot], axis=1) * sw[:, None]
    y = y * sw
    if constraints is None:
        coef = np.linalg.lstsq(A, y, rcond=None)[0]
    else:
        G, h = constraints
        G = np.concatenate([G, np.zeros((len(G), len(curves)))], axis=1)
        best = None
        for m in range(len(G) + 1):
            for active in itertools.combinations(range(len(G)), m):
                x = _equality_lstsq(A, y, G[list(active)], h[list(active)])
                if (G @ x >= h - 1e-9 * (1 + np.abs(h))).all():
                    cost = float(np.sum((A @ x - y) ** 2))
                    if best is None or cost < best[0]:
                        best = (cost, x)
        coef = best[1]  # all constraints active is feasible whenever G has full row rank
    for c, offset in zip(curves, coef[n_shape:]):
        c["offset"] = float(offset)
    return coef[:n_shape]


def _equality_lstsq(A: np.ndarray, y: np.ndarray, E: np.ndarray, f: np.ndarray) -> np.ndarray:
    """argmin ||A x - y||² subject to E x = f (the KKT system; E may have no rows)."""
    n = A.shape[1]
    kkt = np.block([[A.T @ A, E.T], [E, np.zeros((len(E), len(E)))]])
    return np.linalg.lstsq(kkt, np.concatenate([A.T @ y, f]), rcond=None)[0][:n]


def _fourier(x: np.ndarray) -> np.ndarray:
    n = np.arange(1, N_FOURIER + 1)
    return np.concatenate([np.cos(np.outer(x, n)), np.sin(np.outer(x, n))], 1)


def _well(c: dict) -> np.ndarray:
    ok = c["counts"] >= MIN_COUNT
    if not ok.any():
        return ok
    return ok & (c["U"] - np.nanmin(np.where(ok, c["U"], np.nan)) <= WELL_KT * c["kT"])


def fit_bond(r: np.ndarray, kT, prolyl: np.ndarray | None = None) -> tuple[dict, dict]:
    """The bond prior from CA-CA distances ``r`` (Å) observed at ``kT`` (kcal/mol: one value,
    or one per observation): harmonic k (kcal/mol/Å²), r0 (Å) fitted to the trans well, and the
    cis well of X-Pro bonds (``prolyl`` marks those observations; module docstring)."""
    r = np.asarray(r, np.float64)
    kT = np.broadcast_to(np.asarray(kT, np.float64), r.shape)
    prolyl = np.zeros(r.shape, bool) if prolyl is None else np.asarray(prolyl, bool)
    cis = r < CIS_MAX
    trans, kT_trans = r[~cis], kT[~cis]
    if len(trans) < 50:
        raise ProtstoreError(f"bond prior: only {len(trans)} trans bonds (CA-CA >= {CIS_MAX} Å)")
    centre = float(np.median(trans))
    spread = 1.4826 * float(np.median(np.abs(trans - centre))) or 0.01  # robust σ
    lo, hi = np.quantile(trans, [0.0005, 0.9995])
    lo, hi = min(lo, centre - 4 * spread), max(hi, centre + 4 * spread)
    bins = np.arange(lo, hi + spread / 8, spread / 8)
    curves = []
    for k, x in _groups(trans, kT_trans):
        centres, U, counts = inverted(x, bins, k, lambda v: v ** 2)
        curves.append({"kT": k, "x": centres, "U": U, "counts": counts})
    a, b = _joint_fit(curves, lambda x: np.stack([x ** 2, x], 1), _well)
    if a <= 0:
        raise ProtstoreError("bond prior: the trans bond-length distribution has no well "
                             "(not single-peaked)")
    k_trans = 2 * a
    cis_prolyl = r[cis & prolyl]
    if len(cis_prolyl) >= CIS_MIN:
        centre = float(np.median(cis_prolyl))
        spread = 1.4826 * float(np.median(np.abs(cis_prolyl - centre))) or 0.01
        k_cis, r0_cis = float(np.mean(kT[cis & prolyl])) / spread ** 2, centre
    else:
        k_cis, r0_cis = k_trans, CIS_R0
    n_prolyl = int(prolyl.sum())
    fraction = min(max(len(cis_prolyl) / n_prolyl, 1e-3), 0.99) if n_prolyl else W_CIS_DEFAULT
    kT_mean = float(np.mean(kT))
    w_cis = cis_weight(fraction, k_trans, -b / (2 * a), k_cis, r0_cis, kT_mean)
    info = {"n_cis": int(cis.sum()), "n_cis_prolyl": int(len(cis_prolyl)),
            "n_prolyl": n_prolyl, "n_trans": int(len(trans)), "cis_max_angstrom": CIS_MAX,
            "cis_fraction": fraction}
    return {"k": np.float32(k_trans), "r0": np.float32(-b / (2 * a)),
            "k_cis": np.float32(k_cis), "r0_cis": np.float32(r0_cis),
            "w_cis": np.float32(w_cis), "kT": np.float32(kT_mean)}, \
        {"curves": curves, "use": "well", **info}


def _well_mass(k: float, r0: float, kT: float) -> tuple[float, float]:
    """(∫ r² exp(-½ k (r - r0)² / kT) dr over r > 0, the same over r < CIS_MAX): a harmonic
    well's Boltzmann weight in 3-D, and its part on the cis side, by the trapezoid rule."""
    sd = np.sqrt(kT / k)
    r = np.linspace(max(r0 - 12 * sd, 0.0), r0 + 12 * sd, 24001)
    rho = r ** 2 * np.exp(-0.5 * (r - r0) ** 2 / sd ** 2)
    cis = np.where(r < CIS_MAX, rho, 0.0)
    return float(np.trapezoid(rho, r)), float(np.trapezoid(cis, r))


def cis_weight(fraction: float, k: float, r0: float, k_cis: float, r0_cis: float,
               kT: float) -> float:
    """The weight w of the cis well for which the X-Pro double well's own Boltzmann
    distribution, r² [(1 - w) exp(-U_trans / kT) + w exp(-U_cis / kT)] (r² the Jacobian of a
    3-D distance), puts ``fraction`` of its mass below :data:`CIS_MAX` (the data's definition
    of a cis bond). Linear in w, so solved exactly; clipped to [10⁻⁶, 1 - 10⁻⁶]."""
    z_trans, low_trans = _well_mass(k, r0, kT)
    z_cis, low_cis = _well_mass(k_cis, r0_cis, kT)
    # fraction = [(1-w) low_t + w low_c] / [(1-w) z_t + w z_c], solved for w
    num = fraction * z_trans - low_trans
    w = num / (num + low_cis - fraction * z_cis)
    return float(np.clip(w, 1e-6, 1 - 1e-6))


def fit_angle(theta: np.ndarray, kT) -> tuple[dict, dict]:
    """The angle prior (module docstring) from bond angles ``theta`` (rad) at ``kT``: a
    Chebyshev series in cos θ on the data's range, rising out of it, and the stiffening
    k_out beyond (kcal/mol)."""
    c = np.cos(np.asarray(theta, np.float64))
    lo, hi = (float(q) for q in np.quantile(c, [ANGLE_TAIL, 1 - ANGLE_TAIL]))
    if hi - lo < 1e-3:
        raise ProtstoreError(f"angle prior: the bond angles span too narrow a range "
                             f"(cos θ {lo:.4f}..{hi:.4f}) to fit a potential")
    bins = np.linspace(lo, hi, ANGLE_BINS + 1)
    curves = [dict(zip(("x", "U", "counts"), inverted(x, bins, k)), kT=k)
              for k, x in _groups(c, kT)]
    width = hi - lo

    def basis(x):  # T_1..T_D of the scaled cosine (T_0 is each group's offset)
        return np.polynomial.chebyshev.chebvander((2 * x - lo - hi) / width, ANGLE_DEGREE)[:, 1:]

    n = np.arange(1, ANGLE_DEGREE + 1)
    # dU/dc at the ends, in kcal/mol per unit cos θ: T_n'(±1) = (±1)^(n+1) n², ds/dc = 2 / width
    slope_lo, slope_hi = (-1.0) ** (n + 1) * n ** 2 * 2 / width, n ** 2 * 2 / width
    kT_mean = float(np.mean(kT))
    rise = kT_mean / width  # the least slope out of the range
    coef = _joint_fit(curves, basis, lambda cv: cv["counts"] >= MIN_COUNT,
                      (np.stack([-slope_lo, slope_hi]), np.array([rise, rise])))
    for cv in curves:  # plotted against θ
        cv["x"] = np.arccos(cv["x"])
    return ({"cheb": np.concatenate([[0.0], coef]).astype(np.float32),
             "c_range": np.array([lo, hi], np.float32),
             "k_out": np.float32(ANGLE_STIFFEN * kT_mean / width ** 2)}, {"curves": curves})


def fit_dihedral(phi: np.ndarray, kT) -> tuple[dict, dict]:
    """Σ k_n (1 + cos(nφ - γ_n)) from dihedrals ``phi`` (rad) at ``kT``."""
    curves = [dict(zip(("x", "U", "counts"), inverted(x, np.linspace(-np.pi, np.pi, 73), k)),
                   kT=k) for k, x in _groups(np.asarray(phi, np.float64), kT)]
    coef = _joint_fit(curves, _fourier, lambda c: c["counts"] >= MIN_COUNT)
    a, b = coef[:N_FOURIER], coef[N_FOURIER:]
    # k (1 + cos(nφ - γ)) = k + k cos γ cos nφ + k sin γ sin nφ
    return ({"k": np.hypot(a, b).astype(np.float32), "gamma": np.arctan2(b, a).astype(np.float32)},
            {"curves": curves})


def _wall(d: np.ndarray, kT: float) -> tuple[float, float, dict]:
    """(σ, p, curve) of the repulsive wall of non-bonded distances ``d`` at one ``kT``
    (module docstring)."""
    x, U, c = inverted(d, np.arange(1.0, PAIR_RANGE + PAIR_BIN / 2, PAIR_BIN), kT,
                       lambda v: v ** 2)
    curve = {"kT": kT, "x": x, "U": U, "counts": c}
    seen = c >= MIN_COUNT
    if seen.sum() < 4:
        raise ProtstoreError(f"repulsion prior: too few non-bonded pairs within {PAIR_RANGE} Å")
    peak = int(np.nanargmin(np.where(seen, U, np.nan)))  # the contact peak
    rise = (U - U[peak]) / kT
    # the wall ends where U first comes within WALL_KT[0] kT of the peak's (at the peak, or at
    # a first contact shell nearly as dense as a larger-r maximum)
    end = int(np.flatnonzero(seen & (rise < WALL_KT[0]))[0])
    use = np.flatnonzero(seen & (np.arange(len(x)) < end) & (rise >= WALL_KT[0])
                         & (rise <= WALL_KT[1]))
    curve["offset"] = float(U[peak])
    if len(use) >= 3:
        # ln(ΔU / kT) = p ln σ - p ln r; the error of ln ΔU is ~ kT / (ΔU sqrt(count))
        slope, _ = np.polyfit(np.log(x[use]), np.log(rise[use]), 1,
                              w=np.sqrt(c[use]) * rise[use])
        power = float(np.clip(-slope, 4.0, 12.0))
        weight = c[use] * rise[use] ** 2
        log_sigma = np.average(np.log(rise[use]) / power + np.log(x[use]), weights=weight)
        return float(np.exp(log_sigma)), power, curve
    # a wall too steep to resolve: σ at the well-sampled bin closest to kT below its end
    below = np.flatnonzero(seen[:end + 1])
    return float(x[below[np.argmin(np.abs(rise[below] - 1.0))]]), 12.0, curve


def fit_repulsion(d: np.ndarray, kT) -> tuple[dict, dict]:
    """ε (σ/r)^p from non-bonded distances ``d`` (Å) at ``kT``: the wall per temperature, σ and
    p averaged with the groups' counts as weights, ε = the counts-weighted mean kT."""
    walls, errors = [], []
    for k, x in _groups(np.asarray(d, np.float64), kT):
        try:
            walls.append((len(x), k, *_wall(x, k)))
        except ProtstoreError as exc:  # too few pairs at this temperature: the others decide
            errors.append(exc)
    if not walls:
        raise errors[0]
    n = np.array([w[0] for w in walls], np.float64)
    kT_mean = float(np.average([w[1] for w in walls], weights=n))
    sigma = float(np.average([w[2] for w in walls], weights=n))
    power = float(np.average([w[3] for w in walls], weights=n))
    return ({"epsilon": np.float32(kT_mean), "sigma": np.float32(sigma),
             "power": np.float32(power)}, {"curves": [w[4] for w in walls]})


def fit_priors(samples: Samples) -> tuple[dict, dict, dict]:
    """(prior params, fit curves for plotting, provenance) from observed geometry."""
    arr = samples.arrays()
    fitted, curves = {}, {}
    for name, fn in (("bond", fit_bond), ("angle", fit_angle), ("dihedral", fit_dihedral),
                     ("repulsion", fit_repulsion)):
        key = "pair" if name == "repulsion" else name
        values = arr[key]
        if len(values) < 50:
            raise ProtstoreError(f"{name} prior: only {len(values)} observations in the training "
                                 "split (need at least 50)")
        extra = (arr["bond_prolyl"].astype(bool),) if name == "bond" else ()
        fitted[name], curves[name] = fn(values, arr[f"{key}_kT"], *extra)
    T = arr["temperature"]
    temps, counts = np.unique(T, return_counts=True)
    info = {"temperature_K": float(np.mean(T)),
            "kT_kcal_per_mol": float(KB_KCAL_PER_MOL_K * np.mean(T)),
            "temperatures_K": {f"{t:g}": int(n) for t, n in zip(temps, counts)},
            "n_frames": int(len(T)),
            "observations": {k: int(len(arr["pair" if k == "repulsion" else k])) for k in curves},
            "bond_cis": {k: curves["bond"][k] for k in ("n_cis", "n_cis_prolyl", "n_prolyl",
                                                         "n_trans", "cis_max_angstrom",
                                                         "cis_fraction")}}
    return fitted, curves, info


def _curve_of(name: str, p: dict, x: np.ndarray) -> np.ndarray:
    n = np.arange(1, N_FOURIER + 1)
    if name == "bond":  # the trans term (what the panel shows)
        return 0.5 * p["k"] * (x - p["r0"]) ** 2
    if name == "angle" and "cos" in p:  # a Fourier series in θ (priors of protstore <= 0.6)
        return np.cos(np.outer(x, n)) @ p["cos"] + np.sin(np.outer(x, n)) @ p["sin"]
    if name == "angle":
        return np.asarray(angle_energies(p, np.cos(x)))
    if name == "dihedral":
        return (p["k"] * (1 + np.cos(np.outer(x, n) - p["gamma"]))).sum(1)
    return p["epsilon"] * (p["sigma"] / x) ** p["power"]


def plot_fit(priors: dict, curves: dict, info: dict, path) -> None:
    """PNG of observed (Boltzmann-inverted, one series per temperature) vs fitted potentials,
    one panel per term. A potential is known up to a constant: each observed series is shifted
    onto the drawn form (by the count-weighted mean difference over the bins it was fitted on;
    the wall by its zero)."""
    from ..plotting import new_figure, save_figure

    labels = {"bond": "bond length r (Å)", "angle": "bond angle θ (rad)",
              "dihedral": "dihedral φ (rad)", "repulsion": "non-bonded distance r (Å)"}
    fig = new_figure((16, 3.8))
    axes = fig.subplots(1, 4)
    kT = info["kT_kcal_per_mol"]
    for ax, name in zip(axes, labels):
        n_obs, lows = 0, []
        for c in curves[name]["curves"]:
            ok = c["counts"] >= MIN_COUNT
            fitted = _well(c) if name == "bond" else ok
            if not fitted.any():  # a temperature with too few observations to show
                continue
            if name == "repulsion":
                shift = c["offset"]
            else:
                shift = np.average(c["U"][fitted] - _curve_of(name, priors[name], c["x"][fitted]),
                                   weights=c["counts"][fitted])
            U = c["U"][ok] - shift
            ax.plot(c["x"][ok], U, "o", ms=2.5,
                    label=f"observed, T = {c['kT'] / KB_KCAL_PER_MOL_K:.0f} K")
            n_obs += int(c["counts"].sum())
            lows.append(np.nanmin(U))
        xs = np.concatenate([c["x"][c["counts"] >= MIN_COUNT] for c in curves[name]["curves"]])
        if not len(xs) or not lows:
            continue
        xs = np.linspace(xs.min(), xs.max(), 200)
        if name == "repulsion":
            xs = xs[xs >= priors[name]["sigma"] * 0.9]
            ax.set_ylim(min(lows) - 0.5, min(lows) + 8 * kT)
        elif name == "bond":
            ax.set_ylim(-0.5, (WELL_KT + 3) * kT)
        ax.plot(xs, _curve_of(name, priors[name], xs), "k-", lw=1.2, label="fit")
        title = f"{name} (n={n_obs})"
        if name == "bond":
            title += f", {curves[name]['n_cis']} cis left out"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(labels[name])
        ax.set_ylabel("U (kcal/mol)")
    axes[0].legend(fontsize=7)
    temps = ", ".join(f"{t} K ({n} frames)" for t, n in info["temperatures_K"].items())
    fig.suptitle(f"Prior fit by Boltzmann inversion at {temps}")
    save_figure(fig, path)


def priors_to_doc(priors: dict, info: dict | None, **provenance) -> dict:
    """The priors as a JSON-ready document (schemas/priors.json); ``info`` describes the fit
    (None for priors that were not fitted here)."""
    as_py = jax.tree.map(lambda a: np.asarray(a).tolist(), priors)
    doc = {"format": PRIORS_DOC, "version": 1, "units": {
        "length": "Å", "energy": "kcal/mol", "angle": "rad", "temperature": "K"},
        "params": as_py, **provenance}
    if info is not None:
        doc["fit"] = info
    return doc


def priors_from_doc(doc: dict) -> dict:
    """Prior params (float32 arrays) from a priors document."""
    return jax.tree.map(lambda v: np.asarray(v, np.float32), doc["params"],
                        is_leaf=lambda v: isinstance(v, list | float | int))


def write_priors(doc: dict, path: str | Path) -> None:
    """Check a priors document against schemas/priors.json and write it as JSON."""
    path = as_location(path)
    path.write_bytes("", (dumps_document(doc, "priors", str(path)) + "\n").encode())


def fit_priors_to_file(store, plan: BucketPlan, path: str | Path, *, max_frames: int = 20000,
                       temperature: float | None = None,
                       unknown_temperature: float | None = None, seed: int = 0) -> dict:
    """Fit the priors on ``plan``'s training split; write ``path`` (JSON) and the fit plot
    beside it (``.png``); return the priors document. ``temperature``: only frames at this
    temperature; ``unknown_temperature``: the temperature of frames stored without one."""
    from .. import __version__

    path = as_location(path, store.storage_options)
    if path.suffix != ".json":
        raise ProtstoreError(f"{path}: the priors file must end in .json")
    priors, curves, info = fit_priors(collect_samples(
        store, plan, max_frames=max_frames, temperature=temperature,
        unknown_temperature=unknown_temperature, seed=seed))
    if unknown_temperature is not None:
        info["unknown_temperature_K"] = float(unknown_temperature)
    doc = priors_to_doc(priors, info, store=store.url, plan=plan.name,
                        created_by=f"protstore {__version__}")
    plot_fit(priors, curves, info, path.with_suffix(".png"))  # first: a failure writes no JSON
    write_priors(doc, path)
    return doc
