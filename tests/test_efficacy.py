"""Efficacy beside safety: JADAS scores, activity states, ACR-Pedi, the repeat-infusion rule on the
demo study, and paired Wilcoxon tests equal to scipy's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scipy.stats import wilcoxon

from events.files import read_ndjson
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.efficacy import EfficacyModel, efficacy
from projections.runner import Projector
from safety.cli import demo_feed_path
from safety.efficacy import (
    WILCOXON,
    Visit,
    acr_pedi,
    activity_state,
    crp_normalised,
    esr_normalised,
    jadas,
    paired_comparison,
    relative_change,
    repeat_infusion_decisions,
)


@pytest.mark.parametrize(("esr", "expected"), [(10, 0.0), (20, 0.0), (35, 1.5), (120, 10.0), (150, 10.0)])
def test_esr_normalisation_clips_to_0_10(esr, expected):
    assert esr_normalised(esr) == pytest.approx(expected)


def test_crp_normalisation_clips_to_0_10():
    assert (crp_normalised(5), crp_normalised(30), crp_normalised(500)) == (0.0, 2.0, 10.0)


def test_jadas_scores_with_the_joint_caps():
    # Consolaro 2009: JADAS-71 counts up to 71 joints, JADAS-10 caps active joints at 10.
    j = jadas(physician_global=6, patient_global=7.5, active_joints=14, esr=35)
    assert j.jadas71 == pytest.approx(6 + 7.5 + 14 + 1.5)
    assert j.jadas10 == pytest.approx(6 + 7.5 + 10 + 1.5)
    assert j.cjadas10 == pytest.approx(6 + 7.5 + 10)
    assert j.marker == "ESR"
    crp_only = jadas(6, 7.5, 3, crp=30)
    assert crp_only.marker == "CRP" and crp_only.jadas10 == pytest.approx(6 + 7.5 + 3 + 2)
    none = jadas(6, 7.5, 3)
    assert none.jadas71 is None and none.cjadas10 == pytest.approx(16.5)


@pytest.mark.parametrize(
    ("score", "name", "diagnosis", "cut_offs", "state"),
    [
        (1.4, "jadas10", "persistent oligoarticular", "ACR 2021", "inactive"),
        (1.5, "jadas10", "persistent oligoarticular", "ACR 2021", "low"),
        (13.0, "jadas10", "persistent oligoarticular", "ACR 2021", "moderate"),
        (13.1, "jadas10", "persistent oligoarticular", "ACR 2021", "high"),
        (2.7, "jadas10", "polyarticular RF-", "ACR 2021", "inactive"),
        (17.5, "jadas10", "polyarticular RF-", "ACR 2021", "high"),
        (2.5, "cjadas10", "systemic", "ACR 2021", "inactive"),
        (5.0, "cjadas10", "extended oligoarticular", "ACR 2021", "low"),
        (1.0, "jadas10", "polyarticular RF-", "Consolaro 2012", "inactive"),
        (3.8, "jadas10", "polyarticular RF-", "Consolaro 2012", "minimal"),
        (3.9, "jadas10", "polyarticular RF-", "Consolaro 2012", "above minimal"),
    ],
)
def test_activity_states_follow_the_named_cut_off_set(score, name, diagnosis, cut_offs, state):
    assert activity_state(score, name, diagnosis, cut_offs) == state


BASE = {"physician_global": 6, "patient_global": 7, "chaq": 1.5, "active_joints": 10, "limited_joints": 8, "esr": 40}


def scaled(factors: dict[str, float]) -> dict[str, float]:
    return {k: v * factors.get(k, 1.0) for k, v in BASE.items()}


@pytest.mark.parametrize(
    ("factors", "level", "flare"),
    [
        ({}, 0, False),
        ({"physician_global": 0.7, "chaq": 0.7, "active_joints": 0.7}, 30, False),  # exactly 30% in 3
        ({"physician_global": 0.71, "chaq": 0.7, "active_joints": 0.7}, 0, False),  # 29% is not 30%
        ({"physician_global": 0.5, "chaq": 0.5, "active_joints": 0.5, "esr": 1.31}, 50, False),  # 1 worse: allowed
        ({"physician_global": 0.5, "chaq": 0.5, "active_joints": 0.5, "esr": 1.6, "limited_joints": 1.6}, 0, False),
        ({k: 0.1 for k in BASE}, 90, False),
        ({"physician_global": 0.25, "chaq": 0.3, "active_joints": 0.2, "patient_global": 0.9}, 70, False),
        ({"physician_global": 1.5, "patient_global": 1.4, "active_joints": 1.5}, 0, True),
        ({"physician_global": 1.31, "patient_global": 1.31, "chaq": 1.5}, 0, False),  # globals +1.9/+2.2: one counts
    ],
)
def test_acr_pedi_improvement_and_worsening_combinations(factors, level, flare):
    r = acr_pedi(BASE, scaled(factors))
    assert (r.level, r.flare, r.evaluable) == (level, flare, True)


def test_zero_baselines_are_handled_explicitly():
    assert relative_change(0, 0) == 0.0
    assert relative_change(0, 3) == float("-inf")
    assert relative_change(4, 0) == 1.0
    base = {**BASE, "active_joints": 0, "limited_joints": 0}
    r = acr_pedi(base, {**base, "active_joints": 4, "physician_global": 3, "chaq": 0.7, "patient_global": 3})
    assert r.level == 50 and r.changes["active_joints"] == float("-inf")  # one worse (from zero): allowed
    assert not acr_pedi({"esr": 10}, {"esr": 5}).evaluable  # fewer than three variables


T0 = datetime(2020, 1, 6, tzinfo=UTC)


def visit(week: int, factor: float) -> Visit:
    return Visit(T0 + timedelta(weeks=week), week, scaled({k: factor for k in BASE if k != "esr"}))


def test_no_fourth_infusion_is_ever_allowed():
    visits = [visit(0, 1), visit(4, 0.4), visit(8, 0.6), visit(12, 0.4), visit(16, 0.6)]
    infusions = [T0, T0 + timedelta(weeks=1), T0 + timedelta(weeks=2)]  # three already, before week 8
    decisions, deviations = repeat_infusion_decisions(T0, visits, infusions, [])
    assert [d.allowed for d in decisions] == [False, False]
    assert "already 3 infusions" in decisions[0].reasons[0]
    _, deviations = repeat_infusion_decisions(T0, visits, [*infusions, T0 + timedelta(weeks=9)], [])
    assert any("more than 3 infusions" in d.what for d in deviations)


def test_a_repeat_infusion_without_the_rule_is_a_deviation_and_a_biologic_disqualifies():
    visits = [visit(0, 1), visit(4, 0.9), visit(8, 0.8), visit(12, 0.9), visit(16, 0.9)]
    decisions, deviations = repeat_infusion_decisions(T0, visits, [T0, T0 + timedelta(weeks=9)], [])
    assert not decisions[0].allowed
    assert deviations and "did not allow" in deviations[0].what
    good = [visit(0, 1), visit(4, 0.4), visit(8, 0.6), visit(12, 1), visit(16, 1)]
    decisions, _ = repeat_infusion_decisions(T0, good, [T0], [(T0 + timedelta(weeks=6), "etanercept (biologic)")])
    assert not decisions[0].allowed and "disqualified: etanercept" in decisions[0].reasons[-1]


@pytest.fixture
def demo_efficacy(sqlite_url: str) -> dict:
    ledger = Ledger(Store.parse(sqlite_url))
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    projector = Projector(ledger, EfficacyModel())
    projector.catch_up()
    return efficacy(projector.view.db)


def test_the_rule_reproduces_the_studys_decisions_on_the_demo(demo_efficacy):
    allowed = {(p["patient_id"], d["week"]): d["allowed"] for p in demo_efficacy["patients"]
               for d in p["repeat_infusion"]}
    assert {k for k, v in allowed.items() if v} == {("MSC-01", 8), ("MSC-03", 8), ("MSC-04", 8)}
    assert all(not p["deviations"] for p in demo_efficacy["patients"])  # every given infusion was allowed
    assert {p["patient_id"]: len(p["infusions"]) for p in demo_efficacy["patients"]} == {
        "MSC-01": 2, "MSC-02": 1, "MSC-03": 2, "MSC-04": 2, "MSC-05": 1, "MSC-06": 1}


def test_demo_medians_are_the_studys_and_wilcoxon_equals_scipy(demo_efficacy):
    week8 = demo_efficacy["comparison"]["week 8"]
    assert week8["jadas71"]["before_median"] == pytest.approx(24.5, abs=0.5)
    assert week8["jadas71"]["after_median"] == pytest.approx(11.0, abs=0.5)
    assert week8["cjadas10"]["before_median"] == pytest.approx(18.0, abs=0.5)
    assert week8["cjadas10"]["after_median"] == pytest.approx(10.6, abs=0.5)
    assert week8["vas_wellbeing"]["before_median"] == pytest.approx(75, abs=1)
    assert week8["vas_wellbeing"]["after_median"] == pytest.approx(56, abs=1)
    pairs = [(p["visits"][1]["jadas71"], next(v for v in p["visits"] if v["week"] == 8)["jadas71"])
             for p in demo_efficacy["patients"]]
    expected = wilcoxon([round(a - b, 9) for b, a in pairs], **WILCOXON).pvalue
    assert week8["jadas71"]["p_wilcoxon"] == pytest.approx(expected)
    assert week8["jadas71"]["zero_method"] == "wilcox" and "signed-rank" in week8["jadas71"]["method"]


def test_paired_comparison_drops_zero_differences_as_stated():
    pairs = [(1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 2.0), (5.0, 1.0), (6.0, 2.0)]
    result = paired_comparison(pairs)
    assert result["p_wilcoxon"] == pytest.approx(
        wilcoxon([a - b for b, a in pairs], zero_method="wilcox", correction=False, method="approx").pvalue)
    assert (result["before_median"], result["after_median"], result["n"]) == (3.5, 1.0, 6)
