"""Names of the entries in a store's private ``.staging/`` directory, and whether their writer
is still at work.

An entry is ``<kind>@<host>@<process id>@<random>@<protein id>``: ``write`` (a protein being
written) or ``replaced`` (the old copy during an ``--overwrite``). Protein ids cannot contain
``@`` (:func:`~protstore.store.layout.check_protein_id`), so the id is everything after the
fourth ``@``, dots included. Entries of protstore before 0.5 (``<id>.<pid>.<random>``,
``<id>.replaced.<random>``) are read from the right, where their fields have no dots.

A ``write`` entry is abandoned only when it was made on this host by a process that is gone;
an entry of another host is never judged from here (its process ids mean nothing here).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass

import psutil

WRITE, REPLACED = "write", "replaced"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


@dataclass(frozen=True)
class StagingEntry:
    kind: str  # WRITE | REPLACED
    protein_id: str
    host: str | None  # None: written by protstore < 0.5 (assumed this host)
    pid: int | None

    def abandoned(self) -> bool:
        """True when the writer of this entry is known to be gone."""
        if self.kind == REPLACED:
            return True  # only ever seen outside a commit after the committer died
        if self.foreign:
            return False
        return self.pid is None or not _pid_alive(self.pid)

    @property
    def foreign(self) -> bool:
        """Made on another host (whose process ids mean nothing here)."""
        return self.host is not None and self.host != _HOST


def staging_name(kind: str, protein_id: str) -> str:
    """A fresh entry name for ``protein_id`` made by this process."""
    return f"{kind}@{_HOST}@{os.getpid()}@{uuid.uuid4().hex[:8]}@{protein_id}"


def parse_staging(name: str) -> StagingEntry | None:
    """The entry a name describes, or None for a name protstore never writes."""
    parts = name.split("@", 4)
    if len(parts) == 5 and parts[0] in (WRITE, REPLACED) and parts[2].isdigit():
        return StagingEntry(parts[0], parts[4], parts[1], int(parts[2]))
    legacy = name.rsplit(".", 2)
    if len(legacy) == 3 and re.fullmatch(r"[0-9a-f]{8}", legacy[2]):
        if legacy[1] == "replaced":
            return StagingEntry(REPLACED, legacy[0], None, None)
        if legacy[1].isdigit():
            return StagingEntry(WRITE, legacy[0], None, int(legacy[1]))
    return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (psutil: ``os.kill(pid, 0)`` would end the
    process on Windows)."""
    return psutil.pid_exists(pid)
