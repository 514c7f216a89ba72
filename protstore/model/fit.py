"""Fit the priors by Boltzmann inversion on a plan's training split (domain notes section 4).

For each term the observed distribution p(x) is histogrammed, corrected for the Jacobian
(bonds and pairs / r², angles / sin θ), inverted, U(x) = -kB T ln p(x), and the prior's form is
fitted by count-weighted least squares:

- bond: U = ½ k (r - r0)² + c, fitted on the trans well only: bonds shorter than
  :data:`CIS_MAX` (cis-peptides, CA-CA ~2.9 Å) are counted and left out, and only the bins
  within :data:`WELL_KT` kT of the trans minimum are used, so a few outliers cannot flatten k.
  The cis X-Pro bonds get a well of their own (k_cis = kT / var, r0_cis their median; the
  fraction w_cis of X-Pro bond observations that are cis, at least 10⁻³), which the prior uses
  as a double well on X-Pro bonds (:func:`~protstore.model.priors.bond_energies`);
- angle, dihedral: linear least squares on a Fourier basis (n = 1..3), converted to
  k_n (1 + cos(nφ - γ_n)) for dihedrals;
- repulsion: the wall of the non-bonded pair distribution, r below its first peak: a straight
  line of ln U against ln r gives the power p (clipped to 4..12) and ε σ^p; ε is set to kB T.
  The histogram starts at a low quantile of the distances, not at their minimum, so a single
  close contact cannot stretch it.

Temperatures: every frame's own temperature is used. Frames are grouped by temperature, each
group is inverted at its own kT, and one set of shape parameters is fitted to all groups at
once with an offset per group (a potential is defined up to a constant at each T); the wall is
fitted per temperature and its σ and p averaged with the groups' counts as weights, ε = kB T̄.
Frames of unknown temperature (NPZ files store none) are refused unless a temperature is given
for exactly them (``unknown_temperature=``, ``--temperature``). Only the geometry is needed,
read through the batch loader.
"""

from __future__ import annotations

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
from .priors import N_FOURIER
from .topology import build_topology

PRIORS_DOC = "protstore_priors"
PAIR_RANGE = 12.0  # Å: non-bonded distances beyond this say nothing about the wall
CIS_MAX = 3.3  # Å: consecutive CA beads closer than this are a cis-peptide (trans ~3.8, cis ~2.9)
CIS_R0 = 2.9  # Å: the cis well's centre when the data show too few cis bonds to fit one
CIS_MIN = 30  # cis observations needed to fit the cis well's width and centre
W_CIS_DEFAULT = 0.05  # cis fraction of X-Pro bonds in real proteins, when the data have no X-Pro
WELL_KT = 3.0  # the trans bond well is fitted where U is within this many kT of its minimum
MIN_COUNT = 5  # histogram bins with fewer observations are not fitted


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
            if len(plan.split.frames(p, plan.frames[p], "train"))
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


def _joint_fit(curves: list[dict], basis: Callable, use: Callable) -> np.ndarray:
    """Shape coefficients of ``U = basis(x) @ coef + offset_g`` fitted to the Boltzmann-inverted
    ``curves`` (one per temperature group g, each with its own offset), count-weighted, over the
    bins ``use(curve)`` selects; each curve gets its fitted ``offset``."""
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
    A = np.concatenate([A, onehot], axis=1)
    coef = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]
    n_shape = A.shape[1] - len(curves)
    for c, offset in zip(curves, coef[n_shape:]):
        c["offset"] = float(offset)
    return coef[:n_shape]


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
    w_cis = max(len(cis_prolyl) / n_prolyl, 1e-3) if n_prolyl else W_CIS_DEFAULT
    info = {"n_cis": int(cis.sum()), "n_cis_prolyl": int(len(cis_prolyl)),
            "n_prolyl": n_prolyl, "n_trans": int(len(trans)), "cis_max_angstrom": CIS_MAX}
    return {"k": np.float32(k_trans), "r0": np.float32(-b / (2 * a)),
            "k_cis": np.float32(k_cis), "r0_cis": np.float32(r0_cis),
            "w_cis": np.float32(min(w_cis, 0.5)), "kT": np.float32(np.mean(kT))}, \
        {"curves": curves, "use": "well", **info}


def fit_angle(theta: np.ndarray, kT) -> tuple[dict, dict]:
    """Fourier series in θ (rad), kcal/mol, from bond angles ``theta`` at ``kT``."""
    curves = [dict(zip(("x", "U", "counts"), inverted(
        x, np.linspace(0, np.pi, 91), k, lambda v: np.maximum(np.sin(v), 1e-3))), kT=k)
        for k, x in _groups(np.asarray(theta, np.float64), kT)]
    coef = _joint_fit(curves, _fourier, lambda c: c["counts"] >= MIN_COUNT)
    return ({"cos": coef[:N_FOURIER].astype(np.float32),
             "sin": coef[N_FOURIER:].astype(np.float32)}, {"curves": curves})


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
    """(σ, p, curve) of the repulsive wall of non-bonded distances ``d`` at one ``kT``."""
    lo = max(float(np.quantile(d, 1e-4)) - 0.05, 0.5)  # a quantile: one close contact is no wall
    x, U, c = inverted(d, np.linspace(lo, PAIR_RANGE, 121), kT, lambda v: v ** 2)
    curve = {"kT": kT, "x": x, "U": U, "counts": c}
    seen = np.flatnonzero(c >= MIN_COUNT)
    if len(seen) < 4:
        raise ProtstoreError(f"repulsion prior: too few non-bonded pairs within {PAIR_RANGE} Å")
    # the wall: from the closest well-sampled distance up to the first minimum of U
    start = stop = seen[0]
    while stop + 1 < len(U) and c[stop + 1] >= MIN_COUNT and U[stop + 1] <= U[stop]:
        stop += 1
    wall = np.arange(start, stop + 1)
    use = wall[U[wall] - U[stop] > 0.05 * kT]
    if len(use) >= 3:
        slope, _ = np.polyfit(np.log(x[use]), np.log(U[use] - U[stop]), 1, w=np.sqrt(c[use]))
        power = float(np.clip(-slope, 4.0, 12.0))
        amplitude = float(np.exp(np.mean(np.log(U[use] - U[stop]) + power * np.log(x[use]))))
    else:  # a wall too steep to resolve: σ at the closest observed distance
        power, amplitude = 12.0, kT * x[start] ** 12.0
    curve["offset"] = float(U[stop])
    return (amplitude / kT) ** (1.0 / power), power, curve


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
                                                         "n_trans", "cis_max_angstrom")}}
    return fitted, curves, info


def _curve_of(name: str, p: dict, x: np.ndarray) -> np.ndarray:
    n = np.arange(1, N_FOURIER + 1)
    if name == "bond":  # the trans term (what the panel shows)
        return 0.5 * p["k"] * (x - p["r0"]) ** 2
    if name == "angle":
        return np.cos(np.outer(x, n)) @ p["cos"] + np.sin(np.outer(x, n)) @ p["sin"]
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
