"""Rate statistics for DSMB comparisons: exact Poisson intervals, the exact conditional rate-ratio
test, and Fisher's exact test on person-months as the seed study used.

Formulas and scipy functions: shared/research/clinical.md section 6.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest, chi2, fisher_exact

METHOD_RATE_CI = "exact Poisson (Garwood) 95% interval"
METHOD_RATE_RATIO = (
    "exact conditional test of the rate ratio: binomial on post events given all events, "
    "p0 = post person-time share (two-sided); 95% interval from Clopper-Pearson"
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


def rate_ratio_exact(
    events_post: int, exposure_post: float, events_pre: int, exposure_pre: float
) -> RateRatio:
    """Post/pre rate ratio with the exact conditional test and Clopper-Pearson interval (§6)."""
    n = events_post + events_pre
    if exposure_post <= 0 or exposure_pre <= 0 or n == 0:
        return RateRatio(None, None, None, None)
    p0 = exposure_post / (exposure_post + exposure_pre)
    test = binomtest(events_post, n, p0)
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    scale = exposure_pre / exposure_post

    def to_ratio(p: float) -> float | None:
        return None if p >= 1 else p / (1 - p) * scale

    ratio = None if events_pre == 0 else (events_post / exposure_post) / (events_pre / exposure_pre)
    return RateRatio(ratio, to_ratio(ci.low), to_ratio(ci.high), float(test.pvalue))


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
