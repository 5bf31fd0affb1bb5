"""Projections: read models that follow the ledger, each with its own tracked position.

Built on eventsourcing's tracking recorders: a batch of rows and the tracking position of its last
ledger notification commit in one transaction, so a projection resumes where it stopped and never
counts an event twice. On SQLite each read model lives in its own file next to the ledger (the
library's SQLite tracking table is not namespaced); on PostgreSQL in ``<name>_tracking`` and its
tables in the store's schema. eventsourcing's SQLite recorder has no subscriptions, so projectors
follow by polling (``follow``), which works on both stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError, OperationalError, Tracking
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteFactory, SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from events.ledger import Ledger
from events.store import Store
from projections.db import ReadDB

log = logging.getLogger(__name__)


class ReadModel(Protocol):
    """What a projection writes: its tables, and rows for a page of ledger events."""

    name: str
    topics: tuple[str, ...]
    tables: tuple[str, ...]

    def create_statements(self, db: ReadDB) -> list[str]: ...

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None: ...


class PageTaken(Exception):
    """Another projector of the same read model moved its position first."""

    def __init__(self, upstream: str, expected: int, found: int):
        super().__init__(f"{upstream}: position is {found}, not {expected}")


class View:
    """A read model's database and tracking position."""

    def __init__(self, store: Store, model: ReadModel):
        self.store = store
        self.model = model
        if store.kind == "sqlite":
            path = store.sibling(model.name)
            self.db = ReadDB(store, sqlite_path=path)
            env = Environment(name=model.name, env={"SQLITE_DBNAME": str(path), "SQLITE_LOCK_TIMEOUT": "30"})
            self.recorder: Any = SQLiteFactory(env).tracking_recorder(SQLiteTrackingRecorder)
        else:
            self.db = ReadDB(store)
            settings = store.eventsourcing_env("")
            settings.pop("PROCESS_RECORDER_TOPIC")
            env = Environment(name=model.name, env=settings)
            self.recorder = PostgresFactory(env).tracking_recorder(PostgresTrackingRecorder)
        self._create_tables()

    def _create_tables(self) -> None:
        with self.recorder.datastore.transaction(commit=True) as c:
            for statement in self.model.create_statements(self.db):
                c.execute(statement)

    def position(self, upstream: str) -> int:
        return self.recorder.max_tracking_id(upstream) or 0

    def write(self, events: Sequence[tuple[int, Any]], tracking: Tracking, after: int) -> None:
        """Rows for ``events`` and the tracking position, in one transaction, provided the position is
        still ``after``: another projector of the same read model may have written them meanwhile."""
        with self.recorder.datastore.transaction(commit=True) as c:
            self._claim(c, tracking.application_name, after)
            self.model.write(c, self.db, events)
            self.recorder._insert_tracking(c, tracking)

    def _claim(self, c: Any, upstream: str, after: int) -> None:
        """Raise PageTaken unless the tracked position is ``after``. On PostgreSQL the row lock makes a
        rival wait and then see the new position; on SQLite a rival's commit after this read makes
        this transaction's first write fail (WAL snapshot), so neither writes a page twice."""
        if self.store.kind == "sqlite":
            c.execute("SELECT notification_id FROM tracking WHERE application_name = ?", (upstream,))
            row = c.fetchone()
            current = row[0] if row else 0
        else:
            c.execute(self.db.sql(f'SELECT notification_id FROM {{t}}"{self.model.name}_tracking" '
                                  "WHERE application_name = %s FOR UPDATE"), (upstream,))
            row = c.fetchone()
            current = row["notification_id"] if row else 0
        if (current or 0) != after:
            raise PageTaken(upstream, after, current or 0)

    def finish(self) -> None:
        """Let the model complete deferred work (e.g. evaluate patients touched by a rebuild)."""
        finish = getattr(self.model, "finish", None)
        if finish is not None:
            with self.recorder.datastore.transaction(commit=True) as c:
                finish(c, self.db)

    def reset(self) -> None:
        """Empty the read model and forget its position (for a rebuild from zero)."""
        with self.recorder.datastore.transaction(commit=True) as c:
            for table in self.model.tables:
                c.execute(self.db.sql(f"DELETE FROM {{t}}{table}"))
            if self.store.kind == "sqlite":
                c.execute("DELETE FROM tracking WHERE application_name != '__migration__'")
            else:
                c.execute(
                    self.db.sql(f'DELETE FROM {{t}}"{self.model.name}_tracking" '
                                "WHERE application_name != '__migration__'")
                )


class Projector:
    """Brings one read model up to date with the ledger, page by page."""

    def __init__(self, ledger: Ledger, model: ReadModel, page: int = 2000):
        self.ledger = ledger
        self.view = View(ledger.store, model)
        self.page = page

    def catch_up(self, on_page: Callable[[int, int], None] | None = None) -> int:
        """Process every ledger event after the tracked position; returns how many it processed.

        With a backlog of more than one page, models that can defer per-patient work (signals) do
        it once at the end instead of after every page; what is deferred is noted durably.
        """
        upstream = self.ledger.name
        self.view.finish()  # work left by an interrupted run
        start = self.view.position(upstream)
        model = self.view.model
        deferring = hasattr(model, "defer") and self.ledger.position() - start > self.page
        if deferring:
            model.defer = True  # type: ignore[attr-defined]
        try:
            return self._pages(start, upstream, on_page)
        finally:
            if deferring:
                model.defer = False  # type: ignore[attr-defined]
                self.view.finish()

    def _pages(self, start: int, upstream: str, on_page: Callable[[int, int], None] | None) -> int:
        processed = 0
        topics = self.view.model.topics
        while True:
            head = self.ledger.position()
            notes = self.ledger.notifications(start, self.page, topics=topics)
            try:
                if not notes:
                    if head > start:
                        # Nothing of this model's topics up to the head: remember that, so the next poll
                        # does not scan the same events again (it would, for a model whose topics are rare).
                        self.view.write([], Tracking(upstream, head), after=start)
                    return processed
                events = [(n.id, self.ledger.decode(n)) for n in notes]
                self.view.write(events, Tracking(upstream, notes[-1].id), after=start)
            except (PageTaken, IntegrityError, OperationalError) as exc:
                moved = self.view.position(upstream)
                if moved == start:
                    raise  # not a rival projector: a real failure
                log.info("%s: another projector got to %d first (%s); going on from there",
                         self.view.model.name, moved, exc)
                start = moved
                continue
            start = notes[-1].id
            processed += len(notes)
            if on_page:
                on_page(len(notes), start)

    def rebuild(self, on_page: Callable[[int, int], None] | None = None) -> int:
        """Replay from zero."""
        self.view.reset()
        return self.catch_up(on_page)
