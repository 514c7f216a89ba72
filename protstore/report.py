"""Human-readable summaries of a store (used by ``protstore info`` and the demo)."""

from __future__ import annotations

import pandas as pd

from .store import Store


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def store_info(store: Store, *, max_rows: int = 40) -> str:
    """Totals and a per-protein table, from metadata only."""
    table = store.summary()
    raw = int(table["nbytes_raw"].sum())
    stored = int(table["nbytes_stored"].sum())
    temps = sorted({t for d in map(store.protein_doc, table.index) for t in d["temperatures"]
                    if t is not None})
    lines = [
        f"store        {store.url}",
        f"version      {store.version or '(no commit yet)'}",
        f"proteins     {len(table)}",
        f"residues     {int(table['n_atoms'].sum())} "
        f"(min {table['n_atoms'].min() if len(table) else 0}, "
        f"max {table['n_atoms'].max() if len(table) else 0})",
        f"frames       {int(table['n_frames'].sum())} "
        f"({int(table['n_excluded'].sum())} excluded at ingest)",
        f"temperatures {', '.join(f'{t:g} K' for t in temps) or 'unknown'}",
        f"size on disk {human_bytes(stored)} (R+F raw float32 {human_bytes(raw)}; "
        f"compression ratio {raw / stored if stored else float('nan'):.2f}x)",
        f"vocabulary   {len(store.vocabulary)} species: {' '.join(store.vocabulary)}",
        "",
    ]
    if len(table):
        shown = table.drop(columns=["nbytes_raw"]).head(max_rows).copy()
        shown["nbytes_stored"] = shown["nbytes_stored"].map(human_bytes)
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            lines.append(shown.to_string())
        if len(table) > max_rows:
            lines.append(f"... and {len(table) - max_rows} more proteins")
    return "\n".join(lines)
