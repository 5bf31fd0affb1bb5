"""The incidence read model: the ledger's clinical facts that incidence counts, one row each, with
their clinical and recording times; and the query that turns them into the DSMB comparison.

Rows keep both times so one table answers every data cut: ``--as-of`` (knowledge time: rows recorded
by then, amendments included only if recorded by then) and ``--data-cut`` (clinical time).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import Patient
from projections.db import ReadDB, open_columns, seal_columns
from safety.amendments import Amendments
from safety.incidence import Fact, PatientIncidence, Settings, patient_incidence, summarise
from safety.seriousness import serious

COLUMNS = ("notification_id", "source", "patient_id", "message_id", "type", "occurred_at",
           "recorded_at", "name", "term", "serious", "severity", "grade", "action", "dose",
           "linked_ae", "target", "corrected")
#: Bump when the rows this model writes change meaning: a rebuild is then required.
VERSION = "incidence-1"


@lru_cache(maxsize=1 << 14)
def utc_text(when: datetime) -> str:
    """Fixed-width UTC text (``2015-10-26T14:10:00.000000Z``): text order is time order on both stores.
    Remembered: the events of one batch share their recording time, written by every read model."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@lru_cache(maxsize=1 << 14)
def utc_text_of(iso: str) -> str:
    """``utc_text`` of the time this ISO text (as ``isoformat`` writes it) stands for, without making the
    datetime where the text is in UTC already: a stored event's times, read as text (``RecordedText``)."""
    if iso.endswith("+00:00"):
        if len(iso) == 32:  # 2015-10-26T14:10:00.123456+00:00
            return iso[:26] + "Z"
        if len(iso) == 25:  # 2015-10-26T14:10:00+00:00
            return iso[:19] + ".000000Z"
    return utc_text(datetime.fromisoformat(iso))


def parse_utc_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _fields(type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """(name, term, serious, severity, grade, action, dose, linked_ae) of a fact's data."""
    return (
        data.get("name") or data.get("drug"),
        data.get("term") or data.get("reason"),
        None if "serious" not in data else int(serious(data)),
        data.get("severity"),
        data.get("ctcae_grade"),
        data.get("action"),
        data.get("dose"),
        data.get("adverse_event_message_id"),
    )


def _data(row: dict[str, Any]) -> dict[str, Any]:
    """The data fields back from a row (for rules in safety.incidence)."""
    data = {"name": row["name"], "drug": row["name"], "term": row["term"], "reason": row["term"],
            "severity": row["severity"], "ctcae_grade": row["grade"], "action": row["action"],
            "dose": row["dose"], "adverse_event_message_id": row["linked_ae"]}
    if row["serious"] is not None:
        data["serious"] = bool(row["serious"])
    return {k: v for k, v in data.items() if v is not None}


class IncidenceModel:
    name = "incidence"
    tables: tuple[str, ...] = ("incidence_facts",)
    #: made at the end of a bulk load (``projections.view.View.deferred_indexes``): writes only insert
    deferred_indexes = ("incidence_facts_recorded", "incidence_facts_type", "incidence_facts_patient")
    topics = tuple(
        get_topic(cls) for cls in (
            Patient.Enrolment, Patient.Intervention, Patient.Treatment, Patient.AdverseEvent,
            Patient.Hospitalisation, Patient.Withdrawal, Patient.Retraction, Patient.Correction,
        )
    )

    def create_statements(self, db: ReadDB) -> list[str]:
        return [
            db.sql(
                "CREATE TABLE IF NOT EXISTS {t}incidence_facts ("
                " notification_id BIGINT PRIMARY KEY, source TEXT NOT NULL, patient_id TEXT NOT NULL,"
                " message_id TEXT NOT NULL, type TEXT NOT NULL, occurred_at TEXT NOT NULL,"
                " recorded_at TEXT NOT NULL, name TEXT, term TEXT, serious INTEGER, severity TEXT,"
                " grade INTEGER, action TEXT, dose TEXT, linked_ae TEXT, target TEXT, corrected TEXT)"
            ),
            db.sql("CREATE INDEX IF NOT EXISTS incidence_facts_recorded ON {t}incidence_facts (recorded_at)"),
            # the patients with an intervention: the only ones an anchor can be found for
            db.sql("CREATE INDEX IF NOT EXISTS incidence_facts_type ON {t}incidence_facts (type, source, patient_id)"),
            db.sql("CREATE INDEX IF NOT EXISTS incidence_facts_patient ON {t}incidence_facts (source, patient_id)"),
        ]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        rows = []
        for notification_id, e in events:
            if not isinstance(e, Patient.Recorded):
                continue
            corrected = None
            target = e.data.get("target_message_id")
            if e.type == "correction":
                corrected = json.dumps(e.data["data"])
            rows.append(seal_row(db, (
                notification_id, e.source, e.patient_id, e.message_id, e.type,
                utc_text(e.occurred_at), utc_text(e.timestamp), *_fields(e.type, e.data),
                target, corrected,
            )))
        if rows:
            marks = ",".join([db.placeholder] * len(COLUMNS))
            cursor.executemany(db.sql(f"INSERT INTO {{t}}incidence_facts VALUES ({marks})"), rows)


Facts = dict[tuple[str, str], list[Fact]]


TOKENS = frozenset({"patient_id", "message_id", "linked_ae", "target"})
SEALED = frozenset({"name", "term", "severity", "action", "dose", "corrected"})


def seal_row(db: ReadDB, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of incidence_facts as stored: ids as tokens, clinical text sealed (when encryption is on)."""
    return seal_columns(db, COLUMNS, row, TOKENS, SEALED)


def open_row(db: ReadDB, row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row of incidence_facts back in clear, by column name."""
    return dict(zip(COLUMNS, open_columns(db, COLUMNS, row, TOKENS, SEALED), strict=True))


def load_facts(db: ReadDB, as_of: datetime | None, *, anchored: bool = False,
               ) -> tuple[Facts, dict[tuple[str, str], set[str]], int]:
    """Amended facts per patient as known at ``as_of``, the retracted message ids per patient, and
    the last notification included. ``anchored``: only the patients with an intervention, the only
    ones incidence can anchor (an amendment is always in its target's stream: ``events.ingest``)."""
    known, params = "", []
    if as_of is not None:
        known = " WHERE recorded_at <= {p}"
        params.append(utc_text(as_of))
    position = db.query("SELECT MAX(notification_id) FROM {t}incidence_facts" + known, params)[0][0] or 0
    sql = "SELECT " + ", ".join(COLUMNS) + " FROM {t}incidence_facts" + known
    if anchored:
        sql += (" AND" if known else " WHERE") + (" (source, patient_id) IN (SELECT source, patient_id FROM"
                                                  " {t}incidence_facts WHERE type = 'intervention'" +
                                                  (" AND recorded_at <= {p})" if known else ")"))
        params += params
    rows = [open_row(db, r) for r in db.query(sql + " ORDER BY notification_id", params)]
    amended: Amendments[tuple[str, str]] = Amendments()
    for r in rows:
        if amended.is_amendment(r["type"]):
            amended.note(r["type"], (r["source"], r["target"]), r["corrected"] and json.loads(r["corrected"]))
    facts: Facts = defaultdict(list)
    retracted_ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        key = (r["source"], r["message_id"])
        if key in amended.retracted:
            retracted_ids[(r["source"], r["patient_id"])].add(r["message_id"])
        if not amended.counts(r["type"], key):
            continue
        data = amended.data(key, _data(r))
        occurred = parse_utc_text(r["occurred_at"])
        facts[(r["source"], r["patient_id"])].append(Fact(r["message_id"], r["type"], occurred, data))
    return facts, retracted_ids, position


def incidence(db: ReadDB, settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
    """The DSMB comparison as of a knowledge time and clinical data cut, with its fingerprint."""
    facts, retracted, position = load_facts(db, as_of, anchored=True)
    patients: list[PatientIncidence] = []
    for (source, patient_id), patient_facts in sorted(facts.items()):
        p = patient_incidence(source, patient_id, patient_facts, settings,
                              retracted.get((source, patient_id), set()))
        if p is not None:
            patients.append(p)
    result = summarise(patients, settings)
    inputs = {
        "model": VERSION, "ledger_position": position, "anchor": settings.anchor,
        "pre_months": settings.pre_months, "post_months": settings.post_months,
        "as_of": utc_text(as_of) if as_of else None,
        "data_cut": utc_text(settings.data_cut) if settings.data_cut else None,
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "anchor": settings.anchor,
        "pre_months": settings.pre_months,
        "post_months": settings.post_months,
        "as_of": as_of.isoformat() if as_of else None,
        "data_cut": (settings.data_cut - timedelta(microseconds=1)).date().isoformat()
        if settings.data_cut else None,
        "ledger_position": position,
        "fingerprint": f"{position}-{fingerprint}",
        **result,
    }
