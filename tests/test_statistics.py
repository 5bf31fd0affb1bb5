"""Rate statistics against the worked examples of shared/research/clinical.md section 6."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.statistics import (
    fisher_person_months,
    poisson_rate_ci,
    rate_ratio_exact,
    relative_risk_mn,
    risk_difference_mn,
)


@pytest.mark.parametrize(
    ("k", "t", "low", "high"),
    [(0, 100, 0.0, 0.0369), (3, 120, 0.00516, 0.0731), (10, 240, 0.0200, 0.0766)],
)
def test_garwood_interval(k, t, low, high):
    ci = poisson_rate_ci(k, t)
    assert ci.rate == pytest.approx(k / t)
    assert ci.low == pytest.approx(low, abs=5e-5)
    assert ci.high == pytest.approx(high, abs=5e-5)


def test_exact_conditional_rate_ratio():
    rr = rate_ratio_exact(events_post=9, exposure_post=60, events_pre=3, exposure_pre=120)
    assert rr.ratio == pytest.approx(6.0)
    assert rr.p_value == pytest.approx(0.0039, abs=5e-5)
    assert rr.low == pytest.approx(1.50, abs=5e-3)
    assert rr.high == pytest.approx(34.5, abs=0.05)


def test_rate_ratio_without_events_is_undefined_not_zero():
    rr = rate_ratio_exact(0, 10, 0, 10)
    assert rr == rr.__class__(None, None, None, None)


def test_fisher_on_person_months_matches_the_worked_example_and_the_seed_study():
    assert fisher_person_months(3, 120, 9, 60) == pytest.approx(0.0029, abs=5e-5)
    assert fisher_person_months(2, 18, 4, 72) == pytest.approx(0.60, abs=5e-3)
    assert fisher_person_months(1, 18, 1, 72) == pytest.approx(0.36, abs=5e-3)


# --- group comparisons (#13): second implementations and published values --------------------------------------


def test_miettinen_nurminen_interval_equals_r_propcis_and_the_koopman_ratio_without_correction():
    # R PropCIs 0.3: diffscoreci(7, 34, 1, 34, 0.95) = 0.0270416, 0.3452912 (the MN score interval);
    # riskscoreci(7, 34, 1, 34, 0.95) = 1.220853, 42.575718 (the score interval without N/(N-1));
    # as quoted in statsmodels' own tests (stats/tests/test_proportion.py)
    rd = risk_difference_mn(7, 34, 1, 34)
    assert rd.estimate == pytest.approx(6 / 34)
    assert (rd.low, rd.high) == (pytest.approx(0.0270416, abs=1e-6), pytest.approx(0.3452912, abs=1e-6))
    rr = relative_risk_mn(7, 34, 1, 34, correction=False)
    assert (rr.low, rr.high) == (pytest.approx(1.220853, abs=1e-6), pytest.approx(42.575718, abs=1e-6))


def _restricted_score(x1: int, n1: int, x2: int, n2: int, delta: float) -> float:
    """The MN score statistic with the restricted MLE found numerically (no closed form): a second
    implementation of what the interval inverts."""
    import math

    from scipy.optimize import minimize_scalar

    def nll(p2: float) -> float:
        p1 = p2 + delta
        out = 0.0
        for x, n, p in ((x1, n1, p1), (x2, n2, p2)):
            out -= x * math.log(max(p, 1e-300)) + (n - x) * math.log(max(1 - p, 1e-300))
        return out

    lo, hi = max(0.0, -delta), min(1.0, 1.0 - delta)
    inner = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
    r2 = min((inner, lo, hi), key=nll)  # the bounded search never lands exactly on an edge where the maximum is
    r1, n = r2 + delta, n1 + n2
    var = (r1 * (1 - r1) / n1 + r2 * (1 - r2) / n2) * n / (n - 1)
    diff = x1 / n1 - x2 / n2 - delta
    if var <= 0:  # both proportions at an edge: no spread, only the sign of the difference says anything
        return 0.0 if abs(diff) < 1e-15 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 120), st.integers(2, 120), st.data())
def test_miettinen_nurminen_interval_equals_a_second_implementation_to_1e_6(n1, n2, data):
    """The interval found again by inverting the numerically maximised score (no closed form, another
    root finder's bracket), to 1e-6."""
    from scipy.optimize import brentq

    x1, x2 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n2))
    rd = risk_difference_mn(x1, n1, x2, n2)
    z, edge, estimate = 1.959963984540054, 1 - 1e-9, x1 / n1 - x2 / n2
    score = lambda t: _restricted_score(x1, n1, x2, n2, t)  # noqa: E731
    low = -1.0 if score(-edge) < z else brentq(lambda t: score(t) - z, -edge, estimate, xtol=1e-12)
    high = 1.0 if score(edge) > -z else brentq(lambda t: score(t) + z, estimate, edge, xtol=1e-12)
    assert rd.low == pytest.approx(low, abs=1e-6) and rd.high == pytest.approx(high, abs=1e-6)
    assert rd.low <= estimate <= rd.high


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 120), st.integers(2, 120), st.data())
def test_mn_relative_risk_bounds_give_p_0_05_in_statsmodels_score_test(n1, n2, data):
    from statsmodels.stats.proportion import score_test_proportions_2indep

    x1, x2 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n2))
    rr = relative_risk_mn(x1, n1, x2, n2)
    if x1 + x2 == 0:
        assert rr.estimate is None
        return
    for bound in (rr.low, rr.high):
        if bound not in (None, 0.0):
            p = score_test_proportions_2indep(x1, n1, x2, n2, value=bound, compare="ratio", correction=True).pvalue
            assert p == pytest.approx(0.05, abs=1e-6)


def test_mn_difference_equals_statsmodels_where_its_cubic_is_exact():
    # statsmodels 0.14's constrained MLE has x2 where n2 belongs in one coefficient (its issue #10269):
    # at delta = 0 (the pooled estimate) the two agree, so the p-value of the equality test is the same
    from statsmodels.stats.proportion import score_test_proportions_2indep

    from safety.statistics import _diff_score

    for x1, n1, x2, n2 in ((7, 34, 1, 34), (30, 86, 41, 96), (0, 10, 3, 12)):
        assert _diff_score(x1, n1, x2, n2, 0.0) == pytest.approx(
            score_test_proportions_2indep(x1, n1, x2, n2, value=0, compare="diff").statistic, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.floats(0.05, 5000))
def test_garwood_interval_equals_statsmodels_exact_c(k, exposure):
    from statsmodels.stats.rates import confint_poisson

    ci = poisson_rate_ci(k, exposure)
    low, high = confint_poisson(k, exposure, method="exact-c")
    assert ci.low == pytest.approx(float(low), abs=1e-6, rel=1e-9)
    assert ci.high == pytest.approx(float(high), abs=1e-6, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.floats(1, 500), st.floats(1, 500))
def test_exact_conditional_rate_ratio_p_equals_statsmodels(k1, k2, t1, t2):
    from statsmodels.stats.rates import test_poisson_2indep

    rr = rate_ratio_exact(k1, t1, k2, t2)
    if k1 + k2 == 0:
        assert rr.p_value is None
        return
    expected = test_poisson_2indep(k1, t1, k2, t2, method="exact-cond").pvalue
    assert rr.p_value == pytest.approx(float(expected), abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.data())
def test_the_vectorised_binomial_test_equals_scipy_binomtest(n, data):
    from scipy.stats import binomtest

    from safety.statistics import binomial_test

    k = data.draw(st.integers(0, max(n, 1) if n else 0))
    p0 = data.draw(st.floats(0.001, 0.999))
    if n == 0:
        return
    expected = binomtest(k, n, p0)
    ci = expected.proportion_ci(confidence_level=0.95, method="exact")
    p_value, low, high = binomial_test(k, n, p0)
    assert p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert (low, high) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))
