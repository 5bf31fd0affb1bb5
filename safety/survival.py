"""Time to first event by arm, Kaplan-Meier (issue 27): to the first treatment-emergent adverse event of a
preferred term, and to discontinuation for an adverse event. The estimator and its Greenwood/log-log
intervals are lifelines' (``KaplanMeierFitter``); this module only says who is at risk from when to when.

Time origin: the first dose (day 1). Event: the first adverse event of the term with onset on or after
the first dose / the first discontinuation for an adverse event (``safety.listings.discontinuations``).
Censored: at the end of observation, as the adverse-event tables end it: the withdrawal, else the last
contact when the source sends contacts, else the horizon (the data cut).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

from safety.listings import POOLED, Record, discontinuations


def most_common_term(records: Sequence[Record]) -> str | None:
    """The preferred term most subjects had as a treatment-emergent event (the default curve)."""
    counts: Counter[str] = Counter()
    for r in records:
        if r.first_dose is None:
            continue
        first_dose = r.first_dose
        counts.update({str(d.get("meddra_pt") or d.get("term")) for _m, onset, d in r.events if onset >= first_dose})
    return counts.most_common(1)[0][0] if counts else None


def times_to_first(records: Sequence[Record], horizon: date, term: str | None = None,
                   pooled: bool = False) -> dict[str, list[tuple[int, bool]]]:
    """Per arm, each exposed subject's (days, event happened): to the term's first emergent event, or (no term)
    to the first discontinuation for an adverse event."""
    stopped: dict[str, date] = {}
    if term is None:
        for row in discontinuations(records):
            day = date.fromisoformat(row["date"])
            stopped[row["patient_id"]] = min(day, stopped.get(row["patient_id"], day))
    wanted = term.casefold() if term else None
    out: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in records:
        if r.first_dose is None:
            continue
        first_dose, end = r.first_dose, r.observation_end(horizon)
        if wanted is not None:
            onsets = [onset for _m, onset, d in r.events if onset >= first_dose
                      and str(d.get("meddra_pt") or d.get("term")).casefold() == wanted]
            hit = min(onsets, default=None)
        else:
            hit = stopped.get(r.patient_id)
        if hit is not None and hit <= end:
            out[POOLED if pooled else r.arm].append(((hit - first_dose).days + 1, True))
        else:
            out[POOLED if pooled else r.arm].append((max((end - first_dose).days + 1, 0), False))
    return dict(sorted(out.items()))


def kaplan_meier(groups: dict[str, list[tuple[int, bool]]]) -> dict[str, dict[str, Any]]:
    """Per arm: the step function (day, survival, 95% CI), N, events and the median time (None if not
    reached)."""
    from lifelines import KaplanMeierFitter

    out = {}
    for arm, rows in groups.items():
        if not rows:
            continue
        km = KaplanMeierFitter(alpha=0.05)
        km.fit([t for t, _ in rows], [e for _, e in rows], label=arm)
        sf = km.survival_function_[arm]
        ci = km.confidence_interval_survival_function_
        median = float(km.median_survival_time_)
        out[arm] = {"N": len(rows), "events": sum(e for _, e in rows),
                    "median_days": None if median == float("inf") else median,
                    "steps": [{"day": float(day), "survival": float(s), "low": float(lo), "high": float(hi)}
                              for day, s, lo, hi in zip(sf.index, sf.values, ci.iloc[:, 0], ci.iloc[:, 1],
                                                        strict=True)]}
    return out
