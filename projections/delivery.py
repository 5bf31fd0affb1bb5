"""Notifications: a tracked consumer of the signals read model that sends each new signal at warning or
alert (and each rise to such a level) once per channel, by mail and by webhook.

Which signals are due comes from ``signal_raises`` (written with the signals); what was delivered is
kept in ``deliveries`` (its own database beside the read models), one row per notification and channel.
A delivery is marked sent only after the transport accepted it, so a crash in between sends it again,
under the same idempotency key (the notification id), and a restart skips nothing and sends nothing
twice that was recorded. A failed delivery stays pending with its error and is tried again: by
``notify --once`` at its next run, by ``--follow`` after a back-off (``safety.notifications.retry_after``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from events.store import Store
from projections.db import ReadDB
from safety.notifications import Notification, link_to, notification_id, retry_after, summary_of

_COLUMNS = ("notification_id", "channel", "signal_id", "level", "status", "attempts", "last_error",
            "next_attempt_at", "created_at", "sent_at")


class Transport(Protocol):
    """One channel's thin adapter: deliver, or raise with the reason."""

    channel: str

    def send(self, n: Notification) -> None: ...


@dataclass
class RunCounts:
    sent: int = 0
    failed: int = 0
    pending: int = 0
    #: "channel signal: error" of each delivery that failed in this run, for the operator
    failures: list[str] = field(default_factory=list)
    #: deliveries left untried because the run's deadline passed
    untried: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "pending": self.pending}

    def add(self, other: RunCounts) -> None:
        self.sent, self.failed, self.pending = self.sent + other.sent, self.failed + other.failed, other.pending
        self.failures += other.failures
        self.untried += other.untried


class Deliveries:
    """The deliveries table (``ledger.delivery.db`` beside the ledger on SQLite, a table on PostgreSQL)."""

    def __init__(self, store: Store):
        self.db = ReadDB(store, sqlite_path=store.sibling("delivery") if store.kind == "sqlite" else None)
        with self.db.connect() as conn:
            conn.cursor().execute(self.db.sql(
                "CREATE TABLE IF NOT EXISTS {t}deliveries (notification_id TEXT NOT NULL, channel TEXT NOT NULL,"
                " signal_id TEXT NOT NULL, level TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,"
                " last_error TEXT, next_attempt_at TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT,"
                " PRIMARY KEY (notification_id, channel))"))

    def rows(self, signal_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT " + ", ".join(_COLUMNS) + " FROM {t}deliveries"
        params: list[Any] = []
        if signal_id is not None:
            sql += " WHERE signal_id = {p}"
            params.append(signal_id)
        rows = self.db.query(sql + " ORDER BY created_at, channel", params)
        return [dict(zip(_COLUMNS, r, strict=True)) for r in rows]

    def enqueue(self, raises: list[tuple[str, str]], channels: list[str], now: datetime) -> int:
        """A pending delivery per raise (signal id, level) and channel not yet known; returns how many."""
        known = {(r[0], r[1]) for r in self.db.query("SELECT notification_id, channel FROM {t}deliveries")}
        stamp = now.isoformat()
        new = [(notification_id(sid, level), channel, sid, level, "pending", 0, None, stamp, stamp, None)
               for sid, level in raises for channel in channels if (notification_id(sid, level), channel) not in known]
        if new:
            with self.db.connect() as conn:
                conn.cursor().executemany(self.db.sql(
                    "INSERT INTO {t}deliveries VALUES ({p},{p},{p},{p},{p},{p},{p},{p},{p},{p})"
                    " ON CONFLICT (notification_id, channel) DO NOTHING"), new)
        return len(new)

    def due(self, now: datetime, *, all_pending: bool) -> list[dict[str, Any]]:
        rows = [r for r in self.rows() if r["status"] == "pending"]
        return rows if all_pending else [r for r in rows if r["next_attempt_at"] <= now.isoformat()]

    def drop(self, row: dict[str, Any], reason: str) -> None:
        """Not to be sent: the signal is gone (status ``dropped``, with the reason)."""
        with self.db.connect() as conn:
            conn.cursor().execute(self.db.sql(
                "UPDATE {t}deliveries SET status = 'dropped', last_error = {p} WHERE notification_id = {p}"
                " AND channel = {p}"), (reason, row["notification_id"], row["channel"]))

    def mark(self, row: dict[str, Any], now: datetime, error: str | None) -> None:
        with self.db.connect() as conn:
            if error is None:
                conn.cursor().execute(self.db.sql(
                    "UPDATE {t}deliveries SET status = 'sent', attempts = attempts + 1, sent_at = {p},"
                    " last_error = NULL WHERE notification_id = {p} AND channel = {p}"),
                    (now.isoformat(), row["notification_id"], row["channel"]))
            else:
                attempts = int(row["attempts"]) + 1
                later = now + timedelta(seconds=retry_after(attempts))
                conn.cursor().execute(self.db.sql(
                    "UPDATE {t}deliveries SET attempts = {p}, last_error = {p}, next_attempt_at = {p}"
                    " WHERE notification_id = {p} AND channel = {p}"),
                    (attempts, error[:500], later.isoformat(), row["notification_id"], row["channel"]))


def signal_raises(signals_db: ReadDB) -> list[tuple[str, str]]:
    if not signals_db.table_exists("signal_raises"):
        return []
    rows = signals_db.query("SELECT signal_id, level FROM {t}signal_raises ORDER BY seq")
    return [(sid, level) for sid, level in rows]


def notification_for(signals_db: ReadDB, signal_id: str, level: str, board_url: str | None) -> Notification | None:
    """The notification of a raise, from the signal as it stands (None if the signal is gone)."""
    rows = signals_db.query("SELECT id, source, patient_id, kind, occurred_at, evidence FROM {t}signals WHERE id = {p}",
                            [signal_id])
    if not rows:
        return None
    sid, source, pid, kind, occurred_at, evidence = rows[0]
    s = signals_db.sealer
    return Notification(notification_id(sid, level), sid, kind, level, source, s.untoken(pid), occurred_at,
                        summary_of(kind, level, json.loads(s.unseal(evidence) or "[]")), link_to(board_url, sid))


def notify_once(deliveries: Deliveries, signals_db: ReadDB, transports: list[Transport], board_url: str | None,
                *, all_pending: bool = True, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                deadline: float | None = None) -> RunCounts:
    """Note what is due, send it by each channel, record each outcome; counts of this run. Past
    ``deadline`` (a ``time.monotonic()`` value) nothing more is tried: the rest stays pending."""
    by_channel = {t.channel: t for t in transports}
    deliveries.enqueue(signal_raises(signals_db), list(by_channel), now())
    counts = RunCounts()
    due = deliveries.due(now(), all_pending=all_pending)
    for i, row in enumerate(due):
        if deadline is not None and time.monotonic() >= deadline:
            counts.untried = len(due) - i
            break
        transport = by_channel.get(row["channel"])
        if transport is None:
            continue  # a channel configured before, not now: left pending
        n = notification_for(signals_db, row["signal_id"], row["level"], board_url)
        if n is None:
            deliveries.drop(row, "the signal is no longer raised: its data were amended before it was sent")
            continue
        try:
            transport.send(n)
        except Exception as exc:  # the receiver's failure, recorded and retried; never the loop's end
            deliveries.mark(row, now(), f"{type(exc).__name__}: {exc}")
            counts.failed += 1
            counts.failures.append(f"{row['channel']} for signal {row['signal_id']}: {type(exc).__name__}: {exc}")
            continue
        deliveries.mark(row, now(), None)
        counts.sent += 1
    counts.pending = sum(1 for r in deliveries.rows() if r["status"] == "pending")
    return counts
