"""The exposure read model: the facts that arms, drug exposures and adverse-event tables need (enrolments
with their arm and exposure dates, treatment starts and stops, adverse events, hospitalisations,
withdrawals and the amendments of these), one row each with their clinical and recording times; and
the queries that turn them into the treatment-emergent adverse-event tables (``safety.ae_tables``).

Like incidence, the tables are computed at query time from the rows, so one table answers every
grouping, lag, ``--as-of`` (knowledge time) and ``--data-cut`` (clinical time), and an incremental
projection equals a rebuild by construction.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import Patient
from projections.db import ReadDB
from projections.incidence import utc_text
from safety.ae_tables import (
    OVERVIEW_FLAGS,
    adverse_event,
    ae_table,
    choose_control,
    unlinked_hospitalisation,
    withdrawal_for_adverse_event,
)
from safety.amendments import Amendments
from safety.exposure import DEFAULT_DRUG_LAG_DAYS, Membership, Subject, TreatmentChange, memberships

#: Bump when the rows this model writes change meaning: a rebuild is then required.
VERSION = "exposure-1"
#: the data fields each type keeps (the rest of a message is not needed here)
KEPT = {
    "enrolment": ("arm", "actual_arm", "first_exposure_on", "last_exposure_on"),
    "treatment": ("drug", "action", "drug_class"),
    "adverse_event": ("term", "meddra_pt", "verbatim_term", "system_organ_class", "severity", "ctcae_grade",
                      "serious", "seriousness", "relatedness", "action_taken", "outcome"),
    "hospitalisation": ("reason", "adverse_event_message_id"),
    "withdrawal": ("reason", "disposition", "death"),
    "retraction": ("target_message_id",),
}


def kept(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    if type_ == "correction":
        return {"target_message_id": data["target_message_id"], "data": data["data"]}
    return {k: data[k] for k in KEPT.get(type_, ()) if k in data}


class ExposureModel:
    name = "exposure"
    tables: tuple[str, ...] = ("exposure_facts",)
    topics = tuple(
        get_topic(cls) for cls in (
            Patient.Enrolment, Patient.Treatment, Patient.AdverseEvent, Patient.Hospitalisation,
            Patient.Withdrawal, Patient.Retraction, Patient.Correction,
        )
    )

    def create_statements(self, db: ReadDB) -> list[str]:
        return [db.sql(
            "CREATE TABLE IF NOT EXISTS {t}exposure_facts (notification_id BIGINT PRIMARY KEY,"
            " source TEXT NOT NULL, patient_id TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,"
            " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, data TEXT NOT NULL)"
        )]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        s = db.sealer
        rows = [(nid, e.source, s.token(e.patient_id), s.token(e.message_id), e.type, utc_text(e.occurred_at),
                 utc_text(e.timestamp), s.seal(json.dumps(kept(e.type, e.data), separators=(",", ":"))))
                for nid, e in events if isinstance(e, Patient.Recorded)]
        if rows:
            marks = ",".join([db.placeholder] * 8)
            cursor.executemany(db.sql(f"INSERT INTO {{t}}exposure_facts VALUES ({marks})"), rows)


@dataclass(frozen=True)
class Settings:
    """How a table is asked for."""

    by: str = "arm"  # arm, drug, drug_class
    control: str | None = None
    #: None: by arm no upper bound; by drug or class the default lag
    lag_days: int | None = None
    min_percent: float = 0.0
    data_cut: datetime | None = None  # exclusive: facts at or after it are not yet known clinically

    @property
    def lag(self) -> int | None:
        return self.lag_days if self.lag_days is not None or self.by == "arm" else DEFAULT_DRUG_LAG_DAYS


@dataclass(frozen=True)
class Loaded:
    subjects: list[Subject]
    horizon: date
    position: int


def load_subjects(db: ReadDB, as_of: datetime | None, data_cut: datetime | None) -> Loaded:
    """Every subject as known at ``as_of``, amendments applied, facts before ``data_cut`` only."""
    sql = "SELECT notification_id, source, patient_id, message_id, type, occurred_at, data FROM {t}exposure_facts"
    params: list[Any] = []
    if as_of is not None:
        sql += " WHERE recorded_at <= {p}"
        params.append(utc_text(as_of))
    sl = db.sealer
    rows = db.query(sql + " ORDER BY notification_id", params)
    position = rows[-1][0] if rows else 0
    amended: Amendments[tuple[str, str, str]] = Amendments()
    facts = []
    for _nid, source, pid, mid, typ, at, text in rows:
        data = json.loads(sl.unseal(text) or "{}")
        pid = sl.untoken(pid)
        if amended.is_amendment(typ):
            amended.note(typ, (source, pid, data["target_message_id"]), data.get("data"))
        else:
            facts.append((source, pid, sl.untoken(mid), typ, at, data))
    cut = utc_text(data_cut) if data_cut else None
    by_patient: dict[tuple[str, str], list[tuple[str, str, date, dict[str, Any]]]] = defaultdict(list)
    retracted: dict[tuple[str, str], set[str]] = defaultdict(set)
    last_day = date.min
    for source, pid, mid, typ, at, data in facts:
        key = (source, pid, mid)
        if key in amended.retracted:
            retracted[(source, pid)].add(mid)
            continue
        if cut is not None and at >= cut:
            continue
        day = datetime.fromisoformat(at).date()
        last_day = max(last_day, day)
        by_patient[(source, pid)].append((mid, typ, day, amended.data(key, data)))
    horizon = (data_cut - timedelta(microseconds=1)).date() if data_cut else last_day
    subjects = [_subject(source, pid, fs, retracted[(source, pid)]) for (source, pid), fs in sorted(by_patient.items())]
    return Loaded(subjects, horizon, position)


def _day(text: str | None) -> date | None:
    return datetime.fromisoformat(text).date() if text else None


def _subject(source: str, pid: str, facts: list[tuple[str, str, date, dict[str, Any]]], retracted: set[str]) -> Subject:
    """A subject from its amended facts; a hospitalisation linked to a retracted event goes with it."""
    s = Subject(source, pid)
    adverse = {mid for mid, typ, _, _ in facts if typ == "adverse_event"}
    linked = {d.get("adverse_event_message_id") for _, typ, _, d in facts if typ == "hospitalisation"} & adverse
    for mid, typ, day, d in facts:
        if typ == "enrolment":
            s.arm = d.get("actual_arm") or d.get("arm") or s.arm
            s.first_exposure = _day(d.get("first_exposure_on")) or s.first_exposure
            s.last_exposure = _day(d.get("last_exposure_on")) or s.last_exposure
        elif typ == "treatment":
            s.treatments.append(TreatmentChange(d["drug"], d["action"], day, d.get("drug_class")))
        elif typ == "adverse_event":
            s.events.append(adverse_event(mid, day, d, hospitalised=mid in linked))
        elif typ == "hospitalisation" and d.get("adverse_event_message_id") not in adverse | retracted:
            s.events.append(unlinked_hospitalisation(mid, day, d.get("reason", "")))
        elif typ == "withdrawal":
            s.withdrawn_on = min(day, s.withdrawn_on) if s.withdrawn_on else day
            event = withdrawal_for_adverse_event(mid, day, d)
            if event is not None:
                s.events.append(event)
    return s


def _members(loaded: Loaded, settings: Settings) -> list[Membership]:
    return [m for s in loaded.subjects for m in memberships(s, settings.by, loaded.horizon, settings.lag)]


def ae_tables(db: ReadDB, settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
    """The treatment-emergent adverse-event tables as of a knowledge time and clinical data cut, with
    the fingerprint of everything the answer depends on."""
    loaded = load_subjects(db, as_of, settings.data_cut)
    members = _members(loaded, settings)
    control = choose_control(sorted({m.group for m in members}), settings.control)
    answer = ae_table(members, by=settings.by, control=control, min_percent=settings.min_percent)
    inputs = {"model": VERSION, "ledger_position": loaded.position, "by": settings.by, "control": control,
              "lag_days": settings.lag, "min_percent": settings.min_percent,
              "as_of": utc_text(as_of) if as_of else None,
              "data_cut": utc_text(settings.data_cut) if settings.data_cut else None}
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "by": answer.pop("by"),
        "fingerprint": f"{loaded.position}-{fingerprint}",
        "ledger_position": loaded.position,
        "as_of": as_of.isoformat() if as_of else None,
        "data_cut": (settings.data_cut - timedelta(microseconds=1)).date().isoformat() if settings.data_cut else None,
        "observation_end": loaded.horizon.isoformat() if loaded.subjects else None,
        "lag_days": settings.lag,
        "min_percent": settings.min_percent,
        "treatment_emergent": (
            "onset on or after the first exposure" + (f", and no later than {settings.lag} days after the last"
                                                      if settings.lag is not None else " (no upper bound)")
            + ("" if settings.by == "arm" else ", within each exposure period of the group")),
        **answer,
    }


def ae_cases(db: ReadDB, settings: Settings, group: str, *, row: str | None = None, soc: str | None = None,
             term: str | None = None, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """The drill-down: the subjects of one group with the emergent events of one overview row, one
    system organ class, or one term, each event with its onset and flags."""
    loaded = load_subjects(db, as_of, settings.data_cut)
    out = []
    for m in _members(loaded, settings):
        if m.group != group:
            continue
        for e in m.events:
            if row is not None and not OVERVIEW_FLAGS[row](e):
                continue
            if (soc is not None or term is not None) and not e.coded:
                continue
            if (soc is not None and e.soc != soc) or (term is not None and e.term != term):
                continue
            out.append({"source": m.subject.source, "patient_id": m.subject.patient_id, "message_id": e.message_id,
                        "onset": e.onset.isoformat(), "soc": e.soc, "term": e.term, "verbatim_term": e.verbatim,
                        "serious": e.serious, "severe": e.severe, "related": e.related,
                        "leading_to_discontinuation": e.leading_to_discontinuation, "fatal": e.fatal,
                        "days_on_exposure": (e.onset - m.spans[0].first).days + 1})
    return sorted(out, key=lambda r: (r["patient_id"], r["onset"], r["term"]))
