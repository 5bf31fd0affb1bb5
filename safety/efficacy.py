"""Disease activity and response: JADAS, cJADAS, ACR-Pedi, the seed study's repeat-infusion rule,
and paired pre/post tests. Pure functions; sources in shared/research/clinical.md section 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from scipy.stats import wilcoxon

# --- JADAS (Consolaro 2009; clinical.md s4a) -------------------------------------------------


def esr_normalised(esr_mm_h: float) -> float:
    """(ESR - 20) / 10, clipped to 0..10 (ESR < 20 counts 0; ESR > 120 counts 120) [clinical.md s4a]."""
    return min(max((esr_mm_h - 20) / 10, 0.0), 10.0)


def crp_normalised(crp_mg_l: float) -> float:
    """(CRP mg/L - 10) / 10, clipped to 0..10. Recalled from Nordal 2012, marked [U] in clinical.md
    s4a (not retrieved verbatim): used only when no ESR exists, and labelled so."""
    return min(max((crp_mg_l - 10) / 10, 0.0), 10.0)


@dataclass(frozen=True)
class Jadas:
    jadas71: float | None
    jadas10: float | None
    cjadas10: float
    marker: str | None  # "ESR", "CRP" or None (no inflammatory marker near the visit)


def jadas(physician_global: float, patient_global: float, active_joints: int,
          esr: float | None = None, crp: float | None = None) -> Jadas:
    """JADAS-71 (joints up to 71), JADAS-10 (active joints capped at 10), cJADAS10 (no marker);
    JADAS with CRP when only CRP exists."""
    clinical10 = physician_global + patient_global + min(active_joints, 10)
    clinical71 = physician_global + patient_global + min(active_joints, 71)
    if esr is not None:
        marker, normalised = "ESR", esr_normalised(esr)
    elif crp is not None:
        marker, normalised = "CRP", crp_normalised(crp)
    else:
        return Jadas(None, None, clinical10, None)
    return Jadas(clinical71 + normalised, clinical10 + normalised, clinical10, marker)


# --- disease-activity states by named cut-off sets (clinical.md s4b) ---------------------------

@dataclass(frozen=True)
class CutOffs:
    """Upper bounds (inclusive) of inactive, low/minimal and moderate activity; above: high."""

    inactive: float
    low: float
    moderate: float | None


CUT_OFF_SETS: dict[str, dict[tuple[str, str], CutOffs]] = {
    # ACR 2021 (Trincianti et al. 2021): JADAS10 and cJADAS10, oligo and poly; boundary inclusivity [U].
    "ACR 2021": {
        ("jadas10", "oligo"): CutOffs(1.4, 4.0, 13.0), ("jadas10", "poly"): CutOffs(2.7, 6.0, 17.0),
        ("cjadas10", "oligo"): CutOffs(1.1, 4.0, 12.0), ("cjadas10", "poly"): CutOffs(2.5, 5.0, 16.0),
    },
    # Consolaro 2012 (Arthritis Rheum 64:2366): inactive disease and minimal disease activity only.
    "Consolaro 2012": {
        ("jadas10", "oligo"): CutOffs(1.0, 2.0, None), ("jadas10", "poly"): CutOffs(1.0, 3.8, None),
        ("cjadas10", "oligo"): CutOffs(1.0, 1.5, None), ("cjadas10", "poly"): CutOffs(1.0, 2.5, None),
    },
}


def course(diagnosis: str | None) -> str:
    """Oligo cut-offs for persistent oligoarticular JIA; poly cut-offs for every other category."""
    return "oligo" if diagnosis == "persistent oligoarticular" else "poly"


def activity_state(score: float, score_name: str, diagnosis: str | None, cut_off_set: str = "ACR 2021") -> str:
    c = CUT_OFF_SETS[cut_off_set][(score_name, course(diagnosis))]
    if score <= c.inactive:
        return "inactive"
    if score <= c.low:
        return "low" if c.moderate is not None else "minimal"
    if c.moderate is None:
        return "above minimal"
    return "moderate" if score <= c.moderate else "high"


# --- ACR-Pedi (Giannini 1997; clinical.md s4d) ---------------------------------------------------

CORE_SET = ("physician_global", "patient_global", "chaq", "active_joints", "limited_joints", "esr")
LEVELS = (90, 70, 50, 30)


def relative_change(baseline: float, current: float) -> float | None:
    """Improvement as a fraction of baseline (positive = better; every core variable is worse when
    higher). A zero baseline is handled explicitly: 0 -> 0 is no change (0.0); 0 -> more is an
    unbounded worsening (-inf); the formula is undefined there (clinical.md s4d)."""
    if baseline == 0:
        return 0.0 if current == 0 else float("-inf")
    return (baseline - current) / baseline


@dataclass(frozen=True)
class PediResponse:
    level: int  # 0, 30, 50, 70 or 90
    flare: bool
    evaluable: bool
    changes: dict[str, float | None]
    missing: tuple[str, ...]


def acr_pedi(baseline: Mapping[str, float | None], current: Mapping[str, float | None]) -> PediResponse:
    """ACR-Pedi 30/50/70/90 and flare of ``current`` against ``baseline`` over the six core-set variables.

    Response at X: >= X% improvement in >= 3 variables, with no more than one of the others worse by
    more than X% (clinical.md s4d as cited). Flare: >= 30% worse in >= 3 with no more than one
    improved >= 30%; a worse global counts only with >= 2 points (20 mm) and a worse joint count only
    with >= 2 more joints (PMC3038996). Needs at least 3 variables present at both visits.
    """
    changes: dict[str, float | None] = {}
    missing = []
    for name in CORE_SET:
        b, c = baseline.get(name), current.get(name)
        if b is None or c is None:
            missing.append(name)
            continue
        changes[name] = relative_change(b, c)
    present = {k: v for k, v in changes.items() if v is not None}
    if len(present) < 3:
        return PediResponse(0, False, False, changes, tuple(missing))
    level = 0
    for x in LEVELS:
        improved = sum(1 for v in present.values() if v >= x / 100)
        worsened = sum(1 for v in present.values() if v < -x / 100)
        if improved >= 3 and worsened <= 1:
            level = x
            break
    meaningful_worse = 0
    for name, v in present.items():
        if v > -0.30:
            continue
        b, c = baseline[name], current[name]
        assert b is not None and c is not None
        if name in ("physician_global", "patient_global") and c - b < 2:
            continue
        if name in ("active_joints", "limited_joints") and c - b < 2:
            continue
        meaningful_worse += 1
    flare = meaningful_worse >= 3 and sum(1 for v in present.values() if v >= 0.30) <= 1
    return PediResponse(level, flare, True, changes, tuple(missing))


# --- the seed study's repeat-infusion rule ----------------------------------------------------

DECISION_WEEKS = {8: 4, 16: 12}  # decision visit -> the visit whose response is required
MAX_INFUSIONS = 3
VISIT_TOLERANCE = timedelta(days=10)


@dataclass(frozen=True)
class Visit:
    at: datetime
    week: int  # protocol week nearest to the visit
    values: dict[str, float | None]


@dataclass(frozen=True)
class Decision:
    week: int
    allowed: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Deviation:
    at: datetime
    what: str


def repeat_infusion_decisions(
    anchor: datetime,
    visits: Sequence[Visit],
    infusions: Sequence[datetime],
    disqualifiers: Sequence[tuple[datetime, str]],
) -> tuple[list[Decision], list[Deviation]]:
    """The protocol rule: at weeks 8 and 16, a repeat infusion is allowed when the previous visit
    (week 4 or 12) had at least an ACR-Pedi 30 response against baseline and the response is waning
    now (a lower ACR-Pedi level than then); a biologic or an intra-articular steroid since the last
    infusion disqualifies; never more than three infusions in all."""
    by_week = {v.week: v for v in visits}
    baseline = by_week.get(0)
    decisions: list[Decision] = []
    allowed_windows: list[tuple[datetime, datetime]] = []
    for week, previous_week in DECISION_WEEKS.items():
        visit, previous = by_week.get(week), by_week.get(previous_week)
        reasons: list[str] = []
        if visit is None or previous is None or baseline is None:
            missing = [f"week {w}" for w, v in ((0, baseline), (previous_week, previous), (week, visit)) if v is None]
            decisions.append(Decision(week, False, (f"no assessment at {', '.join(missing)}",)))
            continue
        given_before = [t for t in infusions if t < visit.at - VISIT_TOLERANCE]
        before = acr_pedi(baseline.values, previous.values)
        now = acr_pedi(baseline.values, visit.values)
        allowed = True
        if len(given_before) >= MAX_INFUSIONS:
            allowed = False
            reasons.append(f"already {len(given_before)} infusions (at most {MAX_INFUSIONS})")
        if before.level < 30:
            allowed = False
            reasons.append(f"no ACR-Pedi 30 response at week {previous_week} (level {before.level})")
        elif now.level >= before.level:
            allowed = False
            reasons.append(f"response not waning: ACR-Pedi {now.level} now, {before.level} at week {previous_week}")
        else:
            reasons.append(f"ACR-Pedi {before.level} at week {previous_week}, waning to {now.level} now")
        last_infusion = max(given_before, default=anchor)
        for at, what in disqualifiers:
            if last_infusion < at <= visit.at + VISIT_TOLERANCE:
                allowed = False
                reasons.append(f"disqualified: {what}")
        decisions.append(Decision(week, allowed, tuple(reasons)))
        if allowed:
            nxt = by_week.get(week + 4)
            allowed_windows.append((visit.at - VISIT_TOLERANCE, nxt.at if nxt else visit.at + timedelta(weeks=4)))
    deviations = []
    for i, at in enumerate(sorted(infusions)):
        if i == 0:
            continue
        if i >= MAX_INFUSIONS:
            deviations.append(Deviation(at, f"infusion {i + 1}: more than {MAX_INFUSIONS} infusions"))
        elif not any(start <= at <= end for start, end in allowed_windows):
            deviations.append(Deviation(at, f"infusion {i + 1} given when the repeat-infusion rule did not allow it"))
    return decisions, deviations


# --- paired pre/post comparison ------------------------------------------------------------

WILCOXON = {"zero_method": "wilcox", "correction": False, "method": "approx", "alternative": "two-sided"}
WILCOXON_METHOD = ("Wilcoxon signed-rank test, two-sided, normal approximation without continuity correction; "
                   "zero differences dropped (zero_method='wilcox'), as SPSS does for the seed study")


def paired_comparison(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Medians with ranges before and after, and the Wilcoxon signed-rank test on the pairs."""
    before = [b for b, _ in pairs]
    after = [a for _, a in pairs]
    out: dict[str, Any] = {
        "n": len(pairs),
        "before_median": median(before) if before else None,
        "before_range": [min(before), max(before)] if before else None,
        "after_median": median(after) if after else None,
        "after_range": [min(after), max(after)] if after else None,
        "p_wilcoxon": None,
        "method": WILCOXON_METHOD,
        "zero_method": WILCOXON["zero_method"],
    }
    differences = [round(a - b, 9) for b, a in pairs]
    if sum(1 for d in differences if d != 0) >= 1:
        out["p_wilcoxon"] = float(wilcoxon(differences, **WILCOXON).pvalue)
    return out
