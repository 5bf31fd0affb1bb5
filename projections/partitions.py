"""Partitioned projections on PostgreSQL (issue 28), in the way Axon's tracking processors scale: the
ledger's streams are split into a fixed number of **segments** by a stable hash of the stream (a
patient's events always fall in one segment, so a patient is evaluated by one worker at a time); each
segment has its own tracked position per read model (upstream ``Ledger#k``); worker processes claim
segments through the database with a **lease**, renew it while they work, and take over segments whose
lease has expired. The segments rebalance as workers come and go: each takes its fair share,
``ceil(segments / live workers)``, and gives back what is over it.

Every read model's rows are keyed by the event or the patient, so the segments' rows together are
exactly what one process writes, and the registry-wide answers read them all. SQLite keeps one process.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from projections.db import ReadDB

DEFAULT_SEGMENTS = 16
#: seconds a lease lasts unless renewed; a worker renews at a third of it
DEFAULT_LEASE_SECONDS = 15.0


def segment_of(stream: UUID, segments: int) -> int:
    """The segment of a stream: the last 32 bits of its (name-based, uniformly spread) UUID modulo the
    segment count; the same as ``Ledger.segment_notifications`` computes in the database."""
    return (stream.int & 0xFFFFFFFF) % segments


def upstream_of(ledger_name: str, segment: int) -> str:
    """The upstream name a segment's position is tracked under in a read model's tracking table."""
    return f"{ledger_name}#{segment}"


def new_owner() -> str:
    """A worker's name: host, process and a random part (a restarted process is a new worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Lease:
    segment: int
    owner: str | None
    lease_until: datetime | None

    def live(self, now: datetime) -> bool:
        return self.owner is not None and self.lease_until is not None and self.lease_until > now


class Partitions:
    """The segments of a PostgreSQL store, their leases and the workers' heartbeats (tables in the
    store's schema, beside the ledger)."""

    def __init__(self, db: ReadDB):
        if db.kind != "postgresql":
            raise ValueError("partitioned projections need PostgreSQL; SQLite projects in one process")
        self.db = db
        with db.connect() as conn:
            c = conn.cursor()
            c.execute("SELECT pg_advisory_xact_lock(hashtext('safety-monitor/create-tables'))")  # racing starts
            for statement in (
                "CREATE TABLE IF NOT EXISTS {t}projection_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {t}projection_segments (segment INTEGER PRIMARY KEY, owner TEXT,"
                " lease_until TIMESTAMPTZ)",
                "CREATE TABLE IF NOT EXISTS {t}projection_workers (owner TEXT PRIMARY KEY,"
                " heartbeat TIMESTAMPTZ NOT NULL)",
            ):
                c.execute(db.sql(statement))

    def count(self) -> int | None:
        """The number of segments, or None while the store's projections are not partitioned."""
        rows = self.db.query("SELECT value FROM {t}projection_config WHERE key = 'segments'")
        return int(rows[0][0]) if rows else None

    def enable(self, segments: int = DEFAULT_SEGMENTS, models: list[str] | None = None,
               ledger_name: str = "Ledger") -> int:
        """Partition the store's projections (once; the count never changes after). Returns the count.
        A read model projected in one process before goes on from where it stands in every segment: its
        position is carried into each segment's, so no event is applied twice."""
        if not 1 <= segments <= 1024:
            raise ValueError(f"segments {segments}: between 1 and 1024")
        with self.db.connect() as conn:
            c = conn.cursor()
            c.execute(self.db.sql("SELECT pg_advisory_xact_lock(hashtext('projection_config'))"))
            c.execute(self.db.sql("SELECT value FROM {t}projection_config WHERE key = 'segments'"))
            found = c.fetchone()
            if found:
                return int(found[0])
            c.execute(self.db.sql("INSERT INTO {t}projection_config VALUES ('segments', {p})"), (str(segments),))
            c.executemany(self.db.sql("INSERT INTO {t}projection_segments (segment) VALUES ({p})"),
                          [(k,) for k in range(segments)])
            for model in models or []:
                table = f'{{t}}"{model}_tracking"'
                c.execute(self.db.sql(f"SELECT notification_id FROM {table} WHERE application_name = {{p}}"),
                          (ledger_name,))
                found = c.fetchone()
                if found and found[0]:
                    c.executemany(self.db.sql(f"INSERT INTO {table} (application_name, notification_id) VALUES"
                                              " ({p}, {p}) ON CONFLICT (application_name) DO UPDATE SET"
                                              " notification_id = excluded.notification_id"),
                                  [(f"{ledger_name}#{k}", found[0]) for k in range(segments)])
        return segments

    def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Say this worker is alive (others count it when sharing the segments); forget long-dead workers."""
        with self.db.connect() as conn:
            c = conn.cursor()
            c.execute(self.db.sql("INSERT INTO {t}projection_workers VALUES ({p}, now()) ON CONFLICT (owner)"
                                  " DO UPDATE SET heartbeat = now()"), (owner,))
            c.execute(self.db.sql("DELETE FROM {t}projection_workers WHERE heartbeat < now() - {p} * interval"
                                  " '1 second'"), (lease_seconds * 4,))

    def claim(self, owner: str, lease_seconds: float) -> list[int]:
        """Renew this worker's leases, give back those over its fair share, take free or expired ones up
        to it; the segments it holds now."""
        with self.db.connect() as conn:
            c = conn.cursor()
            c.execute(self.db.sql("SELECT COUNT(*) FROM {t}projection_workers WHERE heartbeat > now() - {p} *"
                                  " interval '1 second'"), (lease_seconds,))
            workers = max(int(c.fetchone()[0]), 1)
            c.execute(self.db.sql("SELECT COUNT(*) FROM {t}projection_segments"))
            share = math.ceil(int(c.fetchone()[0]) / workers)
            until = datetime.now(UTC) + timedelta(seconds=lease_seconds)
            c.execute(self.db.sql("UPDATE {t}projection_segments SET lease_until = {p} WHERE owner = {p}"
                                  " RETURNING segment"), (until, owner))
            mine = sorted(r[0] for r in c.fetchall())
            for segment in mine[share:]:  # over the fair share: give back (highest first)
                c.execute(self.db.sql("UPDATE {t}projection_segments SET owner = NULL, lease_until = NULL"
                                      " WHERE segment = {p} AND owner = {p}"), (segment, owner))
            mine = mine[:share]
            if len(mine) < share:
                c.execute(self.db.sql(
                    "UPDATE {t}projection_segments SET owner = {p}, lease_until = {p} WHERE segment IN ("
                    " SELECT segment FROM {t}projection_segments WHERE owner IS NULL OR lease_until < now()"
                    " ORDER BY segment LIMIT {p} FOR UPDATE SKIP LOCKED) RETURNING segment"),
                    (owner, until, share - len(mine)))
                mine = sorted(mine + [r[0] for r in c.fetchall()])
        return mine

    def release(self, owner: str) -> None:
        """Give back every lease of this worker (it is stopping) and forget it."""
        with self.db.connect() as conn:
            c = conn.cursor()
            c.execute(self.db.sql("UPDATE {t}projection_segments SET owner = NULL, lease_until = NULL"
                                  " WHERE owner = {p}"), (owner,))
            c.execute(self.db.sql("DELETE FROM {t}projection_workers WHERE owner = {p}"), (owner,))

    def leases(self) -> list[Lease]:
        return [Lease(s, o, u) for s, o, u in
                self.db.query("SELECT segment, owner, lease_until FROM {t}projection_segments ORDER BY segment")]


def partitions_of(db: ReadDB) -> int | None:
    """The segment count of a store (None: not partitioned, or SQLite)."""
    if db.kind != "postgresql" or not db.table_exists("projection_config"):
        return None
    rows = db.query("SELECT value FROM {t}projection_config WHERE key = 'segments'")
    return int(rows[0][0]) if rows else None


def segment_positions(db: ReadDB, model: str, ledger_name: str) -> dict[int, int]:
    """A read model's tracked position per segment."""
    rows = db.query(f'SELECT application_name, notification_id FROM {{t}}"{model}_tracking"'
                    " WHERE application_name LIKE {p}", [f"{ledger_name}#%"])
    return {int(name.rsplit("#", 1)[1]): int(position) for name, position in rows}


def status(db: ReadDB, models: list[str], ledger_name: str, head: int) -> list[dict[str, Any]]:
    """Each segment's owner, lease and, per read model, its position and lag (for ``status`` and Feed
    health)."""
    count = partitions_of(db)
    if count is None:
        return []
    now = datetime.now(UTC)
    positions = {m: segment_positions(db, m, ledger_name) for m in models}
    out = []
    for lease in Partitions(db).leases():
        lag = {m: max(0, head - positions[m].get(lease.segment, 0)) for m in models}
        out.append({"segment": lease.segment, "owner": lease.owner if lease.live(now) else None,
                    "lease_until": lease.lease_until.isoformat() if lease.lease_until else None,
                    "behind": lag})
    return out
