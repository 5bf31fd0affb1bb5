"""What the board and the command line ask of the signals read model: its signals, open first and by level
and time, as they stood at a data cut if asked, and the audit trail of what people did with them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from events.domain import SIGNAL_STATUSES
from projections.db import ReadDB
from projections.facts import parse_time
from projections.incidence import utc_text
from projections.signals import SIGNAL_COLUMNS

LEVEL_ORDER = {"alert": 0, "warning": 1, "watch": 2}
STATUS_ORDER = {status: i for i, status in enumerate(SIGNAL_STATUSES)}


def query_signals(
    db: ReadDB,
    *,
    status: str | None = None,
    patient: str | None = None,
    source: str | None = None,
    kind: str | None = None,
    as_of: datetime | None = None,
    signal_id: str | None = None,
) -> list[dict[str, Any]]:
    """Signals for the board and the CLI: open first, then by level and time."""
    clauses, params = [], []
    sl = db.sealer
    token = sl.token(patient) if patient is not None else None
    for column, value in (("patient_id", token), ("source", source), ("kind", kind), ("id", signal_id)):
        if value is not None:
            clauses.append(f"{column} = {{p}}")
            params.append(value)
    if as_of is not None:
        clauses.append("raised_at <= {p}")
        params.append(utc_text(as_of))
    sql = "SELECT " + ", ".join(SIGNAL_COLUMNS) + " FROM {t}signals"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    rows = [dict(zip(SIGNAL_COLUMNS, r, strict=True)) for r in db.query(sql, params)]
    if as_of is not None:
        rows = [_status_as_of(db, r, as_of) for r in rows]
    else:  # the last action decides, even one recorded by another segment's worker as the signal was made
        acted = dict(db.query("SELECT signal_id, status FROM {t}signal_actions ORDER BY notification_id"))
        rows = [{**r, "status": acted.get(r["id"], r["status"])} for r in rows]
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    arms = _arms(db, {(r["source"], r["patient_id"]) for r in rows if r["patient_id"]})
    out = []
    for r in rows:
        r["arm"] = arms.get((r["source"], r["patient_id"]))
        r["patient_id"] = sl.untoken(r["patient_id"])
        for column in ("evidence", "context", "criteria_2016", "details"):
            text = sl.unseal(r[column])
            r[column] = json.loads(text) if text is not None else None
        for column in ("occurred_at", "raised_at", "updated_at"):
            r[column] = parse_time(r[column]).isoformat()
        out.append(r)
    out.sort(key=lambda r: (STATUS_ORDER[r["status"]] > 0, LEVEL_ORDER.get(r["level"], 9),
                            r["priority"] != "high", _descending(r["occurred_at"])))
    return out


def _arms(db: ReadDB, patients: set[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """Each patient's actual arm (the treatment started, the safety convention; else the planned one) from
    their enrolment, for the arm column of the signals (issue 27); None without one."""
    out: dict[tuple[str, str], str | None] = {}
    keys = sorted(patients)
    for start in range(0, len(keys), 400):
        chunk = keys[start:start + 400]
        where, params = db.patients_in(chunk)
        for source, pid, data in db.query("SELECT source, patient_id, data FROM {t}signal_facts WHERE type = "
                                          "'enrolment' AND (" + where + ") ORDER BY notification_id", params):
            enrolment = json.loads(db.sealer.unseal(data) or "{}")
            out[(source, pid)] = enrolment.get("actual_arm") or enrolment.get("arm")
    return out


def _descending(text: str) -> float:
    return -datetime.fromisoformat(text).timestamp()


def _status_as_of(db: ReadDB, row: dict[str, Any], as_of: datetime) -> dict[str, Any]:
    actions = db.query("SELECT status FROM {t}signal_actions WHERE signal_id = {p} AND at <= {p}"
                       " ORDER BY notification_id", [row["id"], utc_text(as_of)])
    return {**row, "status": actions[-1][0] if actions else "open"}


def signal_actions(db: ReadDB, signal_id: str | None = None) -> list[dict[str, Any]]:
    """The audit trail of the workflow: who did what to which signal, and when."""
    cols = ("notification_id", "signal_id", "action", "status", "by_user", "note", "reason", "at")
    sql = "SELECT " + ", ".join(cols) + " FROM {t}signal_actions"
    params: list[Any] = []
    if signal_id:
        sql += " WHERE signal_id = {p}"
        params.append(signal_id)
    out = [dict(zip(cols, r, strict=True)) for r in db.query(sql + " ORDER BY notification_id", params)]
    for row in out:
        row["note"] = db.sealer.unseal(row["note"])
    return out
