"""Disproportionality screening of drug-event pairs: PRR, ROR, the WHO's IC and the FDA's EBGM. Pure.

Formulas and sources: shared/research/signal-detection.md, sections 1-3. The unit is the drug-event
pair: an adverse event counts once for each drug whose risk window holds its onset, and N is the
number of pairs. For a pair, a = this drug and this term, b = this drug and other terms, c = other
drugs and this term, d = the rest; E = (a + b)(a + c) / N.

- PRR = [a/(a+b)] / [c/(c+d)] with Yates' χ² (Evans, Waller, Davis 2001);
- ROR = ad/(bc), 95% CI exp(ln ROR ± 1.96 √(1/a+1/b+1/c+1/d)) (van Puijenbroek 2002);
  where b, c or d is 0 the ratio is undefined: None, with the reason, and no continuity correction;
- IC = log2((a+0.5)/(E+0.5)), IC025 from Gamma(a+0.5, rate E+0.5) (Norén, Hopstadius, Bate 2013);
- EBGM and EB05 from DuMouchel's (1999) two-gamma mixture prior, fitted by maximum likelihood over the
  pairs with a >= 1, the likelihood truncated at zero, from several starting points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.special import digamma, expit, gammaln, logit
from scipy.stats import gamma

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Table:
    """One drug-event pair's 2x2 table."""

    a: int
    b: int
    c: int
    d: int

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d

    @property
    def expected(self) -> float:
        return (self.a + self.b) * (self.a + self.c) / self.n


def prr(t: Table) -> tuple[float | None, float | None, str | None]:
    """(PRR, Yates' χ², reason when undefined)."""
    if t.a + t.b == 0 or t.c == 0 or t.c + t.d == 0:
        return None, None, "c is 0: no other drug has this term, the ratio is undefined"
    ratio = (t.a / (t.a + t.b)) / (t.c / (t.c + t.d))
    margins = (t.a + t.b) * (t.c + t.d) * (t.a + t.c) * (t.b + t.d)
    chi2 = t.n * max(abs(t.a * t.d - t.b * t.c) - t.n / 2, 0.0) ** 2 / margins if margins else None
    return ratio, chi2, None


def ror(t: Table) -> tuple[float | None, tuple[float, float] | None, str | None]:
    """(ROR, its 95% CI, reason when undefined)."""
    zero = [name for name, v in (("a", t.a), ("b", t.b), ("c", t.c), ("d", t.d)) if v == 0]
    if zero:
        return None, None, f"{', '.join(zero)} is 0: the odds ratio is undefined (no continuity correction)"
    ratio = t.a * t.d / (t.b * t.c)
    se = math.sqrt(1 / t.a + 1 / t.b + 1 / t.c + 1 / t.d)
    return ratio, (math.exp(math.log(ratio) - Z95 * se), math.exp(math.log(ratio) + Z95 * se)), None


def information_component(a: int, expected: float) -> tuple[float, float]:
    """(IC, IC025): Norén 2013's shrinkage observed-to-expected ratio and its lower 2.5% bound."""
    ic = math.log2((a + 0.5) / (expected + 0.5))
    return ic, math.log2(float(gamma.ppf(0.025, a + 0.5, scale=1 / (expected + 0.5))))


@dataclass(frozen=True)
class Prior:
    """DuMouchel's prior of λ = a/E: p·Γ(α1, β1) + (1 - p)·Γ(α2, β2), and its truncated log-likelihood."""

    alpha1: float
    beta1: float
    alpha2: float
    beta2: float
    p: float
    loglik: float

    def as_dict(self) -> dict[str, float]:
        return {"alpha1": self.alpha1, "beta1": self.beta1, "alpha2": self.alpha2, "beta2": self.beta2,
                "p": self.p, "loglik": self.loglik}


def _log_nb(a: np.ndarray, e: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log NB(a; size α, prob β/(β+E)): the marginal of a count under one gamma component."""
    return (gammaln(a + alpha) - gammaln(alpha) - gammaln(a + 1) + alpha * np.log(beta / (beta + e))
            + a * np.log(e / (beta + e)))


def truncated_loglik(theta: Sequence[float], a: np.ndarray, e: np.ndarray) -> float:
    """The mixture's log-likelihood of the counts, each term conditioned on a >= 1."""
    alpha1, beta1, alpha2, beta2, p = theta
    f1 = _log_nb(a, e, alpha1, beta1) - _log_not_zero(e, alpha1, beta1)
    f2 = _log_nb(a, e, alpha2, beta2) - _log_not_zero(e, alpha2, beta2)
    return float(np.sum(np.logaddexp(np.log(p) + f1, np.log1p(-p) + f2)))


def _log_not_zero(e: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log(1 - P(a = 0)) = log(1 - (β/(β+E))^α), accurate when P(a = 0) is close to 1 (expm1)."""
    return np.log(-np.expm1(alpha * np.log(beta / (beta + e))))


#: starting points: DuMouchel's, vigipy's, and spread ones (the surface is flat, with poor local optima)
STARTS = ((0.2, 0.1, 2.0, 4.0, 1 / 3), (0.2041, 0.05816, 1.415, 1.838, 0.0969), (1.0, 1.0, 3.0, 1.0, 0.5),
          (0.5, 0.5, 5.0, 2.0, 0.8), (2.0, 2.0, 0.3, 0.1, 0.9), (0.05, 0.05, 1.0, 0.5, 0.2))


def fit_prior(a: Sequence[int], expected: Sequence[float]) -> Prior:
    """The maximum-likelihood prior over the pairs with a >= 1 (truncated at zero), best of several starts,
    optimised on log-parameters and logit(p)."""
    counts = np.asarray(a, dtype=float)
    e = np.asarray(expected, dtype=float)
    keep = counts >= 1
    counts, e = counts[keep], e[keep]
    if counts.size == 0:
        raise ValueError("no pair with a count of 1 or more: nothing to fit the prior on")

    def unpack(x: np.ndarray) -> list[float]:
        return [*np.exp(np.clip(x[:4], -18, 12)), float(np.clip(expit(x[4]), 1e-9, 1 - 1e-9))]

    def objective(x: np.ndarray) -> float:
        value = -truncated_loglik(unpack(x), counts, e)
        return value if math.isfinite(value) else 1e300

    best = None
    for start in STARTS:
        x0 = np.array([*np.log(start[:4]), logit(start[4])])
        result = minimize(objective, x0, method="Nelder-Mead",
                          options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10})
        result = minimize(objective, result.x, method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    alpha1, beta1, alpha2, beta2, p = unpack(best.x)
    return Prior(alpha1, beta1, alpha2, beta2, p, -float(best.fun))


def posterior_weight(a: int, expected: float, prior: Prior) -> float:
    """Q: the posterior weight of the first component for a count a with expectation E."""
    counts, e = np.array([float(a)]), np.array([expected])
    l1 = math.log(prior.p) + float(_log_nb(counts, e, prior.alpha1, prior.beta1)[0])
    l2 = math.log1p(-prior.p) + float(_log_nb(counts, e, prior.alpha2, prior.beta2)[0])
    return 1.0 / (1.0 + math.exp(l2 - l1)) if l1 >= l2 else math.exp(l1 - l2) / (1.0 + math.exp(l1 - l2))


def ebgm(a: int, expected: float, prior: Prior) -> tuple[float, float]:
    """(EBGM, EB05): the posterior geometric mean of λ and its 5% quantile (DuMouchel 1999)."""
    q = posterior_weight(a, expected, prior)
    s1, r1 = prior.alpha1 + a, prior.beta1 + expected
    s2, r2 = prior.alpha2 + a, prior.beta2 + expected
    mean_log = q * (digamma(s1) - math.log(r1)) + (1 - q) * (digamma(s2) - math.log(r2))

    def below(x: float) -> float:
        return q * float(gamma.cdf(x, s1, scale=1 / r1)) + (1 - q) * float(gamma.cdf(x, s2, scale=1 / r2)) - 0.05

    low, high = 1e-12, 1.0
    while below(high) < 0:
        high *= 2
    return math.exp(mean_log), float(brentq(below, low, high, xtol=1e-12))
