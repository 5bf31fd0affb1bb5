"""Projection workers over the segments of a partitioned PostgreSQL store (``projections.partitions``):
the segment projectors of one read model, and the worker loop that claims segments with a lease,
renews it while it works, and projects every read model's share of its segments."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from events.ledger import Ledger
from projections.partitions import Partitions, new_owner
from projections.runner import Projector
from projections.view import ReadModel, View


class SegmentProjectors:
    """Every segment of one read model, projected in this process (a question's catch-up, a rebuild, the
    worker that holds them). Two processes on one segment never apply a page twice: each page's write
    claims the segment's tracked position first (``View._claim``)."""

    def __init__(self, parent: Projector, count: int):
        self.parent, self.count = parent, count
        self.projectors: dict[int, Projector] = {}

    def projector(self, segment: int) -> Projector:
        found = self.projectors.get(segment)
        if found is None:
            p = self.parent
            found = self.projectors[segment] = Projector(p.ledger, copy.copy(p.model), p.page,
                                                         segment=(segment, self.count), view=p.view)
        return found

    def catch_up(self, on_page: Callable[[int, int], None] | None = None, *, retry: bool = False,
                 segments: Sequence[int] | None = None) -> int:
        """Bring segments up to date: those given, else every segment no live worker holds."""
        if segments is None:
            now = datetime.now(UTC)
            segments = [lease.segment for lease in Partitions(self.parent.view.db).leases() if not lease.live(now)]
        return sum(self.projector(k).catch_up(on_page, retry=retry) for k in segments)

    def forget(self) -> None:
        """After a reset: fresh segment projectors (and fresh model instances)."""
        self.projectors.clear()


def run_worker(ledger: Ledger, models: Sequence[ReadModel], *, follow: bool, lease_seconds: float,
               interval: float, stopping: Callable[[], bool], owner: str | None = None,
               on_claim: Callable[[list[int]], None] | None = None) -> int:
    """One worker: heartbeat, claim a fair share of the segments, project every read model's share of
    them, renew the lease while working (after each page), and give the segments back when stopping.
    Without ``follow`` it stops once a pass over its segments finds nothing to do and no segment is
    left unclaimed. Returns the events it projected."""
    owner = owner or new_owner()
    views = {m.name: View(ledger.store, m) for m in models}
    partitions = Partitions(next(iter(views.values())).db)
    count = partitions.count()
    if count is None:
        raise ValueError("the store's projections are not partitioned: run `safety-monitor project --workers N`")
    projectors: dict[tuple[str, int], Projector] = {}
    renewed = 0.0

    def renew(*_: Any) -> None:
        nonlocal renewed
        if time.monotonic() - renewed > lease_seconds / 3:
            partitions.heartbeat(owner, lease_seconds)
            partitions.claim(owner, lease_seconds)
            renewed = time.monotonic()

    total = 0
    partitions.heartbeat(owner, lease_seconds)
    time.sleep(min(0.5, lease_seconds / 10))  # let the workers started with this one say they are alive
    try:
        while not stopping():
            partitions.heartbeat(owner, lease_seconds)
            mine = partitions.claim(owner, lease_seconds)
            renewed = time.monotonic()
            if on_claim is not None:
                on_claim(mine)
            busy = 0
            for k in mine:
                for m in models:
                    p = projectors.get((m.name, k))
                    if p is None:
                        p = projectors[(m.name, k)] = Projector(ledger, copy.copy(m), segment=(k, count),
                                                                view=views[m.name])
                    busy += p.catch_up(renew)
                    if stopping():
                        break
            total += busy
            if not follow and not busy:
                now = datetime.now(UTC)
                if all(lease.live(now) for lease in partitions.leases()):
                    break  # every segment is held by a live worker, this one's are up to date
            if not busy:
                time.sleep(interval)
    finally:
        partitions.release(owner)
        for view in views.values():
            view.close()
    return total
