"""The expedited-reports read model: the messages the SUSAR clock reads (adverse events, the products
received, their amendments) with their clinical, reported and recording times, and the submissions
people recorded; and the query that turns them into cases with due dates (``safety.expedited``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import ExpeditedSubmission, Patient
from projections.db import ReadDB, loads, no_cycle_collection
from projections.incidence import parse_utc_text, utc_text
from safety.expedited import Case, Message, Submission, patient_cases, with_clock


class ExpeditedModel:
    name = "expedited"
    tables: tuple[str, ...] = ("expedited_facts", "expedited_submissions")
    topics = tuple(get_topic(cls) for cls in (
        Patient.Intervention, Patient.Treatment, Patient.AdverseEvent, Patient.Retraction, Patient.Correction,
        ExpeditedSubmission.Recorded,
    ))

    def create_statements(self, db: ReadDB) -> list[str]:
        return [db.sql(s) for s in (
            "CREATE TABLE IF NOT EXISTS {t}expedited_facts (notification_id BIGINT PRIMARY KEY, source TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL, occurred_at TEXT NOT NULL,"
            " reported_at TEXT, recorded_at TEXT NOT NULL, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {t}expedited_submissions (notification_id BIGINT PRIMARY KEY,"
            " case_id TEXT NOT NULL, by_user TEXT NOT NULL, submitted_on TEXT NOT NULL, authority TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL)",
        )]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        s = db.sealer
        facts, submissions = [], []
        for nid, e in events:
            if isinstance(e, Patient.Recorded):
                facts.append((nid, e.source, s.token(e.patient_id), s.token(e.message_id), e.type,
                              utc_text(e.occurred_at), utc_text(e.reported_at) if e.reported_at else None,
                              utc_text(e.timestamp), s.seal(json.dumps(e.data))))
            elif isinstance(e, ExpeditedSubmission.Recorded):
                submissions.append((nid, e.case, e.by, e.submitted_on, e.authority, utc_text(e.timestamp)))
        if facts:
            cursor.executemany(db.sql("INSERT INTO {t}expedited_facts VALUES ({p},{p},{p},{p},{p},{p},{p},{p},{p})"),
                               facts)
        if submissions:
            cursor.executemany(db.sql("INSERT INTO {t}expedited_submissions VALUES ({p},{p},{p},{p},{p},{p})"),
                               submissions)


def expedited_cases(db: ReadDB, rsi: dict[str, frozenset[str]], as_of: datetime | None = None,
                    now: datetime | None = None) -> list[dict[str, Any]]:
    """The SUSAR cases as known at ``as_of`` (knowledge time; default: everything), their clock read at
    ``as_of`` or ``now``."""
    return clocked(known_cases(db, rsi, as_of), as_of or now or datetime.now(UTC))


# every fact made into a message at once: the collector's passes cost a third (15,000 patients: 0.75 -> 0.54 s)
@no_cycle_collection()
def known_cases(db: ReadDB, rsi: dict[str, frozenset[str]], as_of: datetime | None = None) -> list[Case]:
    """The SUSAR cases as known at ``as_of``, before their clock is read: the part of the answer that
    changes only with the read model's rows, so the board keeps it between visits."""
    s = db.sealer
    sql = ("SELECT source, patient_id, message_id, type, occurred_at, reported_at, recorded_at, data"
           " FROM {t}expedited_facts")
    params: list[Any] = []
    if as_of is not None:
        sql += " WHERE recorded_at <= {p}"
        params.append(utc_text(as_of))
    histories: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for source, pid, mid, typ, occurred, reported, recorded, data in db.query(sql + " ORDER BY notification_id",
                                                                               params):
        histories[(source, s.untoken(pid))].append(Message(
            s.untoken(mid), typ, parse_utc_text(occurred), parse_utc_text(reported) if reported else None,
            parse_utc_text(recorded), loads(s.unseal(data) or "{}")))
    sub_sql = "SELECT case_id, submitted_on, authority, by_user FROM {t}expedited_submissions"
    sub_params: list[Any] = []
    if as_of is not None:
        sub_sql += " WHERE recorded_at <= {p}"
        sub_params.append(utc_text(as_of))
    submitted: dict[str, list[Submission]] = defaultdict(list)
    for case, on, authority, by in db.query(sub_sql + " ORDER BY notification_id", sub_params):
        submitted[case].append(Submission(date.fromisoformat(on), authority, by))
    cases: list[Case] = []
    for (source, pid), history in sorted(histories.items()):
        cases += patient_cases(source, pid, history, rsi, submitted)
    return cases


def clocked(cases: Sequence[Case], clock: datetime) -> list[dict[str, Any]]:
    """The cases with their clock read at ``clock``: status, days left or late."""
    return [{"case": c.case, "source": c.source, "patient_id": c.patient_id, "term": c.term,
             "fatal_or_life_threatening": c.fatal_or_life_threatening, "aware_at": c.aware_at.isoformat(),
             "due_at": c.due_at.isoformat(), "clock_days": c.clock_days, "status": c.status,
             "days_left": (c.due_at - clock).total_seconds() / 86400, "closed_reason": c.closed_reason,
             "submitted": _submitted_text(c.submissions), "submissions": [s.as_dict() for s in c.submissions],
             "days_late": c.days_late, "onset": c.onset.isoformat() if c.onset else None,
             "relatedness": c.relatedness, "clock_reason": c.clock_reason}
            for c in with_clock(list(cases), clock)]


def _submitted_text(submissions: list[Submission]) -> str | None:
    return "; ".join(f"{s.on.isoformat()} to {s.authority} by {s.by}" for s in submissions) or None
