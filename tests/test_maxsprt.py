"""The Poisson MaxSPRT (issue 26): exact critical values equal R Sequential's (shared/research/
signal-detection.md, section 4) to 1e-4, and simulated surveillance has the nominal size and the power
and time to signal that R's Performance.Poisson reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safety.maxsprt import Look, NoCriticalValue, critical_value, llr, monitor

#: R Sequential 4.5.1 CV.Poisson(SampleSize=T, D=0, M=M, alpha): (alpha, T) -> CV for M = 1, 2, 3, 4
R_SEQUENTIAL = {
    (0.05, 2): (3.046977, 2.689354, 2.349679, 2.000158),
    (0.05, 3): (3.162106, 2.849327, 2.565320, None),
    (0.05, 5): (3.297183, 3.012909, 2.803955, 2.623668),
    (0.05, 7): (3.385589, 3.123337, 2.933006, None),
    (0.05, 10): (3.467952, 3.238009, 3.064248, 2.921561),
    (0.05, 15): (3.562591, 3.353265, 3.199953, None),
    (0.05, 20): (3.628123, 3.430141, 3.288216, 3.176370),
    (0.05, 50): (3.819903, 3.657142, 3.544826, 3.455521),
    (0.01, 3): (4.971793, 4.664080, 4.411731, None),
    (0.01, 7): (5.177538, 4.941735, 4.753258, None),
    (0.01, 10): (None, None, 4.878640, None),
    (0.01, 15): (5.351279, 5.160453, 5.011818, None),
}
CASES = [(a, t, m + 1, v) for (a, t), row in R_SEQUENTIAL.items() for m, v in enumerate(row) if v is not None]


@pytest.mark.parametrize(("alpha", "upper", "min_events", "expected"), CASES)
def test_the_critical_value_equals_r_sequential(alpha: float, upper: float, min_events: int, expected: float):
    assert critical_value(upper, min_events, alpha) == pytest.approx(expected, abs=1e-4)


def test_no_critical_value_when_the_upper_limit_is_too_small():
    with pytest.raises(NoCriticalValue, match="raise T or lower M"):
        critical_value(0.5, 4, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        critical_value(10, 1, 0.6)


def simulate(rate_ratio: float, runs: int, upper: float = 10, min_events: int = 3, seed: int = 7) -> list[float | None]:
    """Surveillance runs: events at ``rate_ratio`` times the expected rate in expected-count time; each
    run's signal time (in expected events) or None. The test is checked at each event, as it runs live."""
    cv = critical_value(upper, min_events, 0.05)
    rng = np.random.default_rng(seed)
    out: list[float | None] = []
    for _ in range(runs):
        mu, c, signal = 0.0, 0, None
        while True:
            mu += rng.exponential(1 / rate_ratio)
            if mu > upper:
                break
            c += 1
            if monitor([Look(f"{c:05d}", c, mu)], cv, min_events, None).status == "signalled":
                signal = mu
                break
        out.append(signal)
    return out


def test_under_the_null_the_share_that_signals_is_alpha():
    runs = simulate(1.0, 3000)
    share = sum(r is not None for r in runs) / len(runs)
    assert abs(share - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / len(runs))


def test_at_twice_the_rate_power_and_time_to_signal_agree_with_r():
    runs = simulate(2.0, 3000, seed=11)
    times = [r for r in runs if r is not None]
    power = len(times) / len(runs)
    assert abs(power - 0.7329625) <= 3 * math.sqrt(0.7329625 * (1 - 0.7329625) / len(runs))
    mean, se = float(np.mean(times)), float(np.std(times, ddof=1) / math.sqrt(len(times)))
    assert abs(mean - 4.071636) <= 3 * se  # R's expected signal time, in expected events, given a signal


def test_monitoring_ends_at_the_upper_limit_and_a_look_after_it_cannot_signal():
    assert llr(2, 4.0) == 0.0 and llr(5, 1.0) == pytest.approx(5 * math.log(5) - 4)
    looks = [Look("2024-01-05", 3, 0.3), Look("2024-03-01", 9, 1.5)]
    assert monitor(looks, 3.0, 3, None).signalled_at == looks[0]
    assert monitor(looks, 3.0, 4, None).signalled_at == looks[1]
    assert monitor(looks, 3.0, 4, "2024-02-01").status == "ended"
    assert monitor(looks, 30.0, 3, None).status == "monitoring"
