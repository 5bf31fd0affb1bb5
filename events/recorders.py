"""eventsourcing recorders for the ledger, with the tables that must commit with the events.

The message index (``source``/``message_id`` -> content hash), the quarantine and the per-source
feed counts are written in the same transaction as the stored events and the tracking position,
so a crash can never leave an event without its idempotency key, or an offset without its batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast
from uuid import UUID

from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder

from events.sealing import Sealer

# Rows passed to insert_events(..., admissions=, quarantine=, counts=)
AdmissionRow = tuple[str, str, str, str, str, str, str, int]
QuarantineRow = tuple[str, str | None, str | None, str, str, bytes]
CountRow = tuple[str, int, int, int, str]

_TABLES = (
    "CREATE TABLE IF NOT EXISTS {s}ledger_message_index ("
    " message_key TEXT PRIMARY KEY, source TEXT NOT NULL, message_id TEXT NOT NULL,"
    " patient_id TEXT NOT NULL, type TEXT NOT NULL, content_hash TEXT NOT NULL,"
    " originator_id TEXT NOT NULL, originator_version BIGINT NOT NULL){without_rowid}",
    "CREATE TABLE IF NOT EXISTS {s}ledger_quarantine ("
    " id {serial} PRIMARY KEY, received_at TEXT NOT NULL, source TEXT, message_id TEXT,"
    " position TEXT NOT NULL, reason TEXT NOT NULL, raw {blob} NOT NULL)",
    # Quarantined Kafka messages already sent to the dead-letter topic (an outbox: sent after commit).
    "CREATE TABLE IF NOT EXISTS {s}ledger_dead_letters ("
    " quarantine_id BIGINT PRIMARY KEY, sent_at TEXT NOT NULL)",
    # Record batches a consumer could not decode (a missing codec, a corrupt batch): it stopped there.
    "CREATE TABLE IF NOT EXISTS {s}ledger_feed_faults ("
    " id {serial} PRIMARY KEY, tracking TEXT NOT NULL, topic TEXT NOT NULL, partition_no BIGINT NOT NULL,"
    " at_offset BIGINT NOT NULL, cause TEXT NOT NULL, fix TEXT NOT NULL, noted_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}ledger_feed_counts ("
    " source TEXT PRIMARY KEY, accepted BIGINT NOT NULL, duplicates BIGINT NOT NULL,"
    " quarantined BIGINT NOT NULL, last_message_at TEXT NOT NULL)",
)
_INSERT_ADMISSION = (
    "INSERT INTO {s}ledger_message_index VALUES ({p},{p},{p},{p},{p},{p},{p},{p})"
)
_INSERT_QUARANTINE = (
    "INSERT INTO {s}ledger_quarantine (received_at, source, message_id, position, reason, raw)"
    " VALUES ({p},{p},{p},{p},{p},{p})"
)
_UPSERT_COUNTS = (
    "INSERT INTO {s}ledger_feed_counts VALUES ({p},{p},{p},{p},{p})"
    " ON CONFLICT (source) DO UPDATE SET"
    " accepted = {s}ledger_feed_counts.accepted + excluded.accepted,"
    " duplicates = {s}ledger_feed_counts.duplicates + excluded.duplicates,"
    " quarantined = {s}ledger_feed_counts.quarantined + excluded.quarantined,"
    " last_message_at = excluded.last_message_at"
)


def is_conflict(exc: IntegrityError) -> bool:
    """Did another writer take a key, a stream version or a position first (a unique constraint), rather
    than the store refusing the data itself (a check, a trigger, NOT NULL)?"""
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("psycopg"):
        from psycopg.errors import UniqueViolation

        return isinstance(cause, UniqueViolation)
    text = str(exc)
    return "UNIQUE constraint" in text or "PRIMARY KEY" in text or "Failed to record tracking" in text


def refusal(exc: BaseException) -> str | None:
    """``"conflict"`` when another writer got there first, ``"refused"`` when the store refused something
    in the data (a value it cannot keep, a constraint it enforces), None for anything else (a lost
    connection, a full disk: OperationalError)."""
    if isinstance(exc, IntegrityError):
        return "conflict" if is_conflict(exc) else "refused"
    if isinstance(exc, (DataError, UnicodeError)):
        return "refused"
    if isinstance(exc, OperationalError) and type(exc.__cause__).__name__ == "PipelineAborted":
        # PostgreSQL's pipeline reports a refused statement as an aborted pipeline; a probe (no pipeline)
        # tells which message, and raises this again if none is to blame.
        return "refused"
    return None


FEED_FAULTS_QUERY = ("SELECT tracking, topic, partition_no, at_offset, cause, fix, noted_at"
                     " FROM {s}ledger_feed_faults ORDER BY id DESC")


def feed_faults_from(rows: Sequence[Sequence[Any]], stored: dict[str, int]) -> list[dict[str, Any]]:
    """Fault rows as dicts, each ``open`` while the ledger has not stored its offset (the consumer has
    not got past the batch)."""
    names = ("tracking", "topic", "partition", "offset", "cause", "fix", "noted_at")
    out = []
    for row in rows:
        fault = dict(zip(names, row, strict=True))
        fault["open"] = stored.get(fault["tracking"], -1) < fault["offset"]
        out.append(fault)
    return out


class IndexedMessage(NamedTuple):
    """What the ledger remembers of an accepted message, to judge re-deliveries and amendments."""

    message_key: str
    patient_id: str
    type: str
    content_hash: str


class LedgerTables:
    """Queries shared by both backends; subclasses give the placeholder and the cursor.

    With encryption at rest on, ids are stored as tokens and quarantined messages sealed
    (``events.sealing``); every method here takes and returns them in clear.
    """

    sealer = Sealer(None)
    #: a batch refused for a key already taken costs little (ingest then judges without reading the
    #: message index first, and again with it when refused)
    refuses_taken_keys_cheaply = True
    placeholder = "?"
    serial = "INTEGER"
    blob = "BLOB"
    schema_prefix = ""
    without_rowid = " WITHOUT ROWID"

    def _sql(self, template: str) -> str:
        return template.format(
            s=self.schema_prefix, p=self.placeholder, serial=self.serial, blob=self.blob,
            without_rowid=self.without_rowid,
        )

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def probe_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        raise NotImplementedError

    def _write_extras(self, c: Any, kwargs: dict[str, Any]) -> None:
        admissions: list[AdmissionRow] = kwargs.get("admissions") or []
        quarantine: list[QuarantineRow] = kwargs.get("quarantine") or []
        counts: list[CountRow] = kwargs.get("counts") or []
        s = self.sealer
        if admissions:
            if s.enabled:
                admissions = [(s.token(key), source, s.token(mid), s.token(pid), typ, content, oid, version)
                              for key, source, mid, pid, typ, content, oid, version in admissions]
            self._insert_admissions(c, admissions)
        if quarantine:
            if s.enabled:
                quarantine = [(at, source, s.seal(mid), position, s.seal(reason) or "", s.seal_bytes(raw))
                              for at, source, mid, position, reason, raw in quarantine]
            c.executemany(self._sql(_INSERT_QUARANTINE), quarantine)
        if counts:
            c.executemany(self._sql(_UPSERT_COUNTS), counts)

    def _insert_admissions(self, c: Any, admissions: list[AdmissionRow]) -> None:
        c.executemany(self._sql(_INSERT_ADMISSION), admissions)

    def _key_in(self, keys: list[str]) -> tuple[str, list[Any]]:
        """``message_key IN (...)`` for ``keys``, as SQL and parameters."""
        return "message_key IN (" + ",".join([self.placeholder] * len(keys)) + ")", keys

    #: keys per lookup query
    lookup_chunk = 500

    def lookup_messages(self, keys: Iterable[str]) -> dict[str, IndexedMessage]:
        found: dict[str, IndexedMessage] = {}
        s = self.sealer
        unique = [s.token(k) for k in dict.fromkeys(keys)]
        for start in range(0, len(unique), self.lookup_chunk):
            where, params = self._key_in(unique[start : start + self.lookup_chunk])
            rows = self._fetch(
                self._sql(
                    "SELECT message_key, patient_id, type, content_hash"
                    " FROM {s}ledger_message_index WHERE " + where
                ),
                params,
            )
            for r in rows:
                key = s.untoken(r[0])
                found[key] = IndexedMessage(key, s.untoken(r[1]), r[2], r[3])
        return found

    def patient_versions(self, ids: Iterable[str]) -> dict[str, int]:
        """The last version of each stream (ids as hex)."""
        raise NotImplementedError

    def quarantined(self) -> list[dict[str, Any]]:
        rows = self._fetch(
            self._sql(
                "SELECT id, received_at, source, message_id, position, reason, raw"
                " FROM {s}ledger_quarantine ORDER BY id"
            )
        )
        names = ("id", "received_at", "source", "message_id", "position", "reason", "raw")
        s = self.sealer
        return [dict(zip(names, (i, at, source, s.unseal(mid), position, s.unseal(reason),
                                 s.unseal_bytes(bytes(raw))), strict=True))
                for i, at, source, mid, position, reason, raw in rows]

    def undelivered_dead_letters(self, topic: str, after_id: int = 0) -> list[dict[str, Any]]:
        """Messages quarantined from ``topic`` (with ids above ``after_id``) that have not yet gone to
        its dead-letter topic."""
        rows = self._fetch(self._sql(
            "SELECT q.id, q.position, q.reason, q.raw FROM {s}ledger_quarantine q"
            " LEFT JOIN {s}ledger_dead_letters d ON d.quarantine_id = q.id"
            " WHERE q.id > {p} AND d.quarantine_id IS NULL AND q.position LIKE {p} ORDER BY q.id"),
            [after_id, '{"topic": %'])
        s = self.sealer
        out = []
        for i, position, reason, raw in rows:
            where = json.loads(position)
            if where.get("topic") == topic:
                out.append({"id": i, "position": where, "reason": s.unseal(reason), "raw": s.unseal_bytes(bytes(raw))})
        return out

    def dead_lettered(self) -> dict[int, str]:
        """Quarantine id -> when its dead letter was sent."""
        return dict(self._fetch(self._sql("SELECT quarantine_id, sent_at FROM {s}ledger_dead_letters")))

    def mark_dead_lettered(self, ids: Sequence[int], sent_at: str) -> None:
        self._write(self._sql("INSERT INTO {s}ledger_dead_letters VALUES ({p},{p})"
                              " ON CONFLICT (quarantine_id) DO NOTHING"), [(i, sent_at) for i in ids])

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def record_feed_fault(self, tracking: str, topic: str, partition: int, offset: int, cause: str, fix: str,
                          noted_at: str) -> None:
        self._write(self._sql("INSERT INTO {s}ledger_feed_faults (tracking, topic, partition_no, at_offset, cause,"
                              " fix, noted_at) VALUES ({p},{p},{p},{p},{p},{p},{p})"),
                    [(tracking, topic, partition, offset, cause, fix, noted_at)])

    def feed_faults(self) -> list[dict[str, Any]]:
        """Batches a consumer stopped at, newest first; ``open`` while the ledger has not stored that
        offset (the consumer has not got past it)."""
        rows = self._fetch(self._sql(FEED_FAULTS_QUERY))
        return feed_faults_from(rows, self.tracking_positions("kafka:") if rows else {})

    def tracking_table(self) -> str:
        raise NotImplementedError

    def tracking_positions(self, prefix: str) -> dict[str, int]:
        """Stored upstream positions whose name starts with ``prefix`` (e.g. ``kafka:``)."""
        rows = self._fetch(
            f"SELECT application_name, notification_id FROM {self.tracking_table()}"
            f" WHERE application_name LIKE {self.placeholder}",
            [prefix.replace("%", "") + "%"],
        )
        return {name: position for name, position in rows}

    def message_digest(self) -> tuple[int, str]:
        """How many messages the ledger accepted, and a digest of their keys and contents."""
        import hashlib

        rows = self._fetch(self._sql("SELECT message_key, content_hash FROM {s}ledger_message_index"))
        digest = hashlib.sha256()
        for key, content in sorted((self.sealer.untoken(k), c) for k, c in rows):
            digest.update(f"{key}\t{content}\n".encode())
        return len(rows), digest.hexdigest()

    def feed_counts(self) -> list[dict[str, Any]]:
        rows = self._fetch(
            self._sql(
                "SELECT source, accepted, duplicates, quarantined, last_message_at"
                " FROM {s}ledger_feed_counts ORDER BY source"
            )
        )
        names = ("source", "accepted", "duplicates", "quarantined", "last_message_at")
        return [dict(zip(names, r, strict=True)) for r in rows]


def hex_id(originator_id: UUID | str) -> str:
    """A stream id as ingest passes it (hex) or as the library does (a UUID)."""
    return originator_id if isinstance(originator_id, str) else originator_id.hex


class SQLiteLedgerRecorder(LedgerTables, SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + [self._sql(t) for t in _TABLES]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # One executemany instead of the library's row-by-row inserts (which exist only to
        # return each row id): nothing of ours reads those ids, and it is 5 times faster.
        c.executemany(
            self.insert_events_statement,
            [(hex_id(s.originator_id), s.originator_version, s.topic, s.state) for s in stored_events],
        )
        tracking = kwargs.get("tracking")
        if tracking is not None:
            self._insert_tracking(c, tracking)
        self._write_extras(c, kwargs)
        return None

    def probe_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Write what ``insert_events`` writes, on the writer's connection, and roll it back: raises
        what the store would raise, stores nothing."""
        with self.datastore.get_connection(commit=True) as conn, conn.transaction(commit=False) as c:
            self._insert_events(c, stored_events, **kwargs)

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [tuple(r) for r in c.fetchall()]

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(sql, rows)

    def tracking_table(self) -> str:
        return "tracking"

    def patient_versions(self, ids: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for oid, version in self._fetch(
                f"SELECT originator_id, MAX(originator_version) FROM {self.events_table_name}"
                f" WHERE originator_id IN ({marks}) GROUP BY originator_id",
                chunk,
            ):
                out[oid] = version
        return out


class PostgresLedgerRecorder(LedgerTables, PostgresProcessRecorder):
    # A taken key aborts the pipeline, which the library retries for about a second; the index read by
    # key array costs little here.
    refuses_taken_keys_cheaply = False
    placeholder = "%s"
    serial = "BIGSERIAL"
    blob = "BYTEA"
    without_rowid = ""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        from psycopg.sql import SQL

        self.schema_prefix = f'"{self.datastore.schema}".'
        self.sql_create_statements.extend(cast(Any, SQL(self._sql(t))) for t in _TABLES)

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        self._write_extras(curs, kwargs)

    # Whole batches go as one array per column (dumped in binary) in one statement: executemany costs
    # a round of parameter dumping per row, and IN lists a query parse per chunk.
    lookup_chunk = 1 << 30

    def _key_in(self, keys: list[str]) -> tuple[str, list[Any]]:
        return "message_key = ANY(%b::text[])", [keys]

    def _insert_admissions(self, c: Any, admissions: list[AdmissionRow]) -> None:
        columns = list(zip(*admissions, strict=True))
        c.execute(self._sql("INSERT INTO {s}ledger_message_index SELECT * FROM unnest("
                            "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
                            " %b::bigint[])").encode(), [list(col) for col in columns])

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        # The library sends a batch as one array of a composite type, which psycopg dumps as text with
        # a regular expression per field (about 40 us an event on our machines); one array per column
        # goes in binary. The table lock and the notification stay as the library has them: they keep
        # notification ids in commit order for readers.
        from psycopg.sql import SQL, Identifier

        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            SQL("INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
                " SELECT * FROM unnest(%b::text[]::{oid}[], %b::bigint[], %b::text[], %b::bytea[])").format(
                schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name),
                oid=Identifier(self.datastore.originator_id_type)),
            [[hex_id(s.originator_id) for s in stored_events], [s.originator_version for s in stored_events],
             [s.topic for s in stored_events], [s.state for s in stored_events]],
        )

    def probe_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Write what ``insert_events`` writes in a transaction that is rolled back: raises what the
        store would raise, stores nothing (sequence numbers it drew leave a gap, as any rollback does)."""
        with self.datastore.transaction(commit=False) as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if stored_events:
                self._insert_stored_events(curs, stored_events, **kwargs)

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> None:
        return None  # nothing of ours reads the new notification ids

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql.encode(), params, prepare=False)
            return [tuple(r.values()) for r in c.fetchall()]

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(sql.encode(), rows)

    def tracking_table(self) -> str:
        return f'{self.schema_prefix}"{self.tracking_table_name}"'


    def patient_versions(self, ids: Iterable[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        rows = self._fetch(
            f'SELECT originator_id, MAX(originator_version) FROM {self.schema_prefix}"'
            f'{self.events_table_name}" WHERE originator_id = ANY(%b::text[]::uuid[]) GROUP BY originator_id',
            [unique],
        )
        return {oid.hex: version for oid, version in rows}
