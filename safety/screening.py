"""From subjects to drug-event pairs, and the pairs screened by every measure. Pure.

The unit (issue 26): each adverse event counts once for each drug whose risk window holds its onset. A
drug's risk window is each treatment period from its start through its stop plus the lag (default 30
days), days inclusive, clipped at the end of observation: exactly the by-drug time at risk of the
adverse-event tables (``safety.exposure``). Terms are compared without regard to case.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from safety.ae_tables import UNCODED_SOC
from safety.disproportionality import Table, ebgm, fit_prior, information_component, prr, ror
from safety.exposure import DEFAULT_DRUG_LAG_DAYS, Subject, observation_end, periods, risk_spans
from safety.rules_file import RulesError, number, text

METHODS = ("prr", "ror", "ic", "ebgm")


@dataclass(frozen=True)
class DetectionRules:
    version: str
    method: str
    thresholds: dict[str, dict[str, float]]
    #: the screen that raises live signals: its level (pt or soc) and risk-window lag
    level: str = "pt"
    lag_days: int = DEFAULT_DRUG_LAG_DAYS

    @classmethod
    def from_text(cls, raw: str) -> DetectionRules:
        try:
            d = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"not TOML ({exc})") from None
        method = text(d, "method")
        if method not in METHODS:
            raise RulesError(f"method: {method!r} must be one of {', '.join(METHODS)}")
        thresholds = {
            "prr": {"min_count": number(d, "prr.min_count", low=1, low_inclusive=True),
                    "prr": number(d, "prr.prr"), "chi2": number(d, "prr.chi2", low_inclusive=True)},
            "ror": {"min_count": number(d, "ror.min_count", low=1, low_inclusive=True),
                    "lower": number(d, "ror.lower")},
            "ic": {"min_count": number(d, "ic.min_count", low=1, low_inclusive=True),
                   "ic025": number(d, "ic.ic025", low=None)},
            "ebgm": {"min_count": number(d, "ebgm.min_count", low=1, low_inclusive=True),
                     "eb05": number(d, "ebgm.eb05")},
        }
        level = text(d, "live.level")
        if level not in ("pt", "soc"):
            raise RulesError(f"live.level: {level!r} must be pt or soc")
        lag = number(d, "live.lag_days", low=0, low_inclusive=True, high=3660, integer=True)
        return cls(text(d, "version"), method, thresholds, level, int(lag))


def drug_event_pairs(subjects: Iterable[Subject], horizon: date, lag_days: int = DEFAULT_DRUG_LAG_DAYS,
                     level: str = "pt") -> Counter[tuple[str, str]]:
    """(drug, term) -> how many adverse events of the term fell in a risk window of the drug."""
    counts: Counter[tuple[str, str]] = Counter()
    for subject in subjects:
        for pair, (n, _last) in subject_pairs(subject, horizon, lag_days, level).items():
            counts[pair] += n
    return counts


def subject_pairs(subject: Subject, horizon: date, lag_days: int = DEFAULT_DRUG_LAG_DAYS,
                  level: str = "pt") -> dict[tuple[str, str], tuple[int, date]]:
    """One subject's share of the pairs: (drug, term) -> (events, the latest onset). The horizon only
    clips windows after the subject's last event, so any horizon from that event on gives the same
    share: the live read model keeps each patient's share and adds them up."""
    out: dict[tuple[str, str], tuple[int, date]] = {}
    end = observation_end(subject, horizon)
    by_drug: dict[str, list[Any]] = {}
    for p in periods(subject.treatments):
        by_drug.setdefault(p.drug, []).append(p)
    windows = {drug: risk_spans(ps, lag_days, end) for drug, ps in by_drug.items()}
    for e in subject.events:
        if not e.coded or e.onset > end:
            continue
        term = e.term if level == "pt" else e.soc
        if level == "soc" and term == UNCODED_SOC:
            continue
        for drug, spans in windows.items():
            if any(s.first <= e.onset <= s.last for s in spans):
                key = (drug, term.casefold())
                n, last = out.get(key, (0, e.onset))
                out[key] = (n + 1, max(last, e.onset))
    return out


def screen(counts: Counter[tuple[str, str]], rules: DetectionRules, min_count: int = 1,
           fit: bool = True) -> dict[str, Any]:
    """Every pair's table and measures, the fitted prior, and which measures signal. Without ``fit``
    (the live screen when its method is not EBGM) no prior is fitted and EBGM is left out."""
    n = sum(counts.values())
    by_drug: Counter[str] = Counter()
    by_term: Counter[str] = Counter()
    for (drug, term), k in counts.items():
        by_drug[drug] += k
        by_term[term] += k
    tables = {pair: Table(a, by_drug[pair[0]] - a, by_term[pair[1]] - a, n - by_drug[pair[0]] - by_term[pair[1]] + a)
              for pair, a in counts.items()}
    ordered = sorted(tables)
    prior = (fit_prior([tables[p].a for p in ordered], [tables[p].expected for p in ordered])
             if ordered and fit else None)
    t = rules.thresholds
    out = []
    for pair in ordered:
        table = tables[pair]
        if table.a < min_count:
            continue
        ratio, chi2, prr_reason = prr(table)
        odds, ci, ror_reason = ror(table)
        ic, ic025 = information_component(table.a, table.expected)
        eb, eb05 = ebgm(table.a, table.expected, prior) if prior else (None, None)
        signal = {
            "prr": bool(ratio is not None and chi2 is not None and table.a >= t["prr"]["min_count"]
                        and ratio >= t["prr"]["prr"] and chi2 >= t["prr"]["chi2"]),
            "ror": bool(ci is not None and table.a >= t["ror"]["min_count"] and ci[0] > t["ror"]["lower"]),
            "ic": bool(table.a >= t["ic"]["min_count"] and ic025 > t["ic"]["ic025"]),
            "ebgm": bool(eb05 is not None and table.a >= t["ebgm"]["min_count"] and eb05 >= t["ebgm"]["eb05"]),
        }
        reasons = {k: v for k, v in (("prr", prr_reason), ("ror", ror_reason)) if v}
        out.append({"drug": pair[0], "term": pair[1], "a": table.a, "b": table.b, "c": table.c, "d": table.d,
                    "expected": table.expected, "prr": ratio, "prr_chi2": chi2, "ror": odds,
                    "ror_ci95": list(ci) if ci else None, "ic": ic, "ic025": ic025, "ebgm": eb, "eb05": eb05,
                    "signal": signal, **({"undefined": reasons} if reasons else {})})
    return {"N": n, "prior": prior.as_dict() if prior else None, "pairs": out,
            "rules": {"version": rules.version, "method": rules.method}}


def pair_events(subjects: Iterable[Subject], horizon: date, drug: str, term: str,
                lag_days: int = DEFAULT_DRUG_LAG_DAYS, level: str = "pt") -> list[dict[str, Any]]:
    """The events a pair counts: each adverse event of the term in a risk window of the drug."""
    out = []
    for subject in subjects:
        courses = [p for p in periods(subject.treatments) if p.drug == drug]
        if not courses:
            continue
        spans = risk_spans(courses, lag_days, observation_end(subject, horizon))
        for e in subject.events:
            name = e.term if level == "pt" else e.soc
            if e.coded and name.casefold() == term and any(s.first <= e.onset <= s.last for s in spans):
                out.append({"source": subject.source, "patient_id": subject.patient_id, "onset": e.onset.isoformat(),
                            "term": e.term, "soc": e.soc, "serious": e.serious, "message_id": e.message_id})
    return out
