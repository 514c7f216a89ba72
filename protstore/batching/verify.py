"""Check a store's bucket plans against its proteins: each plan readable, every protein it names
on disk, and not stale (:func:`~protstore.batching.plan.check_plan`)."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import ProtstoreError
from ..store.verify import Finding
from .plan import check_plan, load_plan


def verify_plans(store) -> Iterator[Finding]:
    """A finding for each stored plan that is unreadable, names a protein whose group is not on
    disk, or no longer describes the store."""
    on_disk = set(store._protein_groups())
    for name in store.plans():
        try:
            plan = load_plan(store, name, check=False)  # staleness becomes a finding below
        except ProtstoreError as exc:
            yield Finding("error", f"{store.url}/plans/{name}", f"unreadable plan: {exc}")
            continue
        gone = [pid for pid in plan.proteins if pid not in on_disk]
        if gone:  # stricter than the listing check_plan trusts: the group must be on disk
            yield Finding("error", f"{store.url}/plans/{name}",
                          f"names protein {gone[0]!r}, which is not in the store; make the plan "
                          f"again (`protstore bucket --name {name} --overwrite`)")
            continue
        try:
            check_plan(store, plan)
        except ProtstoreError as exc:
            yield Finding("error", f"{store.url}/plans/{name}", str(exc))
