"""Plain DB-API connections to the store, for read models and the queries on them."""

from __future__ import annotations

import gc
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from events.contract_fast import written_alike
from events.sealing import sealer
from events.store import Store


class ReadDB:
    """One database of the store: the ledger file (or a sibling file) on SQLite, a schema on PostgreSQL."""

    def __init__(self, store: Store, sqlite_path: Path | None = None):
        self.store = store
        self.kind = store.kind
        self.sqlite_path = sqlite_path or store.path
        self.prefix = "" if store.kind == "sqlite" else f'"{store.schema}".'
        self.placeholder = "?" if store.kind == "sqlite" else "%s"
        #: tokens for ids and seals for payloads when encryption at rest is on
        self.sealer = sealer()

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            conn: Any = sqlite3.connect(self.sqlite_path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
        else:
            import psycopg

            s = self.store
            conn = psycopg.connect(
                host=s.host, port=s.port, user=s.user, password=s.password or None, dbname=s.dbname,
                connect_timeout=10,
            )
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def sql(self, template: str) -> str:
        """Fill ``{t}`` (table prefix) and ``{p}`` (parameter placeholder) in a statement."""
        return template.replace("{t}", self.prefix).replace("{p}", self.placeholder)

    def query(self, template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(self.sql(template), params)
            return [tuple(r) for r in cur.fetchall()]

    @staticmethod
    def fetch(cursor: Any) -> list[tuple[Any, ...]]:
        """Rows of a cursor as tuples, whichever row factory it has (psycopg dict rows, sqlite3.Row)."""
        return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in cursor.fetchall()]

    def patients_in(self, keys: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        """A condition on ``source`` and ``patient_id`` that holds for these patients, and its parameters:
        on PostgreSQL the pairs as two arrays, where a condition of 500 ORs took 6 ms to plan."""
        if self.kind == "postgresql":
            return ("(source, patient_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    [[source for source, _ in keys], [pid for _, pid in keys]])
        return " OR ".join(["(source = ? AND patient_id = ?)"] * len(keys)), [v for key in keys for v in key]

    def insert(self, cursor: Any, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a table (every column, in order): on PostgreSQL by COPY, where an INSERT per row
        cost 30 µs a row when a rebuild wrote a million facts; by INSERT on SQLite, and through a cursor that
        makes text storable first (the second try of a page the store refused: ``projections.view``)."""
        if not rows:
            return
        if self.kind == "postgresql" and len(rows) >= COPY_FROM and _is_psycopg(cursor) and not in_pipeline(cursor):
            with cursor.copy(self.sql(f"COPY {{t}}{table} FROM STDIN")) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        cursor.executemany(self.sql(f"INSERT INTO {{t}}{table} VALUES ({','.join([self.placeholder] * len(rows[0]))})"),
                           rows)

    def table_exists(self, name: str) -> bool:
        if self.kind == "sqlite":
            rows = self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name={p}", [name])
        else:
            rows = self.query(
                "SELECT 1 FROM information_schema.tables WHERE table_schema={p} AND table_name={p}",
                [self.store.schema, name],
            )
        return bool(rows)


#: rows from which an append is a COPY: below, a COPY's extra round trip costs more than it saves (a live
#: catch-up writes a fact or two)
COPY_FROM = 50


def _is_psycopg(cursor: Any) -> bool:
    import psycopg

    return isinstance(cursor, psycopg.Cursor)


def in_pipeline(cursor: Any) -> bool:
    """Whether the cursor's connection is in pipeline mode (``pipeline``), where COPY is not allowed."""
    from psycopg import pq

    return bool(cursor.connection.pgconn.pipeline_status != pq.PipelineStatus.OFF)


def asked(cursor: Any, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[tuple[Any, ...]]]:
    """A query sent now, its rows read when the result is called: in pipeline mode on PostgreSQL by a
    cursor of its own, so the answer comes back with the next one read instead of in a round trip of its
    own (a live catch-up's questions); elsewhere read at once."""
    if _is_psycopg(cursor) and in_pipeline(cursor):
        own = cursor.connection.cursor()
        own.execute(sql, params)
        return lambda: ReadDB.fetch(own)
    cursor.execute(sql, params)
    rows = ReadDB.fetch(cursor)
    return lambda: rows


@contextmanager
def pipeline(cursor: Any) -> Iterator[None]:
    """On PostgreSQL, the statements of the block sent without waiting for each one's answer, until one is
    read (psycopg's pipeline mode): a live page's writes cost no round trip of their own. Elsewhere, as is."""
    if not _is_psycopg(cursor):
        yield
        return
    with cursor.connection.pipeline():
        yield


def seal_columns(db: ReadDB, columns: Sequence[str], row: tuple[Any, ...], tokens: frozenset[str] | set[str],
                 sealed: frozenset[str] | set[str]) -> tuple[Any, ...]:
    """A row as stored: the ``tokens`` columns (ids) as tokens, the ``sealed`` ones (clinical text)
    sealed, when encryption at rest is on; as it is otherwise."""
    s = db.sealer
    if not s.enabled:
        return row
    return tuple(s.token(v) if c in tokens and v is not None else s.seal(str(v)) if c in sealed and v is not None
                 else v for c, v in zip(columns, row, strict=True))


def open_columns(db: ReadDB, columns: Sequence[str], row: tuple[Any, ...], tokens: frozenset[str] | set[str],
                 sealed: frozenset[str] | set[str]) -> tuple[Any, ...]:
    """A stored row back in clear (``seal_columns`` undone)."""
    s = db.sealer
    if not s.enabled:
        return row
    return tuple(s.untoken(v) if c in tokens and v is not None else s.unseal(v) if c in sealed and v is not None
                 else v for c, v in zip(columns, row, strict=True))


_strict = msgspec.json.Decoder().decode


def loads(text: str | bytes) -> Any:
    """JSON as ``json.loads`` reads it, decoded in C (several times faster on the read side's hot paths);
    what strict JSON refuses (NaN, Infinity, which ``json.dumps`` writes) goes to ``json.loads``."""
    try:
        return _strict(text)
    except msgspec.DecodeError:
        return json.loads(text)


_encode = msgspec.json.Encoder().encode


def dumps(value: Any) -> str:
    """Compact JSON text, as ``json.dumps`` writes it with ``separators=(",", ":")`` and ``ensure_ascii=False``:
    by msgspec where it writes the same (every value but some floats, ``written_alike``), else by json."""
    if written_alike(value):
        return _encode(value).decode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector: a table or a projector's page builds some hundred thousand small
    objects and no cycles, and the collections their allocation sets off cost up to half the time
    (measured: decoding a page of events 7.7 -> 4.6 µs each)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
