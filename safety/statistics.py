"""Rate and proportion statistics for DSMB comparisons: exact Poisson intervals, the exact conditional
rate-ratio test, Fisher's exact test on person-months as the seed study used, and the
Miettinen-Nurminen score intervals for a risk difference and a relative risk.

Formulas and scipy functions: shared/research/clinical.md sections 6 and 12.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import beta, binom, chi2, fisher_exact, norm

METHOD_RATE_CI = "exact Poisson (Garwood) 95% interval"
METHOD_RATE_RATIO = (
    "exact conditional test of the rate ratio: binomial on post events given all events, "
    "p0 = post person-time share (two-sided); 95% interval from Clopper-Pearson"
)
METHOD_EAIR_RATIO = (
    "exact conditional test of the ratio of exposure-adjusted incidence rates: binomial on the group's subjects "
    "with the event given both groups', p0 = the group's share of the time at risk (two-sided); 95% interval "
    "from Clopper-Pearson"
)
METHOD_RISK_DIFFERENCE = (
    "Miettinen-Nurminen score 95% interval of the difference in proportions (variance corrected by N/(N-1))"
)
METHOD_RELATIVE_RISK = (
    "Miettinen-Nurminen score 95% interval of the ratio of proportions (variance corrected by N/(N-1))"
)
METHOD_FISHER = (
    "Fisher's exact test (two-sided) on [events, event-free person-months] before and after, "
    "person-months rounded to whole months, as the seed study used"
)


@dataclass(frozen=True)
class RateInterval:
    rate: float | None
    low: float | None
    high: float | None


def poisson_rate_ci(events: int, exposure: float, level: float = 0.95) -> RateInterval:
    """Garwood exact interval for ``events`` in ``exposure`` (clinical.md §6)."""
    if exposure <= 0:
        return RateInterval(None, None, None)
    alpha = 1 - level
    low = 0.0 if events == 0 else float(chi2.ppf(alpha / 2, 2 * events)) / 2 / exposure
    high = float(chi2.ppf(1 - alpha / 2, 2 * events + 2)) / 2 / exposure
    return RateInterval(events / exposure, low, high)


@dataclass(frozen=True)
class RateRatio:
    ratio: float | None
    low: float | None
    high: float | None
    p_value: float | None


def binomial_test(k: int, n: int, p0: float, level: float = 0.95) -> tuple[float, float, float]:
    """Two-sided exact binomial p-value (the probabilities no likelier than k's, as scipy's ``binomtest``)
    and the Clopper-Pearson interval of k/n, in three vectorised calls rather than scipy's root search
    (a table compares hundreds of cells)."""
    pmf = binom.pmf(np.arange(n + 1), n, p0)
    p_value = 1.0 if k == p0 * n else min(1.0, float(pmf[pmf <= pmf[k] * (1 + 1e-7)].sum()))
    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return p_value, low, high


def rate_ratio_exact(
    events_post: int, exposure_post: float, events_pre: int, exposure_pre: float
) -> RateRatio:
    """Post/pre rate ratio (or any rate over a reference rate) with the exact conditional test and the
    Clopper-Pearson interval (§6)."""
    n = events_post + events_pre
    if exposure_post <= 0 or exposure_pre <= 0 or n == 0:
        return RateRatio(None, None, None, None)
    p0 = exposure_post / (exposure_post + exposure_pre)
    p_value, low, high = binomial_test(events_post, n, p0)
    scale = exposure_pre / exposure_post

    def to_ratio(p: float) -> float | None:
        return None if p >= 1 else p / (1 - p) * scale

    ratio = None if events_pre == 0 else (events_post / exposure_post) / (events_pre / exposure_pre)
    return RateRatio(ratio, to_ratio(low), to_ratio(high), p_value)


def fisher_person_months(
    events_pre: int, months_pre: float, events_post: int, months_post: float
) -> float | None:
    """Fisher's exact p on [[events, event-free months] pre, post]: valid when at most one event
    falls in a person-month (§6); the seed study's P = 0.60 and 0.36."""
    pre_free = round(months_pre) - events_pre
    post_free = round(months_post) - events_post
    if min(pre_free, post_free) < 0 or round(months_pre) == 0 or round(months_post) == 0:
        return None
    return float(fisher_exact([[events_pre, pre_free], [events_post, post_free]]).pvalue)


@dataclass(frozen=True)
class Comparison:
    """A difference or ratio of two proportions with its interval."""

    estimate: float | None
    low: float | None
    high: float | None


def _z(level: float) -> float:
    return float(norm.isf((1 - level) / 2))


def _diff_score(x1: int, n1: int, x2: int, n2: int, delta: float, correction: bool = True) -> float:
    """The Miettinen-Nurminen score statistic for p1 - p2 = delta: the restricted maximum-likelihood
    proportions from the closed-form cubic (Miettinen & Nurminen 1985, Stat Med 4:213, appendix; the
    coefficients of Farrington & Manning 1990), the variance with the N/(N-1) correction (clinical.md
    §12). statsmodels 0.14 and 0.15 have x2 for n2 in the linear coefficient (its issue #10269), so their interval
    is not this one when delta is not 0."""
    n = n1 + n2
    p1, p2 = x1 / n1, x2 / n2
    if delta == 0:
        r1 = r2 = (x1 + x2) / n
    else:
        a3 = n
        a2 = (n1 + 2 * n2) * delta - n - x1 - x2
        a1 = (n2 * delta - n - 2 * x2) * delta + x1 + x2
        a0 = x2 * delta * (1 - delta)
        q = (a2 / (3 * a3)) ** 3 - a1 * a2 / (6 * a3**2) + a0 / (2 * a3)
        p = math.copysign(math.sqrt(max((a2 / (3 * a3)) ** 2 - a1 / (3 * a3), 0.0)), q)
        ratio = 1.0 if p == 0 else max(-1.0, min(1.0, q / p**3))
        r2 = 2 * p * math.cos((math.pi + math.acos(ratio)) / 3) - a2 / (3 * a3)
        r1 = r2 + delta
    r1, r2 = min(max(r1, 0.0), 1.0), min(max(r2, 0.0), 1.0)
    var = (r1 * (1 - r1) / n1 + r2 * (1 - r2) / n2) * (n / (n - 1) if correction else 1)
    diff = p1 - p2 - delta
    if var <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def _ratio_score(x1: int, n1: int, x2: int, n2: int, ratio: float, correction: bool = True) -> float:
    """The Miettinen-Nurminen score statistic for p1 / p2 = ratio (restricted MLE from the quadratic)."""
    n = n1 + n2
    p1, p2 = x1 / n1, x2 / n2
    if ratio == 1:
        r2 = (x1 + x2) / n
    else:
        a = n * ratio
        b = -(n1 * ratio + x1 + n2 + x2 * ratio)
        c = x1 + x2
        r2 = (-b - math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
    r1 = min(r2 * ratio, 1.0)
    var = (r1 * (1 - r1) / n1 + ratio**2 * r2 * (1 - r2) / n2) * (n / (n - 1) if correction else 1)
    diff = p1 - ratio * p2
    if var <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def _invert(score: Callable[[float], float], estimate: float, lo: float, hi: float, z: float) -> tuple[float, float]:
    """The interval {theta: |score(theta)| <= z} around ``estimate`` within (lo, hi); the score falls
    as theta rises."""
    def bound(edge: float, target: float) -> float:
        if (score(edge) - target) * (score(estimate) - target) > 0:
            return edge  # the score never reaches the critical value before the edge
        return float(brentq(lambda t: score(t) - target, min(edge, estimate), max(edge, estimate), xtol=1e-13,
                            rtol=1e-13, maxiter=200))
    return bound(lo, z), bound(hi, -z)


def risk_difference_mn(x1: int, n1: int, x2: int, n2: int, level: float = 0.95,
                       correction: bool = True) -> Comparison:
    """p1 - p2 with the Miettinen-Nurminen score interval (clinical.md §12); without the correction,
    Mee's score interval."""
    if n1 <= 0 or n2 <= 0:
        return Comparison(None, None, None)
    estimate = x1 / n1 - x2 / n2
    eps = 1e-12
    low, high = _invert(lambda d: _diff_score(x1, n1, x2, n2, d, correction), estimate, -1 + eps, 1 - eps, _z(level))
    return Comparison(estimate, max(low, -1.0) if low > -1 + 2 * eps else -1.0,
                      min(high, 1.0) if high < 1 - 2 * eps else 1.0)


def relative_risk_mn(x1: int, n1: int, x2: int, n2: int, level: float = 0.95,
                     correction: bool = True) -> Comparison:
    """p1 / p2 with the Miettinen-Nurminen score interval (without the correction, Koopman's); no
    estimate when both counts are 0, no upper bound (None) when the reference count is 0."""
    if n1 <= 0 or n2 <= 0 or x1 + x2 == 0:
        return Comparison(None, None, None)
    z = _z(level)
    score = lambda log_r: _ratio_score(x1, n1, x2, n2, math.exp(log_r), correction)  # noqa: E731
    lo_edge, hi_edge = -30.0, 30.0  # ratios of 1e-13 to 1e13: beyond them the score underflows
    centre = math.log(x1 / n1 / (x2 / n2)) if x1 and x2 else (lo_edge if x1 == 0 else hi_edge)
    low, high = _invert(score, centre, lo_edge, hi_edge, z)
    return Comparison(None if x2 == 0 else (x1 / n1) / (x2 / n2), 0.0 if x1 == 0 else math.exp(low),
                      None if x2 == 0 else math.exp(high))
