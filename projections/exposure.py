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
from projections.db import ReadDB, no_cycle_collection, open_columns, seal_columns
from projections.incidence import utc_text
from safety.ae_tables import (
    DISCONTINUATION,
    OVERVIEW_FLAGS,
    ae_table,
    choose_control,
    classify,
    event_from,
    for_adverse_event,
    unlinked_hospitalisation,
    withdrawal_event,
)
from safety.exposure import DEFAULT_DRUG_LAG_DAYS, Membership, Subject, TreatmentChange, left_out, memberships

#: Bump when the rows this model writes change meaning: a rebuild is then required.
VERSION = "exposure-1"
COLUMNS = ("notification_id", "source", "patient_id", "message_id", "type", "occurred_at", "recorded_at",
           "arm", "first_exposure_on", "last_exposure_on", "drug", "drug_class", "action", "term", "soc",
           "verbatim_term", "flags", "linked", "corrected")
TOKENS = frozenset({"patient_id", "message_id", "linked"})
SEALED = frozenset({"arm", "drug", "drug_class", "term", "soc", "verbatim_term", "corrected"})
#: the message types this model keeps
EXPOSURE_TYPES = frozenset({"enrolment", "treatment", "adverse_event", "hospitalisation", "withdrawal", "contact",
                            "retraction", "correction"})
_SOURCE, _PATIENT, _TYPE, _LINKED, _CORRECTED = map(COLUMNS.index, ("source", "patient_id", "type", "linked",
                                                                   "corrected"))


def _day(text: Any) -> str | None:
    return str(text)[:10] if text else None


def columns_of(type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """(arm, first_exposure_on, last_exposure_on, drug, drug_class, action, term, soc, verbatim_term, flags,
    linked, corrected) of one fact: what the tables read, adverse events already classified."""
    if type_ == "enrolment":
        arms = {"planned": data.get("arm"), "actual": data.get("actual_arm") or data.get("arm")}
        return (json.dumps(arms) if arms["planned"] or arms["actual"] else None, _day(data.get("first_exposure_on")),
                _day(data.get("last_exposure_on")), None, None, None, None, None, None, 0, None, None)
    if type_ == "treatment":
        return None, None, None, data["drug"], data.get("drug_class"), data["action"], None, None, None, 0, None, None
    if type_ == "adverse_event":
        term, soc, flags = classify(data)
        return None, None, None, None, None, None, term, soc, data.get("verbatim_term"), flags, None, None
    if type_ == "hospitalisation":
        return (None, None, None, None, None, None, data.get("reason", ""), None, None, 0,
                data.get("adverse_event_message_id"), None)
    if type_ == "withdrawal":
        flags = DISCONTINUATION if for_adverse_event(data) else 0
        return None, None, None, None, None, None, None, None, None, flags, None, None
    if type_ == "contact":  # its day is all that counts: observation runs at least to here
        return None, None, None, None, None, None, None, None, None, 0, None, None
    # retraction, correction: the target, and a correction's full data (rare: classified when read)
    corrected = json.dumps(data["data"], separators=(",", ":")) if type_ == "correction" else None
    return None, None, None, None, None, None, None, None, None, 0, data["target_message_id"], corrected


class ExposureModel:
    name = "exposure"
    tables: tuple[str, ...] = ("exposure_facts",)
    topics = tuple(
        get_topic(cls) for cls in (
            Patient.Enrolment, Patient.Treatment, Patient.AdverseEvent, Patient.Hospitalisation,
            Patient.Withdrawal, Patient.Contact, Patient.Retraction, Patient.Correction,
        )
    )

    def create_statements(self, db: ReadDB) -> list[str]:
        return [db.sql(
            "CREATE TABLE IF NOT EXISTS {t}exposure_facts (notification_id BIGINT PRIMARY KEY,"
            " source TEXT NOT NULL, patient_id TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,"
            " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, arm TEXT, first_exposure_on TEXT,"
            " last_exposure_on TEXT, drug TEXT, drug_class TEXT, action TEXT, term TEXT, soc TEXT,"
            " verbatim_term TEXT, flags INTEGER NOT NULL, linked TEXT, corrected TEXT)"
        )]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        rows = [seal_columns(db, COLUMNS, (nid, e.source, e.patient_id, e.message_id, e.type, utc_text(e.occurred_at),
                                           utc_text(e.timestamp), *columns_of(e.type, e.data)), TOKENS, SEALED)
                for nid, e in events if isinstance(e, Patient.Recorded)]
        if rows:
            marks = ",".join([db.placeholder] * len(COLUMNS))
            cursor.executemany(db.sql(f"INSERT INTO {{t}}exposure_facts VALUES ({marks})"), rows)


@dataclass(frozen=True)
class Settings:
    """How a table is asked for."""

    by: str = "arm"  # arm, drug, drug_class
    control: str | None = None
    #: by arm: "actual" (the arm of the treatment started; SDTM ACTARM, the safety convention) or "planned"
    #: (the randomised arm; SDTM ARM) - only the group names differ, never who is exposed or when
    #: None: by arm no upper bound; by drug or class the default lag
    lag_days: int | None = None
    min_percent: float = 0.0
    data_cut: datetime | None = None  # exclusive: facts at or after it are not yet known clinically
    arm_basis: str = "actual"
    #: every subject in one group, POOLED (a DSMB's open session: no arm, no comparison)
    pooled: bool = False

    @property
    def lag(self) -> int | None:
        return self.lag_days if self.lag_days is not None or self.by == "arm" else DEFAULT_DRUG_LAG_DAYS


@dataclass(frozen=True)
class Loaded:
    subjects: list[Subject]
    horizon: date
    position: int


def arms_of(stored: str) -> tuple[str | None, str | None]:
    """(actual, planned) arm of an enrolment row: JSON since the arm basis was added (issue 27); a row
    written before holds the actual arm (or the planned one when none was sent) as text."""
    if stored.startswith("{"):
        arms = json.loads(stored)
        return arms.get("actual") or arms.get("planned"), arms.get("planned") or arms.get("actual")
    return stored, stored


#: the subjects loaded last, with what they were loaded for: the board's Arms and drugs page asks for the
#: tables and then the drill-down of the same facts, the Signal detection page its screen and a pair's cases
_LAST_LOADED: dict[tuple[Any, ...], Loaded] = {}


def load_subjects(db: ReadDB, as_of: datetime | None, data_cut: datetime | None) -> Loaded:
    """Every subject as known at ``as_of``, amendments applied, facts before ``data_cut`` only; the last
    answer again while no fact was added (the facts are only ever appended; a rebuild adds them anew)."""
    newest = db.query("SELECT MAX(notification_id), COUNT(*) FROM {t}exposure_facts")[0]
    key = (db.store.url, str(db.sqlite_path), as_of, data_cut, *newest)
    loaded = _LAST_LOADED.get(key)
    if loaded is None:
        loaded = _load_subjects(db, as_of, data_cut)
        _LAST_LOADED.clear()
        _LAST_LOADED[key] = loaded
    return loaded


def forget_loaded() -> None:
    """Drop the remembered subjects (a benchmark times a query as a fresh process answers it)."""
    _LAST_LOADED.clear()


def _load_subjects(db: ReadDB, as_of: datetime | None, data_cut: datetime | None) -> Loaded:
    sql = "SELECT " + ", ".join(COLUMNS) + " FROM {t}exposure_facts"
    params: list[Any] = []
    if as_of is not None:
        sql += " WHERE recorded_at <= {p}"
        params.append(utc_text(as_of))
    rows = db.query(sql + " ORDER BY notification_id", params)
    if db.sealer.enabled:
        rows = [open_columns(db, COLUMNS, r, TOKENS, SEALED) for r in rows]
    subjects, horizon = build_subjects(rows, data_cut)
    return Loaded(subjects, horizon, rows[-1][0] if rows else 0)


def build_subjects(rows: Sequence[tuple[Any, ...]], data_cut: datetime | None) -> tuple[list[Subject], date]:
    """The subjects of rows in this model's shape (``COLUMNS``, ledger order), amendments applied, facts
    before ``data_cut`` only; and the horizon: the day before the cut, else the last clinical day.

    One pass over the rows, the hot path of every table: amendments first (they are few), then each fact
    straight into its subject."""
    retracted: set[tuple[str, str, str]] = set()
    corrected: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        if r[_TYPE] == "retraction":
            retracted.add((r[_SOURCE], r[_PATIENT], r[_LINKED]))
        elif r[_TYPE] == "correction":
            corrected[(r[_SOURCE], r[_PATIENT], r[_LINKED])] = json.loads(r[_CORRECTED])
    cut = utc_text(data_cut) if data_cut else None
    subjects: dict[tuple[str, str], Subject] = {}
    dropped: dict[tuple[str, str], set[str]] = defaultdict(set)  # retracted ids: what links to them goes too
    links: dict[tuple[str, str], list[tuple[str, date, str, str]]] = defaultdict(list)
    last_day = ""
    seen: dict[tuple[str, str], date] = {}  # each subject's last fact day (its last contact, if it has contacts)
    fromiso = date.fromisoformat
    for (_nid, source, pid, mid, typ, at, _rec, arm, first, last, drug, drug_class, action, term, soc, verbatim,
         flags, linked, _corr) in rows:
        if typ == "retraction" or typ == "correction":
            continue
        key = (source, pid)
        if retracted and (source, pid, mid) in retracted:
            dropped[key].add(mid)
            continue
        if cut is not None and at >= cut:
            continue
        s = subjects.get(key)
        if s is None:
            s = subjects[key] = Subject(source, pid)
        if at > last_day:
            last_day = at
        day = fromiso(at[:10])
        if key not in seen or day > seen[key]:
            seen[key] = day
        if corrected and (source, pid, mid) in corrected:
            data = corrected[(source, pid, mid)]
            arm, first, last, drug, drug_class, action, term, soc, verbatim, flags, linked, _ = columns_of(typ, data)
        if typ == "adverse_event":
            s.events.append(event_from(mid, day, term, soc, flags, verbatim))
        elif typ == "treatment":
            s.treatments.append(TreatmentChange(drug, action, day, drug_class))
        elif typ == "enrolment":
            if arm:
                s.arm, s.planned_arm = arms_of(arm)
            s.first_exposure = fromiso(first) if first else s.first_exposure
            s.last_exposure = fromiso(last) if last else s.last_exposure
        elif typ == "hospitalisation":
            links[key].append((mid, day, term, linked))
        elif typ == "contact":
            s.last_contact = max(day, s.last_contact) if s.last_contact else day
        elif typ == "withdrawal":
            s.withdrawn_on = min(day, s.withdrawn_on) if s.withdrawn_on else day
            if flags & DISCONTINUATION:
                s.events.append(withdrawal_event(mid, day))
    for key, hospitalisations in links.items():
        _hospitalise(subjects[key], hospitalisations, dropped[key])
    for key, s in subjects.items():
        if s.last_contact is not None:
            s.last_contact = max(s.last_contact, seen[key])
    horizon = (data_cut - timedelta(microseconds=1)).date() if data_cut else fromiso(last_day[:10] or "0001-01-01")
    return [subjects[k] for k in sorted(subjects)], horizon


def _hospitalise(s: Subject, hospitalisations: list[tuple[str, date, str, str]], retracted: set[str]) -> None:
    """A hospitalisation makes the adverse event it links to serious, goes with a retracted one, and is
    otherwise a serious event of its own (the contract's rule, as in incidence)."""
    ids = {e.message_id for e in s.events}
    linked = {link for _, _, _, link in hospitalisations if link in ids}
    s.events = [e._replace(serious=True) if e.message_id in linked else e for e in s.events]
    s.events += [unlinked_hospitalisation(mid, day, reason) for mid, day, reason, link in hospitalisations
                 if link not in ids and link not in retracted]


POOLED = "All subjects"


def _members(loaded: Loaded, settings: Settings) -> list[Membership]:
    members = [m for s in loaded.subjects
               for m in memberships(s, settings.by, loaded.horizon, settings.lag, settings.arm_basis)]
    return [m._replace(group=POOLED) for m in members] if settings.pooled else members


def ae_tables(db: ReadDB, settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
    """The treatment-emergent adverse-event tables as of a knowledge time and clinical data cut, with
    the fingerprint of everything the answer depends on."""
    with no_cycle_collection():
        loaded = load_subjects(db, as_of, settings.data_cut)
        members = _members(loaded, settings)
        taking_part = {(m.subject.source, m.subject.patient_id) for m in members}
        outside = [{"source": s.source, "patient_id": s.patient_id, "reason": left_out(s, settings.by, loaded.horizon)}
                   for s in loaded.subjects if (s.source, s.patient_id) not in taking_part]
        control = choose_control(sorted({m.group for m in members}), settings.control)
        answer = ae_table(members, by=settings.by, control=control, min_percent=settings.min_percent)
    inputs = {"model": VERSION, "ledger_position": loaded.position, "by": settings.by, "control": control,
              "arm_basis": settings.arm_basis, "pooled": settings.pooled,
              "lag_days": settings.lag, "min_percent": settings.min_percent,
              "as_of": utc_text(as_of) if as_of else None,
              "data_cut": utc_text(settings.data_cut) if settings.data_cut else None}
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "by": answer.pop("by"),
        "arm_basis": settings.arm_basis if settings.by == "arm" else None,
        "fingerprint": f"{loaded.position}-{fingerprint}",
        "ledger_position": loaded.position,
        "as_of": as_of.isoformat() if as_of else None,
        "data_cut": (settings.data_cut - timedelta(microseconds=1)).date().isoformat() if settings.data_cut else None,
        "observation_end": loaded.horizon.isoformat() if loaded.subjects else None,
        "lag_days": settings.lag,
        "min_percent": settings.min_percent,
        #: the subjects of the store that take no part, each with the reason
        "left_out": outside,
        "treatment_emergent": (
            "onset on or after the first exposure" + (f", and no later than {settings.lag} days after the last"
                                                      if settings.lag is not None else " (no upper bound)")
            + ("" if settings.by == "arm" else ", within each exposure period of the group")),
        #: the same window for the time at risk (issue 27: events and time over one window)
        "time_at_risk": (
            "from the first exposure to the end of each subject's observation (withdrawal, else the "
            "observation end above)" if settings.lag is None and settings.by == "arm" else
            f"each exposure period from its start through its end plus {settings.lag or 0} days, clipped at the end "
            "of each subject's observation"),
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
