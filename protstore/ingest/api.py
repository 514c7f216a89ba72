"""``ingest``: source files into a store, in this process or on a dask cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..store import Store
from .cluster import ingest_on_cluster
from .pipeline import IngestOptions, IngestReport, ingest_local


def ingest(paths: Iterable[str | Path], store: Store, options: IngestOptions = IngestOptions(),
           *, progress: bool = True, log: Callable[[str], None] | None = None,
           client=None) -> IngestReport:
    """Ingest source files into ``store`` (opened with mode ``"a"``).

    Each protein is validated frame by frame, written to a private staging group in frame
    blocks, committed (:meth:`~protstore.store.Store.commit`) and added to the catalog; a
    protein that fails is not written and the others still are. With ``client`` (a
    ``dask.distributed.Client``) the files are ingested on its workers
    (:mod:`protstore.ingest.cluster`), which must reach the store and the files.
    """
    if options.selection is not None:
        options.selection.check_ingest()
    if client is not None:
        return ingest_on_cluster(paths, store, options, client, progress=progress, log=log)
    return ingest_local(paths, store, options, progress=progress, log=log)
