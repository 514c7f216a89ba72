"""The comparison as text (one table, every trajectory) and figures (one panel per observable
with every trajectory; the free-energy surfaces side by side)."""

from __future__ import annotations

import numpy as np

from ..plotting import new_figure, save_figure
from ..units import KB_KCAL_PER_MOL_K
from . import divergence as dv

UNIT_LABELS = {"angstrom": "Å", "radian": "rad", "1": ""}


def table_text(result, *, header: bool = True) -> str:
    """Per observable: its unit, the reference mean, and per trajectory its mean and JS."""
    doc, t = result.doc, result.table
    labels = [str(x) for x in t["trajectory"].values]
    lines = []
    if header:
        lines += [f"# protstore compare: protein {doc['protein']} at {doc['temperature']:g} K; "
                  f"reference: {doc['reference']['n_frames']} frames of {doc['store']} "
                  f"(replicas {', '.join(map(str, doc['reference']['replicas']))})",
                  f"# js: {doc['js_definition']}"]
        for d in doc["trajectories"]:
            lines.append(f"# {d['label']}: {d['path']} ({d['mode']}), {d['n_frames']} frames "
                         f"from {d['n_replicas']} replica(s), {d['n_dropped']} left out"
                         + ("" if d["complete"] else ", INCOMPLETE (part done)"))
        for name, why in doc["skipped"].items():
            lines.append(f"# {name}: not computed: {why}")
        lines.append("")
    w = max(12, *(len(x) + 5 for x in labels))
    lines.append(f"{'observable':<11s} {'unit':<9s} {'ref_mean':>10s}"
                 + "".join(f" {x + '_mean':>{w}s} {x + '_js':>{w}s}" for x in labels))
    for j, name in enumerate(t["observable"].values):
        ref = float(t["ref_mean"].values[0, j])
        row = f"{name:<11s} {str(t['unit'].values[j]):<9s} {_num(ref):>10s}"
        for i in range(len(labels)):
            row += (f" {_num(float(t['sim_mean'].values[i, j])):>{w}s}"
                    f" {float(t['js'].values[i, j]):>{w}.4f}")
        lines.append(row)
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4f}"


def plot_observables(result, path) -> None:
    """One panel per 1-D observable: the reference's histogram (filled) and every
    trajectory's (lines) on bins shared by all sources; JS of each in the legend."""
    s, t = result.samples, result.table
    names = [n for n in t["observable"].values if n != "tica"]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = new_figure((4.6 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    sources = list(dict.fromkeys(s["source"].values))
    for ax, name in zip(axes, names):
        per = [s[name].values[s["source"].values == src] for src in sources]
        per = [x[np.isfinite(x)] for x in per]
        period = (-np.pi, np.pi) if name == "dihedral" else None
        b = dv.shared_edges(*per, period=period)
        width = (b.hi - b.lo) / b.n
        for k, (src, x) in enumerate(zip(sources, per)):
            p = b.counts(x) / max(x.size, 1) / width
            if k == 0:
                ax.fill_between(b.centres, p, step="mid", color="0.75", label=src)
            else:
                js = float(t["js"].sel(trajectory=src, observable=name))
                ax.step(b.centres, p, where="mid", lw=1.4, label=f"{src} (JS {js:.3f})")
        unit = UNIT_LABELS.get(str(t["unit"].sel(observable=name).values), "")
        ax.set_xlabel(f"{name} ({unit})" if unit else name)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    doc = result.doc
    fig.suptitle(f"{doc['protein']} at {doc['temperature']:g} K: reference vs simulation")
    save_figure(fig, path)


def plot_fes(result, path, *, vmax: float | None = None) -> None:
    """Free energy over (tic1, tic2) of the reference and of each trajectory, on one grid and
    one colour scale (default: up to 5 kT)."""
    fes = result.fes
    f = fes["free_energy"]
    T = float(fes.attrs["temperature"])
    vmax = vmax or 5 * KB_KCAL_PER_MOL_K * T
    n = fes.sizes["source"]
    fig = new_figure((4.2 * n + 0.8, 3.8))
    *axes, cax = fig.subplots(1, n + 1, gridspec_kw={"width_ratios": [1] * n + [0.06]})
    ex, ey = fes.attrs["tic1_edges"], fes.attrs["tic2_edges"]
    for ax, src in zip(axes, fes["source"].values):
        image = ax.pcolormesh(ex, ey, f.sel(source=src).values.T, vmin=0, vmax=vmax,
                              cmap="viridis", shading="flat")
        title = str(src)
        if src in result.table["trajectory"].values:
            js = float(result.table["js"].sel(trajectory=src, observable="tica"))
            title += f" (JS {js:.3f})"
        ax.set_title(title)
        ax.set_xlabel("tic1 (reference)")
    axes[0].set_ylabel("tic2 (reference)")
    for ax in axes[1:]:
        ax.sharex(axes[0])
        ax.sharey(axes[0])
    fig.colorbar(image, cax=cax, label="free energy (kcal/mol)")
    fig.suptitle(f"{result.doc['protein']} at {T:g} K: free energy over the reference's TICA")
    save_figure(fig, path)
