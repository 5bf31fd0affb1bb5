"""The signals read model's facts (every patient event as it was recorded) and the patient history the
rules read from them, amendments applied: shared by the signals, liver and DSMB read sides."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from projections.db import ReadDB, loads
from projections.incidence import utc_text
from safety.amendments import Amendments
from safety.mas import Finding, History, Lab, SeriousEvent, Treatment
from safety.seriousness import contradiction, criteria, fatal, serious
from safety.vocabulary import AMENDMENT_TYPES


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def history_from(source: str, patient_id: str, rows: Sequence[tuple[str, str, str, str]]) -> History:
    """A patient's History from (message_id, type, occurred_at, data) rows, amendments applied."""
    amended: Amendments[str] = Amendments()
    parsed = [(mid, typ, at, loads(data)) for mid, typ, at, data in rows]
    any_amendment = False
    for _mid, typ, _at, data in parsed:
        if typ in AMENDMENT_TYPES:
            amended.note(typ, data["target_message_id"], data.get("data"))
            any_amendment = True
    retracted = amended.retracted
    h = History(source, patient_id)
    adverse_events: set[str] | None = None  # made when a hospitalisation needs it
    append_lab = h.labs.append
    for mid, typ, at_text, data in parsed:
        if any_amendment:
            if not amended.counts(typ, mid):
                continue
            data = amended.data(mid, data)
        if typ == "lab_result":  # most facts: the rest of the chain is not asked
            if data.get("standardised", True):  # tests outside the analyte table feed no rule
                append_lab(Lab(mid, data["analyte"], float(data["value"]), data["unit"], parse_time(at_text),
                               data.get("reference_high"), data.get("reference_low")))
            continue
        at = parse_time(at_text)
        if typ == "clinical_finding":
            h.findings.append(Finding(at, data))
        elif typ == "enrolment":
            h.diagnosis, h.mas_history = data.get("diagnosis"), data.get("mas_history")
            h.condition, h.enrolment = data.get("condition"), data
        elif typ == "treatment":
            h.treatments.append(Treatment(data["drug"], data["action"], data.get("drug_class"), at))
        elif typ == "adverse_event" and serious(data):
            h.serious_events.append(SeriousEvent(mid, data["term"], at, tuple(criteria(data)), fatal(data),
                                                 contradiction(data)))
        elif typ == "withdrawal" and data.get("death"):
            h.serious_events.append(SeriousEvent(mid, f"death: {data.get('reason') or 'reported at withdrawal'}", at,
                                                 ("death",), fatal=True))
        elif typ == "hospitalisation":
            if adverse_events is None:
                adverse_events = {m for m, t, _, _ in parsed if t == "adverse_event" and m not in retracted}
            if data.get("adverse_event_message_id") in adverse_events:
                continue
            if data.get("adverse_event_message_id") in retracted:
                continue
            h.serious_events.append(SeriousEvent(mid, f"hospitalisation: {data['reason']}", at, ("hospitalisation",)))
    return h


#: every patient's facts, (source, patient id) -> (message_id, type, occurred_at, data) rows: ``patient_facts``
Facts = dict[tuple[str, str], list[tuple[str, str, str, str]]]


def patient_facts(db: ReadDB, as_of: datetime | None = None) -> Facts:
    """Every patient's facts in the read model, as ``history_from`` takes them (recorded by ``as_of``)."""
    sql = "SELECT source, patient_id, message_id, type, occurred_at, data FROM {t}signal_facts"
    params: list[Any] = []
    if as_of is not None:
        sql += " WHERE recorded_at <= {p}"
        params.append(utc_text(as_of))
    rows: Facts = defaultdict(list)
    sl = db.sealer
    for source, pid, mid, typ, at, data in db.query(sql + " ORDER BY notification_id", params):
        rows[(source, sl.untoken(pid))].append((sl.untoken(mid), typ, at, sl.unseal(data) or ""))
    return rows
