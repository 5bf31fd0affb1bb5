"""The eDISH view over the signals read model's facts: each patient's peak liver tests as multiples of
the ULN, the quadrant, and potential Hy's law (``safety.liver``), grouped by arm or by drug."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import msgspec

from projections.db import ReadDB, no_cycle_collection
from projections.facts import Facts, history_from, patient_facts
from projections.incidence import utc_text
from safety.ctcae import (
    GRADED,
    GRADES,
    SHIFT_SCALE,
    Result,
    grade,
    outliers,
    shift,
    shift_matrices,
    shift_rows,
    term_of,
)
from safety.ctcae import VERSION as CTCAE_VERSION
from safety.liver import LiverConfig, edish, load_liver_config, multiples
from safety.mas import History

POOLED = "All subjects"
#: one row per patient, written with their signals (``SignalsModel``): what the Liver page reads
TABLE = "liver_views"


#: the parts of a patient's view, each a column of its own (NULL where the patient has none): a question
#: reads and decodes only the part it needs, of only the patients that have it
PARTS = ("edish_on_treatment", "edish_every_value", "shifts")
_decode = msgspec.json.Decoder().decode


def create_statement(db: ReadDB) -> str:
    return db.sql(f"CREATE TABLE IF NOT EXISTS {{t}}{TABLE} (source TEXT NOT NULL, patient_id TEXT NOT NULL,"
                  " rules TEXT NOT NULL, groups TEXT NOT NULL, edish_on_treatment TEXT, edish_every_value TEXT,"
                  " shifts TEXT, PRIMARY KEY (source, patient_id))")


def stored_row(source: str, patient_token: str, key: str, view: dict[str, Any], db: ReadDB) -> tuple[Any, ...]:
    """A patient's view as a row of ``TABLE`` (each part sealed when encryption at rest is on)."""
    seal = db.sealer.seal
    groups = {k: view[k] for k in ("arm", "actual_arm", "drugs")}  # as _groups made them
    return (source, patient_token, key, seal(json.dumps(groups)),
            *(None if view[part] is None else seal(json.dumps(view[part])) for part in PARTS))


UPSERT = (f"INSERT INTO {{t}}{TABLE} VALUES ({','.join(['{p}'] * 7)}) ON CONFLICT (source, patient_id)"
          " DO UPDATE SET rules = excluded.rules, groups = excluded.groups, edish_on_treatment ="
          " excluded.edish_on_treatment, edish_every_value = excluded.edish_every_value, shifts = excluded.shifts")


def rules_key(config: LiverConfig) -> str:
    """What a stored view was computed under: the liver rules (every value, not only their version) and
    the CTCAE version of the shift grades; a view under other rules is computed again from the facts."""
    return hashlib.sha256(f"{config!r}|{CTCAE_VERSION}".encode()).hexdigest()[:16]


def patient_view(history: History, config: LiverConfig) -> dict[str, Any]:
    """A patient's part of every liver answer: groups, first exposure, eDISH peaks on treatment and over
    every value, and the shift grades. Computed once per change of the patient, so the Liver page only
    reads and counts."""
    start = first_exposure(history)
    measured = multiples(history.labs, config)
    return {**_groups(history), "first_exposure": start.isoformat() if start else None,
            "edish_on_treatment": edish(history, config, start, measured) if start else None,
            "edish_every_value": edish(history, config, None, measured),
            "shifts": shift(_graded(history), start) if start else None}


def _groups(history: History) -> dict[str, Any]:
    """What ``groups_of`` groups a patient by: the planned and actual arms, the drugs started."""
    return {"arm": history.enrolment.get("arm"), "actual_arm": history.enrolment.get("actual_arm"),
            "drugs": sorted({t.drug for t in history.treatments if t.action == "start"})}


def _graded(history: History) -> list[Result]:
    """The patient's results of the tests CTCAE grades, with their reference ranges."""
    return [Result(lab.analyte, lab.value, lab.reference_low, lab.reference_high, lab.at, lab.unit)
            for lab in history.labs if lab.analyte in GRADED]


def first_exposure(history: History) -> datetime | None:
    """The first exposure: the enrolment's date (SDTM RFXSTDTC), else the first treatment started."""
    start = history.enrolment.get("first_exposure_on") or next(
        (t.at.isoformat() for t in sorted(history.treatments, key=lambda t: t.at) if t.action == "start"), None)
    return datetime.fromisoformat(start) if start else None


def groups_of(view: dict[str, Any], by: str, arm_basis: str = "actual") -> list[str]:
    """A patient's groups: the actual (else planned) arm, the planned arm with ``arm_basis`` planned, each
    drug started, or one pooled group (``by`` pooled: the open session of a DSMB)."""
    if by == "pooled":
        return [POOLED]
    if by == "drug":
        return view["drugs"] or ["(no drug)"]
    if arm_basis == "planned":
        return [view["arm"] or view["actual_arm"] or "(no arm)"]
    return [view["actual_arm"] or view["arm"] or "(no arm)"]


def _views(db: ReadDB, config: LiverConfig, part: str, as_of: datetime | None, data_cut: datetime | None,
           any_rules: bool = False, facts: Facts | None = None) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(source, patient, groups, ``part``) of every patient with that part, by patient: as stored when the
    question is about now under the rules the read model applied (``any_rules``: the part depends on no
    liver rule), else computed from the facts known at ``as_of`` with clinical time before ``data_cut``
    (``facts``: those facts, when the caller has read them already)."""
    key, sl = rules_key(config), db.sealer
    if as_of is None and data_cut is None:
        rules = db.query(f"SELECT DISTINCT rules FROM {{t}}{TABLE}")
        if rules and (any_rules or rules == [(key,)]):
            stored = db.query(f"SELECT source, patient_id, groups, {part} FROM {{t}}{TABLE} WHERE {part} IS NOT NULL")
            return sorted((source, sl.untoken(pid), _decode(sl.unseal(groups) or "{}"), _decode(sl.unseal(value) or ""))
                          for source, pid, groups, value in stored)
    if facts is None:
        facts = patient_facts(db, as_of)
    if data_cut is not None:
        cut = utc_text(data_cut)
        facts = {k: kept for k, rows in facts.items() if (kept := [r for r in rows if r[2] < cut])}
    out = []
    for (source, pid), rows in sorted(facts.items()):
        view = patient_view(history_from(source, pid, rows), config)
        if view[part] is not None:
            out.append((source, pid, view, view[part]))
    return out


# every patient's view decoded at once: the collector's passes cost up to 3x (15,000 patients: 0.27 -> 0.09 s)
@no_cycle_collection()
def lab_shifts(db: ReadDB, *, by: str = "arm", as_of: datetime | None = None,
               arm_basis: str = "actual", data_cut: datetime | None = None,
               facts: Facts | None = None) -> dict[str, Any]:
    """CTCAE v5.0 shift tables of the exposed subjects (never-exposed patients are not in the safety
    population): per test and group, N and the baseline × worst post-baseline grade matrix with a missing
    row and column, one grading scale (``safety.ctcae``; no liver rule is read)."""
    patients: list[tuple[str, dict[str, tuple[int | str, int | str]]]] = []
    for _source, _pid, groups, grades in _views(db, load_liver_config(), "shifts", as_of, data_cut,
                                                any_rules=True, facts=facts):
        shifts = {test: (pair[0], pair[1]) for test, pair in grades.items()}
        patients += [(g, shifts) for g in groups_of(groups, by, arm_basis)]
    matrices = shift_matrices(patients)
    return {"by": by, "arm_basis": arm_basis if by == "arm" else None, "version": CTCAE_VERSION,
            "baseline": "the last result on or before the day of the first exposure",
            "scale": SHIFT_SCALE, "grades": list(GRADES), "matrices": matrices, "rows": shift_rows(matrices)}


@no_cycle_collection()  # as lab_shifts
def lab_outliers(db: ReadDB, *, by: str = "arm", as_of: datetime | None = None, arm_basis: str = "actual",
                 data_cut: datetime | None = None, min_grade: int = 3,
                 facts: Facts | None = None) -> list[dict[str, Any]]:
    """Every post-baseline result of grade ``min_grade`` or more (CTCAE v5.0, on the ULN scale of the shift
    tables): the DSMB's laboratory outlier listing (``facts``: as ``_views`` takes them)."""
    out = []
    if facts is None:
        facts = patient_facts(db, as_of)
    cut = utc_text(data_cut) if data_cut is not None else None
    for (source, pid), rows in sorted(facts.items()):
        history = history_from(source, pid, [r for r in rows if cut is None or r[2] < cut])
        start = first_exposure(history)
        if start is None:
            continue
        groups = groups_of(_groups(history), by, arm_basis)
        for r in outliers(_graded(history), start, min_grade):
            out += [{"patient_id": pid, "group": g, "test": r.test, "term": term_of(r.test),
                     "date": r.at.date().isoformat(), "value": r.value, "unit": r.unit,
                     "xuln": round(r.value / r.high, 2) if r.high else None,
                     "grade": grade(r.test, r.value, r.low, r.high)} for g in groups]
    return sorted(out, key=lambda row: (row["group"], row["patient_id"], row["test"], row["date"]))


@no_cycle_collection()  # as lab_shifts
def edish_view(db: ReadDB, config: LiverConfig, *, by: str = "arm", as_of: datetime | None = None,
               after_first_exposure: bool = True, arm_basis: str = "actual",
               data_cut: datetime | None = None, facts: Facts | None = None) -> dict[str, Any]:
    """Every patient with a liver test: group (arm, or each drug started), peaks, quadrant, Hy's law. On
    treatment by default (results from the first exposure on, what a DSMB reads); ``after_first_exposure``
    False takes every value, screening included."""
    patients = []
    part = "edish_on_treatment" if after_first_exposure else "edish_every_value"  # never exposed: none on treatment
    for source, pid, groups, peaks in _views(db, config, part, as_of, data_cut, facts=facts):
        if all(peaks[k] is None for k in ("peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln", "peak_alp_xuln")):
            continue
        patients += [{"source": source, "patient_id": pid, "group": g, **peaks}
                     for g in groups_of(groups, by, arm_basis)]
    return {"by": by, "arm_basis": arm_basis if by == "arm" else None, "rules_version": config.version,
            "after_first_exposure": after_first_exposure,
            "thresholds": {"transaminase_xuln": config.hy_transaminase_xuln,
                           "bilirubin_xuln": config.hy_bilirubin_xuln, "window_days": config.hy_window.days,
                           "cholestatic_alp_xuln": config.cholestatic_alp_xuln},
            "patients": patients}


def liver_panel(db: ReadDB, config: LiverConfig, source: str, patient_id: str) -> list[dict[str, Any]]:
    """A patient's ALT, AST, bilirubin and ALP over time as multiples of the ULN used for each."""
    s = db.sealer
    rows = db.query("SELECT message_id, type, occurred_at, data FROM {t}signal_facts WHERE source = {p}"
                    " AND patient_id = {p} ORDER BY notification_id", [source, s.token(patient_id)])
    history = history_from(source, patient_id, [(s.untoken(m), t, at, s.unseal(d) or "") for m, t, at, d in rows])
    return [{"at": m.lab.at, "test": m.lab.analyte, "xuln": m.xuln, "value": m.lab.value, "unit": m.lab.unit,
             "uln": m.uln, "uln_source": m.uln_source} for m in multiples(history.labs, config)]
