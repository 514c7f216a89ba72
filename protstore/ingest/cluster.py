"""Ingest on a dask.distributed cluster: one task per source file, each committing its own
proteins into a store every worker can reach (a shared POSIX file system or object storage).

Every protein is committed by the worker that wrote it, with the store's own protocol (a rename
under the store's lock on a shared disk; claim, staging and commit object on object storage),
so a worker killed midway leaves the store valid: dask runs its file again elsewhere, and the
commit of a protein already there is skipped (same source checksums), as a re-run of the whole
job does. Chunks are encoded the same way on any machine, so the result equals a serial ingest
protein for protein, bit for bit. When no worker is alive for ``no_worker_s`` seconds (every
one died, none came back), the files not yet done are cancelled and a
:class:`~protstore.errors.ClusterError` says how many were done: a re-run resumes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..progress import progress_bar, write_line

from ..errors import ClusterError
from ..store import Store, open_store
from ..store.claims import LEASE_S
from .pipeline import IngestOptions, IngestReport, failure, ingest_local


NO_WORKER_S = 60.0  # a nanny restarts a dead worker within seconds; none for a minute: gone
POLL_S = 1.0


def ingest_file_task(path: str, url: str, storage_options: dict | None,
                     options: IngestOptions) -> tuple[IngestReport, list[str], int]:
    """Run on a worker: ingest one file into the store at ``url``. Returns the file's report,
    the lines it logged and the frames now stored for its proteins."""
    store = open_store(url, mode="r+", storage_options=storage_options)
    lines: list[str] = []
    report = ingest_local([path], store, options, progress=False, log=lines.append)
    done = report.written + report.replaced + report.skipped
    frames = sum(store.protein_doc(p)["n_frames"] for p in done if p in store)
    return report, lines, frames


def ingest_on_cluster(paths: Iterable[str | Path], store: Store, options: IngestOptions,
                      client, *, progress: bool = True,
                      log: Callable[[str], None] | None = None,
                      no_worker_s: float = NO_WORKER_S) -> IngestReport:
    """Ingest ``paths`` on the workers of ``client`` (a ``dask.distributed.Client``) into
    ``store`` (which must exist: open it with mode ``"a"`` first). The files' reports are
    merged in the order of ``paths``; progress counts files and frames done across the
    cluster; ``no_worker_s``: how long the cluster may have no worker at all before the
    ingest stops (see the module docstring)."""
    from distributed import wait

    log = log or write_line
    paths = [str(Path(p).absolute()) if "://" not in str(p) else str(p) for p in paths]
    if options.topology is not None and "://" not in options.topology:  # MD trajectories'
        options = dataclasses.replace(options, topology=str(Path(options.topology).absolute()))
    if options.claim_wait_s is None:  # a retried task waits out its dead predecessor's lease
        options = dataclasses.replace(options, claim_wait_s=LEASE_S * 1.5)
    futures = client.map(ingest_file_task, paths, url=store.url,
                         storage_options=store.storage_options, options=options, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(paths)
    bar = progress_bar(total=len(paths), desc="files", unit="file", disable=not progress)
    frames = 0
    pending, alone_since = set(futures), None
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in done:
                i = index[future.key]
                try:
                    results[i] = future.result()
                except Exception as exc:  # noqa: BLE001 - a task's failure is that file's failure
                    results[i] = (IngestReport(failed={paths[i]: failure(exc, paths[i])}), [],
                                  0)
                for line in results[i][1]:
                    log(line)
                frames += results[i][2]
                bar.update(1)
                bar.set_postfix(frames=frames)
            if not pending or client.scheduler_info().get("workers"):
                alone_since = None
                continue
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since >= no_worker_s:
                client.cancel(list(pending))
                raise ClusterError(
                    f"{client.scheduler.address}: no dask worker alive for {no_worker_s:g} s; "
                    f"{len(paths) - len(pending)} of {len(paths)} files done (committed "
                    f"proteins stay): start workers and run the same command again to resume")
    finally:
        bar.close()
    report = IngestReport(selection=options.selection.expr if options.selection else None)
    for part, _, _ in results:
        report.not_selected += part.not_selected
        report.written += part.written
        report.replaced += part.replaced
        report.skipped += part.skipped
        report.failed.update(part.failed)
        report.excluded.update(part.excluded)
    store.refresh()
    return report
