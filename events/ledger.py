"""The ledger: an eventsourcing application whose stored events are the accepted messages.

It offers the few operations the write side and the read side need: append a prepared batch in
one transaction, read a patient's stream, and page through the notification log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification, ProcessRecorder, StoredEvent, Tracking

from events.domain import Patient, patient_uuid
from events.encoding import StateDecoder
from events.recorders import AdmissionRow, CountRow, LedgerTables, QuarantineRow
from events.sealing import Sealer, sealer
from events.store import Store

RECORDER_TOPICS = {
    "sqlite": "events.recorders:SQLiteLedgerRecorder",
    "postgresql": "events.recorders:PostgresLedgerRecorder",
}


#: what two processes opening a new store at the same instant may meet: transient, try again
_CREATION_RACES = ("already exists", "Failed to record", "database is locked", "tuple concurrently updated")


class Note(NamedTuple):
    """A notification as a projector reads it (the fields of eventsourcing's Notification)."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


class Ledger(Application):
    """The immutable ledger of accepted registry messages, one stream per patient."""

    name = "Ledger"

    def __init__(self, store: Store, env: dict[str, str] | None = None, seal: Sealer | None = None):
        self.store = store
        seal = seal or sealer()
        settings = store.eventsourcing_env(RECORDER_TOPICS[store.kind])
        settings.update(seal.eventsourcing_env())
        settings.update(env or {})
        for attempt in range(3):
            try:
                super().__init__(env=settings)
                break
            except Exception as exc:
                # Another process creating the same tables at the same instant makes CREATE ...
                # IF NOT EXISTS collide, and SQLite refuses to switch a new file to WAL while another
                # connection does the same; once it has finished, the tables exist.
                if attempt == 2 or not any(s in str(exc) for s in _CREATION_RACES):
                    raise
                time.sleep(0.2)
        self.tables.sealer = seal
        self._decoder = StateDecoder(self.mapper)
        self._stream_ids: dict[str, UUID] = {}

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    @property
    def tables(self) -> LedgerTables:
        return cast(LedgerTables, self.recorder)

    def append_stored(
        self,
        stored: Sequence[StoredEvent],
        *,
        admissions: Sequence[AdmissionRow] = (),
        quarantine: Sequence[QuarantineRow] = (),
        counts: Sequence[CountRow] = (),
        tracking: Tracking | None = None,
    ) -> Sequence[int] | None:
        """Store serialised events, their index rows, quarantined messages, counts and the upstream
        position in one transaction."""
        return self.recorder.insert_events(
            list(stored),
            admissions=list(admissions),
            quarantine=list(quarantine),
            counts=list(counts),
            tracking=tracking,
        )

    def probe_stored(
        self,
        stored: Sequence[StoredEvent],
        *,
        admissions: Sequence[AdmissionRow] = (),
        quarantine: Sequence[QuarantineRow] = (),
        counts: Sequence[CountRow] = (),
    ) -> None:
        """Would the store take this batch? Raises what ``append_stored`` would raise; stores nothing."""
        self.tables.probe_events(list(stored), admissions=list(admissions), quarantine=list(quarantine),
                                 counts=list(counts))

    def mapper_settings(self) -> dict[str, str]:
        """The settings that shape serialised state (cipher, compressor), for worker processes."""
        keys = ("CIPHER_TOPIC", "CIPHER_KEY", "COMPRESSOR_TOPIC", "TRANSCODER_TOPIC", "MAPPER_TOPIC")
        return {k: v for k in keys if (v := self.env.get(k))}

    def patient_events(self, source: str, patient_id: str) -> list[Patient.Event]:
        """Every event of a patient's stream, in the order they were recorded."""
        return list(self.events.get(patient_uuid(source, patient_id)))  # type: ignore[arg-type]

    def notifications(
        self, start: int, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> Sequence[Notification]:
        """Notifications with ids > ``start`` (at most ``limit``, up to ``stop`` inclusive)."""
        return self.recorder.select_notifications(
            start=start, limit=limit, stop=stop, topics=topics, inclusive_of_start=False
        )

    def page(self, start: int, limit: int, topics: Sequence[str], stop: int | None = None,
             ) -> Sequence[Notification] | Sequence[Note]:
        """A projector's page: the notifications of ``topics`` after ``start`` (up to ``stop`` inclusive), read
        lean (plain tuples; on SQLite each patient's stream id converted once): eventsourcing's frozen
        Notification costs as much to make as reading the rows (issue 28)."""
        if not topics:
            return self.notifications(start, limit, stop, topics=topics)
        if self.store.kind == "postgresql":
            return self._pg_page(start, limit, topics, stop)
        rec: Any = self.recorder
        bound = "" if stop is None else " AND rowid<=?"
        statement = (f"SELECT rowid, originator_id, originator_version, topic, state FROM {rec.events_table_name}"
                     f" WHERE rowid>?{bound} AND topic IN ({','.join('?' * len(topics))}) ORDER BY rowid LIMIT ?")
        with rec.datastore.transaction(commit=False) as c:
            c.execute(statement, [start, *([] if stop is None else [stop]), *topics, limit])
            rows = c.fetchall()
        ids = self._stream_ids
        if len(ids) > 1_000_000:
            ids.clear()
        return [Note(r[0], ids.get(r[1]) or ids.setdefault(r[1], UUID(r[1])), r[2], r[3], r[4]) for r in rows]

    def _pg_page(self, start: int, limit: int, topics: Sequence[str], stop: int | None,
                 segment: tuple[int, int] | None = None) -> list[Note]:
        """PostgreSQL's page, read lean as SQLite's: rows as tuples (the stream id arrives as a UUID), in
        binary (the text format sends each state hex-encoded: 3.5 -> 2.0 µs an event read); with ``segment``
        (k, count), only the streams of segment k, filtered in the database."""
        from psycopg.rows import tuple_row
        from psycopg.sql import SQL, Identifier

        rec: Any = self.recorder
        where, params = [SQL("notification_id > %s")], list[Any]([start])
        if stop is not None:
            where.append(SQL("notification_id <= %s"))
            params.append(stop)
        where.append(SQL("topic = ANY(%s)"))
        params.append(list(topics))
        if segment is not None:
            where.append(SQL("('x' || right(replace(originator_id::text, '-', ''), 8))::bit(32)::bigint %% %s = %s"))
            params += [segment[1], segment[0]]
        statement = SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {schema}.{table}"
                        " WHERE {where} ORDER BY notification_id LIMIT %s").format(
            schema=Identifier(rec.datastore.schema), table=Identifier(rec.events_table_name),
            where=SQL(" AND ").join(where))
        with rec.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row, binary=True) as curs:
            curs.execute(statement, [*params, limit], prepare=True)
            return [Note(*row) for row in curs.fetchall()]

    def segment_notifications(self, start: int, limit: int, topics: Sequence[str], segment: int,
                              segments: int) -> list[Note]:
        """PostgreSQL: the notifications after ``start`` of one segment's streams (the last 32 bits of the
        stream's UUID modulo ``segments``, as ``projections.partitions.segment_of``), filtered in the
        database so a worker reads only its share of the ledger."""
        return self._pg_page(start, limit, topics, None, (segment, segments))

    def decode(self, notification: Notification | Note) -> Any:
        return self._decoder.event(notification)

    def decode_as_text(self, notification: Notification | Note) -> Any:
        """A recorded fact as its stored text (``RecordedText``), any other event as ``decode`` gives it."""
        return self._decoder.recorded_text(notification) or self._decoder.event(notification)

    def position(self) -> int:
        """The id of the last notification: the ledger position answers are computed from."""
        return self.recorder.max_notification_id() or 0
