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
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from eventsourcing.persistence import DatabaseError, IntegrityError, InterfaceError, OperationalError, Tracking
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory, SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from events.ledger import Ledger
from events.recorders import is_conflict
from events.store import Store
from events.strict_json import storable
from projections.db import ReadDB, no_cycle_collection

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


@dataclass(frozen=True)
class Stop:
    """A read model that could not apply an event: it holds everything before ``notification_id``."""

    model: str
    position: int  #: the last ledger notification applied
    notification_id: int  #: the event it could not apply
    reason: str
    stopped_at: str

    def sentence(self) -> str:
        return (f"the {self.model} read model stopped at ledger position {self.position}: event "
                f"{self.notification_id} could not be applied ({self.reason})")


class ReadModelStopped(Exception):
    """A query needs a read model that has stopped: its answer would silently miss events."""

    def __init__(self, stop: Stop):
        super().__init__(f"{stop.sentence()}; its answers would miss that event and every later one, so none "
                         "is given. Fix the cause, then run safety-monitor project (it tries again) or rebuild")
        self.stop = stop


class _StorableText:
    """A cursor whose text parameters are made storable (``events.strict_json.storable``): the second try
    of a page that the store refused, so any event the ledger accepted can be projected."""

    def __init__(self, cursor: Any):
        self._cursor = cursor

    @staticmethod
    def _clean(params: Any) -> Any:
        if isinstance(params, dict):
            return {k: storable(v) if isinstance(v, str) else v for k, v in params.items()}
        return [storable(v) if isinstance(v, str) else v for v in params]

    def execute(self, sql: Any, params: Any = ()) -> Any:
        return self._cursor.execute(sql, self._clean(params))

    def executemany(self, sql: Any, rows: Any) -> Any:
        return self._cursor.executemany(sql, [self._clean(r) for r in rows])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def not_the_data(exc: BaseException) -> bool:
    """A write that failed for a rival projector or a lost connection, not for what it wrote."""
    return isinstance(exc, (PageTaken, OperationalError, InterfaceError)) or (
        isinstance(exc, IntegrityError) and is_conflict(exc))


_STOP_QUERY = ("SELECT model, position, notification_id, reason, stopped_at FROM {t}read_model_stops"
               " WHERE model = {p}")


def stop_in(db: ReadDB, model: str) -> Stop | None:
    """A read model's recorded stop, read over a plain connection (for readers that keep no pool open)."""
    rows = db.query(_STOP_QUERY, [model]) if db.table_exists("read_model_stops") else []
    return Stop(*rows[0]) if rows else None


def position_in(db: ReadDB, model: str) -> int:
    """A read model's tracked ledger position, read over a plain connection: on a partitioned store the
    least of its segments' (everything before it is projected in every segment)."""
    return min(positions_in(db, model))


def positions_in(db: ReadDB, model: str) -> tuple[int, ...]:
    """A read model's tracked position, or each segment's on a partitioned store: what moves whenever any
    part of the read model changes (a key for answers kept between visits)."""
    from projections.partitions import partitions_of, segment_positions

    count = partitions_of(db)
    if count is not None:
        positions = segment_positions(db, model, Ledger.name)
        return tuple(positions.get(k, 0) for k in range(count))
    table = "tracking" if db.kind == "sqlite" else f'{{t}}"{model}_tracking"'
    rows = db.query(f"SELECT MAX(notification_id) FROM {table} WHERE application_name = {{p}}", [Ledger.name])
    return (int(rows[0][0] or 0),)


#: what PostgreSQL and eventsourcing say when another process made a tracking table at the same moment
#: (a relation or its row type "already exists", or the catalogue's unique index says so; the library's
#: migration row is inserted by one of them only)
_CREATION_RACES = ("already exists", "concurrently", "pg_type_typname_nsp_index", "pg_class_relname_nsp_index",
                   "Failed to record tracking for __migration__")
#: the relation a read model's statement makes (``View._missing``)
_CREATED = re.compile(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS ([\w.\"]+)")


class _DerivedPool(SQLiteConnectionPool):
    """Connections to a read model's own SQLite file, which wait for the disk at checkpoints instead of at
    every commit (``synchronous=NORMAL`` in WAL mode). A read model is derived: a power cut can undo its
    last commits, never half of one, and its tracked position goes back with them, so the next catch-up
    projects those events again from the ledger (which keeps syncing every commit)."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection


class View:
    """A read model's database and tracking position."""

    def __init__(self, store: Store, model: ReadModel):
        self.store = store
        self.model = model
        if store.kind == "sqlite":
            path = store.sibling(model.name)
            self.db = ReadDB(store, sqlite_path=path)
            env = Environment(name=model.name, env={"SQLITE_DBNAME": str(path), "SQLITE_LOCK_TIMEOUT": "30"})
            factory = SQLiteFactory(env)
            factory.datastore.pool.close()  # unused yet: its connections would sync every commit
            factory.datastore.pool = _DerivedPool(db_name=str(path), lock_timeout=30)
            self.recorder: Any = factory.tracking_recorder(SQLiteTrackingRecorder)
        else:
            self.db = ReadDB(store)
            settings = store.eventsourcing_env("")
            settings.pop("PROCESS_RECORDER_TOPIC")
            env = Environment(name=model.name, env=settings)
            for attempt in range(5):  # processes starting together race to make the tracking table
                try:
                    self.recorder = PostgresFactory(env).tracking_recorder(PostgresTrackingRecorder)
                    break
                except DatabaseError as exc:  # IntegrityError, OperationalError, ProgrammingError
                    if attempt == 4 or not any(s in str(exc) for s in _CREATION_RACES):
                        raise
                    time.sleep(0.1 * (attempt + 1))
        self._create_tables()

    def _create_tables(self) -> None:
        statements = [*self.model.create_statements(self.db), self.db.sql(
            "CREATE TABLE IF NOT EXISTS {t}read_model_stops (model TEXT PRIMARY KEY, position BIGINT NOT NULL,"
            " notification_id BIGINT NOT NULL, reason TEXT NOT NULL, stopped_at TEXT NOT NULL)")]
        if self.store.kind == "postgresql" and not self._missing(statements):
            return  # nothing to make, and nothing locked: CREATE INDEX IF NOT EXISTS locks its table first,
            # which deadlocked a starting worker with one writing
        with self.recorder.datastore.transaction(commit=True) as c:
            if self.store.kind == "postgresql":  # processes starting together would race in the catalogue
                c.execute("SELECT pg_advisory_xact_lock(hashtext('safety-monitor/create-tables'))")
            for statement in statements:
                c.execute(statement)

    def _missing(self, statements: Sequence[str]) -> list[str]:
        """The tables and indexes these statements make that the store's schema lacks (PostgreSQL)."""
        names = [m.group(1).rpartition(".")[2].strip('"') for m in map(_CREATED.match, statements) if m]
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute("SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace"
                      " WHERE nspname = %s AND relname = ANY(%s)", (self.store.schema, names))
            found = {row["relname"] for row in c.fetchall()}
        return [n for n in names if n not in found] if len(names) == len(statements) else ["(unnamed)"]

    def close(self) -> None:
        """Close the recorder's connections (a caller that only wanted the tables and the database)."""
        self.recorder.datastore.close()

    def stopped(self) -> Stop | None:
        """The recorded stop of this read model, if it has stopped."""
        with self.recorder.datastore.transaction(commit=False) as c:  # pooled: asked before every catch-up
            c.execute(self.db.sql(_STOP_QUERY), (self.model.name,))
            rows = self.db.fetch(c)
        return Stop(*rows[0]) if rows else None

    def record_stop(self, notification_id: int, reason: str, upstream: str | None = None) -> Stop:
        stop = Stop(self.model.name, self.position(upstream or self.LEDGER), notification_id, storable(reason),
                    datetime.now(UTC).isoformat(timespec="seconds"))
        with self.recorder.datastore.transaction(commit=True) as c:
            c.execute(self.db.sql("DELETE FROM {t}read_model_stops WHERE model = {p}"), (stop.model,))
            c.execute(self.db.sql("INSERT INTO {t}read_model_stops VALUES ({p},{p},{p},{p},{p})"),
                      (stop.model, stop.position, stop.notification_id, stop.reason, stop.stopped_at))
        return stop

    def clear_stop(self) -> None:
        with self.recorder.datastore.transaction(commit=True) as c:
            c.execute(self.db.sql("DELETE FROM {t}read_model_stops WHERE model = {p}"), (self.model.name,))

    def _segment_count(self, c: Any) -> int | None:
        """The store's segment count when its projections are partitioned (PostgreSQL), else None."""
        c.execute("SELECT to_regclass(%s) AS found", (f'"{self.store.schema}".projection_config',))
        if c.fetchone()["found"] is None:
            return None
        c.execute(self.db.sql("SELECT value FROM {t}projection_config WHERE key = 'segments'"))
        row = c.fetchone()
        return int(row["value"]) if row else None

    def opening(self, upstream: str, segments: bool) -> tuple[Stop | None, int, int | None]:
        """What every catch-up asks first, in one transaction over the view's pooled connection (on
        PostgreSQL each transaction costs round trips): the recorded stop, the tracked position of
        ``upstream``, and with ``segments`` the store's segment count when it is partitioned."""
        table = "tracking" if self.store.kind == "sqlite" else f'{{t}}"{self.model.name}_tracking"'
        with self.recorder.datastore.transaction(commit=False) as c:
            count = self._segment_count(c) if segments and self.store.kind == "postgresql" else None
            c.execute(self.db.sql(_STOP_QUERY), (self.model.name,))
            stops = self.db.fetch(c)
            c.execute(self.db.sql(f"SELECT MAX(notification_id) FROM {table} WHERE application_name = {{p}}"),
                      (upstream,))
            position = self.db.fetch(c)[0][0] or 0
        return (Stop(*stops[0]) if stops else None), int(position), count

    def position(self, upstream: str) -> int:
        return self.recorder.max_tracking_id(upstream) or 0

    #: the upstream name of the ledger in tracking rows
    LEDGER = Ledger.name

    def write(self, events: Sequence[tuple[int, Any]], tracking: Tracking, after: int, *,
              storable_text: bool = False, model: ReadModel | None = None) -> None:
        """Rows for ``events`` and the tracking position, in one transaction, provided the position is
        still ``after``: another projector of the same read model may have written them meanwhile.
        ``storable_text`` escapes what the store cannot keep in text (a NUL on PostgreSQL); ``model``, a
        segment's own instance of the read model (``projections.partitions``)."""
        with self.recorder.datastore.transaction(commit=True) as c:
            self._claim(c, tracking.application_name, after)
            (model or self.model).write(_StorableText(c) if storable_text else c, self.db, events)
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

    def finish(self, model: ReadModel | None = None) -> None:
        """Let the model complete deferred work (e.g. evaluate patients touched by a rebuild)."""
        finish = getattr(model or self.model, "finish", None)
        if finish is None:
            return
        prepare = getattr(model or self.model, "prepare", None)
        if prepare is not None and not getattr(model or self.model, "prepared", False):
            # committed first: what other connections of the model's work must see (no transaction when
            # there is nothing to prepare: every live catch-up passes here)
            with self.recorder.datastore.transaction(commit=True) as c:
                prepare(c, self.db)
        try:
            with no_cycle_collection(), self.recorder.datastore.transaction(commit=True) as c:
                finish(c, self.db)
        except Exception as exc:
            if not_the_data(exc):
                raise
            with self.recorder.datastore.transaction(commit=True) as c:  # once more, text escaped
                finish(_StorableText(c), self.db)

    def reset(self) -> None:
        """Empty the read model and forget its position (for a rebuild from zero)."""
        with self.recorder.datastore.transaction(commit=True) as c:
            for table in self.model.tables:
                c.execute(self.db.sql(f"DELETE FROM {{t}}{table}"))
            c.execute(self.db.sql("DELETE FROM {t}read_model_stops WHERE model = {p}"), (self.model.name,))
            if self.store.kind == "sqlite":
                c.execute("DELETE FROM tracking WHERE application_name != '__migration__'")
            else:
                c.execute(
                    self.db.sql(f'DELETE FROM {{t}}"{self.model.name}_tracking" '
                                "WHERE application_name != '__migration__'")
                )


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
            self.view.finish(self.model)
            return 0
        model = self.model
        deferring = hasattr(model, "defer") and head - start > self.page
        if deferring:
            model.defer = True  # type: ignore[attr-defined]
        try:
            return self._pages(start, upstream, on_page, head)
        finally:
            if deferring:
                model.defer = False  # type: ignore[attr-defined]
                self.view.finish(self.model)

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

