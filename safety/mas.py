"""Macrophage activation syndrome (MAS) warnings: lab-trend rules, the 2016 classification criteria,
the MS score and the ferritin:ESR ratio. Pure functions over one patient's history.

Everything is evaluated in clinical (sample-collection) order over the whole history, so the
result does not depend on the order in which results arrived. Sources: clinical.md sections 1-3;
the trend thresholds are expert heuristics (``mas_rules.toml``).
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from safety.mas_config import Config, Rule

# 2016 EULAR/ACR/PRINTO criteria (Ravelli 2016; clinical.md s1), canonical units; the published
# operators are kept: > for ferritin, AST, triglycerides; <= for platelets and fibrinogen.
FERRITIN_ABOVE = 684.0  # ug/L (= ng/mL)
CRITERIA_ITEMS = (
    # item, analyte, operator, threshold (canonical unit), as published
    ("platelets", "PLT", "<=", 181.0, "platelets <= 181 x10^9/L"),
    ("ast", "AST", ">", 48.0, "AST > 48 U/L"),
    ("triglycerides", "TG", ">", 156 / 88.57, "triglycerides > 156 mg/dL (1.76 mmol/L)"),
    ("fibrinogen", "FIBRINOGEN", "<=", 3.6, "fibrinogen <= 360 mg/dL (3.6 g/L)"),
)
# MS score (Minoia 2019; clinical.md s2a): coefficients; fibrinogen in mg/dL, no intercept.
MS_COEFFICIENTS = {
    "cns_involvement": 2.44, "haemorrhage": 1.54, "active_arthritis": -1.30,
    "PLT": -0.003, "LDH": 0.001, "FIBRINOGEN_mg_dl": -0.004, "FERRITIN": 0.0001,
}
#: the clinical inputs of the MS score, from findings
MS_FINDINGS = ("cns_involvement", "haemorrhage", "active_arthritis")
BLUNTING_NOTE = (
    "on tocilizumab or within weeks of stopping it, fever and ferritin may be blunted "
    "(Shimizu 2020; Schulert 2018): the criteria may miss MAS"
)


class Lab(NamedTuple):
    """One result. A named tuple, not a frozen dataclass: a patient has dozens, each evaluation makes them
    all again, and a tuple is made in a quarter of the time (issue 28)."""

    message_id: str
    analyte: str
    value: float
    unit: str
    at: datetime
    #: the result's own upper limit of normal, when the source sent its range
    reference_high: float | None = None
    #: its lower limit (CTCAE grade 1 of a decreased count needs it)
    reference_low: float | None = None


@dataclass(frozen=True)
class Finding:
    at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Treatment:
    drug: str
    action: str
    drug_class: str | None
    at: datetime


@dataclass(frozen=True)
class SeriousEvent:
    """A serious adverse event (by ICH E2A: ``safety.seriousness``), or a death the sender reported."""

    message_id: str
    term: str
    at: datetime
    seriousness: tuple[str, ...]
    fatal: bool = False
    #: what to ask the sender when its seriousness flag contradicts the criteria
    query: str | None = None


@dataclass
class History:
    """What the rules need of one patient; any order, evaluated in clinical order."""

    source: str
    patient_id: str
    diagnosis: str | None = None
    condition: str | None = None
    mas_history: bool | None = None
    #: the enrolment as sent (arm, actual arm, first exposure): what read models group and window by
    enrolment: dict[str, Any] = field(default_factory=dict)
    labs: list[Lab] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    treatments: list[Treatment] = field(default_factory=list)
    serious_events: list[SeriousEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Signal:
    id: str
    source: str
    patient_id: str
    kind: str
    level: str
    occurred_at: datetime
    evidence: list[dict[str, Any]]
    context: list[str]
    criteria_2016: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    #: what makes the signal urgent, clinically (issue 24): for MAS signals systemic JIA, a history of MAS,
    #: a biologic recently stopped or tocilizumab masking the picture; for events a fatal or
    #: life-threatening outcome; for liver signals a bilirubin above 2×ULN. Other context ("on PLACEBO")
    #: is shown but never raises priority.
    priority_reasons: tuple[str, ...] = ()

    @property
    def priority(self) -> str:
        return "high" if self.priority_reasons else "normal"


def signal_id(source: str, patient_id: str, kind: str, key: str) -> str:
    """Stable id: the same patient, kind and episode give the same id in every replay."""
    return hashlib.sha256(f"{source}/{patient_id}/{kind}/{key}".encode()).hexdigest()[:16]


# --- trend rules -------------------------------------------------------------------------------


class LabIndex:
    """A patient's results per analyte in time order, for fast look-ups by time."""

    def __init__(self, labs: Sequence[Lab]):
        self.by_analyte: dict[str, list[Lab]] = {}
        for lab in sorted(labs, key=lambda lab: lab.at):
            self.by_analyte.setdefault(lab.analyte, []).append(lab)
        self.times = {a: [lab.at for lab in ls] for a, ls in self.by_analyte.items()}

    def latest(self, analyte: str, at: datetime, window: timedelta) -> Lab | None:
        """The last result of ``analyte`` in [at - window, at]."""
        times = self.times.get(analyte)
        if not times:
            return None
        i = bisect_right(times, at) - 1
        if i < 0 or times[i] < at - window:
            return None
        return self.by_analyte[analyte][i]

    def previous(self, current: Lab, look_back: timedelta) -> Lab | None:
        """The last earlier result of the same analyte within the look-back."""
        times = self.times[current.analyte]
        i = bisect_left(times, current.at) - 1
        if i < 0 or times[i] < current.at - look_back:
            return None
        return self.by_analyte[current.analyte][i]

    def first(self, analyte: str) -> Lab | None:
        labs = self.by_analyte.get(analyte)
        return labs[0] if labs else None


def rule_fires(rule: Rule, previous: Lab, current: Lab) -> bool:
    change = current.value - previous.value
    if rule.direction == "fall":
        change = -change
    if change <= 0:
        return False
    relative = change / previous.value if previous.value else float("inf")
    return relative >= rule.relative and change >= rule.absolute


def _evidence(rule: Rule, previous: Lab, current: Lab, baseline: Lab | None) -> dict[str, Any]:
    change_pct = (current.value - previous.value) / previous.value * 100 if previous.value else None
    item = {
        "rule": rule.name,
        "analyte": rule.analyte,
        "previous": previous.value,
        "current": current.value,
        "unit": current.unit,
        "change_pct": None if change_pct is None else round(change_pct, 1),
        "previous_at": previous.at.isoformat(),
        "current_at": current.at.isoformat(),
        "core": rule.core,
        "heuristic": True,
        "source": rule.source,
    }
    if baseline is not None and baseline.value:
        item["baseline"] = baseline.value
        item["baseline_at"] = baseline.at.isoformat()
        item["change_from_baseline_pct"] = round((current.value - baseline.value) / baseline.value * 100, 1)
    return item


def fired_at(labs: LabIndex, at: datetime, config: Config,
             rules: Sequence[Rule] | None = None) -> list[dict[str, Any]]:
    """Evidence of every rule that fires on the results of the assessment ending at ``at`` (``rules``: those
    of ``config`` that can fire for the patient, ``rules_with_results``)."""
    out = []
    for rule in config.rules if rules is None else rules:
        current = labs.latest(rule.analyte, at, config.together)
        if current is None:
            continue
        previous = labs.previous(current, config.look_back)
        if previous is None or not rule_fires(rule, previous, current):
            continue
        if rule.requires_crp_high:
            crp = labs.latest("CRP", current.at, config.look_back)
            if crp is None or crp.value < config.crp_high_mg_l:
                continue
        baseline = labs.first(rule.analyte)
        out.append(_evidence(rule, previous, current, baseline if baseline is not previous else None))
    return out


def rules_with_results(labs: LabIndex, config: Config) -> list[Rule]:
    """The rules that can fire for a patient: a rule needs a result of its analyte."""
    return [rule for rule in config.rules if rule.analyte in labs.times]


def _level(core: int, config: Config) -> str | None:
    if core >= config.warning_at:
        return "warning"
    if core >= config.watch_at:
        return "watch"
    return None


# --- context -------------------------------------------------------------------------------------


def _stopped_biologics(h: History, at: datetime, within: timedelta) -> list[Treatment]:
    return [t for t in h.treatments
            if t.action == "stop" and t.drug_class == "biologic" and at - within <= t.at <= at]


def _on_tocilizumab(h: History, at: datetime, config: Config) -> bool:
    last = None
    for t in sorted(h.treatments, key=lambda t: t.at):
        if t.drug.lower() == "tocilizumab" and t.at <= at:
            last = t
    if last is None:
        return False
    return last.action in ("start", "change") or at - last.at <= config.tocilizumab_blunting


def mas_priority(h: History, at: datetime, config: Config) -> tuple[str, ...]:
    """What makes a MAS signal urgent: the context factors, and tocilizumab, which masks fever, CRP and
    ferritin (so a MAS on it shows less than it is)."""
    reasons = context_of(h, at, config)
    if _on_tocilizumab(h, at, config):
        stopped = any(r.startswith("biologic tocilizumab stopped") for r in reasons)
        reasons.append("tocilizumab may still mask fever, CRP and ferritin" if stopped
                       else "on tocilizumab, which masks fever, CRP and ferritin")
    return tuple(reasons)


def context_of(h: History, at: datetime, config: Config) -> list[str]:
    """The patient's MAS context factors (systemic JIA, MAS history, a biologic recently stopped)."""
    reasons = []
    if h.diagnosis == "systemic":
        reasons.append("systemic JIA")
    if h.mas_history:
        reasons.append("history of MAS")
    for t in _stopped_biologics(h, at, config.biologic_stopped):
        weeks = (at - t.at).days // 7
        reasons.append(f"biologic {t.drug} stopped {weeks} week{'s' if weeks != 1 else ''} before")
    return reasons


# --- 2016 classification criteria, MS score, ferritin:ESR ----------------------------------------


def _fever(h: History, at: datetime, config: Config) -> tuple[bool | None, str]:
    fever: bool | None = None
    said = "no clinical finding in the assessment window"
    for f in sorted(h.findings, key=lambda f: f.at):
        if not at - config.criteria_window <= f.at <= at:
            continue
        temperature = f.data.get("temperature_c")
        if f.data.get("fever") is True or (temperature is not None and temperature >= config.fever_cutoff_c):
            said = f"temperature {temperature:.1f} C" if temperature is not None else "fever reported"
            fever, said = True, f"febrile ({said})"
        elif f.data.get("fever") is False or temperature is not None:
            fever = False
            said = "afebrile" + (f" (temperature {temperature:.1f} C)" if temperature is not None else "")
    return fever, said


def criteria_2016(h: History, at: datetime, config: Config, labs: LabIndex | None = None) -> dict[str, Any]:
    """The 2016 EULAR/ACR/PRINTO classification: met, not met, or not evaluable (None)."""
    labs = labs or LabIndex(h.labs)
    fever, fever_said = _fever(h, at, config)
    ferritin = labs.latest("FERRITIN", at, config.criteria_window)
    items: dict[str, Any] = {}
    missing = []
    holding = 0
    for item, analyte, op, threshold, published in CRITERIA_ITEMS:
        lab = labs.latest(analyte, at, config.criteria_window)
        if lab is None:
            missing.append(item)
            items[item] = {"value": None, "holds": None, "criterion": published}
            continue
        holds = lab.value <= threshold if op == "<=" else lab.value > threshold
        holding += holds
        items[item] = {"value": lab.value, "unit": lab.unit, "holds": holds, "criterion": published}
    ferritin_holds = None if ferritin is None else ferritin.value > FERRITIN_ABOVE
    items["ferritin"] = {"value": None if ferritin is None else ferritin.value, "unit": "ug/L",
                         "holds": ferritin_holds, "criterion": "ferritin > 684 ng/mL (mandatory)"}
    if fever is None:
        missing.insert(0, "fever")
    if ferritin is None:
        missing.insert(0, "ferritin")
    reasons = []
    if fever is False:
        reasons.append(fever_said)
    if ferritin_holds is False:
        reasons.append(f"ferritin {ferritin.value:g} ug/L not above 684" if ferritin else "")
    possible_items = holding + sum(1 for i in missing if i not in ("fever", "ferritin"))
    if fever is False or ferritin_holds is False or possible_items < 2:
        met: bool | None = False
        if possible_items < 2:
            reasons.append(f"only {holding} of the four laboratory items hold")
    elif fever and ferritin_holds and holding >= 2:
        met = True
        reasons.append(f"febrile, ferritin {ferritin.value:g} > 684 and {holding} items hold" if ferritin else "")
    else:
        met = None
        reasons.append("not evaluable: missing " + ", ".join(missing))
    out: dict[str, Any] = {"met": met, "items": items, "missing": missing,
                           "fever": fever, "fever_assessment": fever_said,
                           "reasons": [r for r in reasons if r],
                           "applies_to": "a febrile patient with known or suspected systemic JIA"}
    if _on_tocilizumab(h, at, config):
        out["note"] = BLUNTING_NOTE
    return out


def ms_score(h: History, at: datetime, config: Config, labs: LabIndex | None = None) -> dict[str, Any]:
    """MS score (Minoia 2019): computed when every input exists, else the missing inputs."""
    labs = labs or LabIndex(h.labs)
    window = config.criteria_window
    values: dict[str, float] = {}
    missing = []
    for analyte in ("PLT", "LDH", "FIBRINOGEN", "FERRITIN"):
        lab = labs.latest(analyte, at, window)
        if lab is None:
            missing.append(analyte)
        else:
            values[analyte] = lab.value
    for flag in MS_FINDINGS:
        known = [f.data[flag] for f in sorted(h.findings, key=lambda f: f.at)
                 if at - window <= f.at <= at and flag in f.data]
        if known:
            values[flag] = float(known[-1])
        else:
            missing.append(flag)
    if missing:
        return {"computable": False, "missing": missing, "cutoff": config.ms_score_cutoff}
    score = (
        MS_COEFFICIENTS["cns_involvement"] * values["cns_involvement"]
        + MS_COEFFICIENTS["haemorrhage"] * values["haemorrhage"]
        + MS_COEFFICIENTS["active_arthritis"] * values["active_arthritis"]
        + MS_COEFFICIENTS["PLT"] * values["PLT"]
        + MS_COEFFICIENTS["LDH"] * values["LDH"]
        + MS_COEFFICIENTS["FIBRINOGEN_mg_dl"] * values["FIBRINOGEN"] * 100  # g/L -> mg/dL
        + MS_COEFFICIENTS["FERRITIN"] * values["FERRITIN"]
    )
    return {"computable": True, "score": round(score, 2), "flagged": score >= config.ms_score_cutoff,
            "cutoff": config.ms_score_cutoff, "inputs": values}


def ferritin_esr_ratio(h: History, at: datetime, config: Config, labs: LabIndex | None = None) -> dict[str, Any]:
    """Ferritin (ng/mL) : ESR (mm/h), flagged above 21.5 (Eloseily 2019; clinical.md s2b)."""
    labs = labs or LabIndex(h.labs)
    ferritin = labs.latest("FERRITIN", at, config.criteria_window)
    esr = labs.latest("ESR", at, config.criteria_window)
    if ferritin is None or esr is None or esr.value == 0:
        missing = [n for n, v in (("FERRITIN", ferritin), ("ESR", esr)) if v is None]
        return {"computable": False, "missing": missing or ["ESR above 0"]}
    ratio = ferritin.value / esr.value
    return {"computable": True, "ratio": round(ratio, 2), "flagged": ratio > config.ferritin_esr_cutoff,
            "cutoff": config.ferritin_esr_cutoff, "ferritin": ferritin.value, "esr": esr.value}


# --- all signals of a patient ----------------------------------------------------------------------


def _episodes(times: list[tuple[datetime, Any]], gap: timedelta) -> list[list[tuple[datetime, Any]]]:
    groups: list[list[tuple[datetime, Any]]] = []
    for t, payload in sorted(times, key=lambda x: x[0]):
        if groups and t - groups[-1][-1][0] <= gap:
            groups[-1].append((t, payload))
        else:
            groups.append([(t, payload)])
    return groups


def mas_applies(h: History, config: Config) -> bool:
    """Whether the MAS rules are for this patient: enrolled with a JIA category, a condition naming JIA or
    Still's disease, or from a source the rules name (the rules were made for paediatric rheumatology)."""
    if h.diagnosis or h.source in config.population_sources:
        return True
    if h.condition is None:
        return True  # no enrolment yet: nothing says the patient is outside the population
    condition = str(h.condition or "")
    return any(re.search(p, condition, re.IGNORECASE) for p in config.population_conditions) if condition else False


def _ferritin_above(labs: LabIndex, at: datetime, config: Config) -> bool:
    """Whether the mandatory criterion can hold at ``at``: ``criteria_2016`` says met only if it does."""
    ferritin = labs.latest("FERRITIN", at, config.criteria_window)
    return ferritin is not None and ferritin.value > FERRITIN_ABOVE


def _ms_findings_known(h: History, at: datetime, config: Config) -> bool:
    """Whether every clinical input of the MS score is known at ``at``: ``ms_score`` computes (and may flag)
    a score only then. Most patients have no such findings, so most moments end here."""
    window = config.criteria_window
    known = {flag for f in h.findings if at - window <= f.at <= at for flag in MS_FINDINGS if flag in f.data}
    return len(known) == len(MS_FINDINGS)


def evaluate(h: History, config: Config) -> list[Signal]:
    """Every signal the patient's history raises, in clinical order (MAS signals only where the MAS rules
    apply: ``mas_applies``)."""
    labs = LabIndex(h.labs)
    moments = sorted({lab.at for lab in h.labs} | {f.at for f in h.findings}) if mas_applies(h, config) else []
    trend, criteria, ms, ratio = [], [], [], []
    # what can never hold for this patient is not asked at each moment (issue 28: most patients have no
    # ferritin and no findings): the criteria and the ratio need a ferritin, the score every finding
    rules = rules_with_results(labs, config)
    ferritin, findings = "FERRITIN" in labs.times, bool(h.findings)
    for at in moments:
        evidence = fired_at(labs, at, config, rules)
        core = sum(1 for e in evidence if e["core"])
        level = _level(core, config)
        if level:
            trend.append((at, (core, level, evidence)))
        if not ferritin:
            continue
        if _ferritin_above(labs, at, config):  # the criteria are met only then: asked only then
            c = criteria_2016(h, at, config, labs)
            if c["met"]:
                criteria.append((at, c))
        if findings and _ms_findings_known(h, at, config):  # a score is flagged only when it can be computed
            s = ms_score(h, at, config, labs)
            if s.get("flagged"):
                ms.append((at, s))
        r = ferritin_esr_ratio(h, at, config, labs)
        if r.get("flagged"):
            ratio.append((at, r))
    signals = []
    for group in _episodes(trend, config.episode):
        start = group[0][0]
        at, (core, level, evidence) = max(group, key=lambda g: (g[1][0], g[0]))
        signals.append(Signal(
            signal_id(h.source, h.patient_id, "mas_trend", start.isoformat()), h.source, h.patient_id,
            "mas_trend", level, at, evidence, context_of(h, at, config),
            criteria_2016=criteria_2016(h, at, config, labs),
            details={"core_rules": core, "rules_version": config.version,
                     "ms_score": ms_score(h, at, config, labs),
                     "ferritin_esr": ferritin_esr_ratio(h, at, config, labs)},
            priority_reasons=mas_priority(h, at, config),
        ))
    for kind, level, found in (("mas_criteria_2016", "alert", criteria), ("ms_score", "warning", ms),
                               ("ferritin_esr_ratio", "watch", ratio)):
        for group in _episodes(found, config.episode):
            at, payload = group[-1]
            signals.append(Signal(
                signal_id(h.source, h.patient_id, kind, group[0][0].isoformat()), h.source, h.patient_id,
                kind, level, at, [], context_of(h, at, config),
                criteria_2016=criteria_2016(h, at, config, labs), details=payload,
                priority_reasons=mas_priority(h, at, config),
            ))
    for e in h.serious_events:
        kind = "death" if e.fatal else "serious_adverse_event"
        signals.append(Signal(
            signal_id(h.source, h.patient_id, kind, e.message_id), h.source,
            h.patient_id, kind, "alert", e.at,
            [{"rule": "death" if e.fatal else "serious adverse event", "term": e.term, "message_id": e.message_id,
              "seriousness": list(e.seriousness), "current_at": e.at.isoformat()}],
            context_of(h, e.at, config),
            priority_reasons=tuple(c for c in ("death", "life-threatening") if c in e.seriousness),
        ))
        if e.query:
            signals.append(Signal(
                signal_id(h.source, h.patient_id, "data_query", e.message_id), h.source, h.patient_id,
                "data_query", "watch", e.at,
                [{"rule": "seriousness flag contradicts the criteria", "term": e.term, "message_id": e.message_id,
                  "seriousness": list(e.seriousness), "current_at": e.at.isoformat()}],
                [], details={"field": "serious", "as_sent": False, "query": e.query},
            ))
    return sorted(signals, key=lambda s: s.occurred_at)

