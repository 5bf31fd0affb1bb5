"""Build the demo feed: the seed study (Swart et al., MSC infusions in six refractory JIA patients).

Writes ``events/demo/seed-study.ndjson`` (contract v1). Facts come from the paper's Table 1, Table 2
and text; calendar dates are invented (the paper gives study weeks only) and routine lab values at
visits are plausible reconstructions. ``docs/demo-study.md`` says what is sourced and what is not.
Run: ``python scripts/build_seed_study.py``; a test checks the shipped file equals its output.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

SOURCE = "umcu-msc-jia"
OUT = Path(__file__).resolve().parent.parent / "events" / "demo" / "seed-study.ndjson"
VISIT_WEEKS = (-12, 0, 4, 8, 12, 16, 26, 39, 52)

# Table 1: sex, age at first MSC, ILAR category; last biologic and weeks since it stopped.
PATIENTS: dict[int, dict[str, Any]] = {
    1: {"week0": date(2014, 3, 3), "sex": "F", "age": 12.1, "dx": "extended oligoarticular",
        "last_biologic": ("tocilizumab", 5), "weight": 41.0},
    2: {"week0": date(2014, 6, 2), "sex": "F", "age": 15.9, "dx": "polyarticular RF-",
        "last_biologic": ("certolizumab", 31), "weight": 52.0},
    3: {"week0": date(2014, 9, 1), "sex": "M", "age": 9.4, "dx": "polyarticular RF-",
        "last_biologic": ("tocilizumab", 12), "weight": 29.0},
    4: {"week0": date(2015, 1, 5), "sex": "M", "age": 14.0, "dx": "extended oligoarticular",
        "last_biologic": ("abatacept", 5), "weight": 50.0},
    5: {"week0": date(2015, 4, 6), "sex": "M", "age": 16.8, "dx": "polyarticular RF-",
        "last_biologic": ("anakinra", 17), "weight": 61.0},
    6: {"week0": date(2015, 9, 7), "sex": "M", "age": 16.2, "dx": "systemic",
        "last_biologic": ("tocilizumab", 2), "weight": 58.0, "mas_history": True},
}
REPEAT_INFUSION_WEEK = {1: 11, 3: 10, 4: 8}  # Table 2: "Wk 0 & 11", "Wk 0 & 10", "Wk 0 & 8"

# Routine labs per patient at visits: (WBC 10^9/L, PLT 10^9/L, ESR mm/h, CRP mg/L), stable.
ROUTINE = {
    1: (7.9, 312, 18, 6.0), 2: (8.4, 355, 31, 12.0), 3: (6.8, 298, 24, 8.0),
    4: (7.2, 281, 14, 3.0), 5: (9.1, 402, 38, 18.0), 6: (6.2, 265, 22, 2.0),
}


# Visit assessments (reconstructed for demonstration: the study's per-patient efficacy data are in its
# supplement only). Baselines at week 0: physician global (0-10), VAS well-being (0-100; the patient
# global is VAS/10), active joints, limited joints, CHAQ, VAS pain; chosen so that the cohort
# medians match the study's: JADAS-71 24.5, cJADAS10 18.0, VAS well-being 75 at baseline.
BASELINE_VISIT = {
    1: (2.5, 50, 14, 10, 1.6, 55), 2: (5.0, 80, 15, 12, 2.1, 80), 3: (3.5, 50, 19, 15, 1.4, 60),
    4: (2.5, 75, 3, 6, 1.0, 70), 5: (5.0, 85, 16, 14, 2.4, 85), 6: (2.5, 75, 6, 5, 1.2, 65),
}
# Fraction of baseline at each protocol week: (clinical variables, VAS well-being and patient global).
# Patients 1, 3 and 4: an ACR-Pedi 70 response at week 4 waning to 50 at week 8 (the protocol's reason
# for their second infusion), no ACR-Pedi 30 at week 12 (so no third). Patients 2 and 5 respond later
# or keep improving; patient 6 flares (MAS at week 7).
COURSE = {
    1: {-12: (1.05, 1.0), 4: (0.25, 0.7), 8: (0.35, 0.7), 12: (0.75, 0.8), 16: (0.75, 0.8), 26: (0.5, 0.6),
        39: (0.4, 0.6), 52: (0.3, 0.5)},
    2: {-12: (1.0, 1.0), 4: (0.75, 0.9), 8: (0.25, 0.7), 12: (0.5, 0.7), 16: (0.45, 0.7), 26: (0.5, 0.7),
        39: (0.3, 0.5), 52: (0.2, 0.4)},
    3: {-12: (1.0, 1.05), 4: (0.25, 0.7), 8: (0.35, 0.45), 12: (0.75, 0.8), 16: (0.8, 0.8), 26: (0.6, 0.7),
        39: (0.4, 0.6), 52: (0.2, 0.4)},
    4: {-12: (1.0, 1.0), 4: (0.2, 0.6), 8: (0.35, 0.75), 12: (0.8, 0.8), 16: (0.8, 0.9), 26: (0.6, 0.7),
        39: (0.2, 0.4), 52: (0.1, 0.3)},
    5: {-12: (1.05, 1.0), 4: (0.55, 0.8), 8: (0.3, 0.7), 12: (0.5, 0.7), 16: (0.55, 0.7), 26: (0.4, 0.6),
        39: (0.3, 0.5), 52: (0.2, 0.4)},
    6: {-12: (0.95, 1.0), 4: (0.9, 0.95), 8: (1.2, 1.1), 12: (0.9, 0.9), 16: (0.9, 0.9), 26: (0.9, 0.9),
        39: (0.85, 0.9), 52: (0.85, 0.9)},
}


class Feed:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.counter: dict[str, int] = {}

    def add(self, pt: int, type_: str, when: date | datetime, data: dict[str, Any],
            reported: date | datetime | None = None, kind: str | None = None) -> str:
        pid = f"MSC-{pt:02d}"
        label = kind or type_
        n = self.counter[f"{pid}/{label}"] = self.counter.get(f"{pid}/{label}", 0) + 1
        message_id = f"{pid}-{label}-{n}"
        msg: dict[str, Any] = {
            "schema_version": 1,
            "message_id": message_id,
            "source": SOURCE,
            "patient_id": pid,
            "type": type_,
            "occurred_at": _iso(when),
            "data": data,
        }
        if reported is not None:
            msg["reported_at"] = _iso(reported if isinstance(reported, datetime)
                                      else datetime.combine(reported, time(12, 0)))
        self.lines.append(msg)
        return message_id

    def labs(self, pt: int, when: date | datetime, values: dict[str, tuple[float, str]]) -> None:
        for analyte, (value, unit) in values.items():
            self.add(pt, "lab_result", when, {"analyte": analyte, "value": value, "unit": unit},
                     kind="lab")

    def serious_ae(self, pt: int, when: date, term: str, reason: str, days: int,
                   severity: str = "severe") -> None:
        ae = self.add(pt, "adverse_event", when, {
            "term": term, "severity": severity, "serious": True, "seriousness": ["hospitalisation"],
            "outcome": "recovered",
        }, reported=when + timedelta(days=days + 1), kind="ae")
        self.add(pt, "hospitalisation", when, {
            "reason": reason, "discharged_on": (when + timedelta(days=days)).isoformat(),
            "adverse_event_message_id": ae,
        }, reported=when + timedelta(days=days + 1), kind="hosp")


def _iso(when: date | datetime) -> str:
    if isinstance(when, datetime):
        return when.isoformat()
    return when.isoformat()


def week(pt: int, w: float) -> date:
    return PATIENTS[pt]["week0"] + timedelta(days=round(7 * w))


def build() -> list[dict[str, Any]]:
    feed = Feed()
    for pt, p in PATIENTS.items():
        enrolment: dict[str, Any] = {"sex": p["sex"], "diagnosis": p["dx"], "age_years": p["age"],
                                     "weight_kg": p["weight"], "study": "NTR4146"}
        if "mas_history" in p:
            enrolment["mas_history"] = p["mas_history"]
        feed.add(pt, "enrolment", week(pt, -12), enrolment)
        drug, weeks_before = p["last_biologic"]
        feed.add(pt, "treatment", week(pt, -weeks_before),
                 {"drug": drug, "action": "stop", "drug_class": "biologic"},
                 reported=week(pt, -12), kind="tx")
        dose = f"2 million cells/kg ({p['weight'] * 2:g} million cells)"
        feed.add(pt, "intervention", week(pt, 0), {"name": "MSC infusion", "dose": dose, "route": "iv"},
                 kind="msc")
        if pt in REPEAT_INFUSION_WEEK:
            feed.add(pt, "intervention", week(pt, REPEAT_INFUSION_WEEK[pt]),
                     {"name": "MSC infusion", "dose": dose, "route": "iv"}, kind="msc")
        wbc, plt, esr, crp = ROUTINE[pt]
        for i, w in enumerate(VISIT_WEEKS):
            if pt == 6 and w == 8:
                continue  # patient 6's week-8 visit is written below, after his MAS admission
            wobble = (1.0, 1.04, 0.97, 1.02, 0.98, 1.03, 0.96, 1.01, 0.99)[i]
            feed.labs(pt, week(pt, w), {
                "WBC": (round(wbc * wobble, 1), "10^9/L"),
                "PLT": (round(plt * wobble), "10^9/L"),
                "ESR": (round(esr * wobble), "mm/h"),
                "CRP": (round(crp * wobble, 1), "mg/L"),
            })

    for pt, (phga, wellbeing, ajc, ljc, chaq, pain) in BASELINE_VISIT.items():
        for w in VISIT_WEEKS:
            clinical, wb = COURSE[pt].get(w, (1.0, 1.0))
            feed.add(pt, "visit_assessment", week(pt, w), {
                "active_joints": round(ajc * clinical), "limited_joints": round(ljc * clinical),
                "physician_global": round(min(10.0, phga * clinical), 2),
                "patient_global": round(min(10.0, wellbeing * wb / 10), 2),
                "vas_wellbeing": round(min(100.0, wellbeing * wb), 1),
                "vas_pain": round(min(100.0, pain * (clinical + wb) / 2), 1),
                "chaq": round(min(3.0, chaq * clinical), 3),
            }, kind="visit")

    # Patient 1: two serious events before (haematemesis, faecal impaction), readmitted twice after.
    feed.serious_ae(1, week(1, -9), "Haematemesis (drug-induced)", "haematemesis", 3)
    feed.serious_ae(1, week(1, -4), "Faecal impaction", "faecal impaction", 4)
    feed.serious_ae(1, week(1, 8), "Faecal impaction", "faecal impaction, readmission", 3)
    feed.serious_ae(1, week(1, 30), "Faecal impaction", "faecal impaction, readmission", 3)
    # Patient 2: rituximab at weeks 28 and 30; bilateral pneumonia at week 50.
    for w in (28, 30):
        feed.add(2, "treatment", week(2, w), {"drug": "rituximab", "action": "start",
                                              "drug_class": "biologic", "route": "iv"}, kind="tx")
    feed.serious_ae(2, week(2, 50), "Bilateral pneumonia", "bilateral pneumonia", 6)
    # Patient 3: moderate flu-like illness before, URTI after (Table 2, "Adverse Events").
    feed.add(3, "adverse_event", week(3, -6), {"term": "Flu-like illness", "severity": "moderate",
                                               "serious": False, "outcome": "recovered"}, kind="ae")
    feed.add(3, "adverse_event", week(3, 17), {"term": "Upper respiratory tract infection",
                                               "severity": "moderate", "serious": False,
                                               "outcome": "recovered"}, kind="ae")
    # Patients 4 and 5: other anti-rheumatic therapy changes (text: weeks 22 and 13).
    feed.add(4, "treatment", week(4, 22), {"drug": "mycophenolate mofetil", "action": "start",
                                           "drug_class": "other", "dose": "1500 mg/d"}, kind="tx")
    feed.add(5, "treatment", week(5, 13), {"drug": "intra-articular triamcinolone", "action": "start",
                                           "drug_class": "corticosteroid", "route": "intra-articular"},
             kind="tx")
    feed.add(5, "treatment", week(5, 16), {"drug": "adalimumab", "action": "start",
                                           "drug_class": "biologic", "dose": "40 mg/wk"}, kind="tx")

    # Patient 6: routine visit two days before the emergency visit at week 7, then the evolving MAS.
    visit = datetime.combine(week(6, 7) - timedelta(days=2), time(9, 30))
    er = datetime.combine(week(6, 7), time(14, 10))
    feed.labs(6, visit, {
        "WBC": (3.2, "10^9/L"), "PLT": (170, "10^9/L"), "ESR": (40, "mm/h"), "CRP": (0.4, "mg/L"),
        "FIBRINOGEN": (3.8, "g/L"), "TG": (1.2, "mmol/L"),
    })
    feed.add(6, "clinical_finding", er, {"fever": False, "cns_involvement": True,
                                         "active_arthritis": True, "haemorrhage": False},
             kind="finding")
    feed.labs(6, er, {
        "WBC": (1.7, "10^9/L"), "PLT": (89, "10^9/L"), "ESR": (82, "mm/h"), "CRP": (2.8, "mg/L"),
        "FERRITIN": (41.2, "ug/L"), "FIBRINOGEN": (3.4, "g/L"), "TG": (2.8, "mmol/L"),
    })
    ae = feed.add(6, "adverse_event", er, {
        "term": "Macrophage activation syndrome (evolving)", "severity": "severe", "serious": True,
        "seriousness": ["hospitalisation"], "outcome": "recovered", "relatedness": "unlikely",
    }, reported=er + timedelta(hours=6), kind="ae")
    feed.add(6, "hospitalisation", er, {"reason": "evolving macrophage activation syndrome",
                                        "discharged_on": (week(6, 7) + timedelta(days=3)).isoformat(),
                                        "adverse_event_message_id": ae}, kind="hosp")
    feed.add(6, "treatment", er + timedelta(hours=3), {
        "drug": "methylprednisolone", "action": "start", "drug_class": "corticosteroid",
        "dose": "1 g/day for 3 days", "route": "iv"}, kind="tx")
    feed.add(6, "treatment", er + timedelta(days=1), {
        "drug": "tocilizumab", "action": "start", "drug_class": "biologic", "route": "iv"}, kind="tx")
    feed.labs(6, week(6, 8), {"WBC": (6.4, "10^9/L"), "PLT": (248, "10^9/L"), "ESR": (14, "mm/h"),
                              "CRP": (1.1, "mg/L")})

    feed.lines.sort(key=lambda m: (m["occurred_at"][:10], m["patient_id"]))
    return feed.lines


def render() -> str:
    return "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in build())


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
