"""``protstore compare``: simulated ensembles against the store's reference frames of the same
protein at the same temperature.

For every observable (:mod:`~protstore.compare.observables`) and every trajectory: the
Jensen-Shannon divergence from the reference on bins shared by the two
(:mod:`~protstore.compare.divergence`), both means, and a side-by-side histogram; and a 2-D
free-energy surface over the first two TICA components of the reference
(:mod:`~protstore.compare.tica`). Several trajectories share one table and one figure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from .._version import __version__
from ..errors import InputError, ProtstoreError
from ..location import Location, as_location
from ..schemas import dumps_document
from . import divergence as dv
from . import observables as obs
from .inputs import (TEMPERATURE_TOLERANCE, Ensemble, check_same_protein, open_trajectory,
                     reference_frames, trajectory_frames)
from .tica import LAGTIME, fit_tica, free_energy

REFERENCE = "reference"
FES_BINS = 30  # bins per TICA axis of the 2-D histograms
MAX_FEATURES = 300  # TICA features (bead-pair distances) at most
FRAMES_PER_FEATURE = 10  # reference frames per TICA feature at least
OUTPUTS = ("compare.json", "compare.txt", "compare_observables.png", "compare_fes.png")

#: name -> (unit, definition); the order of the table and the figure
OBSERVABLES = {
    "bond": ("angstrom", "CA-CA bond lengths, pooled over all bonds (consecutive beads of one "
                         "chain, resids differing by 1)"),
    "angle": ("radian", "bond angles (0..pi) at the middle bead of 3 bonded beads, pooled"),
    "dihedral": ("radian", "dihedrals (-pi..pi, IUPAC sign) of 4 bonded beads, pooled; "
                           "periodic bins on [-pi, pi), circular mean"),
    "rg": ("angstrom", "radius of gyration, mass-unweighted, over all beads"),
    "rmsd": ("angstrom", "RMSD over all beads to the reference's first frame at this "
                         "temperature (lowest replica, first source frame) after optimal "
                         "(Kabsch) superposition"),
    "q": ("1", f"fraction of native contacts, Best-Hummer-Eaton 2013: native pairs closer "
               f"than {obs.Q_CUTOFF:g} A in the reference's first frame, not within "
               f"{obs.Q_MIN_SEPARATION} residues along one chain; beta {obs.Q_BETA:g}/A, "
               f"lambda {obs.Q_LAMBDA:g}"),
    "end_to_end": ("angstrom", "distance between the first and the last bead of the first "
                               "chain"),
    "tic1": ("1", "first TICA component of the reference (deeptime, kinetic map)"),
    "tic2": ("1", "second TICA component of the reference"),
    "tica": ("1", f"the (tic1, tic2) plane: JS of 2-D histograms on {FES_BINS} x {FES_BINS} "
                  f"shared bins (its means are the tic1 and tic2 rows)"),
}
PERIODS = {"dihedral": (-np.pi, np.pi)}
JS_DEFINITION = ("Jensen-Shannon divergence in bits (log2, in [0, 1]) of normalised "
                 "histograms on bins shared by the reference and the trajectory: {n_bins} "
                 f"equal bins (the 2-D tica entry: {FES_BINS} per axis) from the smaller "
                 f"{dv.PERCENTILES[0]}th to the larger {dv.PERCENTILES[1]}th percentile of the "
                 "two (dihedrals: [-pi, pi), periodic), values outside counted in the edge "
                 "bins, no pseudo-counts (empty bins add 0)")


@dataclass
class CompareResult:
    """What :func:`compare` returns.

    samples: xr.Dataset over ``sample`` (every counted frame of every source, the reference
    first) with coords ``source`` ``replica`` ``frame`` ``time`` and one variable per
    observable: ``bond`` (sample, bond_i), ``angle`` (sample, angle_i), ``dihedral``
    (sample, dihedral_i), the others (sample); the ``*_i`` coordinates are the first bead of
    each term.
    table: xr.Dataset over (trajectory, observable): ``js`` (bits), ``ref_mean``,
    ``sim_mean`` (NaN for the 2-D ``tica`` row); ``table.to_dataframe()`` for pandas.
    fes: xr.Dataset ``free_energy`` (source, tic1, tic2) in kcal/mol (NaN on empty bins) on
    bins shared by all sources, or None without TICA.
    doc: the ``compare.json`` document (schemas/compare.json).
    """

    samples: xr.Dataset
    table: xr.Dataset
    fes: xr.Dataset | None
    doc: dict
    bins: dict = field(default_factory=dict)  # (label, observable) -> Bins of its JS


def compare(store, trajectories, *, labels: list[str] | None = None, burn_in: float = 0.0,
            allow_incomplete: bool = False, n_bins: int = dv.N_BINS, tica: bool = True,
            tica_lag: int = LAGTIME, storage_options: dict | None = None,
            out=None, overwrite: bool = False,
            echo: Callable[[str], None] = lambda line: None) -> CompareResult:
    """Compare the trajectories (paths, URLs or Locations of trajectory groups) with the
    reference frames of their protein at their temperature in ``store`` (a Store or its path).

    ``burn_in``: ps of every replica left out at its start (default 0: all frames);
    ``allow_incomplete``: compare the saved part of an unfinished trajectory; ``tica``: the
    TICA/FES part (needs at least 10 reference frame pairs ``tica_lag`` frames apart). With
    ``out`` the outputs are written there (:data:`OUTPUTS`; ``compare.json`` last), refused
    if ``out`` holds anything unless ``overwrite``; an output location is checked before any
    computation.
    """
    from ..store import Store, open_store

    if not isinstance(store, Store):
        store = open_store(store, storage_options=storage_options)
    options = store.storage_options or storage_options
    trajectories = [as_location(t, options) for t in
                    ([trajectories] if isinstance(trajectories, str | os.PathLike | Location)
                     else trajectories)]
    if not trajectories:
        raise ProtstoreError("give at least one trajectory")
    labels = _labels(trajectories, labels)
    if out is not None:
        out = as_location(out, options)
        _check_output(out, overwrite)
    groups = [open_trajectory(t) for t in trajectories]
    first = groups[0].attrs["protstore_trajectory"]
    protein, temperature = first["protein"], float(first["temperature"])
    for t, g in zip(trajectories[1:], groups[1:]):
        doc = g.attrs["protstore_trajectory"]
        if doc["protein"] != protein:
            raise InputError(f"{t.url}: a trajectory of protein {doc['protein']!r}, but "
                             f"{trajectories[0].url} is of {protein!r} (compare one protein "
                             f"at a time)")
        if abs(float(doc["temperature"]) - temperature) > TEMPERATURE_TOLERANCE:
            raise InputError(f"{t.url}: simulated at {doc['temperature']:g} K, but "
                             f"{trajectories[0].url} at {temperature:g} K (compare one "
                             f"temperature at a time)")
    ds_ref, ref = reference_frames(store, protein, temperature)
    for t, g in zip(trajectories, groups):
        check_same_protein(g, ds_ref, t.url)
    sims = [trajectory_frames(g, t.url, burn_in=burn_in, allow_incomplete=allow_incomplete)
            for t, g in zip(trajectories, groups)]
    resid, chain = ds_ref["resid"].values, ds_ref["chain"].values
    sources = {REFERENCE: ref, **dict(zip(labels, sims))}
    values, skipped, tica_info = _observables(sources, resid, chain, tica=tica,
                                              tica_lag=tica_lag, where=store.url)
    table, bins, per_traj = _table(values, labels, n_bins)
    fes = _fes(values, temperature) if "tic1" in values[REFERENCE] else None
    doc = _document(store, protein, temperature, ref, sims, trajectories, labels, per_traj,
                    skipped, tica_info, burn_in, n_bins)
    result = CompareResult(_samples(values, sources, ds_ref), table, fes, doc, bins)
    if out is not None:
        write_outputs(result, out, echo=echo)
    return result


def _labels(trajectories: list[Location], labels) -> list[str]:
    if labels is None:
        names = [t.name.removesuffix(".zarr") or t.url for t in trajectories]
        labels = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
    labels = [str(x) for x in labels]
    if len(labels) != len(trajectories):
        raise ProtstoreError(f"{len(labels)} labels for {len(trajectories)} trajectories")
    if len(set(labels)) != len(labels) or REFERENCE in labels or not all(labels):
        raise ProtstoreError(f"labels must be distinct, non-empty and not {REFERENCE!r}: "
                             f"{', '.join(labels)}")
    return labels


def _check_output(out: Location, overwrite: bool) -> None:
    if out.listdir("") and not overwrite:
        raise ProtstoreError(f"{out.url}: exists and is not empty (give --overwrite to "
                             f"replace its comparison)")


def _observables(sources: dict[str, Ensemble], resid, chain, *, tica: bool, tica_lag: int,
                 where: str) -> tuple[dict, dict, dict | None]:
    """source -> observable -> per-frame values ([F] or [F, n_terms]); skipped observables
    with the reason; the TICA fit's description (None without)."""
    terms = obs.terms(resid, chain)
    native = sources[REFERENCE].R[0]
    pairs, r0 = obs.native_contacts(native, resid, chain)
    skipped = {}
    for name, index in (("bond", terms.bond), ("angle", terms.angle),
                        ("dihedral", terms.dihedral)):
        if not len(index):
            skipped[name] = f"the protein has no {name}s"
    if not len(pairs):
        skipped["q"] = "no native contacts in the reference's first frame"
    # covariances of P features need many more frames than P: at most one feature per
    # FRAMES_PER_FEATURE reference frames (a TICA of more features than frames is degenerate)
    max_features = min(MAX_FEATURES, len(sources[REFERENCE].R) // FRAMES_PER_FEATURE)
    features = (obs.pair_features(len(resid), resid, chain, max_pairs=max(max_features, 2))
                if tica else np.zeros((0, 2), int))
    width = 3 * max(len(resid), len(pairs), len(features))

    def per_frame(R):
        v = {"bond": obs.bond_lengths(R, terms), "angle": obs.bond_angles(R, terms),
             "dihedral": obs.dihedral_angles(R, terms), "rg": obs.radius_of_gyration(R),
             "rmsd": obs.kabsch_rmsd(R, native), "end_to_end": obs.end_to_end(R, chain)}
        if "q" not in skipped:
            v["q"] = obs.fraction_native_contacts(R, pairs, r0)
        if len(features) >= 2:
            v["features"] = obs.pair_distances(R, features)
        return {k: x for k, x in v.items() if k not in skipped}

    values = {label: obs.in_blocks(per_frame, ens.R, width) for label, ens in sources.items()}
    if not tica:
        return values, {**skipped, **{k: "not asked (no TICA)" for k in ("tic1", "tic2", "tica")}
                        }, None
    if len(features) < 2:
        return values, {**skipped, **{k: "fewer than 2 bead pairs to use as TICA features"
                                      for k in ("tic1", "tic2", "tica")}}, None
    ref = sources[REFERENCE]
    model = fit_tica(values[REFERENCE]["features"], ref.replica, ref.frame, lagtime=tica_lag,
                     where=f"{where}: the reference")
    for v in values.values():
        y = model.transform(v.pop("features"))
        v["tic1"], v["tic2"] = y[:, 0], y[:, 1]
    import deeptime

    info = {"library": f"deeptime {deeptime.__version__}", "lagtime_frames": int(tica_lag),
            "n_features": int(len(features)), "n_lagged_pairs": int(model.n_pairs),
            "features": f"distances of bead pairs not within 2 residues along a chain, every "
                        f"k-th in (i, j) order, at most {MAX_FEATURES} and one per "
                        f"{FRAMES_PER_FEATURE} reference frames",
            "timescales_frames": [float(t) if np.isfinite(t) else None
                                  for t in model.timescales]}
    return values, skipped, info


def _mean(name: str, x: np.ndarray) -> float:
    return dv.circular_mean(x) if name in PERIODS else float(np.mean(x))


def _table(values: dict, labels: list[str], n_bins: int):
    """The (trajectory, observable) table, the bins of every JS, and per trajectory the
    observables' JSON entries."""
    ref = values[REFERENCE]
    names = [n for n in OBSERVABLES if n in ref or (n == "tica" and "tic1" in ref)]
    js = np.full((len(labels), len(names)), np.nan)
    ref_mean = np.full_like(js, np.nan)
    sim_mean = np.full_like(js, np.nan)
    bins, per_traj = {}, {}
    for i, label in enumerate(labels):
        sim, entries = values[label], {}
        for j, name in enumerate(names):
            if name == "tica":
                bx = dv.shared_edges(ref["tic1"], sim["tic1"], n_bins=FES_BINS)
                by = dv.shared_edges(ref["tic2"], sim["tic2"], n_bins=FES_BINS)
                js[i, j] = dv.js_divergence(dv.counts_2d(ref["tic1"], ref["tic2"], bx, by),
                                            dv.counts_2d(sim["tic1"], sim["tic2"], bx, by))
                bins[label, name] = (bx, by)
                entries[name] = {"js": js[i, j], "ref_mean": None, "sim_mean": None,
                                 "unit": "1", "bins": [_bins_doc(bx), _bins_doc(by)]}
                continue
            b = dv.shared_edges(ref[name], sim[name], n_bins=n_bins, period=PERIODS.get(name))
            js[i, j] = dv.js_of_samples(ref[name], sim[name], b)
            ref_mean[i, j], sim_mean[i, j] = _mean(name, ref[name]), _mean(name, sim[name])
            bins[label, name] = b
            entries[name] = {"js": js[i, j], "ref_mean": ref_mean[i, j],
                             "sim_mean": sim_mean[i, j], "unit": OBSERVABLES[name][0],
                             "bins": [_bins_doc(b)]}
        per_traj[label] = {k: {kk: float(vv) if isinstance(vv, np.floating) else vv
                               for kk, vv in e.items()} for k, e in entries.items()}
    dims = ("trajectory", "observable")
    table = xr.Dataset(
        {"js": (dims, js, {"units": "bit",
                            "long_name": JS_DEFINITION.format(n_bins=n_bins)}),
         "ref_mean": (dims, ref_mean), "sim_mean": (dims, sim_mean)},
        coords={"trajectory": labels, "observable": names,
                "unit": ("observable", [OBSERVABLES[n][0] for n in names])})
    return table, bins, per_traj


def _bins_doc(b: dv.Bins) -> dict:
    return {"lo": b.lo, "hi": b.hi, "n": b.n, "periodic": b.periodic}


def _fes(values: dict, temperature: float) -> xr.Dataset:
    """Free energies of every source on 2-D bins shared by all of them."""
    x = [v["tic1"] for v in values.values()]
    y = [v["tic2"] for v in values.values()]
    bx, by = dv.shared_edges(*x, n_bins=FES_BINS), dv.shared_edges(*y, n_bins=FES_BINS)
    f = np.stack([free_energy(dv.counts_2d(a, b, bx, by), temperature) for a, b in zip(x, y)])
    return xr.Dataset({"free_energy": (("source", "tic1", "tic2"), f,
                                       {"units": "kcal/mol",
                                        "long_name": "-kT ln p, minimum 0, NaN on empty bins"})},
                      coords={"source": list(values), "tic1": bx.centres, "tic2": by.centres},
                      attrs={"temperature": temperature, "tic1_edges": bx.edges,
                             "tic2_edges": by.edges})


def _samples(values: dict, sources: dict[str, Ensemble], ds_ref: xr.Dataset) -> xr.Dataset:
    terms = obs.terms(ds_ref["resid"].values, ds_ref["chain"].values)
    names = list(values[REFERENCE])
    order = list(values)

    def cat(get):
        return np.concatenate([np.asarray(get(k)) for k in order])

    data = {k: (("sample", f"{k}_i") if k in terms._fields else ("sample",),
                cat(lambda src, k=k: values[src][k]), {"units": OBSERVABLES[k][0]})
            for k in names}
    coords = {"source": ("sample", cat(lambda k: np.full(len(sources[k].R), k, dtype=object))),
              "replica": ("sample", cat(lambda k: np.asarray(sources[k].replica, np.int64))),
              "frame": ("sample", cat(lambda k: np.asarray(sources[k].frame, np.int64))),
              "time": ("sample", cat(lambda k: np.asarray(sources[k].time, np.float64)),
                       {"units": "ps"})}
    coords.update({f"{k}_i": getattr(terms, k) for k in terms._fields if k in names})
    return xr.Dataset(data, coords=coords)


def _document(store, protein, temperature, ref: Ensemble, sims: list[Ensemble],
              trajectories: list[Location], labels, per_traj, skipped, tica_info, burn_in,
              n_bins) -> dict:
    trajs = []
    for t, label, ens in zip(trajectories, labels, sims):
        d = ens.doc
        trajs.append({"label": label, "path": t.address, "mode": str(d.get("mode", "unknown")),
                      "complete": bool(d["complete"]), "steps_done": int(d["steps_done"]),
                      "n_replicas": int(len(np.unique(ens.replica))),
                      "n_frames": int(len(ens.R)), "n_dropped": int(ens.n_dropped),
                      "observables": per_traj[label]})
    return {
        "protstore_version": __version__, "protein": protein, "store": store.location.address,
        "store_version": store.version,
        "temperature": float(temperature), "burn_in_ps": float(burn_in),
        "reference": {"n_frames": int(len(ref.R)),
                      "replicas": sorted(int(r) for r in np.unique(ref.replica)),
                      "first_frame": {"replica": int(ref.replica[0]),
                                      "source_frame": int(ref.frame[0])},
                      "temperature_tolerance": TEMPERATURE_TOLERANCE},
        "js_definition": JS_DEFINITION.format(n_bins=n_bins), "n_bins": int(n_bins),
        "definitions": {k: v[1] for k, v in OBSERVABLES.items()},
        "tica": tica_info, "skipped": skipped,
        "observables": per_traj[labels[0]],
        "trajectories": trajs,
    }


def write_outputs(result: CompareResult, out, *, echo: Callable[[str], None] = print) -> dict:
    """Write :data:`OUTPUTS` into ``out``: an old ``compare.json`` is removed first and the new
    one written last, so a ``compare.json`` there always belongs to the files beside it."""
    from .report import plot_fes, plot_observables, table_text

    out = as_location(out)
    out.remove("compare.json")
    out.mkdir()
    text = dumps_document(result.doc, "compare", f"{out.url}/compare.json")  # checked first
    paths = {"table": out / "compare.txt", "observables": out / "compare_observables.png"}
    paths["table"].write_bytes("", table_text(result).encode())
    plot_observables(result, paths["observables"])
    if result.fes is not None:
        paths["fes"] = out / "compare_fes.png"
        plot_fes(result, paths["fes"])
    else:
        out.remove("compare_fes.png")
    out.write_bytes("compare.json", (text + "\n").encode())
    paths["json"] = out / "compare.json"
    echo(table_text(result, header=False))
    echo("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


def table_frame(result: CompareResult) -> pd.DataFrame:
    """The table as a pandas DataFrame indexed by (trajectory, observable)."""
    return result.table.to_dataframe()
