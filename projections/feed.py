"""Feed health: per-source counts and the quarantine, as kept by ingest beside the ledger."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd

from projections.db import ReadDB


def feed_counts(db: ReadDB) -> pd.DataFrame:
    columns = ["source", "accepted", "duplicates", "quarantined", "last_message_at"]
    if not db.table_exists("ledger_feed_counts"):
        return pd.DataFrame(columns=columns)
    rows = db.query("SELECT " + ", ".join(columns) + " FROM {t}ledger_feed_counts ORDER BY source")
    return pd.DataFrame(rows, columns=columns)


def quarantine(db: ReadDB, limit: int = 500) -> pd.DataFrame:
    columns = ["id", "received_at", "source", "message_id", "position", "reason"]
    if not db.table_exists("ledger_quarantine"):
        return pd.DataFrame(columns=columns)
    rows = db.query(
        "SELECT " + ", ".join(columns) + " FROM {t}ledger_quarantine ORDER BY id DESC LIMIT {p}",
        [limit],
    )
    s = db.sealer  # message ids and reasons are sealed when encryption at rest is on
    rows = [(i, at, source, s.unseal(mid), position, s.unseal(reason)) for i, at, source, mid, position, reason in rows]
    return pd.DataFrame(rows, columns=columns)


def dead_letters_waiting(db: ReadDB) -> dict[str, int]:
    """Per topic: messages quarantined from it whose dead letter is not sent yet (the consumer's
    outbox; a consumer sends them at its next start)."""
    if not db.table_exists("ledger_dead_letters"):
        return {}
    rows = db.query(
        "SELECT q.position FROM {t}ledger_quarantine q LEFT JOIN {t}ledger_dead_letters d"
        " ON d.quarantine_id = q.id WHERE d.quarantine_id IS NULL AND q.position LIKE {p}", ['{"topic": %'])
    return dict(Counter(json.loads(position)["topic"] for (position,) in rows))
