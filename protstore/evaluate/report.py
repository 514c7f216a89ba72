"""Tables (text) and plots of evaluation results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..plotting import new_figure, save_figure
from .compute import RMSE_CONVENTION

TERMINAL_RANGE = 30  # beads from each terminus shown in the terminal-effect plot


def per_residue_text(tables: dict[str, xr.Dataset], *, model_id: str, mode: str,
                     n_samples: int) -> str:
    """The per-residue table: per amino-acid type, by terminus distance, per protein and T."""
    lines = [f"# per-residue force errors of {model_id} ({mode} model), {n_samples} frames",
             f"# convention: {RMSE_CONVENTION}",
             "# mean_bead_rmse_predecessor: the mean of per-bead RMSEs (the predecessor's "
             "figure; not an RMSE), for comparison", ""]
    by = tables["by_resname"].sortby("rmse_pooled", ascending=False)
    lines.append(f"{'resname':<8s} {'rmse_pooled':>12s} {'per_comp':>9s} {'n_beads':>8s} "
                 f"{'n_values':>9s} {'mean_bead_rmse_predecessor':>27s}")
    for name in by["resname"].values:
        r = by.sel(resname=name)
        lines.append(f"{name:<8s} {float(r.rmse_pooled):12.4f} {float(r.rmse_pooled_component):9.4f} "
                     f"{int(r.n_beads):8d} {int(r.n_values):9d} "
                     f"{float(r.mean_bead_rmse_predecessor):27.4f}")
    for key, title in (("by_position", "position from the N-terminus (0 = first bead)"),
                       ("by_position_from_c", "position from the C-terminus (0 = last bead)")):
        t = tables[key]
        lines += ["", f"# {title}", f"{'position':>8s} {'rmse_pooled':>12s} {'n_beads':>8s}"]
        for p in t[key.replace("by_", "")].values[:15]:
            r = t.sel({key.replace("by_", ""): p})
            lines.append(f"{int(p):8d} {float(r.rmse_pooled):12.4f} {int(r.n_beads):8d}")
    t = tables["by_protein"]
    lines += ["", "# per protein", f"{'protein':<20s} {'rmse_pooled':>12s} {'n_beads':>8s}"]
    for p in t["protein"].values:
        r = t.sel(protein=p)
        lines.append(f"{p:<20s} {float(r.rmse_pooled):12.4f} {int(r.n_beads):8d}")
    t = tables["by_temperature"]
    lines += ["", "# per temperature", f"{'T (K)':>8s} {'rmse_pooled':>12s} {'n_values':>9s}"]
    for T in t["temperature"].values:
        r = t.sel(temperature=T)
        lines.append(f"{T:8.1f} {float(r.rmse_pooled):12.4f} {int(r.n_values):9d}")
    return "\n".join(lines) + "\n"


def plot_per_residue(tables: dict[str, xr.Dataset], path: Path, *, model_id: str) -> None:
    """Bar chart of pooled RMSE by amino-acid type (sorted, with counts) and RMSE against
    chain position from each terminus."""
    by = tables["by_resname"].sortby("rmse_pooled", ascending=False)
    fig = new_figure((13, 4.4))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(by.sizes["resname"])
    ax1.bar(x, by["rmse_pooled"].values, color="tab:blue", label="pooled RMSE")
    ax1.plot(x, by["mean_bead_rmse_predecessor"].values, "k_", ms=14,
             label="mean of per-bead RMSE (predecessor)")
    for xi, (v, n) in enumerate(zip(by["rmse_pooled"].values, by["n_beads"].values)):
        ax1.text(xi, v, f"{int(n)}", ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(x, by["resname"].values, rotation=60)
    ax1.set_ylabel("force RMSE, vector norm (kcal/mol/Å)")
    ax1.set_title("by amino-acid type (numbers: beads)")
    ax1.legend(fontsize=8, loc="lower left")
    for key, label in (("by_position", "from N-terminus"), ("by_position_from_c", "from C-terminus")):
        t = tables[key]
        coord = key.replace("by_", "")
        t = t.where(t[coord] < TERMINAL_RANGE, drop=True)  # the ends; the middle is in the table
        ax2.plot(t[coord].values, t["rmse_pooled"].values, ".-", label=label)
    ax2.set_xlabel(f"beads from the terminus (first {TERMINAL_RANGE})")
    ax2.set_ylabel("pooled force RMSE (kcal/mol/Å)")
    ax2.set_title("terminal effect")
    ax2.legend(fontsize=8)
    fig.suptitle(f"Per-residue force error: {model_id}")
    save_figure(fig, path)


def overall_text(metrics: dict, *, model_id: str, mode: str, n_samples: int) -> str:
    lines = [f"# force errors of {model_id} ({mode} model) on {n_samples} frames, "
             f"{metrics['n_bead_frames']} bead-frames; kcal/mol/Å",
             "# rmse_vector = sqrt(mean ||dF||^2); rmse_component = sqrt(mean dF_x,y,z^2) "
             "= rmse_vector/sqrt(3); mae_vector = mean ||dF||; mae_component = mean |dF_x,y,z|"]
    lines += [f"{k:<16s} {v:.5f}" if isinstance(v, float) else f"{k:<16s} {v}"
              for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def plot_samples(n_samples: int, max_samples: int, *, seed: int = 0) -> np.ndarray:
    """Indices of the samples a plot shows: all of them up to ``max_samples``, else that many
    drawn at random without replacement (``numpy.random.default_rng(seed)``: the same every
    time), sorted so that they are read in store order. The first ``max_samples`` would be
    the first proteins' frames only (samples come protein by protein)."""
    if n_samples <= max_samples:
        return np.arange(n_samples)
    return np.sort(np.random.default_rng(seed).choice(n_samples, max_samples, replace=False))


def plot_overall(ds: xr.Dataset, metrics: dict, path: Path, *, model_id: str, mode: str,
                 max_samples: int = 400, seed: int = 0) -> None:
    """Predicted vs reference force components (hexbin of a seeded random subset of at most
    ``max_samples`` samples, :func:`plot_samples`) and the distribution of component errors."""
    sub = ds.isel(sample=plot_samples(ds.sizes["sample"], max_samples, seed=seed))
    valid = sub["mask"].values
    ref = sub["F_ref"].values[valid].ravel()
    err = sub["dF"].values[valid].ravel()
    pred = ref + err
    fig = new_figure((11, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    lim = np.percentile(np.abs(ref), 99.5)
    ax1.hexbin(ref, pred, gridsize=60, extent=(-lim, lim, -lim, lim), mincnt=1, bins="log")
    ax1.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    ax1.set_xlabel("reference force component (kcal/mol/Å)")
    ax1.set_ylabel("predicted force component (kcal/mol/Å)")
    ax1.set_title(f"RMSE per component {metrics['rmse_component']:.3f}")
    ax2.hist(err, bins=100, density=True, color="tab:orange")
    ax2.set_xlabel("predicted - reference component (kcal/mol/Å)")
    ax2.set_ylabel("density")
    ax2.set_title(f"MAE per component {metrics['mae_component']:.3f}")
    fig.suptitle(f"{model_id}: {mode} model")
    save_figure(fig, path)
