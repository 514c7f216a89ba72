"""The one way protstore draws: on a :class:`matplotlib.figure.Figure` of its own, saved to a
file. No pyplot, no backend switch: the user's matplotlib session (Jupyter's inline backend, a
GUI) is never touched, and no figure is left registered anywhere."""

from __future__ import annotations


def new_figure(figsize: tuple[float, float]):
    """A fresh :class:`matplotlib.figure.Figure` (not managed by pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, path, dpi: int = 110) -> None:
    """Lay out and write ``fig`` to ``path`` (a local path, a URL or a
    :class:`~protstore.location.Location`; the format from the suffix), whole."""
    import io

    from .location import as_location

    where = as_location(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=where.suffix.lstrip(".") or "png")
    where.write_bytes("", buffer.getvalue())
