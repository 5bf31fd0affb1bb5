"""The eDISH view over the signals read model's facts: each patient's peak liver tests as multiples of
the ULN, the quadrant, and potential Hy's law (``safety.liver``), grouped by arm or by drug."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from projections.db import ReadDB
from projections.incidence import utc_text
from projections.signals import history_from, patient_facts
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
from safety.liver import LiverConfig, edish, multiples
from safety.mas import History

POOLED = "All subjects"


def _facts(db: ReadDB, as_of: datetime | None, data_cut: datetime | None) -> dict[tuple[str, str], list[Any]]:
    """Every patient's facts known at ``as_of`` with clinical time before ``data_cut``."""
    facts = patient_facts(db, as_of)
    if data_cut is None:
        return facts
    cut = utc_text(data_cut)
    return {key: kept for key, rows in facts.items() if (kept := [r for r in rows if r[2] < cut])}


def groups_of(history: History, enrolment: dict[str, Any], by: str, arm_basis: str = "actual") -> list[str]:
    """A patient's groups: the actual (else planned) arm, the planned arm with ``arm_basis`` planned, each
    drug started, or one pooled group (``by`` pooled: the open session of a DSMB)."""
    if by == "pooled":
        return [POOLED]
    if by == "drug":
        return sorted({t.drug for t in history.treatments if t.action == "start"}) or ["(no drug)"]
    if arm_basis == "planned":
        return [enrolment.get("arm") or enrolment.get("actual_arm") or "(no arm)"]
    return [enrolment.get("actual_arm") or enrolment.get("arm") or "(no arm)"]


def _graded(db: ReadDB, by: str, as_of: datetime | None, arm_basis: str, data_cut: datetime | None,
            ) -> Iterator[tuple[str, list[str], datetime, list[Result]]]:
    """Each exposed patient's id, groups, first exposure and graded results (never-exposed patients are not
    in the safety population)."""
    for (source, pid), facts in sorted(_facts(db, as_of, data_cut).items()):
        history = history_from(source, pid, facts)
        enrolment: dict[str, Any] = next((json.loads(d) for _, t, _, d in facts if t == "enrolment"), {})
        start = _first_exposure(history, enrolment)
        if start is None:
            continue
        results = []
        for _, typ, at, data_text in facts:
            d = json.loads(data_text) if typ == "lab_result" else None
            if d and d.get("analyte") in GRADED and "value" in d:
                results.append(Result(d["analyte"], float(d["value"]), d.get("reference_low"), d.get("reference_high"),
                                      datetime.fromisoformat(at), d.get("unit")))
        yield pid, groups_of(history, enrolment, by, arm_basis), start, results


def lab_shifts(db: ReadDB, *, by: str = "arm", as_of: datetime | None = None,
               arm_basis: str = "actual", data_cut: datetime | None = None) -> dict[str, Any]:
    """CTCAE v5.0 shift tables of the exposed subjects: per test and group, N and the baseline × worst
    post-baseline grade matrix with a missing row and column, one grading scale (``safety.ctcae``)."""
    patients: list[tuple[str, dict[str, tuple[int | str, int | str]]]] = []
    for _pid, groups, start, results in _graded(db, by, as_of, arm_basis, data_cut):
        shifts = shift(results, start)
        patients += [(g, shifts) for g in groups]
    matrices = shift_matrices(patients)
    return {"by": by, "arm_basis": arm_basis if by == "arm" else None, "version": CTCAE_VERSION,
            "baseline": "the last result on or before the day of the first exposure",
            "scale": SHIFT_SCALE, "grades": list(GRADES), "matrices": matrices, "rows": shift_rows(matrices)}


def lab_outliers(db: ReadDB, *, by: str = "arm", as_of: datetime | None = None, arm_basis: str = "actual",
                 data_cut: datetime | None = None, min_grade: int = 3) -> list[dict[str, Any]]:
    """Every post-baseline result of grade ``min_grade`` or more (CTCAE v5.0, on the ULN scale of the shift
    tables): the DSMB's laboratory outlier listing."""
    out = []
    for pid, groups, start, results in _graded(db, by, as_of, arm_basis, data_cut):
        for r in outliers(results, start, min_grade):
            out += [{"patient_id": pid, "group": g, "test": r.test, "term": term_of(r.test),
                     "date": r.at.date().isoformat(), "value": r.value, "unit": r.unit,
                     "xuln": round(r.value / r.high, 2) if r.high else None,
                     "grade": grade(r.test, r.value, r.low, r.high)} for g in groups]
    return sorted(out, key=lambda row: (row["group"], row["patient_id"], row["test"], row["date"]))


def _first_exposure(history: History, enrolment: dict[str, Any]) -> datetime | None:
    """The first exposure: the enrolment's date (SDTM RFXSTDTC), else the first treatment started."""
    start = enrolment.get("first_exposure_on") or next(
        (t.at.isoformat() for t in sorted(history.treatments, key=lambda t: t.at) if t.action == "start"), None)
    return datetime.fromisoformat(start) if start else None


def edish_view(db: ReadDB, config: LiverConfig, *, by: str = "arm", as_of: datetime | None = None,
               after_first_exposure: bool = True, arm_basis: str = "actual",
               data_cut: datetime | None = None) -> dict[str, Any]:
    """Every patient with a liver test: group (arm, or each drug started), peaks, quadrant, Hy's law. On
    treatment by default (results from the first exposure on, what a DSMB reads); ``after_first_exposure``
    False takes every value, screening included."""
    patients = []
    for (source, pid), facts in sorted(_facts(db, as_of, data_cut).items()):
        history = history_from(source, pid, facts)
        enrolment: dict[str, Any] = next((json.loads(d) for _, t, _, d in facts if t == "enrolment"), {})
        start = _first_exposure(history, enrolment) if after_first_exposure else None
        if after_first_exposure and start is None:
            continue  # never exposed: no value on treatment
        view = edish(history, config, start)
        if all(view[k] is None for k in ("peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln", "peak_alp_xuln")):
            continue
        patients += [{"source": source, "patient_id": pid, "group": g, **view}
                     for g in groups_of(history, enrolment, by, arm_basis)]
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
