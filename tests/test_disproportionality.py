"""Disproportionality measures (issue 26) equal second implementations on generated tables: PRR, ROR
and its interval against vigipy (PyPI) on the same pairs; IC and IC025 against scipy's gamma quantiles;
EBGM and EB05 recomputed from the reported prior by numerical integration; the reported prior's
truncated log-likelihood at least that of vigipy's gps fit of the same table."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.optimize import brentq

from safety.disproportionality import Prior, Table, ebgm, prr, ror
from safety.rules_file import RulesError
from safety.screening import DetectionRules, screen

RULES_TEXT = (Path(__file__).resolve().parent.parent / "safety" / "detection_rules.toml").read_text()
RULES = DetectionRules.from_text(RULES_TEXT)


@st.composite
def tables(draw: Any) -> Counter[tuple[str, str]]:
    drugs = draw(st.integers(2, 5))
    terms = draw(st.integers(2, 6))
    counts = Counter({(f"drug{i}", f"term{j}"): draw(st.integers(0, 25)) for i in range(drugs) for j in range(terms)})
    counts += Counter()  # drop zero cells: a pair exists only where an event fell
    if len({d for d, _ in counts}) < 2 or len({t for _, t in counts}) < 2:
        counts[("drug0", "term0")] += 3
        counts[("drug1", "term1")] += 2
    return counts


def vigipy_answer(counts: Counter[tuple[str, str]], method: str) -> pd.DataFrame:
    import vigipy

    frame = pd.DataFrame([(d, t, k) for (d, t), k in counts.items()], columns=["name", "AE", "count"])
    container = vigipy.convert(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "ror":
            result = vigipy.ror(container, min_events=1, continuity_correction=False)
        else:
            result = vigipy.prr(container, min_events=1, continuity_correction=False)
    return result.all_signals.set_index(["Product", "Adverse Event"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(counts=tables())
def test_prr_and_ror_equal_vigipy(counts: Counter[tuple[str, str]]):
    ours = {(p["drug"], p["term"]): p for p in screen(counts, RULES)["pairs"]}
    theirs_ror = vigipy_answer(counts, "ror")
    theirs_prr = vigipy_answer(counts, "prr")
    for (drug, term), p in ours.items():
        if p["ror"] is not None:
            row = theirs_ror.loc[(drug, term)]
            assert p["ror"] == pytest.approx(row["ROR"], rel=1e-9)
            assert p["ror_ci95"] == pytest.approx([row["CI Lower"], row["CI Upper"]], rel=1e-6)
        else:
            assert 0 in (p["a"], p["b"], p["c"], p["d"]) and "undefined" in p
        if p["prr"] is not None:
            assert p["prr"] == pytest.approx(theirs_prr.loc[(drug, term)]["PRR"], rel=1e-9)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=st.integers(0, 200), expected=st.floats(0.01, 300))
def test_ic_and_ic025_from_the_gamma_quantile(a: int, expected: float):
    from safety.disproportionality import information_component

    ic, ic025 = information_component(a, expected)
    assert ic == pytest.approx(math.log2((a + 0.5) / (expected + 0.5)))
    # Norén 2013: the 2.5% quantile of Gamma(shape a + 0.5, rate E + 0.5), by scipy's other parameterisation
    assert ic025 == pytest.approx(math.log2(stats.gamma(a + 0.5, loc=0, scale=1 / (expected + 0.5)).ppf(0.025)))


def test_yates_chi2_and_the_undefined_cases():
    ratio, chi2, _ = prr(Table(10, 20, 5, 200))
    n = 235
    assert ratio == pytest.approx((10 / 30) / (5 / 205))
    assert chi2 == pytest.approx(n * (abs(10 * 200 - 20 * 5) - n / 2) ** 2 / (30 * 205 * 15 * 220))
    assert prr(Table(3, 0, 0, 10))[0] is None and "c is 0" in str(prr(Table(3, 0, 0, 10))[2])
    assert ror(Table(3, 0, 2, 10))[0] is None and "b" in str(ror(Table(3, 0, 2, 10))[2])


def independent_posterior(a: int, expected: float, prior: dict[str, float]) -> tuple[float, float]:
    """EBGM and EB05 by numerical integration of the posterior mixture in log space (not the closed forms)."""
    def nb(alpha: float, beta: float) -> float:
        return float(stats.nbinom.pmf(a, alpha, beta / (beta + expected)))

    w1 = prior["p"] * nb(prior["alpha1"], prior["beta1"])
    w2 = (1 - prior["p"]) * nb(prior["alpha2"], prior["beta2"])
    q = w1 / (w1 + w2)
    parts = [stats.gamma(prior["alpha1"] + a, scale=1 / (prior["beta1"] + expected)),
             stats.gamma(prior["alpha2"] + a, scale=1 / (prior["beta2"] + expected))]

    def mean_log(g: Any) -> float:  # E[ln X] = integral of u f(e^u) e^u du, over the body of the distribution
        low, high = math.log(g.ppf(1e-14)), math.log(g.isf(1e-14))
        return float(integrate.quad(lambda u: u * g.pdf(math.exp(u)) * math.exp(u), low, high, limit=500)[0])

    ebgm_value = math.exp(q * mean_log(parts[0]) + (1 - q) * mean_log(parts[1]))
    eb05 = brentq(lambda x: q * parts[0].cdf(x) + (1 - q) * parts[1].cdf(x) - 0.05, 1e-300,
                  max(parts[0].isf(1e-9), parts[1].isf(1e-9)))
    return ebgm_value, float(eb05)


def truncated_loglik(counts: list[int], expected: list[float], prior: dict[str, float]) -> float:
    """The likelihood written out with scipy's negative binomial, conditioned on a >= 1."""
    total = 0.0
    for a, e in zip(counts, expected, strict=True):
        parts = []
        for alpha, beta, w in ((prior["alpha1"], prior["beta1"], prior["p"]),
                               (prior["alpha2"], prior["beta2"], 1 - prior["p"])):
            dist = stats.nbinom(alpha, beta / (beta + e))
            parts.append(w * dist.pmf(a) / (1 - dist.pmf(0)))
        total += math.log(sum(parts))
    return total


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(counts=tables())
def test_ebgm_from_the_reported_prior_and_a_fit_at_least_as_good_as_vigipy(counts: Counter[tuple[str, str]]):
    import vigipy

    # a table of a few single events has no identifiable prior (the likelihood's supremum is at a
    # boundary): the comparison is made on tables a registry gives
    assume(len(counts) >= 6 and sum(counts.values()) >= 30 and max(counts.values()) >= 3)
    answer = screen(counts, RULES)
    prior = answer["prior"]
    pairs = answer["pairs"]
    for p in pairs[:6]:
        eb, eb05 = independent_posterior(p["a"], p["expected"], prior)
        assert p["ebgm"] == pytest.approx(eb, rel=1e-5)
        assert p["eb05"] == pytest.approx(eb05, rel=1e-4, abs=1e-9)
    a = [p["a"] for p in pairs]
    e = [p["expected"] for p in pairs]
    assert prior["loglik"] == pytest.approx(truncated_loglik(a, e, prior), rel=1e-4)
    frame = pd.DataFrame([(d, t, k) for (d, t), k in counts.items()], columns=["name", "AE", "count"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = vigipy.gps(vigipy.convert(frame), min_events=1).params["prior_param"]
    theirs = dict(zip(("alpha1", "beta1", "alpha2", "beta2", "p"), map(float, fitted), strict=True))
    theirs["p"] = min(max(theirs["p"], 1e-12), 1 - 1e-12)
    assert prior["loglik"] >= truncated_loglik(a, e, theirs) - 1e-6


def test_ebgm_shrinks_a_small_count_and_the_prior_is_reported():
    prior = Prior(0.2, 0.1, 2.0, 4.0, 1 / 3, 0.0)
    small, _ = ebgm(1, 0.1, prior)
    large, _ = ebgm(100, 10.0, prior)
    assert small < 1 / 0.1 and large == pytest.approx(10.0, rel=0.1)


def test_a_rules_file_with_an_unknown_method_is_refused():
    with pytest.raises(RulesError, match="method"):
        DetectionRules.from_text(RULES_TEXT.replace('method = "ic"', 'method = "x"'))
