"""Incidence before and after an intervention: anchors, windows, person-time, categories, episodes.

Pure rules over already-amended clinical facts (retracted facts removed, corrected facts carrying
their corrected data). The read side feeds them from its tables; the statistics are in
:mod:`safety.statistics`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from safety.seriousness import serious
from safety.statistics import (
    METHOD_FISHER,
    METHOD_RATE_CI,
    METHOD_RATE_RATIO,
    fisher_person_months,
    poisson_rate_ci,
    rate_ratio_exact,
)
from safety.windows import Window, add_months, window_after, window_before

CATEGORIES = ("serious", "moderate_severe", "all")
EPISODE_MONTHS = 3
DEFAULT_ANCHOR = "MSC infusion"


@dataclass(frozen=True)
class Fact:
    """One clinical fact of a patient as the incidence rules need it."""

    message_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    anchor: str = DEFAULT_ANCHOR
    pre_months: int = 3
    post_months: int = 12
    data_cut: datetime | None = None  # exclusive: facts at or after it are not yet known clinically


@dataclass
class Episode:
    label: str
    window: Window
    serious: list[str] = field(default_factory=list)
    moderate_severe: list[str] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)


@dataclass
class PatientIncidence:
    source: str
    patient_id: str
    anchor: datetime
    pre: Window
    post: Window
    events: dict[str, dict[str, int]]  # category -> "pre"/"post" -> count
    episodes: list[Episode]

    def months(self, side: str) -> float:
        return (self.pre if side == "pre" else self.post).months


def event_categories(
    facts: Sequence[Fact], retracted: Collection[str] = ()
) -> list[tuple[Fact, tuple[str, ...]]]:
    """Each countable fact with its categories.

    An adverse event is serious when flagged so or when a hospitalisation links to it; a linked
    hospitalisation is counted with its event, not again; an unlinked one counts as one serious
    event (contract: hospitalisation notes). A hospitalisation linked to a retracted event goes
    with it. ``moderate_severe``: non-serious events of severity moderate or severe, or CTCAE
    grade 2 or more. ``all``: every adverse event and unlinked hospitalisation.
    """
    adverse = {f.message_id for f in facts if f.type == "adverse_event"} | set(retracted)
    linked = {
        f.data["adverse_event_message_id"]
        for f in facts
        if f.type == "hospitalisation" and f.data.get("adverse_event_message_id") in adverse
    }
    out: list[tuple[Fact, tuple[str, ...]]] = []
    for f in facts:
        if f.type == "adverse_event" and f.message_id not in retracted:
            if serious(f.data) or f.message_id in linked:
                out.append((f, ("serious", "all")))
            elif f.data.get("severity") in ("moderate", "severe") or (f.data.get("ctcae_grade") or 0) >= 2:
                out.append((f, ("moderate_severe", "all")))
            else:
                out.append((f, ("all",)))
        elif f.type == "hospitalisation" and f.data.get("adverse_event_message_id") not in adverse:
            out.append((f, ("serious", "all")))
    return out


def find_anchor(facts: Iterable[Fact], name: str) -> datetime | None:
    times = [f.occurred_at for f in facts if f.type == "intervention" and f.data.get("name") == name]
    return min(times) if times else None


def episodes_for(anchor: datetime, pre_months: int, post_months: int) -> list[Episode]:
    """3-month episodes over both windows, labelled in months from the anchor ("-3-0", "0-3")."""
    bounds = [*range(-pre_months, post_months, EPISODE_MONTHS), post_months]
    if 0 not in bounds:
        bounds = sorted({*bounds, 0})
    return [
        Episode(f"{a}-{b}", Window(add_months(anchor, a), add_months(anchor, b)))
        for a, b in pairwise(bounds)
    ]


def _week(anchor: datetime, when: datetime) -> int:
    return (when - anchor).days // 7


def _treatment_line(anchor: datetime, f: Fact) -> str:
    wk = _week(anchor, f.occurred_at)
    if f.type == "intervention":
        return f"Wk {wk}: {f.data.get('name')}"
    parts = [f.data.get("drug", ""), f.data.get("action", "")]
    if f.data.get("dose"):
        parts.append(str(f.data["dose"]))
    return f"Wk {wk}: " + " ".join(p for p in parts if p)


def patient_incidence(
    source: str,
    patient_id: str,
    facts: Sequence[Fact],
    settings: Settings,
    retracted: Collection[str] = (),
) -> PatientIncidence | None:
    """The patient's events and person-time around the anchor; None without an anchor.

    ``facts`` are already amended (retracted ones left out); ``retracted`` names the retracted
    message ids, so that what linked to them goes with them.
    """
    known = [f for f in facts if settings.data_cut is None or f.occurred_at < settings.data_cut]
    anchor = find_anchor(known, settings.anchor)
    if anchor is None:
        return None
    withdrawn = min((f.occurred_at for f in known if f.type == "withdrawal"), default=None)
    stops = [t for t in (withdrawn, settings.data_cut) if t is not None]
    stop = min(stops) if stops else None
    pre = window_before(anchor, settings.pre_months).clipped(stop)
    post = window_after(anchor, settings.post_months).clipped(stop)
    events = {c: {"pre": 0, "post": 0} for c in CATEGORIES}
    episodes = episodes_for(anchor, settings.pre_months, settings.post_months)
    for fact, categories in event_categories(known, retracted):
        side = "pre" if pre.contains(fact.occurred_at) else "post" if post.contains(fact.occurred_at) else None
        if side is None:
            continue
        for c in categories:
            events[c][side] += 1
        for ep in episodes:
            if ep.window.contains(fact.occurred_at):
                term = str(fact.data.get("term") or fact.data.get("reason") or fact.type)
                if "serious" in categories:
                    ep.serious.append(term)
                elif "moderate_severe" in categories:
                    ep.moderate_severe.append(term)
    observed = Window(pre.start, post.end)
    for f in sorted(known, key=lambda f: f.occurred_at):
        if f.type in ("treatment", "intervention") and observed.contains(f.occurred_at):
            for ep in episodes:
                if ep.window.contains(f.occurred_at):
                    ep.treatments.append(_treatment_line(anchor, f))
    return PatientIncidence(source, patient_id, anchor, pre, post, events, episodes)


def _ratio(events: int, months: float) -> float | None:
    return events / months if months > 0 else None


def summarise(patients: Sequence[PatientIncidence], settings: Settings) -> dict[str, Any]:
    """The cohort comparison, per-patient rows and the episode table (the Table 2 layout)."""
    categories: dict[str, Any] = {}
    for c in CATEGORIES:
        block: dict[str, Any] = {}
        totals = {}
        for side, window_months in (("pre", settings.pre_months), ("post", settings.post_months)):
            k = sum(p.events[c][side] for p in patients)
            t = sum(p.months(side) for p in patients)
            ci = poisson_rate_ci(k, t)
            totals[side] = (k, t)
            block[side] = {
                "events": k,
                "person_months": t,
                "monthly_incidence": k / window_months if window_months else None,
                "incidence_per_person_month": ci.rate,
                "ci95_low": ci.low,
                "ci95_high": ci.high,
            }
        rr = rate_ratio_exact(totals["post"][0], totals["post"][1], totals["pre"][0], totals["pre"][1])
        block.update(
            rate_ratio=rr.ratio,
            rate_ratio_ci95_low=rr.low,
            rate_ratio_ci95_high=rr.high,
            p_exact_conditional=rr.p_value,
            p_fisher_person_months=fisher_person_months(
                totals["pre"][0], totals["pre"][1], totals["post"][0], totals["post"][1]
            ),
        )
        categories[c] = block
    per_patient = []
    episodes = []
    for p in patients:
        row: dict[str, Any] = {
            "source": p.source,
            "patient_id": p.patient_id,
            "anchor_date": p.anchor.date().isoformat(),
        }
        for c in CATEGORIES:
            row[c] = {
                side: {
                    "events": p.events[c][side],
                    "months": p.months(side),
                    "monthly_incidence": _ratio(p.events[c][side], p.months(side)),
                }
                for side in ("pre", "post")
            }
        per_patient.append(row)
        for ep in p.episodes:
            episodes.append({
                "source": p.source,
                "patient_id": p.patient_id,
                "episode": ep.label,
                "serious": ep.serious,
                "moderate_severe": ep.moderate_severe,
                "treatments": ep.treatments,
            })
    return {
        "patients": len(patients),
        "categories": categories,
        "methods": {
            "ci95": METHOD_RATE_CI,
            "p_exact_conditional": METHOD_RATE_RATIO,
            "p_fisher_person_months": METHOD_FISHER,
            "monthly_incidence": "events / window months (Table 2's Total row)",
            "incidence_per_person_month": "events / person-months observed",
        },
        "per_patient": per_patient,
        "episodes": episodes,
    }
