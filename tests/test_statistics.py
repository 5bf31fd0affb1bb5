"""Rate statistics against the worked examples of shared/research/clinical.md section 6."""

from __future__ import annotations

import pytest

from safety.statistics import fisher_person_months, poisson_rate_ci, rate_ratio_exact


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
