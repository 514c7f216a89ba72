"""Fit the priors by Boltzmann inversion on a plan's training split (domain notes section 4).

For each term the observed distribution p(x) is histogrammed over the training frames, corrected
for the Jacobian (bonds and pairs / r², angles / sin θ), inverted, U(x) = -kB T ln p(x), and the
prior's form is fitted by count-weighted least squares:

- bond: U = ½ k (r - r0)² + c (a weighted quadratic);
- angle, dihedral: linear least squares on a Fourier basis (n = 1..3), converted to
  k_n (1 + cos(nφ - γ_n)) for dihedrals;
- repulsion: the wall of the non-bonded pair distribution, r below its first peak: a straight
  line of ln U against ln r gives the power p (clipped to 4..12) and ε σ^p; ε is set to kB T.

T is the mean temperature of the frames used (the data's temperature; select one with
``temperature=``). Only the geometry is needed, read through the batch loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from ..batching import BatchLoader, BucketPlan, LoaderConfig
from ..errors import ProtstoreError
from ..store.layout import KB_KCAL_PER_MOL_K
from ..store.schemas import check_document
from .geometry import bond_angles, bond_lengths, dihedral_angles, pair_distances
from .priors import N_FOURIER
from .topology import build_topology

PRIORS_DOC = "protstore_priors"
PAIR_RANGE = 12.0  # Å: non-bonded distances beyond this say nothing about the wall


@dataclass
class Samples:
    """Observed geometry of the training frames (flat arrays of real terms only)."""

    bond: list = field(default_factory=list)
    angle: list = field(default_factory=list)
    dihedral: list = field(default_factory=list)
    pair: list = field(default_factory=list)
    temperature: list = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.__dict__.items()}


@jax.jit
def _geometry(R, resid, chain, mask):
    def one(R, resid, chain, mask):
        topo = build_topology(resid, chain, mask)
        return (bond_lengths(R, topo.bond), topo.bond, bond_angles(R, topo.angle), topo.angle,
                dihedral_angles(R, topo.dihedral), topo.dihedral,
                pair_distances(R, topo.pair), topo.pair)
    return jax.vmap(one)(R, resid, chain, mask)


def collect_samples(store, plan: BucketPlan, *, max_frames: int = 20000,
                    temperature: float | None = None, seed: int = 0) -> Samples:
    """Geometry of up to ``max_frames`` random training frames of ``plan`` (all buckets)."""
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=32, split="train", last="pad",
                                                   seed=seed))
    out = Samples()
    used = 0
    for batch in loader.epoch(0):
        keep = batch["sample_mask"] > 0
        if temperature is not None:
            keep &= np.isclose(batch["temperature"], temperature)
        if not keep.any():
            continue
        r, rb, th, ta, ph, pd_, d, dp = (np.asarray(x)[keep] for x in _geometry(
            batch["R"], batch["resid"], batch["chain"], batch["mask"]))
        out.bond.append(r[rb])
        out.angle.append(th[ta])
        out.dihedral.append(ph[pd_])
        close = dp & (d < PAIR_RANGE)
        out.pair.append(d[close])
        out.temperature.append(batch["temperature"][keep])
        used += int(keep.sum())
        if used >= max_frames:
            break
    if not used:
        where = f" at {temperature} K" if temperature is not None else ""
        raise ProtstoreError(f"plan {plan.name!r}: no training frames{where} to fit priors on")
    return out


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


def _weighted_lstsq(A: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    return np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]


def _fourier_basis(x: np.ndarray) -> np.ndarray:
    n = np.arange(1, N_FOURIER + 1)
    return np.concatenate([np.ones((len(x), 1)), np.cos(np.outer(x, n)), np.sin(np.outer(x, n))], 1)


def fit_bond(r: np.ndarray, kT: float) -> tuple[dict, dict]:
    x, U, c = inverted(r, np.linspace(r.min(), r.max(), 61), kT, lambda x: x ** 2)
    ok = c >= 5
    a, b, _ = _weighted_lstsq(np.stack([x[ok] ** 2, x[ok], np.ones(ok.sum())], 1), U[ok], c[ok])
    if a <= 0:
        raise ProtstoreError("bond prior: the bond length distribution is not single-peaked")
    return {"k": np.float32(2 * a), "r0": np.float32(-b / (2 * a))}, {"x": x, "U": U, "counts": c}


def fit_angle(theta: np.ndarray, kT: float) -> tuple[dict, dict]:
    x, U, c = inverted(theta, np.linspace(0, np.pi, 91), kT, lambda x: np.maximum(np.sin(x), 1e-3))
    ok = c >= 5
    coef = _weighted_lstsq(_fourier_basis(x[ok]), U[ok], c[ok])
    return ({"cos": coef[1:1 + N_FOURIER].astype(np.float32),
             "sin": coef[1 + N_FOURIER:].astype(np.float32)}, {"x": x, "U": U, "counts": c})


def fit_dihedral(phi: np.ndarray, kT: float) -> tuple[dict, dict]:
    x, U, c = inverted(phi, np.linspace(-np.pi, np.pi, 73), kT)
    ok = c >= 5
    coef = _weighted_lstsq(_fourier_basis(x[ok]), U[ok], c[ok])
    a, b = coef[1:1 + N_FOURIER], coef[1 + N_FOURIER:]
    # k (1 + cos(nφ - γ)) = k + k cos γ cos nφ + k sin γ sin nφ
    return ({"k": np.hypot(a, b).astype(np.float32), "gamma": np.arctan2(b, a).astype(np.float32)},
            {"x": x, "U": U, "counts": c})


def fit_repulsion(d: np.ndarray, kT: float) -> tuple[dict, dict]:
    x, U, c = inverted(d, np.linspace(max(d.min() - 0.05, 0.5), PAIR_RANGE, 121), kT,
                       lambda x: x ** 2)
    curve = {"x": x, "U": U, "counts": c}
    seen = np.flatnonzero(c >= 5)
    if len(seen) < 4:
        raise ProtstoreError("repulsion prior: too few non-bonded pairs within 12 Å")
    # the wall: from the closest well-sampled distance up to the first minimum of U
    start = seen[0]
    stop = start
    while stop + 1 < len(U) and c[stop + 1] >= 5 and U[stop + 1] <= U[stop]:
        stop += 1
    wall = np.arange(start, stop + 1)
    height = U[wall] - U[stop]
    use = wall[height > 0.05 * kT]
    if len(use) >= 3:
        slope, intercept = np.polyfit(np.log(x[use]), np.log(U[use] - U[stop]), 1, w=np.sqrt(c[use]))
        power = float(np.clip(-slope, 4.0, 12.0))
        amplitude = float(np.exp(np.mean(np.log(U[use] - U[stop]) + power * np.log(x[use]))))
    else:  # a wall too steep to resolve: σ at the closest observed distance
        power, amplitude = 12.0, kT * x[start] ** 12.0
    sigma = (amplitude / kT) ** (1.0 / power)
    curve["zero"] = float(U[stop])
    return ({"epsilon": np.float32(kT), "sigma": np.float32(sigma), "power": np.float32(power)},
            curve)


def fit_priors(samples: Samples) -> tuple[dict, dict, dict]:
    """(prior params, fit curves for plotting, provenance) from observed geometry."""
    arr = samples.arrays()
    T = float(np.mean(arr["temperature"]))
    kT = KB_KCAL_PER_MOL_K * T
    fitted, curves = {}, {}
    for name, fn in (("bond", fit_bond), ("angle", fit_angle), ("dihedral", fit_dihedral),
                     ("repulsion", fit_repulsion)):
        values = arr["pair" if name == "repulsion" else name]
        if len(values) < 50:
            raise ProtstoreError(f"{name} prior: only {len(values)} observations in the training "
                                 "split (need at least 50)")
        fitted[name], curves[name] = fn(values, kT)
    info = {"temperature_K": T, "kT_kcal_per_mol": kT, "n_frames": int(len(arr["temperature"])),
            "observations": {k: int(len(arr["pair" if k == "repulsion" else k])) for k in curves}}
    return fitted, curves, info


def _curve_of(name: str, p: dict, x: np.ndarray) -> np.ndarray:
    n = np.arange(1, N_FOURIER + 1)
    if name == "bond":
        return 0.5 * p["k"] * (x - p["r0"]) ** 2
    if name == "angle":
        return np.cos(np.outer(x, n)) @ p["cos"] + np.sin(np.outer(x, n)) @ p["sin"]
    if name == "dihedral":
        return (p["k"] * (1 + np.cos(np.outer(x, n) - p["gamma"]))).sum(1)
    return p["epsilon"] * (p["sigma"] / x) ** p["power"]


def plot_fit(priors: dict, curves: dict, info: dict, path) -> None:
    """PNG of observed (Boltzmann-inverted) vs fitted potentials, one panel per term."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bond": "bond length r (Å)", "angle": "bond angle θ (rad)",
              "dihedral": "dihedral φ (rad)", "repulsion": "non-bonded distance r (Å)"}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, name in zip(axes, labels):
        c = curves[name]
        x, U, counts = c["x"], c["U"], c["counts"]
        ok = counts >= 5
        fit = _curve_of(name, priors[name], x)
        # potentials are defined up to a constant: align fit and data on the weighted mean
        shift = np.average(U[ok] - fit[ok], weights=counts[ok]) if name != "repulsion" else c["zero"]
        ax.plot(x[ok], U[ok], "o", ms=3, label="observed -kT ln p")
        if name == "repulsion":
            xs = x[ok & (x >= priors[name]["sigma"] * 0.9)]
            ax.plot(xs, _curve_of(name, priors[name], xs) + shift, "-", label="fit")
            ax.set_ylim(np.nanmin(U[ok]) - 0.5, np.nanmin(U[ok]) + 8 * info["kT_kcal_per_mol"])
        else:
            ax.plot(x[ok], fit[ok] + shift, "-", label="fit")
        ax.set_xlabel(labels[name])
        ax.set_ylabel("U (kcal/mol)")
        ax.set_title(f"{name} (n={int(counts.sum())})")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Prior fit by Boltzmann inversion at T = {info['temperature_K']:.1f} K")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    path = Path(path)
    check_document(doc, "priors", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def fit_priors_to_file(store, plan: BucketPlan, path: str | Path, *, max_frames: int = 20000,
                       temperature: float | None = None, seed: int = 0) -> dict:
    """Fit the priors on ``plan``'s training split; write ``path`` (JSON) and the fit plot
    beside it (``.png``); return the priors document."""
    from .. import __version__

    path = Path(path)
    if path.suffix != ".json":
        raise ProtstoreError(f"{path}: the priors file must end in .json")
    priors, curves, info = fit_priors(collect_samples(
        store, plan, max_frames=max_frames, temperature=temperature, seed=seed))
    doc = priors_to_doc(priors, info, store=store.url, plan=plan.name,
                        created_by=f"protstore {__version__}")
    write_priors(doc, path)
    plot_fit(priors, curves, info, path.with_suffix(".png"))
    return doc
