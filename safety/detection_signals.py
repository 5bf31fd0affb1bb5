"""Registry-wide signals from signal detection (issue 26): a drug-event pair meeting the screening rule
raises a ``disproportionality`` signal (warning), a planned pair whose MaxSPRT crosses its critical value
a ``sequential`` signal (alert). Pure.

They belong to no patient: ``patient_id`` is empty and ``source`` is ``REGISTRY``. Their ids are stable
(the level, drug and term; the plan pair's name, drug and terms), so a pair raises one signal however
often its evidence is re-evaluated, and an incremental read model equals a rebuild.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from safety.mas import Signal, signal_id

#: the source of a signal that belongs to the registry, not to one patient
REGISTRY = "registry"

#: what each screening method's rule reads, for the evidence line
RULE_TEXT = {
    "prr": "PRR {prr:.2f} ≥ {t[prr]:g}, χ² {prr_chi2:.2f} ≥ {t[chi2]:g}",
    "ror": "ROR 95% CI lower bound {ror_ci95[0]:.2f} > {t[lower]:g}",
    "ic": "IC025 {ic025:.2f} > {t[ic025]:g}",
    "ebgm": "EB05 {eb05:.2f} ≥ {t[eb05]:g}",
}


def _day(text: str | date) -> datetime:
    d = text if isinstance(text, date) else date.fromisoformat(text)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def disproportionality_signal(pair: dict[str, Any], method: str, thresholds: dict[str, float], level: str,
                              lag_days: int, rules_version: str, latest_onset: date) -> Signal:
    """The signal of one screened pair meeting the rule; it occurred on the latest onset it counts."""
    rule = RULE_TEXT[method].format(t=thresholds, **pair)
    measures = {k: pair[k] for k in ("a", "b", "c", "d", "expected", "prr", "prr_chi2", "ror", "ror_ci95", "ic",
                                     "ic025", "ebgm", "eb05")}
    return Signal(
        id=signal_id(REGISTRY, "", "disproportionality", f"{level}/{pair['drug'].casefold()}/{pair['term']}"),
        source=REGISTRY, patient_id="", kind="disproportionality", level="warning", occurred_at=_day(latest_onset),
        evidence=[{"rule": f"{method.upper()}: {rule} with {pair['a']} events",
                   "term": f"{pair['drug']} – {pair['term']}"}],
        context=[f"{pair['a']} events of {pair['term']} in risk windows of {pair['drug']} "
                 f"({pair['expected']:.2f} expected), lag {lag_days} days, level {level}"],
        details={"drug": pair["drug"], "term": pair["term"], "level": level, "lag_days": lag_days, "method": method,
                 "rules_version": rules_version, **measures},
    )


def sequential_signal(result: dict[str, Any], plan_digest: str) -> Signal | None:
    """The signal of one planned pair's surveillance, if it signalled (``safety.surveillance``)."""
    if result["status"] != "signalled":
        return None
    key = f"{result['name']}/{result['drug'].casefold()}/{'|'.join(sorted(result['terms']))}"
    return Signal(
        id=signal_id(REGISTRY, "", "sequential", key), source=REGISTRY, patient_id="", kind="sequential",
        level="alert", occurred_at=_day(result["signalled_on"]),
        evidence=[{"rule": f"MaxSPRT: LLR {result['llr_at_signal']:.3f} ≥ CV {result['critical_value']:.3f} with "
                           f"{result['observed_at_signal']} events ({result['expected_at_signal']:.2f} expected)",
                   "term": f"{result['drug']} – {', '.join(result['terms'])}"}],
        context=[f"surveillance pair {result['name']}, signalled on {result['signalled_on']}"],
        details={"name": result["name"], "drug": result["drug"], "terms": result["terms"],
                 "observed": result["observed_at_signal"], "expected": result["expected_at_signal"],
                 "llr": result["llr_at_signal"], "critical_value": result["critical_value"],
                 "signalled_on": result["signalled_on"], "plan": plan_digest},
    )
