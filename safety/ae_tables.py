"""Treatment-emergent adverse-event tables by group (arm, drug or drug class): subject incidence,
exposure-adjusted rates, and comparisons with a control group. Pure; no I/O.

- **Subject incidence**: subjects at risk (N), subjects with at least one emergent event (n), n/N, and
  the number of events; the overview rows and the table by system organ class and preferred term (the
  reported term when uncoded).
- **Exposure-adjusted incidence rate** (EAIR): subjects with the event per 100 patient-years at risk,
  each subject's time at risk ending at the first such event; **event rate**: every event per 100
  patient-years of exposure. Both with the exact Poisson (Garwood) interval (clinical.md §6, §12).
- **Comparisons** with the control: risk difference and relative risk of n/N with Miettinen-Nurminen
  score intervals, and the EAIR ratio with the exact conditional test and its interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from safety.exposure import AdverseEvent, Membership, days_at_risk_until, patient_years
from safety.seriousness import fatal, serious
from safety.statistics import (
    METHOD_EAIR_RATIO,
    METHOD_RATE_CI,
    METHOD_RELATIVE_RISK,
    METHOD_RISK_DIFFERENCE,
    poisson_rate_ci,
    rate_ratio_exact,
    relative_risk_mn,
    risk_difference_mn,
)

OVERVIEW_ROWS: tuple[str, ...] = ("any", "serious", "severe", "related", "leading_to_discontinuation", "fatal")
RELATED_VALUES = frozenset({"possible", "probable", "definite"})
#: AEACN values (CDISC CT C66767) and registry spellings that mean the study drug was stopped for the event
DRUG_STOPPED = frozenset({"drug withdrawn", "drug discontinued", "permanently discontinued"})
UNCODED_SOC = "(SOC not coded)"

OVERVIEW_FLAGS: dict[str, Callable[[AdverseEvent], bool]] = {
    "any": lambda e: e.coded,
    "serious": lambda e: e.coded and e.serious,
    "severe": lambda e: e.coded and e.severe,
    "related": lambda e: e.coded and e.related,
    "leading_to_discontinuation": lambda e: e.leading_to_discontinuation,
    "fatal": lambda e: e.coded and e.fatal,
}
OVERVIEW_MEANING = {
    "any": "any treatment-emergent adverse event (unlinked hospitalisations included, as serious events)",
    "serious": "serious (flagged serious, meeting an ICH E2A criterion, or a hospitalisation links to it)",
    "severe": "severe, or CTCAE grade 3 or more",
    "related": "related: relatedness possible, probable or definite; an event with no causality given is counted "
               "as related (the usual convention)",
    "leading_to_discontinuation": "leading to discontinuation: action taken with the study drug 'drug withdrawn' "
                                  "(or 'drug discontinued', 'permanently discontinued'), or a withdrawal from the "
                                  "study whose disposition or reason is 'adverse event'",
    "fatal": "fatal: outcome fatal, seriousness death, or CTCAE grade 5",
}


# what an adverse event is, as bits: the read side keeps them with the event's row
SERIOUS, SEVERE, RELATED, DISCONTINUATION, FATAL, CAUSALITY_MISSING = 1, 2, 4, 8, 16, 32
#: the by-term breakdown of discontinuations: a withdrawal for an adverse event is put on the subject's last
#: emergent adverse event with onset on or before it
DISCONTINUATION_BY_TERM = (
    "each subject counts under the preferred term of the adverse event recorded as leading to discontinuation "
    "(action taken 'drug withdrawn'), or, for a withdrawal from the study for an adverse event, under the last "
    "emergent adverse event with onset on or before the withdrawal")
NO_EVENT_BEFORE = "(no adverse event recorded before the withdrawal)"


def classify(data: dict[str, Any]) -> tuple[str, str, int]:
    """An adverse event's preferred term (the reported term when uncoded), system organ class and flags."""
    term = data.get("meddra_pt") or data.get("term") or "(no term)"
    grade = data.get("ctcae_grade") or 0
    missing = not str(data.get("relatedness") or "").strip()
    flags = ((SERIOUS if serious(data) else 0)
             | (SEVERE if data.get("severity") == "severe" or grade >= 3 else 0)
             | (RELATED if missing or data.get("relatedness") in RELATED_VALUES else 0)
             | (CAUSALITY_MISSING if missing else 0)
             | (DISCONTINUATION if str(data.get("action_taken") or "").strip().lower() in DRUG_STOPPED else 0)
             | (FATAL if fatal(data) else 0))
    return term, data.get("system_organ_class") or UNCODED_SOC, flags


def event_from(message_id: str, onset: date, term: str, soc: str, flags: int, verbatim: str | None = None,
               hospitalised: bool = False) -> AdverseEvent:
    """An adverse event from its classification (``classify``); a linked hospitalisation makes it serious."""
    return AdverseEvent(message_id, onset, term, soc, serious=bool(flags & SERIOUS) or hospitalised,
                        severe=bool(flags & SEVERE), related=bool(flags & RELATED),
                        leading_to_discontinuation=bool(flags & DISCONTINUATION), fatal=bool(flags & FATAL),
                        verbatim=verbatim, causality_missing=bool(flags & CAUSALITY_MISSING))


def adverse_event(message_id: str, onset: date, data: dict[str, Any], hospitalised: bool = False) -> AdverseEvent:
    """An adverse event's data as the tables count it."""
    return event_from(message_id, onset, *classify(data), verbatim=data.get("verbatim_term"),
                      hospitalised=hospitalised)


def unlinked_hospitalisation(message_id: str, on: date, reason: str) -> AdverseEvent:
    """A hospitalisation no adverse event links to: one serious event of its own (the contract's rule)."""
    return AdverseEvent(message_id, on, f"Hospitalisation: {reason}", UNCODED_SOC, serious=True)


def for_adverse_event(withdrawal: dict[str, Any]) -> bool:
    """Whether a withdrawal from the study was for an adverse event (its disposition or reason says so)."""
    said = (withdrawal.get("disposition"), withdrawal.get("reason"))
    return any(str(x or "").strip().lower() == "adverse event" for x in said)


def withdrawal_event(message_id: str, on: date) -> AdverseEvent:
    """A withdrawal from the study for an adverse event: counted in the overview's discontinuation row."""
    return AdverseEvent(message_id, on, "Withdrawal: adverse event", UNCODED_SOC, leading_to_discontinuation=True,
                        coded=False)


@dataclass(frozen=True)
class Cell:
    subjects: int
    at_risk: int
    events: int
    days_at_risk: int  #: ending at each subject's first event
    days: int  #: all exposure

    def as_dict(self) -> dict[str, Any]:
        py_at_risk, py = patient_years(self.days_at_risk), patient_years(self.days)
        eair = poisson_rate_ci(self.subjects, py_at_risk)
        rate = poisson_rate_ci(self.events, py)
        return {
            "subjects": self.subjects,
            "percent": round(100 * self.subjects / self.at_risk, 4) if self.at_risk else None,
            "events": self.events,
            "patient_years_at_risk": round(py_at_risk, 4),
            "eair_per_100py": _per100(eair.rate),
            "eair_ci95": [_per100(eair.low), _per100(eair.high)],
            "event_rate_per_100py": _per100(rate.rate),
            "event_rate_ci95": [_per100(rate.low), _per100(rate.high)],
        }


def _per100(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 6)


Key = tuple[str, ...]  # ("overview", row) | ("soc", soc) | ("term", soc, term)


def _keys(e: AdverseEvent) -> list[Key]:
    keys: list[Key] = [("overview", row) for row, flag in OVERVIEW_FLAGS.items() if flag(e)]
    if e.coded:
        keys += [("soc", e.soc), ("term", e.soc, e.term)]
        if e.leading_to_discontinuation:
            keys.append(("discontinuation", e.term))
        if e.causality_missing:
            keys.append(("note", "causality_missing"))
    return keys


def _withdrawal_keys(m: Membership, e: AdverseEvent) -> list[Key]:
    """A withdrawal for an adverse event, by term: the subject's last coded emergent event on or before it."""
    before = [x for x in m.events if x.coded and x.onset <= e.onset]
    return [("discontinuation", max(before, key=lambda x: x.onset).term if before else NO_EVENT_BEFORE)]


@dataclass
class GroupTally:
    """What one group's members add up to, per row key."""

    name: str
    at_risk: int = 0
    days: int = 0

    def __post_init__(self) -> None:
        self.subjects: dict[Key, int] = defaultdict(int)
        self.events: dict[Key, int] = defaultdict(int)
        self.days_saved: dict[Key, int] = defaultdict(int)  # exposure after each subject's first event

    def add(self, m: Membership, keys: Callable[[AdverseEvent], list[Key]] = _keys) -> None:
        self.at_risk += 1
        days = m.days
        self.days += days
        first: dict[Key, date] = {}
        for e in m.events:
            for k in keys(e) if e.coded or not e.leading_to_discontinuation else keys(e) + _withdrawal_keys(m, e):
                self.events[k] += 1
                if k not in first or e.onset < first[k]:
                    first[k] = e.onset
        for k, onset in first.items():
            self.subjects[k] += 1
            self.days_saved[k] += days - days_at_risk_until(m.spans, onset)

    def cell(self, key: Key) -> Cell:
        return Cell(self.subjects.get(key, 0), self.at_risk, self.events.get(key, 0),
                    self.days - self.days_saved.get(key, 0), self.days)


def tally(members: Iterable[Membership]) -> dict[str, GroupTally]:
    groups: dict[str, GroupTally] = {}
    known: dict[int, list[Key]] = {}  # an event's rows, worked out once however many groups it is in

    def keys(e: AdverseEvent) -> list[Key]:
        found = known.get(id(e))
        if found is None:
            found = known[id(e)] = _keys(e)
        return found

    for m in members:
        g = groups.get(m.group)
        if g is None:
            g = groups[m.group] = GroupTally(m.group)
        g.add(m, keys)
    return dict(sorted(groups.items()))


def compare(group: GroupTally, control: GroupTally, key: Key) -> dict[str, Any]:
    """One group against the control on one row: risk difference, relative risk, EAIR ratio."""
    a, b = group.cell(key), control.cell(key)
    rd = risk_difference_mn(a.subjects, a.at_risk, b.subjects, b.at_risk)
    rr = relative_risk_mn(a.subjects, a.at_risk, b.subjects, b.at_risk)
    irr = rate_ratio_exact(a.subjects, patient_years(a.days_at_risk), b.subjects, patient_years(b.days_at_risk))
    return {
        "group": group.name, "control": control.name,
        "risk_difference": _r(rd.estimate), "risk_difference_ci95": [_r(rd.low), _r(rd.high)],
        "relative_risk": _r(rr.estimate), "relative_risk_ci95": [_r(rr.low), _r(rr.high)],
        "eair_ratio": _r(irr.ratio), "eair_ratio_ci95": [_r(irr.low), _r(irr.high)], "eair_ratio_p": _r(irr.p_value),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 8)


def choose_control(names: Sequence[str], asked: str | None) -> str | None:
    """The control group: the one asked for, else the only group named like placebo, else none."""
    if asked is not None:
        return asked
    placebo = [n for n in names if "placebo" in n.lower()]
    return placebo[0] if len(placebo) == 1 else None


def ae_table(members: Sequence[Membership], *, by: str, control: str | None = None,
             min_percent: float = 0.0) -> dict[str, Any]:
    """The tables and comparisons over every subject's group memberships."""
    groups = tally(members)
    names = list(groups)
    if control is not None and control not in groups:
        raise ValueError(f"--control {control!r} is not one of the groups by {by}: {', '.join(names) or 'none'}")

    def by_group(key: Key) -> dict[str, Any]:
        return {n: g.cell(key).as_dict() for n, g in groups.items()}

    def popularity(key: Key) -> int:
        return sum(g.subjects.get(key, 0) for g in groups.values())

    def kept(key: Key) -> bool:
        return any(g.at_risk and 100 * g.subjects.get(key, 0) / g.at_risk >= min_percent for g in groups.values())

    term_keys: dict[str, list[Key]] = defaultdict(list)
    for key in {k for g in groups.values() for k in g.subjects if k[0] == "term"}:
        if kept(key):
            term_keys[key[1]].append(key)
    ordered = [(soc, sorted(term_keys[soc], key=lambda k: (-popularity(k), k[2])))
               for soc in sorted(term_keys, key=lambda s: (-popularity(("soc", s)), s))]
    socs = [{"soc": soc, "by_group": by_group(("soc", soc)),
             "terms": [{"term": k[2], "by_group": by_group(k)} for k in terms]} for soc, terms in ordered]
    discontinued = sorted({k for g in groups.values() for k in g.subjects if k[0] == "discontinuation"},
                          key=lambda k: (-popularity(k), k[1]))
    comparisons = []
    if control is not None:
        rows: list[tuple[str, Key]] = [(r, ("overview", r)) for r in OVERVIEW_ROWS]
        for soc, terms in ordered:
            rows += [(soc, ("soc", soc)), *((k[2], k) for k in terms)]
        for name, g in groups.items():
            if name != control:
                comparisons += [{"level": key[0], "row": row, **({"soc": key[1]} if key[0] == "term" else {}),
                                 **compare(g, groups[control], key)} for row, key in rows]
    return {
        "by": by,
        "control": control,
        "groups": [{"name": n, "subjects": g.at_risk, "patient_years": round(patient_years(g.days), 4)}
                   for n, g in groups.items()],
        "overview": [{"row": r, "meaning": OVERVIEW_MEANING[r], "by_group": by_group(("overview", r))}
                     for r in OVERVIEW_ROWS],
        "socs": socs,
        #: subjects who discontinued for an adverse event, by the term it is put on (DISCONTINUATION_BY_TERM)
        "discontinuations": [{"term": k[1], "by_group": by_group(k)} for k in discontinued],
        #: emergent events with no causality given (counted as related), per group
        "causality_missing": {n: g.events.get(("note", "causality_missing"), 0) for n, g in groups.items()},
        "comparisons": comparisons,
        "methods": {
            "eair": "subjects with the event per 100 patient-years at risk, time at risk ending at the first event",
            "event_rate": "events per 100 patient-years of exposure",
            "ci95": METHOD_RATE_CI,
            "risk_difference": METHOD_RISK_DIFFERENCE,
            "relative_risk": METHOD_RELATIVE_RISK,
            "eair_ratio": METHOD_EAIR_RATIO,
            "discontinuations_by_term": DISCONTINUATION_BY_TERM,
        },
    }
