"""Priors from a plan's training split: the training frames' geometry read through the batch
loader, the Boltzmann-inversion fit (:mod:`protstore.model.fit`), its plot and the priors file.

Frames of unknown temperature (NPZ files store none) are refused unless a temperature is given
for exactly them (``unknown_temperature=``, ``--temperature``).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from .._version import __version__
from ..batching import BatchLoader, BucketPlan, LoaderConfig
from ..errors import ProtstoreError
from ..location import as_location
from ..model.fit import MIN_COUNT, PAIR_RANGE, WELL_KT, Samples, _well, fit_priors, priors_to_doc
from ..model.geometry import bond_angles, bond_lengths, dihedral_angles, pair_distances
from ..model.priors import N_FOURIER, angle_energies
from ..model.topology import build_topology
from ..schemas import dumps_document
from ..units import KB_KCAL_PER_MOL_K


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
    path = as_location(path, store.storage_options)
    if path.suffix != ".json":
        raise ProtstoreError(f"{path}: the priors file must end in .json")
    priors, curves, info = fit_priors(collect_samples(
        store, plan, max_frames=max_frames, temperature=temperature,
        unknown_temperature=unknown_temperature, seed=seed))
    if unknown_temperature is not None:
        info["unknown_temperature_K"] = float(unknown_temperature)
    doc = priors_to_doc(priors, info, store=store.url, store_version=store.version,
                        plan=plan.name, created_by=f"protstore {__version__}")
    plot_fit(priors, curves, info, path.with_suffix(".png"))  # first: a failure writes no JSON
    write_priors(doc, path)
    return doc
