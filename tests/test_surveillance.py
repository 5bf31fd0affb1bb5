"""Sequential surveillance and disproportionality over the ledger (issue 26): on a generated registry
with a planted association and late arrivals, the surveillance answer after each delivery equals an
independent pandas computation; a null pair does not signal; both commands honour --as-of and
--data-cut with fingerprints; SQLite equals PostgreSQL; bad plans are refused with exit 2."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from safety.cli import app
from tests.messages import message, raw

START = date(2023, 1, 1)
#: R Sequential's CV.Poisson(SampleSize=10, D=0, M=3, alpha=0.05) (shared/research/signal-detection.md)
CV_T10_M3 = 3.064248
PLAN = """
[[pair]]
name = "tocilizumab-neutropenia"
drug = "tocilizumab"
terms = ["Neutropenia", "Neutrophil count decreased"]
background_per_100py = 4.0
start = "2023-01-01"
upper_limit = 10
min_events = 3
alpha = 0.05

[[pair]]
name = "methotrexate-rash"
drug = "methotrexate"
terms = ["Rash"]
background_per_100py = 30.0
start = "2023-01-01"
upper_limit = 10
min_events = 3
alpha = 0.05
lag_days = 0
"""


def registry(seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two deliveries of a 60-patient registry: courses of tocilizumab and methotrexate, neutropenia
    planted on tocilizumab (15 times its background of 4 per 100 patient-years), rash at its background on
    methotrexate; the second delivery holds late arrivals (each patient's second event)."""
    rng = random.Random(seed)
    first: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for i in range(60):
        pid = f"P{i:03d}"
        first.append(message(f"{pid}-e", type="enrolment", patient_id=pid, occurred_at="2022-12-01"))
        drug = "tocilizumab" if i % 2 == 0 else "methotrexate"
        begin = START + timedelta(days=rng.randint(0, 120))
        stop = begin + timedelta(days=rng.randint(200, 600))
        first.append(message(f"{pid}-t1", type="treatment", patient_id=pid, occurred_at=begin.isoformat(),
                             data={"drug": drug, "action": "start"}))
        first.append(message(f"{pid}-t2", type="treatment", patient_id=pid, occurred_at=stop.isoformat(),
                             data={"drug": drug, "action": "stop"}))
        years = (stop - begin).days / 365.25
        rate = 0.6 if drug == "tocilizumab" else 0.30
        term = "Neutropenia" if drug == "tocilizumab" else "Rash"
        onsets, at = [], rng.expovariate(rate)  # a Poisson process at the rate over the course
        while at < years:
            onsets.append(begin + timedelta(days=int(at * 365.25)))
            at += rng.expovariate(rate)
        for k, onset in enumerate(onsets):
            m = message(f"{pid}-ae{k}", type="adverse_event", patient_id=pid, occurred_at=onset.isoformat(),
                        data={"term": term, "severity": "moderate", "serious": False})
            (late if k == 1 else first).append(m)
    return first, late


def independent(messages: list[dict[str, Any]], drug: str, terms: set[str], background: float, lag: int,
                upper: float = 10, min_events: int = 3, cv: float = CV_T10_M3) -> dict[str, Any]:
    """The plan's test computed with pandas from the messages themselves."""
    frame = pd.DataFrame([{"pid": m["patient_id"], "type": m["type"], "day": date.fromisoformat(m["occurred_at"][:10]),
                           **m["data"]} for m in messages])
    horizon = frame["day"].max()
    courses = frame[(frame["type"] == "treatment") & (frame["drug"] == drug)].pivot(index="pid", columns="action",
                                                                                      values="day")
    windows = {pid: (max(r["start"], START), min(r["stop"] + timedelta(days=lag), horizon))
               for pid, r in courses.iterrows()}
    days = pd.date_range(START, horizon).date
    at_risk = pd.Series(0, index=days)
    for begin, end in windows.values():
        at_risk[(at_risk.index >= begin) & (at_risk.index <= end)] += 1
    expected = (at_risk.cumsum() * background / 100 / 365.25)
    events = frame[(frame["type"] == "adverse_event") & frame["term"].str.casefold().isin(terms)]
    events = events[[p in windows and windows[p][0] <= d <= windows[p][1] for p, d in zip(events["pid"], events["day"],
                                                                                          strict=True)]]
    reached = expected[expected >= upper]
    ended = reached.index[0] if len(reached) else None
    signalled = None
    for day in sorted(set(events["day"])):
        if ended is not None and day > ended:
            break
        c, mu = int((events["day"] <= day).sum()), float(expected[day])
        llr = c * math.log(c / mu) - (c - mu) if c > mu else 0.0
        if c >= min_events and llr >= cv:
            signalled = (day.isoformat(), c, mu)
            break
    return {"observed": len(events), "expected": float(expected[horizon]), "signalled": signalled,
            "ended_on": ended.isoformat() if ended is not None and signalled is None else None}


def surveillance(url: str, plan: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["surveillance", "--plan", str(plan), "--format", "json", "--store", url, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_after_each_delivery_the_answer_equals_an_independent_computation(store_url: str, tmp_path: Path):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    first, late = registry()
    ledger = Ledger(Store.parse(store_url))
    delivered: list[dict[str, Any]] = []
    answers = []
    for batch in (first, late):
        Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(batch)])
        delivered += batch
        answer = surveillance(store_url, plan)
        answers.append(answer)
        for pair, (drug, terms, bg, lag) in zip(answer["pairs"], (
                ("tocilizumab", {"neutropenia", "neutrophil count decreased"}, 4.0, 30),
                ("methotrexate", {"rash"}, 30.0, 0)), strict=True):
            want = independent(delivered, drug, terms, bg, lag)
            assert pair["critical_value"] == pytest.approx(CV_T10_M3, abs=1e-4)
            assert pair["observed"] == want["observed"]
            assert pair["expected"] == pytest.approx(want["expected"], rel=1e-9)
            if want["signalled"]:
                assert pair["status"] == "signalled"
                assert (pair["signalled_on"], pair["observed_at_signal"]) == want["signalled"][:2]
                assert pair["expected_at_signal"] == pytest.approx(want["signalled"][2], rel=1e-9)
            else:
                assert pair["status"] in ("monitoring", "ended") and pair["signalled_on"] is None
                assert pair["ended_on"] == want["ended_on"]
    planted, null = answers[-1]["pairs"]
    assert planted["status"] == "signalled" and null["status"] != "signalled"
    # the late arrivals occurred earlier: the signal can only come earlier, never later
    if answers[0]["pairs"][0]["signalled_on"]:
        assert planted["signalled_on"] <= answers[0]["pairs"][0]["signalled_on"]
    assert answers[0]["fingerprint"] != answers[1]["fingerprint"]
    # knowledge time: as of the first delivery, the answer is the first one
    as_of = datetime.now(UTC).isoformat()
    Ingestor(ledger).ingest([raw(message("P000-ae9", type="adverse_event", patient_id="P000",
                                         occurred_at="2023-06-01", data={"term": "Neutropenia", "severity": "mild",
                                                                         "serious": False}), 1)])
    then = surveillance(store_url, plan, "--as-of", as_of)
    assert then["pairs"] == answers[-1]["pairs"] and then["fingerprint"] != answers[-1]["fingerprint"]
    cut = surveillance(store_url, plan, "--data-cut", "2023-06-30")
    assert cut["observation_end"] == "2023-06-30"
    assert cut["pairs"][0]["expected"] < planted["expected"]


def test_sqlite_and_postgresql_give_the_same_answers(sqlite_url: str, pg_url: str, tmp_path: Path):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    first, late = registry(seed=5)
    outs = []
    for url in (sqlite_url, pg_url):
        ledger = Ledger(Store.parse(url))
        Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(first + late)])
        answer = surveillance(url, plan)
        dis = json.loads(CliRunner().invoke(app, ["disproportionality", "--format", "json", "--store", url]).stdout)
        outs.append(({k: v for k, v in answer.items() if k != "fingerprint"},
                     {k: v for k, v in dis.items() if k != "fingerprint"}))
    assert outs[0] == outs[1]


@pytest.mark.parametrize(("change", "words"), [
    (("alpha = 0.05", "alpha = 0.7"), "alpha"),
    (('drug = "tocilizumab"', 'drug = "tocilizumabb"'), "tocilizumabb"),
    (("upper_limit = 10", "upper_limit = 0.5"), "raise T or lower M"),
    (('terms = ["Rash"]', "terms = []"), "terms"),
    (("[[pair]]", "[[pairs]]"), "unknown key"),
])
def test_a_bad_plan_is_refused_with_the_field_named(sqlite_url: str, tmp_path: Path, change: tuple[str, str],
                                                     words: str):
    first, _ = registry()
    Ingestor(Ledger(Store.parse(sqlite_url))).ingest([raw(m, i) for i, m in enumerate(first)])
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace(*change))
    result = CliRunner().invoke(app, ["surveillance", "--plan", str(plan), "--store", sqlite_url])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
