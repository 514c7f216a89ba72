"""Claims: one writer at a time per protein on object storage, with no locks, renames or
process ids.

A writer claims protein ``p`` by creating ``STORE/.claims/<p>/<generation>`` with a
conditional PUT (``If-None-Match: *``: of two writers creating the same key, exactly one
succeeds). The claim document says who holds it and until when (its *lease*); the holder
renews the lease while it writes and removes its claim when done. A new writer lists the
protein's claims (a LIST of that tiny prefix): with none, it creates generation 0; when the
newest has expired (its writer died), it creates the next generation, which again only one
contender wins; a live claim is a :class:`~protstore.errors.ClaimError` naming its holder.
Before its commit the holder checks that its claim is still the newest, so a writer that
stalled past its lease and was replaced commits nothing.

The lease is short (:data:`LEASE_S`) and renewed by a heartbeat thread while the claim is held,
so a killed writer keeps its protein out for at most a lease, however long its writes take. A
user who knows the holder is dead takes over at once (``take_over``, ``protstore ingest
--break-claim``): the broken holder, if it was alive after all, commits nothing, since its
commit checks that its claim is still the newest. A retry of a writer that died (a cluster
task run again) may wait for the lease instead (``wait_s``).

This assumes the writers' clocks agree to well within the lease, as any lease-based protocol
does.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

from ..errors import ClaimError
from ..location import Location

CLAIMS = ".claims"
LEASE_S = 60.0
WAIT_POLL_S = 1.0


class Claim:
    """A held claim on ``protein_id`` (made by :func:`claim`)."""

    def __init__(self, store: Location, protein_id: str, generation: int, lease_s: float):
        self.store, self.protein_id, self.generation = store, protein_id, generation
        self.lease_s = lease_s
        self.write_id = uuid.uuid4().hex[:12]
        self.started = time.time()
        self._renewed = 0.0
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        """Renew the lease every third of it from a daemon thread until :meth:`release` (a
        failed renewal is retried at the next beat; the commit's check decides)."""
        def beat():
            while not self._stop.wait(max(self.lease_s / 3, 0.1)):
                try:
                    if not self.is_held():  # broken or released: never bring it back
                        return
                    self.renew(force=True)
                except Exception:  # noqa: BLE001 - a missed beat is not fatal by itself
                    pass

        self._heartbeat = threading.Thread(target=beat, daemon=True,
                                           name=f"protstore-claim-{self.protein_id}")
        self._heartbeat.start()

    @property
    def key(self) -> str:
        return f"{CLAIMS}/{self.protein_id}/{self.generation:08d}"

    def document(self) -> dict:
        now = time.time()
        return {"protein_id": self.protein_id, "host": socket.gethostname(),
                "write_id": self.write_id, "started": self.started, "expires": now + self.lease_s}

    def renew(self, *, force: bool = False) -> None:
        """Extend the lease (a PUT) when a third of it has passed since the last renewal."""
        if force or time.time() - self._renewed > self.lease_s / 3:
            now = time.time()
            self.store.write_json(self.key, self.document(), schema="claim")
            self._renewed = now  # only a renewal that landed counts

    def is_held(self) -> bool:
        """This claim is still the protein's newest, its document this write's (a generation
        number reused after a release is another write's)."""
        newest = _generations(self.store, self.protein_id)
        if not newest or newest[-1] != self.generation:
            return False
        try:
            return self.store.read_json(self.key).get("write_id") == self.write_id
        except (FileNotFoundError, ValueError):
            return False

    def check_held(self) -> None:
        """ClaimError unless this claim is still the protein's newest and its lease, as last
        renewed, has a third of it left (a writer whose renewals stopped landing may be taken
        over at any moment: it commits nothing)."""
        if not self.is_held():
            raise ClaimError(f"{self.store.url}: protein {self.protein_id!r}: this write's claim "
                             f"expired and another writer took over; nothing was committed")
        unrenewed = time.time() - self._renewed
        if unrenewed > self.lease_s * 2 / 3:
            raise ClaimError(f"{self.store.url}: protein {self.protein_id!r}: this write's claim "
                             f"was last renewed {unrenewed:.0f} s ago (lease {self.lease_s:g} s; "
                             f"is the store reachable?); nothing was committed: run again")

    def release(self) -> None:
        """Stop the heartbeat (waiting for a beat in flight); remove this claim and the expired
        ones before it."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join()
        for generation in _generations(self.store, self.protein_id):
            if generation <= self.generation:
                self.store.remove(f"{CLAIMS}/{self.protein_id}/{generation:08d}")


def _generations(store: Location, protein_id: str) -> list[int]:
    return sorted(int(n) for n in store.listdir(f"{CLAIMS}/{protein_id}") if n.isdigit())


def live_claim(store: Location, protein_id: str) -> tuple[int | None, dict | None]:
    """(the newest generation of ``protein_id``'s claims or None, its document if its lease
    has not expired else None): reads only, two requests at most."""
    generations = _generations(store, protein_id)
    if not generations:
        return None, None
    newest = generations[-1]
    try:
        doc = store.read_json(f"{CLAIMS}/{protein_id}/{newest:08d}")
    except (FileNotFoundError, ValueError):  # released just now, or torn: not live
        return newest, None
    return newest, doc if doc.get("expires", 0) > time.time() else None


def claim(store: Location, protein_id: str, lease_s: float = LEASE_S, *,
          take_over: bool = False, wait_s: float = 0.0) -> Claim:
    """Claim ``protein_id`` for writing, or raise ClaimError naming the live holder.

    ``take_over``: claim it even from a live holder (one the user knows is dead);
    ``wait_s``: wait up to this long for a live holder's lease to end first."""
    newest, doc = live_claim(store, protein_id)
    deadline = time.monotonic() + wait_s
    while doc is not None and not take_over and time.monotonic() < deadline:
        time.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0.0)))
        newest, doc = live_claim(store, protein_id)
    if doc is not None and not take_over:
        raise ClaimError(
            f"{store.url}: protein {protein_id!r} is being written by another writer "
            f"(host {doc.get('host')!r}, since {time.ctime(doc.get('started', 0))}); "
            f"run again after its claim expires at {time.ctime(doc['expires'])}, or with "
            f"--break-claim if you know that writer is dead")
    held = Claim(store, protein_id, 0 if newest is None else newest + 1, lease_s)
    held._renewed = time.time()
    try:
        store.write_json(held.key, held.document(), schema="claim", exclusive=True)
    except FileExistsError:
        raise ClaimError(f"{store.url}: protein {protein_id!r}: another writer claimed it at "
                         f"the same moment; run again later") from None
    held.start_heartbeat()
    return held
