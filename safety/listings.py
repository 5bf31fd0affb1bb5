"""The listings and summaries a DSMB reads beside the tables (issue 27): deaths, serious adverse events
with their criteria, discontinuations for adverse events, disposition, demographics and exposure. Pure.

Each patient is a ``Record`` built from its contract facts (amendments applied), with the arm on the
basis asked for (actual: the treatment started, SDTM ACTARM; planned: the randomised arm, SDTM ARM).
Days from the first dose count the first dose's day as day 1 (as SDTM --DY); days from the last dose
count the day after it as day 1.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from safety.amendments import Amendments
from safety.seriousness import criteria, fatal, serious

NO_ARM = "(no arm)"
POOLED = "All subjects"


@dataclass
class Record:
    """One patient as the listings need them."""

    source: str
    patient_id: str
    study: str | None = None
    arm: str = NO_ARM
    sex: str | None = None
    age: float | None = None
    first_dose: date | None = None
    last_dose: date | None = None
    doses: list[str] = field(default_factory=list)
    #: (message id, onset, data) of each adverse event
    events: list[tuple[str, date, dict[str, Any]]] = field(default_factory=list)
    #: (day, data) of each withdrawal (disposition event)
    withdrawals: list[tuple[date, dict[str, Any]]] = field(default_factory=list)
    #: the day the study was completed (a contact of kind completion), if it was
    completed: date | None = None
    #: the last day the subject was seen, when the source sends contacts (contract 1.2): the latest fact
    last_contact: date | None = None

    def observation_end(self, horizon: date) -> date:
        """As the adverse-event tables end it (``safety.exposure.observation_end``): the withdrawal, else the
        last contact when the source sends contacts, else the horizon; never past it."""
        if self.withdrawals:
            return min(min(day for day, _ in self.withdrawals), horizon)
        return min(self.last_contact, horizon) if self.last_contact else horizon

    @property
    def exposed(self) -> bool:
        return self.first_dose is not None

    def day_of_dose(self, day: date) -> int | None:
        return None if self.first_dose is None else (day - self.first_dose).days + (1 if day >= self.first_dose else 0)

    def days_after_last(self, day: date) -> int | None:
        return None if self.last_dose is None else (day - self.last_dose).days


def record_of(source: str, patient_id: str, facts: Iterable[tuple[str, str, str, dict[str, Any]]],
              arm_basis: str = "actual") -> Record:
    """A patient's record from (message id, type, occurred_at, data) facts in ledger order, amended."""
    facts = list(facts)
    amended: Amendments[str] = Amendments()
    for _mid, typ, _at, data in facts:
        if amended.is_amendment(typ):
            amended.note(typ, data["target_message_id"], data.get("data"))
    r = Record(source, patient_id)
    starts: list[date] = []
    stops: list[date] = []
    seen: date | None = None
    contacts = False
    for mid, typ, at, raw in facts:
        if not amended.counts(typ, mid):
            continue
        data = amended.data(mid, raw)
        day = date.fromisoformat(at[:10])
        seen = max(day, seen) if seen else day
        if typ == "enrolment":
            planned, actual = data.get("arm"), data.get("actual_arm")
            r.arm = (planned or actual if arm_basis == "planned" else actual or planned) or NO_ARM
            r.sex, r.age, r.study = data.get("sex"), data.get("age_years"), data.get("study")
            first, last = data.get("first_exposure_on"), data.get("last_exposure_on")
            r.first_dose = date.fromisoformat(str(first)[:10]) if first else r.first_dose
            r.last_dose = date.fromisoformat(str(last)[:10]) if last else r.last_dose
        elif typ == "treatment":
            (starts if data.get("action") in ("start", "change") else stops).append(day)
            if data.get("dose"):
                r.doses.append(str(data["dose"]))
        elif typ == "adverse_event":
            r.events.append((mid, day, data))
        elif typ == "withdrawal":
            r.withdrawals.append((day, data))
        elif typ == "contact":
            contacts = True
            if data.get("kind") == "completion":
                r.completed = day
    r.last_contact = seen if contacts else None
    r.first_dose = r.first_dose or min(starts, default=None)
    r.last_dose = r.last_dose or max(stops, default=None)
    return r


def _arm(r: Record, pooled: bool) -> str:
    return POOLED if pooled else r.arm


def deaths(records: Sequence[Record], pooled: bool = False) -> list[dict[str, Any]]:
    """Every death: a fatal adverse event, or a withdrawal for death where no fatal event says it."""
    out = []
    for r in records:
        fatal_events = [(day, d) for _mid, day, d in r.events if fatal(d)]
        for day, d in fatal_events:
            out.append(_death_row(r, day, str(d.get("meddra_pt") or d.get("term")), pooled))
        if not fatal_events:
            for day, d in r.withdrawals:
                if d.get("death") or str(d.get("disposition") or "").upper() == "DEATH":
                    out.append(_death_row(r, day, f"{d.get('reason') or 'death'} (disposition)", pooled))
    return sorted(out, key=lambda row: (row["arm"], row["date"], row["patient_id"]))


def _death_row(r: Record, day: date, cause: str, pooled: bool) -> dict[str, Any]:
    return {"patient_id": r.patient_id, "arm": _arm(r, pooled), "date": day.isoformat(),
            "days_from_first_dose": r.day_of_dose(day), "days_after_last_dose": r.days_after_last(day),
            "cause": cause}


def serious_events(records: Sequence[Record], pooled: bool = False) -> list[dict[str, Any]]:
    """Every serious adverse event (ICH E2A) with the criteria it meets."""
    out = []
    for r in records:
        for _mid, day, d in r.events:
            if not serious(d):
                continue
            out.append({"patient_id": r.patient_id, "arm": _arm(r, pooled), "onset": day.isoformat(),
                        "days_from_first_dose": r.day_of_dose(day),
                        "term": str(d.get("meddra_pt") or d.get("term")),
                        "criteria": ", ".join(criteria(d)) or "flagged serious",
                        "severity": d.get("severity") or (f"grade {d['ctcae_grade']}" if d.get("ctcae_grade") else "–"),
                        "causality": d.get("relatedness") or "not given (counted as related)",
                        "outcome": d.get("outcome") or "–"})
    return sorted(out, key=lambda row: (row["arm"], row["patient_id"], row["onset"]))


def for_adverse_event(d: dict[str, Any]) -> bool:
    return any(str(x or "").strip().lower() == "adverse event" for x in (d.get("disposition"), d.get("reason")))


def discontinuations(records: Sequence[Record], pooled: bool = False) -> list[dict[str, Any]]:
    """Every subject who stopped for an adverse event, with the event it is put on: one recorded as leading
    to it (action taken 'drug withdrawn'), else the last adverse event with onset on or before the withdrawal."""
    out = []
    for r in records:
        stopped = [(day, d) for _mid, day, d in r.events
                   if str(d.get("action_taken") or "").strip().lower() in ("drug withdrawn", "drug discontinued",
                                                                            "permanently discontinued")]
        for day, d in stopped:
            out.append({"patient_id": r.patient_id, "arm": _arm(r, pooled), "date": day.isoformat(),
                        "term": str(d.get("meddra_pt") or d.get("term")), "how": "action taken: drug withdrawn"})
        if stopped:
            continue
        for day, w in r.withdrawals:
            if not for_adverse_event(w):
                continue
            before = [(onset, d) for _mid, onset, d in r.events if onset <= day]
            last = max(before, key=lambda x: x[0])[1] if before else None
            term = str(last.get("meddra_pt") or last.get("term")) if last else "(no adverse event recorded before it)"
            out.append({"patient_id": r.patient_id, "arm": _arm(r, pooled), "date": day.isoformat(), "term": term,
                        "how": "withdrawal from the study for an adverse event"})
    return sorted(out, key=lambda row: (row["arm"], row["term"], row["patient_id"]))


def disposition(records: Sequence[Record], pooled: bool = False) -> dict[str, Any]:
    """The flow per arm of the exposed: enrolled, exposed, then each one's disposition (completed, the
    reason of a withdrawal, or ongoing); subjects never exposed in an arm nobody was exposed in (screen
    failures) are counted apart, so no column names them."""
    arms = sorted({_arm(r, pooled) for r in records if r.exposed})
    counts: dict[str, Counter[str]] = {a: Counter() for a in arms}
    never = 0
    for r in records:
        arm = _arm(r, pooled)
        if arm not in counts:
            never += 1
            continue
        c = counts[arm]
        c["enrolled"] += 1
        if not r.exposed:
            continue
        c["exposed"] += 1
        final = r.withdrawals[-1][1] if r.withdrawals else None
        status = (str(final.get("disposition") or final.get("reason")) if final
                  else "completed" if r.completed else "ongoing")
        c[status.upper()] += 1
    reasons = sorted({k for c in counts.values() for k in c} - {"enrolled", "exposed"},
                     key=lambda k: (k != "COMPLETED", k == "ONGOING", k))
    return {"arms": arms, "never_exposed": never,
            "rows": [{"row": row, **{a: counts[a][row] for a in arms}} for row in ("enrolled", "exposed", *reasons)]}


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "sd": None, "median": None, "min": None, "max": None}
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None, "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def demographics(records: Sequence[Record], horizon: date, pooled: bool = False) -> dict[str, Any]:
    """Per arm, the exposed subjects: N, sex, age, and exposure (days from the first dose through the last, or
    through the end of observation while ongoing; the doses recorded)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.exposed:
            groups[_arm(r, pooled)].append(r)
    out = {}
    for arm, rs in sorted(groups.items()):
        durations = [float(((r.last_dose or horizon) - r.first_dose).days + 1) for r in rs if r.first_dose]
        out[arm] = {"N": len(rs), "sex": dict(sorted(Counter(r.sex or "not given" for r in rs).items())),
                    "age_years": _summary([r.age for r in rs if r.age is not None]),
                    "exposure_days": _summary(durations),
                    "doses": dict(Counter(d for r in rs for d in set(r.doses)).most_common(5))}
    return out
