"""The one way protstore draws: on a :class:`matplotlib.figure.Figure` of its own, saved to a
file. No pyplot, no backend switch: the user's matplotlib session (Jupyter's inline backend, a
GUI) is never touched, and no figure is left registered anywhere."""

from __future__ import annotations

from pathlib import Path


def new_figure(figsize: tuple[float, float]):
    """A fresh :class:`matplotlib.figure.Figure` (not managed by pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Lay out and write ``fig`` to ``path`` (the format from the suffix)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
