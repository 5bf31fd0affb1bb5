"""The Poisson maximized sequential probability ratio test (MaxSPRT) with its exact critical value. Pure.

Kulldorff M, Davis RL, Kolczak M, Lewis E, Lieu T, Platt R. A maximized sequential probability ratio
test for drug and vaccine safety surveillance. Sequential Analysis 2011;30:58-78 (shared/research/
signal-detection.md, section 4). Under the null, events arrive as a Poisson process in expected-count
time μ. With c events by μ, LLR = c ln(c/μ) - (c - μ) when c > μ, else 0. Monitoring is continuous:
the test signals at the first event with c >= M and LLR >= CV; it ends without a signal when μ reaches
the upper limit T.

The critical value is exact, as R Sequential's ``CV.Poisson(SampleSize=T, D=0, M=M, alpha)`` computes
it, never a closed-form approximation (vigipy's gives 4.38 at T = 10, α = 0.05 against the exact
3.468): with c events the test signals while μ <= μ_c, the root of c ln(c/μ) - c + μ = CV below c, so
"no signal" is the event that the count N(min(μ_c, T)) stays below c for every c >= M. Its probability
is computed exactly by Poisson convolutions over the intervals between successive μ_c, and CV is the
value at which one minus it equals α (bisection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.stats import poisson


class NoCriticalValue(ValueError):
    """No CV gives the α: even a test that signals at the M-th event rejects less often (T is too small)."""


def llr(c: float, mu: float) -> float:
    """The Poisson log-likelihood ratio of c observed events against μ expected (0 when c <= μ)."""
    if c <= mu or c == 0:
        return 0.0
    return c * math.log(c / mu) - (c - mu)


def boundary(c: int, cv: float) -> float:
    """μ_c: the largest expected count at which c events still give LLR >= cv."""
    if cv <= 0:
        return float(c)
    return float(brentq(lambda mu: c * math.log(c / mu) - c + mu - cv, 1e-300, c, xtol=1e-14, rtol=1e-15))


def rejection_probability(cv: float, upper: float, min_events: int = 1, rate_ratio: float = 1.0) -> float:
    """P(the test signals before μ reaches ``upper``) when events arrive at ``rate_ratio`` times the
    expected rate."""
    kept = np.array([1.0])  # P(N(t) = k, no signal so far), k = 0 .. len-1
    t = 0.0
    c = max(min_events, 1)
    while True:
        edge = min(boundary(c, cv), upper)
        step = max(edge - t, 0.0) * rate_ratio
        if step > 0:
            size = c  # counts 0 .. c-1 survive this boundary
            pmf = poisson.pmf(np.arange(size), step)
            grown = np.convolve(kept, pmf)[:size]
            kept = grown
        else:
            kept = kept[:c]
        t = edge
        if edge >= upper:
            return float(1.0 - kept.sum())
        c += 1


@lru_cache(maxsize=256)
def critical_value(upper: float, min_events: int = 1, alpha: float = 0.05) -> float:
    """The exact CV of the continuous Poisson MaxSPRT for upper limit T, minimum events M and α (computed
    once per (T, M, α): a plan's pairs mostly share them)."""
    if not 1e-7 < alpha <= 0.5:
        raise ValueError(f"alpha {alpha!r}: use a value in (1e-7, 0.5]")
    if not upper > 0:
        raise ValueError(f"upper limit T {upper!r}: use a positive number of expected events")
    most = 1.0 - float(poisson.cdf(max(min_events, 1) - 1, upper))  # signalling at the M-th event, whenever
    if most < alpha:
        raise NoCriticalValue(f"T = {upper:g} with M = {min_events}: even signalling at the {min_events}th event "
                              f"rejects with probability {most:.4g} < alpha {alpha:g}; raise T or lower M")
    low, high = 0.0, 1.0
    while rejection_probability(high, upper, min_events) > alpha:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if rejection_probability(mid, upper, min_events) > alpha:
            low = mid
        else:
            high = mid
        if high - low < 1e-10:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Look:
    """The test on one clinical day with at least one event: events and expected count through that day."""

    day: str
    observed: int
    expected: float

    @property
    def llr(self) -> float:
        return llr(self.observed, self.expected)


@dataclass(frozen=True)
class Outcome:
    status: str  #: monitoring, signalled or ended
    signalled_at: Look | None = None
    ended_on: str | None = None


def monitor(looks: list[Look], cv: float, min_events: int, ended_on: str | None) -> Outcome:
    """The test over clinical time. ``looks`` in clinical order; ``ended_on`` the first day the expected
    count reaches T (None while it has not). Signalled on the first look with c >= M and LLR >= CV, unless
    T was reached before that day; ended on ``ended_on`` with no signal by then; else monitoring."""
    for look in looks:
        if ended_on is not None and look.day > ended_on:
            break
        if look.observed >= min_events and look.llr >= cv:
            return Outcome("signalled", look)
    return Outcome("ended", ended_on=ended_on) if ended_on is not None else Outcome("monitoring")
