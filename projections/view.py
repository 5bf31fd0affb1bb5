"""A read model's database and tracked position: its tables, the stop it records when an event cannot be
projected, and its eventsourcing tracking recorder (``<name>_tracking`` in the store's schema on
PostgreSQL; on SQLite a file of its own next to the ledger, the library's SQLite tracking table not being
namespaced). ``projections.runner`` follows the ledger into it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

from eventsourcing.persistence import DatabaseError, IntegrityError, InterfaceError, OperationalError, Tracking
from eventsourcing.postgres import PostgresFactory, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory, SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from events.ledger import Ledger
from events.recorders import is_conflict
from events.store import Store
from events.strict_json import storable
from projections.db import COPY_FROM, ReadDB, asked, no_cycle_collection, pipeline

log = logging.getLogger(__name__)


class ReadModel(Protocol):
    """What a projection writes: its tables, and rows for a page of ledger events."""

    name: str
    topics: tuple[str, ...]
    tables: tuple[str, ...]

    def create_statements(self, db: ReadDB) -> list[str]: ...

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None: ...


@runtime_checkable
class PageRows(Protocol):
    """A read model whose pages can be turned into rows apart from writing them: ``rows`` is pure (no I/O,
    nothing of the instance changed), so a bulk load runs it in worker processes (``projections.bulk``);
    ``write`` is ``write_rows`` of ``rows``."""

    def rows(self, db: ReadDB, events: Sequence[tuple[int, Any]]) -> Any: ...

    def write_rows(self, cursor: Any, db: ReadDB, rows: Any) -> None: ...


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


#: a read model's revision per writer (the ledger, or a segment of it): a count of the commits that changed
#: what it holds. Its tracked position is no such thing: it moves to the ledger's head at every poll, also
#: past events of other topics (a board's sign-in is an audit entry), so answers kept by position were
#: counted again after every event of the ledger.
_REVISIONS = ("CREATE TABLE IF NOT EXISTS {t}read_model_revisions (model TEXT NOT NULL, writer TEXT NOT NULL,"
              " revision BIGINT NOT NULL, PRIMARY KEY (model, writer))")
_NEXT_REVISION = ("INSERT INTO {t}read_model_revisions AS r VALUES ({p}, {p}, 1) ON CONFLICT (model, writer)"
                  " DO UPDATE SET revision = r.revision + 1")


def revision_in(db: ReadDB, model: str) -> tuple[int, ...]:
    """A read model's revision, each writer's: it moves with every commit that changes what the model holds
    (events of its topics written, deferred work done, a rebuild begun) and with nothing else. The key of
    an answer the board keeps between visits."""
    if not db.table_exists("read_model_revisions"):
        return ()
    rows = db.query("SELECT revision FROM {t}read_model_revisions WHERE model = {p} ORDER BY writer", [model])
    return tuple(int(r[0]) for r in rows)


def positions_in(db: ReadDB, model: str) -> tuple[int, ...]:
    """A read model's tracked position, or each segment's on a partitioned store."""
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


def _made(statement: str) -> str | None:
    """The name of the table or index a create statement makes (without its schema), or None."""
    m = _CREATED.match(statement)
    return m.group(1).rpartition(".")[2].strip('"') if m else None


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
            " notification_id BIGINT NOT NULL, reason TEXT NOT NULL, stopped_at TEXT NOT NULL)"),
            self.db.sql(_REVISIONS)]
        if self.store.kind == "postgresql" and not self._missing(statements):
            return  # nothing to make, and nothing locked: CREATE INDEX IF NOT EXISTS locks its table first,
            # which deadlocked a starting worker with one writing
        with self.recorder.datastore.transaction(commit=True) as c:
            if self.store.kind == "postgresql":  # processes starting together would race in the catalogue
                c.execute("SELECT pg_advisory_xact_lock(hashtext('safety-monitor/create-tables'))")
            for statement in statements:
                c.execute(statement)

    def deferred_indexes(self) -> list[tuple[str, str]]:
        """(name, statement) of the indexes the model lets a bulk load make at its end (``deferred_indexes``:
        nothing its writes do reads them). Filled in notification order, an index takes a leaf far from
        the last one for every row, and each page's commit wrote most of those leaves again."""
        names = set(getattr(self.model, "deferred_indexes", ()))
        made = ((_made(s), s) for s in self.model.create_statements(self.db))
        return [(name, s) for name, s in made if name is not None and name in names]

    def drop_indexes(self, names: Sequence[str]) -> None:
        with self.recorder.datastore.transaction(commit=True) as c:
            for name in names:
                c.execute(self.db.sql(f"DROP INDEX IF EXISTS {{t}}{name}"))

    def make(self, statements: Sequence[str]) -> None:
        with self.recorder.datastore.transaction(commit=True) as c:
            for statement in statements:
                c.execute(statement)

    def _missing(self, statements: Sequence[str]) -> list[str]:
        """The tables and indexes these statements make that the store's schema lacks (PostgreSQL)."""
        names = [name for name in map(_made, statements) if name is not None]
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
        """The store's segment count, read from its projection_config table (a partitioned store's)."""
        c.execute(self.db.sql("SELECT value FROM {t}projection_config WHERE key = 'segments'"))
        row = c.fetchone()
        return int(row["value"]) if row else None

    def opening(self, upstream: str, segments: bool) -> tuple[Stop | None, int, int | None]:
        """What every catch-up asks first: the recorded stop, the tracked position of ``upstream``, and with
        ``segments`` the store's segment count when it is partitioned. On PostgreSQL in one statement, as
        each costs a round trip (three of them were 0.55 ms of a live catch-up); the segment count only
        when the store has a projection_config table."""
        table = "tracking" if self.store.kind == "sqlite" else f'{{t}}"{self.model.name}_tracking"'
        tracked = f"SELECT MAX(notification_id) FROM {table} WHERE application_name = {{p}}"
        if self.store.kind == "postgresql":  # one statement needs no transaction: no BEGIN, no ROLLBACK
            with self.recorder.datastore.cursor() as c:
                c.execute(self.db.sql(f"SELECT ({tracked}) AS tracked, to_regclass({{p}}) IS NOT NULL AS partitioned,"
                                      f" s.* FROM (SELECT 1) AS one LEFT JOIN ({_STOP_QUERY}) AS s ON TRUE"),
                          (upstream, f'"{self.store.schema}".projection_config', self.model.name))
                position, partitioned, *stop = self.db.fetch(c)[0]
                stops = [tuple(stop)] if stop[0] is not None else []
                count = self._segment_count(c) if segments and partitioned else None
        else:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute(self.db.sql(_STOP_QUERY), (self.model.name,))
                stops = self.db.fetch(c)
                c.execute(self.db.sql(tracked), (upstream,))
                position = self.db.fetch(c)[0][0]
                count = None
        return (Stop(*stops[0]) if stops else None), int(position or 0), count

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
        m = model or self.model
        # a page under COPY_FROM events writes its facts by INSERT, which pipeline mode takes (COPY it refuses)
        self._commit(tracking, after, lambda c: m.write(_StorableText(c) if storable_text else c, self.db, events),
                     pipelined=len(events) < COPY_FROM, changed=bool(events))

    def write_rows(self, rows: Any, tracking: Tracking, after: int) -> None:
        """As ``write``, with the rows the model already made of a page (``PageRows.rows``, in a worker
        process during a bulk load: ``projections.bulk``)."""
        model = cast(PageRows, self.model)
        self._commit(tracking, after, lambda c: model.write_rows(c, self.db, rows), changed=True)

    def _commit(self, tracking: Tracking, after: int, write: Callable[[Any], None], *,
                pipelined: bool = False, changed: bool) -> None:
        """``pipelined``: a small page (the live path), whose cost on PostgreSQL is its round trips, not its
        rows: there it is written in pipeline mode (``_writing``), the claim on the position checked just
        before the commit. ``changed``: the page held events of the model's topics (else it only moves the
        position), so its revision moves."""
        live = pipelined and self.store.kind == "postgresql"
        with self._writing(live) as c:
            check_claim = self._claim(c, tracking.application_name, after)
            if not live:
                check_claim()  # its answer is in: nothing is written unless the position is ours
            write(c)
            if live:
                check_claim()  # its answer came back with the page's first read
            if changed:
                self._next_revision(c, tracking.application_name)
            self.recorder._insert_tracking(c, tracking)

    @contextmanager
    def _writing(self, live: bool) -> Iterator[Any]:
        """A transaction that commits. ``live`` (PostgreSQL, a small page): in pipeline mode
        (``projections.db.pipeline``), its statements sent without waiting for each answer, BEGIN and COMMIT
        among them instead of a round trip each."""
        if not live:
            with self.recorder.datastore.transaction(commit=True) as c:
                yield c
            return
        # BEGIN and COMMIT as statements: psycopg's transaction block waits for an answer on entering it in
        # pipeline mode (the connections are in autocommit mode: a statement alone begins nothing)
        with self.recorder.datastore.get_connection() as conn:
            c = conn.cursor()
            try:
                with pipeline(c):
                    c.execute("BEGIN")
                    yield c
                    c.execute("COMMIT")
            except BaseException:
                with suppress(Exception):  # a lost connection: the server undid it, the pool drops it
                    conn.rollback()  # the transaction if it is still open; nothing if not
                raise

    def _next_revision(self, c: Any, writer: str) -> None:
        c.execute(self.db.sql(_NEXT_REVISION), (self.model.name, writer))

    def _claim(self, c: Any, upstream: str, after: int) -> Callable[[], None]:
        """The check that the tracked position is ``after`` (it raises PageTaken if not), its question asked
        now (``projections.db.asked``). On PostgreSQL the row lock makes a rival wait and then see the new
        position; on SQLite a rival's commit after this read makes this transaction's first write fail (WAL
        snapshot), so neither writes a page twice."""
        sqlite = self.store.kind == "sqlite"
        table = "tracking" if sqlite else f'{{t}}"{self.model.name}_tracking"'
        rows = asked(c, self.db.sql(f"SELECT notification_id FROM {table} WHERE application_name = {{p}}"
                                    + ("" if sqlite else " FOR UPDATE")), (upstream,))

        def check() -> None:
            found = rows()
            current = (found[0][0] if found else 0) or 0
            if current != after:
                raise PageTaken(upstream, after, current)

        return check

    def finish(self, model: ReadModel | None = None, writer: str | None = None) -> None:
        """Let the model complete deferred work (e.g. evaluate patients touched by a rebuild); a ``finish``
        that says it wrote moves the revision of ``writer`` (the ledger, or the segment it is of)."""
        finish = getattr(model or self.model, "finish", None)
        if finish is None:
            return
        prepare = getattr(model or self.model, "prepare", None)
        if prepare is not None and not getattr(model or self.model, "prepared", False):
            # committed first: what other connections of the model's work must see (no transaction when
            # there is nothing to prepare: every live catch-up passes here)
            with self.recorder.datastore.transaction(commit=True) as c:
                prepare(c, self.db)

        def finished(c: Any) -> None:
            if finish(c, self.db):
                self._next_revision(c, writer or self.LEDGER)

        try:
            with no_cycle_collection(), self.recorder.datastore.transaction(commit=True) as c:
                finished(c)
        except Exception as exc:
            if not_the_data(exc):
                raise
            with self.recorder.datastore.transaction(commit=True) as c:  # once more, text escaped
                finished(_StorableText(c))

    def reset(self) -> None:
        """Empty the read model and forget its position (for a rebuild from zero)."""
        with self.recorder.datastore.transaction(commit=True) as c:
            if self.store.kind == "postgresql":  # no dead rows left for vacuum: 1 s -> 0.1 s for a million facts
                c.execute(self.db.sql("TRUNCATE " + ", ".join(f"{{t}}{table}" for table in self.model.tables)))
            else:
                for table in self.model.tables:
                    c.execute(self.db.sql(f"DELETE FROM {{t}}{table}"))
            c.execute(self.db.sql("DELETE FROM {t}read_model_stops WHERE model = {p}"), (self.model.name,))
            # emptied: every writer's revision moves (and never goes back: a rebuild under other rules
            # must not find the answers kept from before it)
            c.execute(self.db.sql("UPDATE {t}read_model_revisions SET revision = revision + 1 WHERE model = {p}"),
                      (self.model.name,))
            self._next_revision(c, self.LEDGER)
            if self.store.kind == "sqlite":
                c.execute("DELETE FROM tracking WHERE application_name != '__migration__'")
            else:
                c.execute(
                    self.db.sql(f'DELETE FROM {{t}}"{self.model.name}_tracking" '
                                "WHERE application_name != '__migration__'")
                )
