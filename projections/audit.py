"""The audit read model: every human action recorded in the ledger, with who and when."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import AuditEntry
from projections.db import ReadDB
from projections.incidence import utc_text


class AuditModel:
    name = "audit"
    tables: tuple[str, ...] = ("audit_log",)
    topics: tuple[str, ...] = (get_topic(AuditEntry.Recorded),)

    def create_statements(self, db: ReadDB) -> list[str]:
        return [db.sql("CREATE TABLE IF NOT EXISTS {t}audit_log (notification_id BIGINT PRIMARY KEY,"
                       " at TEXT NOT NULL, by_user TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)")]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        rows = [(nid, utc_text(e.timestamp), e.by, e.action, e.detail)
                for nid, e in events if isinstance(e, AuditEntry.Recorded)]
        if rows:
            cursor.executemany(db.sql("INSERT INTO {t}audit_log VALUES ({p},{p},{p},{p},{p})"), rows)


def audit_log(db: ReadDB, limit: int = 1000) -> list[dict[str, Any]]:
    cols = ("notification_id", "at", "by_user", "action", "detail")
    rows = db.query("SELECT " + ", ".join(cols) + " FROM {t}audit_log ORDER BY notification_id DESC LIMIT {p}",
                    [limit])
    return [dict(zip(cols, r, strict=True)) for r in rows]
