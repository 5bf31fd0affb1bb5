"""Projections: read models that follow the ledger, each with its own tracked position.

Built on eventsourcing's tracking recorders: a batch of rows and the tracking position of its last
ledger notification commit in one transaction (``projections.view.View``), so a projection resumes where
it stopped and never counts an event twice. eventsourcing's SQLite recorder has no subscriptions, so
projectors follow by polling (``follow``), which works on both stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, Tracking

from events.ledger import Ledger
from events.store import Store
from projections import bulk
from projections.db import ReadDB, no_cycle_collection
from projections.view import (
    PageTaken,
    ReadModel,
    Stop,
    View,
    not_the_data,
    position_in,
    stop_in,
)

log = logging.getLogger(__name__)


class _EventRefused(Exception):
    def __init__(self, applied: int, notification_id: int, reason: str):
        super().__init__(reason)
        self.applied, self.notification_id, self.reason = applied, notification_id, reason


class Projector:
    """Brings one read model up to date with the ledger, page by page. With ``segment`` (k, count), only
    the streams of segment k, tracked apart (``projections.partitions``), through a shared ``view``."""

    def __init__(self, ledger: Ledger, model: ReadModel, page: int = 2000, *, segment: tuple[int, int] | None = None,
                 view: View | None = None):
        self.ledger = ledger
        self.view = view or View(ledger.store, model)
        self.page = page
        self.segment = segment
        self.model = model
        if segment is not None:
            model.partition = segment  # type: ignore[attr-defined]  # read models that evaluate per patient use it
        self.upstream = ledger.name if segment is None else f"{ledger.name}#{segment[0]}"
        self._segments: Any = None  # on a partitioned store, the projector of each segment

    def _segment_projectors(self, count: int) -> Any:
        """On a partitioned PostgreSQL store, the projectors of its ``count`` segments."""
        if self._segments is None:
            from projections.workers import SegmentProjectors

            self._segments = SegmentProjectors(self, count)
        return self._segments

    def catch_up(self, on_page: Callable[[int, int], None] | None = None, *, retry: bool = False) -> int:
        """Process every ledger event after the tracked position; returns how many it processed.

        A read model that has stopped on an event (``View.stopped``) is left where it is, so a follower
        does not try the same failing event every poll; ``retry`` tries it again (``project``,
        ``rebuild``). With a backlog of more than one page, models that can defer per-patient work
        (signals) do it once at the end instead of after every page; what is deferred is noted durably.
        """
        upstream = self.upstream
        whole = self.segment is None and self.ledger.store.kind == "postgresql"  # partitioned since?
        stop, start, count = self.view.opening(upstream, segments=whole)
        if count is not None:
            return int(self._segment_projectors(count).catch_up(on_page, retry=retry))
        if stop is not None:
            if not retry:
                return 0
            self.view.clear_stop()
        head = self.ledger.position()
        if head == start:  # nothing new; work left by an interrupted run (each page's write does it too)
            self.view.finish(self.model, self.upstream)
            return 0
        model = self.model
        deferring = hasattr(model, "defer") and head - start > self.page
        if deferring:
            model.defer = True  # type: ignore[attr-defined]
        indexes = self._bulk_load(start, head)
        try:
            applied = 0
            if bulk.applies(self, start, head):  # read and decoded in worker processes
                applied, start = bulk.load(self, start, head, upstream, on_page)
            return applied + self._pages(start, upstream, on_page, None if applied else head)
        finally:
            if indexes:  # before the deferred work, which may read by them
                self._make_indexes(indexes)
            if deferring:
                model.defer = False  # type: ignore[attr-defined]
                self.view.finish(self.model, self.upstream)

    def _bulk_load(self, start: int, head: int) -> list[str]:
        """A read model filled from nothing with more than a page to do goes without the indexes it lets a
        bulk load make at its end (``View.deferred_indexes``): their statements, dropped now. Not a segment
        of a partitioned store: the other segments' workers write the same tables."""
        if self.segment is not None or start != 0 or head - start <= self.page:
            return []
        indexes = self.view.deferred_indexes()
        self.view.drop_indexes([name for name, _ in indexes])
        return [statement for _, statement in indexes]

    def _make_indexes(self, statements: list[str]) -> None:
        """The dropped indexes, made once; an error is logged, not raised over the one that ended the pages
        (the next process to open the view makes them: a view runs the create statements of what is missing)."""
        try:
            self.view.make(statements)
        except Exception:
            log.exception("%s: could not make its indexes after a bulk load", self.model.name)

    def _pages(self, start: int, upstream: str, on_page: Callable[[int, int], None] | None,
               head: int | None) -> int:
        """Write page after page from ``start``; ``head``, the ledger's position if the caller just read it."""
        processed = 0
        topics = self.model.topics
        while True:
            if head is None:
                head = self.ledger.position()
            if self.segment is None:
                notes = self.ledger.page(start, self.page, topics)
            else:  # only this segment's streams, filtered in the database
                notes = self.ledger.segment_notifications(start, self.page, topics, *self.segment)
            try:
                if not notes:
                    if head > start:
                        # Nothing of this model's topics up to the head: remember that, so the next poll
                        # does not scan the same events again (it would, for a model whose topics are rare).
                        self.view.write([], Tracking(upstream, head), after=start, model=self.model)
                    return processed
                # a short page is the last: its position is the head read before it (nothing of the
                # model's topics up to there is left), which spares the next poll a scan and this one a read
                last = max(head, notes[-1].id) if len(notes) < self.page else notes[-1].id
                with no_cycle_collection():  # a page's objects hold no cycles: the collector's passes cost half
                    self._write_page(notes, upstream, start, last)
            except (PageTaken, OperationalError, InterfaceError, IntegrityError) as exc:
                moved = self.view.position(upstream)
                if moved == start:
                    raise  # not a rival projector: a real failure
                log.info("%s: another projector got to %d first (%s); going on from there",
                         self.model.name, moved, exc)
                start, head = moved, None
                continue
            except _EventRefused as refused:
                processed += refused.applied
                stop = self.view.record_stop(refused.notification_id, refused.reason, upstream)
                log.error("%s; the other read models go on", stop.sentence())
                return processed
            start = last
            processed += len(notes)
            if on_page:
                on_page(len(notes), start)
            if len(notes) < self.page:
                return processed
            head = None

    def _write_page(self, notes: Sequence[Any], upstream: str, start: int, last: int) -> None:
        """Write a page (its position ``last``); if the store or the model refuses it, once more with text
        escaped, then event by event, so everything before the event that cannot be applied is kept
        (``_EventRefused``)."""
        for escaped in ({}, {"storable_text": True}):
            try:
                self.view.write([(n.id, self.ledger.decode(n)) for n in notes], Tracking(upstream, last),
                                after=start, model=self.model, **escaped)
                return
            except Exception as exc:
                if not_the_data(exc):
                    raise
        after = start
        for applied, n in enumerate(notes):
            try:
                self.view.write([(n.id, self.ledger.decode(n))], Tracking(upstream, n.id), after=after,
                                storable_text=True, model=self.model)
            except Exception as exc:
                if not_the_data(exc):
                    raise
                raise _EventRefused(applied, n.id, f"{type(exc).__name__}: {exc}") from exc
            after = n.id
        if after != last:
            self.view.write([], Tracking(upstream, last), after=after, model=self.model)

    def rebuild(self, on_page: Callable[[int, int], None] | None = None) -> int:
        """Replay from zero (on a partitioned store, every segment; workers should be stopped first)."""
        self.view.reset()
        if self._segments is not None:
            self._segments.forget()
        return self.catch_up(on_page, retry=True)


def read_model_states(dbs: dict[str, ReadDB], ledger_position: int) -> list[dict[str, Any]]:
    """Per read model (name -> its database): its position, how far behind the ledger it is, and its
    stop (None while it runs)."""
    out = []
    for name, db in dbs.items():
        position = position_in(db, name)
        stop = stop_in(db, name)
        out.append({"name": name, "position": position, "behind": max(0, ledger_position - position),
                    "stopped": None if stop is None else {"position": stop.position,
                                                          "notification_id": stop.notification_id,
                                                          "reason": stop.reason, "stopped_at": stop.stopped_at}})
    return out


def read_model_dbs(store: Store, models: Sequence[ReadModel]) -> dict[str, ReadDB]:
    """Each read model's database (its tables created), without keeping a connection pool open."""
    out = {}
    for model in models:
        view = View(store, model)
        view.close()
        out[model.name] = view.db
    return out


def catch_up(ledger: Ledger, models: Sequence[ReadModel], *, retry: bool = False,
             step: Callable[[str, int | None], Callable[[int], None]] | None = None) -> list[Stop]:
    """Bring each read model up to date (a stopped one is tried again with ``retry``); each goes on
    whatever another does. ``step(label, total)`` reports progress. Returns the stops that remain."""
    stops = []
    for model in models:
        projector = Projector(ledger, model)
        behind = ledger.position() - projector.view.position(ledger.name)
        on_page: Callable[[int, int], None] | None = None
        if step is not None:
            advance = step(f"project {model.name}", behind)

            def on_page(n: int, _pos: int, a: Callable[[int], None] = advance) -> None:
                a(n)

        projector.catch_up(on_page, retry=retry)
        stop = projector.view.stopped()
        if stop is not None:
            stops.append(stop)
    return stops

