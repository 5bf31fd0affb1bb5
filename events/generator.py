"""A deterministic synthetic Pharmachild-size registry feed (contract v1), for scale tests and benchmarks.

Same arguments, same bytes. Patients are enrolled across the ILAR categories (systemic about 10%),
get biologic starts and stops, visits every 4-12 weeks with lab panels that drift within plausible
paediatric ranges, adverse events at registry-like rates (serious events in about 7% of patients,
infections the most common), hospitalisations linked to serious events, and, for a small share, an
anchoring intervention. A few patients develop an evolving MAS (two panels 1-3 days apart with
falling counts and rising ESR, triglycerides and ferritin); they are listed in the truth file, so
recall can be measured. A small share of duplicates, late reports, corrections and invalid
messages is mixed in. Messages come out in arrival order (late reports arrive late).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ILAR = (("systemic", 0.10), ("polyarticular RF-", 0.25), ("polyarticular RF+", 0.05),
        ("persistent oligoarticular", 0.25), ("extended oligoarticular", 0.10), ("psoriatic", 0.07),
        ("enthesitis-related", 0.13), ("undifferentiated", 0.05))
BIOLOGICS = ("etanercept", "adalimumab", "tocilizumab", "abatacept", "anakinra", "canakinumab")
INFECTIONS = ("Upper respiratory tract infection", "Pneumonia", "Gastroenteritis", "Varicella",
              "Urinary tract infection", "Otitis media", "Cellulitis")
OTHER_AES = ("Nausea", "Headache", "Abdominal pain", "Elevated transaminases", "Rash", "Injection site reaction")
# analyte -> (typical value, spread, unit)
LABS = {"WBC": (8.0, 2.0, "10^9/L"), "PLT": (320.0, 70.0, "10^9/L"), "ESR": (18.0, 10.0, "mm/h"),
        "CRP": (6.0, 5.0, "mg/L"), "HGB": (122.0, 10.0, "g/L"), "AST": (28.0, 6.0, "U/L"),
        "TG": (1.0, 0.25, "mmol/L"), "FERRITIN": (60.0, 30.0, "ug/L"), "FIBRINOGEN": (2.8, 0.5, "g/L")}
ROUTINE = ("WBC", "PLT", "ESR")
#: liver panels (issue 28): analyte -> (typical value, spread, unit, upper limit of normal sent with it)
LIVER = {"ALT": (22.0, 6.0, "U/L", 40.0), "AST": (26.0, 6.0, "U/L", 40.0), "BILI": (7.0, 2.5, "umol/L", 21.0),
         "ALP": (180.0, 40.0, "U/L", 420.0)}
#: share of patients monitored with liver panels (every 4-8 months), and the trajectories a few of them take:
#: multiples of the ULN at the injury's peak for ALT, AST, bilirubin and ALP
LIVER_MONITORED = 0.3
LIVER_INJURIES = (("hys_law", 0.005, (8.0, 6.0, 3.0, 1.2)), ("cholestatic", 0.005, (3.5, 3.0, 4.0, 3.0)),
                  ("transaminase", 0.02, (4.0, 2.5, 0.6, 0.8)))


@dataclass
class Truth:
    """What the generator knows and the monitor must find."""

    mas: list[dict[str, str]] = field(default_factory=list)
    #: patients given a liver injury: hys_law (Hy's law range, ALP normal), cholestatic, transaminase only
    liver: list[dict[str, str]] = field(default_factory=list)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Patient:
    def __init__(self, rng: random.Random, source: str, pid: str, start: datetime, end: datetime):
        self.rng, self.source, self.pid = rng, source, pid
        self.start, self.end = start, end
        self.messages: list[tuple[datetime, dict[str, Any]]] = []
        self.counter = 0
        self.level = {a: rng.gauss(mean, spread / 3) for a, (mean, spread, _) in LABS.items()}

    def add(self, type_: str, at: datetime, data: dict[str, Any], delay_days: float | None = None) -> dict[str, Any]:
        self.counter += 1
        rng = self.rng
        if delay_days is None:
            delay_days = rng.uniform(30, 120) if rng.random() < 0.05 else rng.uniform(0, 3)
        arrival = at + timedelta(days=delay_days)
        msg = {"schema_version": 1, "message_id": f"{self.pid}-{self.counter}", "source": self.source,
               "patient_id": self.pid, "type": type_, "occurred_at": _iso(at), "reported_at": _iso(arrival),
               "data": data}
        self.messages.append((arrival, msg))
        return msg

    def lab(self, analyte: str, at: datetime, value: float, delay: float) -> None:
        unit = LABS[analyte][2]
        digits = 0 if analyte in ("PLT", "ESR", "HGB", "AST") else 2
        self.add("lab_result", at, {"analyte": analyte, "value": round(max(value, 0.01), digits), "unit": unit},
                 delay_days=delay)

    def drift(self, analyte: str) -> float:
        mean, spread, _ = LABS[analyte]
        # mean-reverting random walk: a patient's own level, not white noise
        self.level[analyte] += 0.3 * (mean - self.level[analyte]) + self.rng.gauss(0, spread * 0.25)
        return self.level[analyte]


def generate(patients: int, years: float, seed: int, sources: int = 1,
             mas_share: float = 0.004, truth: Truth | None = None) -> Iterator[str]:
    """NDJSON lines of the synthetic feed, in arrival order."""
    rng = random.Random(seed)
    study_start = datetime(2022, 1, 1, tzinfo=UTC)
    study_end = study_start + timedelta(days=365.25 * years)
    out: list[tuple[datetime, str, str]] = []
    categories, weights = zip(*ILAR, strict=True)
    for n in range(patients):
        source = f"registry-{n % sources + 1}"
        pid = f"P{n + 1:06d}"
        prng = random.Random(rng.getrandbits(64))
        enrolled = study_start + timedelta(days=prng.uniform(0, 120))
        p = _Patient(prng, source, pid, enrolled, study_end)
        diagnosis = prng.choices(categories, weights)[0]
        p.add("enrolment", enrolled, {"sex": prng.choice(("F", "F", "M")), "diagnosis": diagnosis,
                                      "age_years": round(prng.uniform(2, 17), 1),
                                      "mas_history": diagnosis == "systemic" and prng.random() < 0.1})
        _treatments(p, enrolled, study_end)
        _visits(p, enrolled, study_end)
        _adverse_events(p, enrolled, study_end)
        if prng.random() < 0.05:
            p.add("intervention", enrolled + timedelta(days=prng.uniform(90, 300)), {"name": "MSC infusion"})
        if prng.random() < mas_share * (4 if diagnosis == "systemic" else 0.7):
            onset = _mas_episode(p, enrolled + timedelta(days=prng.uniform(60, 365 * years - 30)))
            if truth is not None:
                truth.mas.append({"source": source, "patient_id": pid, "onset": _iso(onset)})
        _noise(p)
        injury = _liver_panels(p, random.Random(f"{seed}/{pid}/liver"), enrolled, study_end)
        if injury is not None and truth is not None:
            truth.liver.append({"source": source, "patient_id": pid, "kind": injury[0], "at": _iso(injury[1])})
        out.extend((arrival, source, json.dumps(msg, separators=(",", ":")) if isinstance(msg, dict) else msg)
                   for arrival, msg in p.messages)
    out.sort(key=lambda item: (item[0], item[1]))
    for _, _, line in out:
        yield line


def _treatments(p: _Patient, start: datetime, end: datetime) -> None:
    rng = p.rng
    if rng.random() < 0.6:
        drug = rng.choice(BIOLOGICS)
        began = start + timedelta(days=rng.uniform(0, 200))
        p.add("treatment", began, {"drug": drug, "action": "start", "drug_class": "biologic"})
        if rng.random() < 0.4:
            stopped = began + timedelta(days=rng.uniform(60, 600))
            if stopped < end:
                p.add("treatment", stopped, {"drug": drug, "action": "stop", "drug_class": "biologic"})
    if rng.random() < 0.7:
        p.add("treatment", start, {"drug": "methotrexate", "action": "start", "drug_class": "csDMARD"})


def _visits(p: _Patient, start: datetime, end: datetime) -> None:
    rng = p.rng
    t = start
    while t < end:
        analytes = list(ROUTINE)
        if rng.random() < 0.25:
            analytes.append("CRP")
        delay = rng.uniform(0, 2)
        for analyte in analytes:
            p.lab(analyte, t, p.drift(analyte), delay)
        t += timedelta(weeks=rng.uniform(4, 12))


def _adverse_events(p: _Patient, start: datetime, end: datetime) -> None:
    rng = p.rng
    years = (end - start).days / 365.25
    for _ in range(int(rng.expovariate(1 / (0.6 * years)))):
        at = start + timedelta(days=rng.uniform(0, (end - start).days))
        infection = rng.random() < 0.55
        term = rng.choice(INFECTIONS if infection else OTHER_AES)
        p.add("adverse_event", at, {"term": term, "severity": rng.choice(("mild", "mild", "moderate", "severe")),
                                    "serious": False})
    if rng.random() < 0.07:  # serious events in about 7% of patients (Swart 2018, clinical.md s7)
        at = start + timedelta(days=rng.uniform(0, (end - start).days))
        ae = p.add("adverse_event", at, {"term": rng.choice(INFECTIONS), "severity": "severe", "serious": True,
                                         "seriousness": ["hospitalisation"]})
        p.add("hospitalisation", at, {"reason": ae["data"]["term"], "adverse_event_message_id": ae["message_id"]})


def _mas_episode(p: _Patient, when: datetime) -> datetime:
    """Two panels 1-3 days apart: counts fall, ESR, triglycerides and ferritin rise."""
    rng = p.rng
    second = when + timedelta(days=rng.uniform(1, 3))
    before = {a: LABS[a][0] * rng.uniform(0.9, 1.1) for a in ("WBC", "PLT", "ESR", "TG", "FERRITIN", "FIBRINOGEN")}
    change = {"WBC": rng.uniform(0.4, 0.6), "PLT": rng.uniform(0.4, 0.6), "ESR": rng.uniform(1.6, 2.4),
              "TG": rng.uniform(1.8, 2.6), "FERRITIN": rng.uniform(3, 20), "FIBRINOGEN": rng.uniform(0.6, 0.8)}
    for analyte, value in before.items():
        p.lab(analyte, when, value, rng.uniform(0, 1))
        p.lab(analyte, second, value * change[analyte], rng.uniform(0, 1))
    return second


def _liver_panels(p: _Patient, rng: random.Random, start: datetime, end: datetime) -> tuple[str, datetime] | None:
    """Liver panels (ALT, AST, total bilirubin, ALP with their reference ranges) every 4-8 months for a
    share of patients; a few take an injury's trajectory (two panels a week apart at the peak). Its own
    random stream, added after everything else, so the rest of the feed is what it was without them."""
    if rng.random() >= LIVER_MONITORED:
        return None
    draw, injury = rng.random(), None
    for kind, share, peak in LIVER_INJURIES:
        if draw < share:
            injury = (kind, start + timedelta(days=rng.uniform(60, max(61.0, (end - start).days - 30))), peak)
            break
        draw -= share

    def panel(at: datetime, multiples: tuple[float, ...] | None) -> None:
        delay = rng.uniform(0, 2)
        for i, (analyte, (mean, spread, unit, uln)) in enumerate(LIVER.items()):
            value = multiples[i] * uln * rng.uniform(0.9, 1.1) if multiples else max(rng.gauss(mean, spread), 1.0)
            p.add("lab_result", at, {"analyte": analyte, "value": round(value, 1), "unit": unit,
                                     "reference_low": 0.0, "reference_high": uln}, delay_days=delay)

    t = start + timedelta(days=rng.uniform(0, 60))
    while t < end:
        panel(t, None)
        t += timedelta(days=rng.uniform(120, 240))
    if injury is None:
        return None
    kind, at, peak = injury
    panel(at, peak)
    panel(at + timedelta(days=7), tuple(max(m * 0.8, 0.5) for m in peak))
    return kind, at


def _noise(p: _Patient) -> None:
    """Duplicates (re-sent identically), corrections and invalid messages, in small shares."""
    rng = p.rng
    extra: list[tuple[datetime, Any]] = []
    for arrival, msg in p.messages:
        r = rng.random()
        if r < 0.005:
            extra.append((arrival + timedelta(days=rng.uniform(0, 10)), dict(msg)))
        elif r < 0.006 and msg["type"] == "lab_result":
            fixed = {**msg["data"], "value": round(msg["data"]["value"] * 1.1, 2)}
            correction = {**msg, "message_id": msg["message_id"] + "-c", "type": "correction",
                          "data": {"target_message_id": msg["message_id"], "reason": "transcription",
                                   "data": fixed}}
            extra.append((arrival + timedelta(days=rng.uniform(1, 20)), correction))
        elif r < 0.008:
            broken = {**msg, "message_id": msg["message_id"] + "-x"}
            broken.pop(rng.choice(("patient_id", "occurred_at", "type")))
            extra.append((arrival, broken))
        elif r < 0.0085:
            extra.append((arrival, '{"schema_version": 1, "message_id": "' + msg["message_id"] + '-t", "source"'))
    p.messages.extend(extra)
