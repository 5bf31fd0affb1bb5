"""The efficacy read model: visit assessments with their nearest ESR or CRP, infusions and therapy
changes; and the query that scores each visit (JADAS, activity state, ACR-Pedi), applies the
repeat-infusion rule and compares baseline with a later week for the cohort."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import Patient
from projections.db import ReadDB, loads
from projections.incidence import parse_utc_text, utc_text
from safety.amendments import Amendments
from safety.efficacy import (
    Visit,
    acr_pedi,
    activity_state,
    jadas,
    paired_comparison,
    repeat_infusion_decisions,
)

PROTOCOL_WEEKS = (-12, 0, 4, 8, 12, 16, 26, 39, 52)
COMPARED = ("vas_wellbeing", "vas_pain", "physician_global", "active_joints", "jadas71", "cjadas10", "chaq",
            "esr", "crp")


class EfficacyModel:
    name = "efficacy"
    tables: tuple[str, ...] = ("efficacy_facts",)
    #: made at the end of a bulk load (``projections.view.View.deferred_indexes``): writes only insert
    deferred_indexes = ("efficacy_facts_patient", "efficacy_facts_type")
    topics: tuple[str, ...] = tuple(get_topic(c) for c in (
        Patient.Enrolment, Patient.Intervention, Patient.Treatment, Patient.VisitAssessment, Patient.LabResult,
        Patient.Retraction, Patient.Correction))

    def create_statements(self, db: ReadDB) -> list[str]:
        return [
            db.sql("CREATE TABLE IF NOT EXISTS {t}efficacy_facts (notification_id BIGINT PRIMARY KEY,"
                   " source TEXT NOT NULL, patient_id TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,"
                   " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, data TEXT NOT NULL)"),
            db.sql("CREATE INDEX IF NOT EXISTS efficacy_facts_patient ON {t}efficacy_facts (source, patient_id, type)"),
            # the patients with visit assessments and an intervention: the only ones scored
            db.sql("CREATE INDEX IF NOT EXISTS efficacy_facts_type ON {t}efficacy_facts (type, source, patient_id)"),
        ]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        self.write_rows(cursor, db, self.rows(db, events))

    def write_rows(self, cursor: Any, db: ReadDB, rows: list[tuple[Any, ...]]) -> None:
        db.insert(cursor, "efficacy_facts", rows)

    def rows(self, db: ReadDB, events: Sequence[tuple[int, Any]]) -> list[tuple[Any, ...]]:
        """A page's facts (``projections.view.PageRows``: pure)."""
        rows = []
        for nid, e in events:
            if not isinstance(e, Patient.Recorded):
                continue
            if e.type == "lab_result" and e.data.get("analyte") not in ("ESR", "CRP"):
                continue
            s = db.sealer
            rows.append((nid, e.source, s.token(e.patient_id), s.token(e.message_id), e.type,
                         utc_text(e.occurred_at), utc_text(e.timestamp), s.seal(json.dumps(e.data))))
        return rows


def _facts(db: ReadDB) -> dict[tuple[str, str], list[tuple[str, str, datetime, dict[str, Any]]]]:
    """Amended facts of the patients that have visit assessments and an intervention (the others have
    nothing to score; an amendment is always in its target's stream, and changes no message's type)."""
    rows = db.query(
        "SELECT source, patient_id, message_id, type, occurred_at, data FROM {t}efficacy_facts"
        " WHERE (source, patient_id) IN (SELECT source, patient_id FROM {t}efficacy_facts"
        " WHERE type = 'visit_assessment') AND (source, patient_id) IN (SELECT source, patient_id FROM"
        " {t}efficacy_facts WHERE type = 'intervention') ORDER BY notification_id")
    sl = db.sealer
    rows = [(source, sl.untoken(pid), sl.untoken(mid), typ, at, sl.unseal(data) or "")
            for source, pid, mid, typ, at, data in rows]
    amended: Amendments[tuple[str, str]] = Amendments()
    for source, _pid, _mid, typ, _at, data in rows:
        if amended.is_amendment(typ):
            d = json.loads(data)
            amended.note(typ, (source, d["target_message_id"]), d.get("data"))
    out: dict[tuple[str, str], list[tuple[str, str, datetime, dict[str, Any]]]] = defaultdict(list)
    for source, pid, mid, typ, at, data in rows:
        if amended.counts(typ, (source, mid)):
            out[(source, pid)].append((mid, typ, parse_utc_text(at), amended.data((source, mid), loads(data))))
    return out


def _nearest(labs: list[tuple[datetime, float]], at: datetime, window: timedelta) -> float | None:
    best = min(labs, key=lambda lab: abs(lab[0] - at), default=None)
    return best[1] if best is not None and abs(best[0] - at) <= window else None


def _protocol_week(days: float) -> int | None:
    week = min(PROTOCOL_WEEKS, key=lambda w: abs(days - 7 * w))
    return week if abs(days - 7 * week) <= 10 else None


def efficacy(db: ReadDB, *, anchor: str = "MSC infusion", at_week: int = 8, cut_off_set: str = "ACR 2021",
             marker_window_days: int = 7) -> dict[str, Any]:
    window = timedelta(days=marker_window_days)
    patients = []
    paired: dict[str, dict[str, list[tuple[float, float]]]] = {f"week {at_week}": defaultdict(list),
                                                               "end of study": defaultdict(list)}
    for (source, pid), facts in sorted(_facts(db).items()):
        infusions = sorted(at for _, typ, at, d in facts if typ == "intervention" and d.get("name") == anchor)
        if not infusions:
            continue
        start = infusions[0]
        diagnosis = next((d.get("diagnosis") for _, typ, _, d in facts if typ == "enrolment"), None)
        labs = [(at, d) for _, typ, at, d in facts if typ == "lab_result" and "value" in d]
        esr = [(at, float(d["value"])) for at, d in labs if d["analyte"] == "ESR"]
        crp = [(at, float(d["value"])) for at, d in labs if d["analyte"] == "CRP"]
        visits, scored = [], []
        for _, _typ, at, d in sorted((f for f in facts if f[1] == "visit_assessment"), key=lambda f: f[2]):
            e, c = _nearest(esr, at, window), _nearest(crp, at, window)
            j = jadas(d["physician_global"], d["patient_global"], d["active_joints"], esr=e,
                      crp=c if e is None else None)
            week = _protocol_week((at - start).total_seconds() / 86400)
            values = {"physician_global": d["physician_global"], "patient_global": d["patient_global"],
                      "chaq": d.get("chaq"), "active_joints": d["active_joints"],
                      "limited_joints": d.get("limited_joints"), "esr": e}
            row: dict[str, Any] = {
                "date": at.date().isoformat(), "week": week, "days_from_anchor": (at - start).days,
                "jadas71": j.jadas71, "jadas10": j.jadas10, "cjadas10": j.cjadas10, "marker": j.marker,
                "cut_off_set": cut_off_set,
                "state_jadas10": None if j.jadas10 is None
                else activity_state(j.jadas10, "jadas10", diagnosis, cut_off_set),
                "state_cjadas10": activity_state(j.cjadas10, "cjadas10", diagnosis, cut_off_set),
                "vas_wellbeing": d.get("vas_wellbeing"), "vas_pain": d.get("vas_pain"), "chaq": d.get("chaq"),
                "physician_global": d["physician_global"], "active_joints": d["active_joints"], "esr": e, "crp": c,
            }
            scored.append((at, values, row))
            if week is not None:
                visits.append(Visit(at, week, values))
        baseline = next((v for at, v, _ in reversed(scored) if at <= start), None)
        previous: dict[str, Any] | None = None
        for _at, values, row in scored:
            vs_base = acr_pedi(baseline, values) if baseline is not None else None
            vs_prev = acr_pedi(previous, values) if previous is not None else None
            row["acr_pedi_baseline"] = vs_base.level if vs_base and vs_base.evaluable else None
            row["acr_pedi_previous"] = vs_prev.level if vs_prev and vs_prev.evaluable else None
            row["flare"] = bool(vs_prev and vs_prev.flare)
            previous = values
        disqualifiers = [
            (at, f"{d['drug']} ({d.get('drug_class') or d.get('route')}) on {at.date().isoformat()}")
            for _, typ, at, d in facts
            if typ == "treatment" and d.get("action") in ("start", "change")
            and (d.get("drug_class") == "biologic" or d.get("route") == "intra-articular")
        ]
        decisions, deviations = repeat_infusion_decisions(start, visits, infusions, disqualifiers)
        rows = [r for _, _, r in scored]
        by_week = {r["week"]: r for r in rows if r["week"] is not None}
        for label, week in ((f"week {at_week}", at_week), ("end of study", max(PROTOCOL_WEEKS))):
            if 0 in by_week and week in by_week:
                for variable in COMPARED:
                    b, a = by_week[0].get(variable), by_week[week].get(variable)
                    if b is not None and a is not None:
                        paired[label][variable].append((float(b), float(a)))
        patients.append({
            "source": source, "patient_id": pid, "anchor_date": start.date().isoformat(),
            "diagnosis": diagnosis, "infusions": [t.date().isoformat() for t in infusions], "visits": rows,
            "repeat_infusion": [{"week": d.week, "allowed": d.allowed, "reasons": list(d.reasons)} for d in decisions],
            "deviations": [{"date": d.at.date().isoformat(), "what": d.what} for d in deviations],
        })
    comparison = {label: {v: paired_comparison(pairs) for v, pairs in variables.items()}
                  for label, variables in paired.items()}
    return {"anchor": anchor, "at_week": at_week, "cut_off_set": cut_off_set, "patients": patients,
            "comparison": comparison}
