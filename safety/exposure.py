"""Exposure and treatment emergence: who was exposed to what, when, and which adverse events count.

Pure rules over already-amended facts, in clinical days (UTC dates): a day is the unit of exposure,
as in trial reports (treatment duration = last day - first day + 1).

- **Exposure periods of a drug** come from its treatment messages in clinical order: a `start` (or a
  `change` with none open) opens a period, a `stop` closes it on its day; a period never stopped is
  ongoing. A stop with no open period is ignored.
- **A subject's exposure for the arm** runs from the first exposure (the enrolment's
  `first_exposure_on`, else the first treatment start) to the last (`last_exposure_on`, else the last
  stop once every period is stopped; else ongoing).
- **Observation ends** at the earliest of the subject's withdrawal, the day before the clinical data
  cut, and, without a data cut, the last clinical day the answer knows of (``horizon``): an ongoing
  exposure is counted up to there and no further.
- **Treatment-emergent** (clinical.md §12, the pilot's ADaM ``TRTEMFL``): onset on or after the first
  exposure; with a lag, no later than the last exposure plus the lag. By arm the default has no lag
  (no upper bound); by drug each period plus the lag (default 30 days) is the risk window.
- **Time at risk** is the exposure (each window's days, the lag included when one is given), clipped
  at the end of observation; windows of one drug that overlap are counted once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

DAYS_PER_YEAR = 365.25
DEFAULT_DRUG_LAG_DAYS = 30
ONE_DAY = timedelta(days=1)


class Span(NamedTuple):
    """Clinical days ``first`` to ``last``, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return max((self.last - self.first).days + 1, 0)


class TreatmentChange(NamedTuple):
    drug: str
    action: str  # start, stop, change
    on: date
    drug_class: str | None = None


class Period(NamedTuple):
    """One exposure period of a drug: from ``first`` to ``last`` (None while ongoing)."""

    drug: str
    first: date
    last: date | None
    drug_class: str | None = None


class AdverseEvent(NamedTuple):
    """An adverse event (or an unlinked hospitalisation, or a withdrawal for an adverse event) as the
    tables count it."""

    message_id: str
    onset: date
    term: str
    soc: str
    serious: bool = False
    severe: bool = False
    related: bool = False
    leading_to_discontinuation: bool = False
    fatal: bool = False
    #: False for a withdrawal for an adverse event: it counts in the overview, not as a term
    coded: bool = True
    verbatim: str | None = None
    #: no causality was given: counted as related (the usual convention), and said so in a footnote
    causality_missing: bool = False


@dataclass
class Subject:
    """One patient as the tables need them: the arm, exposure dates, treatments and adverse events."""

    source: str
    patient_id: str
    arm: str | None = None  #: the actual arm (the arm of the treatment started)
    planned_arm: str | None = None  #: the randomised arm
    first_exposure: date | None = None
    last_exposure: date | None = None
    withdrawn_on: date | None = None
    #: the last day the subject was seen, when the source sends contacts (contract 1.2): the latest contact
    #: or other fact; None: the source sends none, and the subject is followed to the horizon
    last_contact: date | None = None
    treatments: list[TreatmentChange] = field(default_factory=list)
    events: list[AdverseEvent] = field(default_factory=list)


def periods(treatments: Iterable[TreatmentChange]) -> list[Period]:
    """Each drug's exposure periods, from its treatment messages in clinical order (starts first on a
    day with both)."""
    order = {"start": 0, "change": 1, "stop": 2}
    open_: dict[str, TreatmentChange] = {}
    out: list[Period] = []
    for t in sorted(treatments, key=lambda t: (t.on, order.get(t.action, 1), t.drug)):
        if t.action in ("start", "change") and t.drug not in open_:
            open_[t.drug] = t
        elif t.action == "stop" and t.drug in open_:
            began = open_.pop(t.drug)
            out.append(Period(t.drug, began.on, t.on, began.drug_class or t.drug_class))
    out += [Period(t.drug, t.on, None, t.drug_class) for t in open_.values()]
    return sorted(out, key=lambda p: (p.drug, p.first))


def arm_exposure(subject: Subject, basis: str = "actual") -> Period | None:
    """The subject's exposure to the study treatment of the arm (named by the ``basis``: actual or
    planned), or None if never exposed."""
    ps = periods(subject.treatments)
    first = subject.first_exposure or min((p.first for p in ps), default=None)
    if first is None:
        return None
    last = subject.last_exposure
    if last is None and ps and all(p.last is not None for p in ps):
        last = max(p.last for p in ps if p.last is not None)
    arm = subject.planned_arm if basis == "planned" else subject.arm
    return Period(arm or subject.arm or "(no arm)", first, last)


def observation_end(subject: Subject, horizon: date) -> date:
    """The subject's last observed day: withdrawal, else the last contact when the source sends contacts
    (a completion, the last visit), else the horizon (the day before the data cut, or the last clinical
    day known); never past the horizon."""
    if subject.withdrawn_on:
        return min(subject.withdrawn_on, horizon)
    return min(subject.last_contact, horizon) if subject.last_contact else horizon


def risk_spans(ps: Sequence[Period], lag_days: int | None, end: date) -> list[Span]:
    """The days at risk of one group: each period plus the lag, clipped at the end of observation,
    overlapping windows merged."""
    lag = timedelta(days=lag_days or 0)
    spans = [Span(p.first, end if p.last is None or p.last + lag > end else p.last + lag) for p in ps]
    if len(spans) > 1:
        spans.sort(key=lambda s: s.first)
    merged: list[Span] = []
    for s in spans:
        if s.last < s.first:
            continue
        if merged and s.first <= merged[-1].last + ONE_DAY:
            merged[-1] = Span(merged[-1].first, max(merged[-1].last, s.last))
        else:
            merged.append(s)
    return merged


def emergent(onset: date, ps: Sequence[Period], lag_days: int | None) -> bool:
    """Treatment-emergent for a group's periods: on or after a period's first day and, with a lag,
    no later than its last day plus the lag (no upper bound without one, or while ongoing)."""
    for p in ps:
        if onset < p.first:
            continue
        if lag_days is None or p.last is None or onset <= p.last + timedelta(days=lag_days):
            return True
    return False


def days_at_risk_until(spans: Sequence[Span], day: date) -> int:
    """Days at risk up to and including ``day`` (all of them when it falls after the last span)."""
    total = 0
    for s in spans:
        if day < s.first:
            break
        total += Span(s.first, min(s.last, day)).days
    return total


class Membership(NamedTuple):
    """A subject in one group: the group's periods, the days at risk and the emergent events."""

    group: str
    subject: Subject
    spans: tuple[Span, ...]
    events: tuple[AdverseEvent, ...]

    @property
    def days(self) -> int:
        return sum(s.days for s in self.spans)


def memberships(subject: Subject, by: str, horizon: date, lag_days: int | None,
                arm_basis: str = "actual") -> list[Membership]:
    """The subject's groups (the arm; each drug; each drug class) with days at risk and emergent events.
    A subject never exposed, or whose exposure starts after observation ends, takes no part."""
    end = observation_end(subject, horizon)
    if by == "arm":
        exposure = arm_exposure(subject, arm_basis)
        if exposure is not None and lag_days is None:  # one window (issue 27): events without an upper bound,
            exposure = exposure._replace(last=None)      # so time at risk runs to the end of observation too
        groups = {exposure.drug: [exposure]} if exposure else {}
    else:
        groups = {}
        for p in periods(subject.treatments):
            key = p.drug if by == "drug" else drug_class(p)
            groups.setdefault(key, []).append(p)
    out = []
    for name, ps in sorted(groups.items()):
        spans = risk_spans(ps, lag_days, end)
        if not spans:
            continue
        events = tuple(e for e in subject.events if e.onset <= end and emergent(e.onset, ps, lag_days))
        out.append(Membership(name, subject, tuple(spans), events))
    return out


def drug_class(p: Period) -> str:
    """A period's drug class: the one the source sent; placebo is a class of its own; a drug sent without
    one is its own class, named so (an SDTM EX has no class), never one shared "(no class)" group."""
    if p.drug_class:
        return p.drug_class
    if "placebo" in p.drug.lower():
        return "placebo"
    return f"{p.drug} (no class sent)"


def left_out(subject: Subject, by: str, horizon: date) -> str:
    """Why a subject takes no part in the tables (``memberships`` gave none)."""
    if by == "arm" and arm_exposure(subject) is None:
        return "never exposed: no first exposure and no treatment start"
    if by != "arm" and not periods(subject.treatments):
        return "no treatment start recorded"
    return f"exposure starts after the end of observation ({observation_end(subject, horizon).isoformat()})"


def patient_years(days: float) -> float:
    return days / DAYS_PER_YEAR
