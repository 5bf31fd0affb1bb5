"""Sequential surveillance of pre-specified drug-outcome pairs with the Poisson MaxSPRT. Pure.

A plan (TOML, ``[[pair]]``) names each pair: ``name``, ``drug``, ``terms`` (any of them counts),
``background_per_100py`` (the rate expected if the drug adds no risk), ``start`` (a clinical day),
``upper_limit`` (T, in expected events), ``min_events`` (M), ``alpha`` and ``lag_days`` (default 30).

Expected count through clinical day t: background / 100 × (days at risk on the drug from ``start``
through t) / 365.25, a day at risk being a day of a course from its start through its stop plus the
lag, inclusive, clipped at the end of observation (as the by-drug adverse-event tables count it).
Observed: the events of the terms with onset on or after ``start`` inside one of that patient's risk
windows for the drug. The test (``safety.maxsprt``) looks on each clinical day with an event.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from safety.exposure import DAYS_PER_YEAR, Subject, observation_end, periods, risk_spans
from safety.maxsprt import Look, critical_value, llr, monitor
from safety.rules_file import RulesError


@dataclass(frozen=True)
class PlannedPair:
    name: str
    drug: str
    terms: tuple[str, ...]
    background_per_100py: float
    start: date
    upper_limit: float
    min_events: int
    alpha: float
    lag_days: int = 30


def load_plan(text: str) -> tuple[str, list[PlannedPair]]:
    """The plan's SHA-256 and its pairs; RulesError naming the pair and field when one cannot be used.
    The critical value of each pair is checked to exist."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"not TOML ({exc})") from None
    unknown = sorted(set(doc) - {"pair", "version"})
    if unknown:
        raise RulesError(f"unknown key {unknown[0]!r}: a plan holds [[pair]] tables")
    raw = doc.get("pair")
    if not isinstance(raw, list) or not raw:
        raise RulesError("pair: the plan needs at least one [[pair]] table")
    pairs = []
    for i, p in enumerate(raw, start=1):
        where = f"pair {i}" + (f" ({p.get('name')})" if isinstance(p, dict) and p.get("name") else "")
        if not isinstance(p, dict):
            raise RulesError(f"{where}: must be a table")
        extra = sorted(set(p) - {"name", "drug", "terms", "background_per_100py", "start", "upper_limit",
                                 "min_events", "alpha", "lag_days"})
        if extra:
            raise RulesError(f"{where}: unknown key {extra[0]!r}")
        try:
            pair = PlannedPair(
                name=_text(p, "name", where), drug=_text(p, "drug", where), terms=_terms(p, where),
                background_per_100py=_positive(p, "background_per_100py", where),
                start=_day(p, where), upper_limit=_positive(p, "upper_limit", where),
                min_events=_whole(p, "min_events", where, 1), alpha=_alpha(p, where),
                lag_days=_whole(p, "lag_days", where, 0, default=30))
        except (TypeError, ValueError) as exc:
            raise RulesError(str(exc)) from None
        try:
            critical_value(pair.upper_limit, pair.min_events, pair.alpha)
        except ValueError as exc:
            raise RulesError(f"{where}: {exc}") from None
        pairs.append(pair)
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise RulesError("name: each pair needs a name of its own")
    return hashlib.sha256(text.encode()).hexdigest(), pairs


def _text(p: dict[str, Any], key: str, where: str) -> str:
    v = p.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RulesError(f"{where}.{key}: needed, as text")
    return v.strip()


def _terms(p: dict[str, Any], where: str) -> tuple[str, ...]:
    v = p.get("terms")
    if not isinstance(v, list) or not v or not all(isinstance(t, str) and t.strip() for t in v):
        raise RulesError(f"{where}.terms: a list of one or more terms, e.g. [\"NEUTROPENIA\"]")
    return tuple(t.strip().casefold() for t in v)


def _positive(p: dict[str, Any], key: str, where: str) -> float:
    v = p.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise RulesError(f"{where}.{key}: {v!r} must be a positive number")
    return float(v)


def _whole(p: dict[str, Any], key: str, where: str, low: int, default: int | None = None) -> int:
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise RulesError(f"{where}.{key}: {v!r} must be a whole number of at least {low}")
    return v


def _alpha(p: dict[str, Any], where: str) -> float:
    v = p.get("alpha")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1e-7 < v <= 0.5:
        raise RulesError(f"{where}.alpha: {v!r} must lie in (1e-7, 0.5]")
    return float(v)


def _day(p: dict[str, Any], where: str) -> date:
    v = p.get("start")
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v))
    except ValueError:
        raise RulesError(f"{where}.start: {v!r} must be a clinical day, YYYY-MM-DD") from None


Courses = dict[str, list[tuple[Subject, list[Any]]]]


def courses_by_drug(subjects: Iterable[Subject]) -> Courses:
    """Each drug's subjects with their courses of it (computed once for every pair of a plan)."""
    out: Courses = {}
    for s in subjects:
        mine: dict[str, list[Any]] = {}
        for p in periods(s.treatments):
            mine.setdefault(p.drug.casefold(), []).append(p)
        for drug, ps in mine.items():
            out.setdefault(drug, []).append((s, ps))
    return out


@dataclass(frozen=True)
class PairExposure:
    """One subject's share of a planned pair: its days at risk from the pair's start (first, last; last
    None while the course is ongoing, i.e. through the end of observation) and the onsets it counts.
    Independent of the horizon, so the live read model keeps each patient's share and adds them up."""

    spans: list[tuple[date, date | None]]
    onsets: list[date]


def pair_exposure(subject: Subject, courses: list[Any], pair: PlannedPair) -> PairExposure:
    """The subject's days at risk on the pair's drug and its events of the pair's terms in them."""
    spans = risk_spans(courses, pair.lag_days, observation_end(subject, date.max))
    out: list[tuple[date, date | None]] = []
    for span in spans:
        begin = max(span.first, pair.start)
        if begin <= span.last:
            out.append((begin, None if span.last == date.max else span.last))
    onsets = [e.onset for e in subject.events
              if e.coded and e.onset >= pair.start and e.term.casefold() in pair.terms
              and any(sp.first <= e.onset <= sp.last for sp in spans)]
    return PairExposure(out, onsets)


def surveil(subjects: Iterable[Subject] | Courses, horizon: date, pair: PlannedPair) -> dict[str, Any]:
    """The pair's surveillance through ``horizon`` (``surveil_exposure`` of every subject's share)."""
    by_drug = subjects if isinstance(subjects, dict) else courses_by_drug(subjects)
    return surveil_exposure([pair_exposure(s, courses, pair) for s, courses in by_drug.get(pair.drug.casefold(), [])],
                            horizon, pair)


def surveil_exposure(shares: Iterable[PairExposure], horizon: date, pair: PlannedPair) -> dict[str, Any]:
    """The pair's surveillance through ``horizon``: status, critical value, observed, expected and LLR at
    the end of observation, the signal's day and values, the day it ended, and the LLR path."""
    cv = critical_value(pair.upper_limit, pair.min_events, pair.alpha)
    change: dict[date, int] = {}
    onsets: list[date] = []
    for share in shares:
        for begin, last in share.spans:
            if begin > horizon:
                continue
            stop = (horizon if last is None or last > horizon else last) + timedelta(days=1)
            change[begin] = change.get(begin, 0) + 1
            change[stop] = change.get(stop, 0) - 1
        onsets += [d for d in share.onsets if d <= horizon]
    per_day = pair.background_per_100py / 100 / DAYS_PER_YEAR
    # person-days through each day on which the number at risk changes, to read μ(t) for any t
    marks: list[date] = []
    totals: list[tuple[int, int]] = []
    at_risk, days = 0, 0
    last_mark: date | None = None
    for day in sorted(change):
        if last_mark is not None:
            days += at_risk * (day - last_mark).days
        marks.append(day)
        totals.append((days, at_risk))
        at_risk += change[day]
        last_mark = day

    def expected(t: date) -> float:
        i = bisect_right(marks, t) - 1
        if i < 0:
            return 0.0
        done, risk_then = totals[i]
        return per_day * (done + (risk_then + change[marks[i]]) * ((t - marks[i]).days + 1))

    ended_on = _first_day_reaching(expected, pair.upper_limit, pair.start, horizon)
    onsets.sort()
    looks = [Look(day.isoformat(), bisect_right(onsets, day), expected(day)) for day in sorted(set(onsets))]
    outcome = monitor(looks, cv, pair.min_events, ended_on.isoformat() if ended_on else None)
    observed, mu = len(onsets), expected(horizon)
    hit = outcome.signalled_at
    return {"name": pair.name, "drug": pair.drug, "terms": list(pair.terms), "status": outcome.status,
            "critical_value": cv, "observed": observed, "expected": mu, "llr": llr(observed, mu),
            "signalled_on": hit.day if hit else None, "observed_at_signal": hit.observed if hit else None,
            "expected_at_signal": hit.expected if hit else None, "llr_at_signal": hit.llr if hit else None,
            "ended_on": outcome.ended_on,
            "path": [{"day": look.day, "observed": look.observed, "expected": look.expected, "llr": look.llr}
                     for look in looks]}


def _first_day_reaching(expected: Any, upper: float, start: date, horizon: date) -> date | None:
    """The first clinical day on which the expected count reaches T (None if not by the horizon)."""
    if expected(horizon) < upper:
        return None
    low, high = start, horizon  # μ is non-decreasing: bisect on days
    while low < high:
        mid = low + (high - low) // 2
        if expected(mid) >= upper:
            high = mid
        else:
            low = mid + timedelta(days=1)
    return low
