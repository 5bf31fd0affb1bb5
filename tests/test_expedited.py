"""The expedited-reporting clock: which serious adverse events are SUSAR cases, when the clock starts
(the reported_at of the message that made the event a case), when it ends (7 or 15 calendar days),
what --as-of shows, submission and closure."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from safety.cli import app
from safety.expedited import load_rsi, why_not
from tests.messages import message, raw

RSI = """
[[product]]
name = "MSC infusion"
expected = ["Fever", "Infusion reaction"]
"""


def ae(mid: str, patient: str, term: str, relatedness: str, reported_at: str, **data: Any) -> dict[str, Any]:
    return message(mid, type="adverse_event", patient_id=patient, occurred_at="2024-01-10", reported_at=reported_at,
                   data={"term": term, "severity": "severe", "serious": True, "relatedness": relatedness, **data})


def msc(patient: str) -> dict[str, Any]:
    return message(f"{patient}-msc", type="intervention", patient_id=patient, occurred_at="2024-01-01",
                   data={"name": "MSC infusion"})


FEED = [
    msc("A"), ae("A-ae", "A", "Pneumonia", "probable", "2024-01-11T09:00:00Z", seriousness=["death"],
                 outcome="fatal"),
    msc("B"), ae("B-ae", "B", "fever", "definite", "2024-01-12T09:00:00Z"),  # expected (case does not matter)
    msc("C"), ae("C-ae", "C", "Sepsis", "not related", "2024-01-12T09:00:00Z"),
    msc("D"), ae("D-ae", "D", "Hepatitis", "unlikely", "2024-02-01T09:00:00Z"),
]
CORRECTION = message("D-ae-c1", type="correction", patient_id="D", occurred_at="2024-01-10",
                     reported_at="2024-02-05T10:00:00Z",
                     data={"target_message_id": "D-ae", "reason": "causality reassessed", "data": {
                         "term": "Hepatitis", "severity": "severe", "serious": True, "relatedness": "possible"}})


def cases(url: str, rsi: Path, *extra: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["expedited", "--format", "json", "--rsi", str(rsi), "--store", url, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["cases"]  # type: ignore[no-any-return]


def test_cases_and_due_dates_with_a_correction_that_makes_an_event_related(store_url: str, tmp_path: Path):
    rsi = tmp_path / "rsi.toml"
    rsi.write_text(RSI)
    ledger = Ledger(Store.parse(store_url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(FEED)])
    time.sleep(0.01)
    before_correction = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    Ingestor(ledger).ingest([raw(CORRECTION)])
    found = {c["patient_id"]: c for c in cases(store_url, rsi)}
    assert set(found) == {"A", "D"}  # B expected, C not related
    a, d = found["A"], found["D"]
    assert a["fatal_or_life_threatening"] and a["clock_days"] == 7
    assert a["aware_at"].startswith("2024-01-11T09:00") and a["due_at"].startswith("2024-01-18T09:00")
    assert not d["fatal_or_life_threatening"] and d["clock_days"] == 15
    assert d["aware_at"].startswith("2024-02-05T10:00") and d["due_at"].startswith("2024-02-20T10:00")
    assert a["status"] == d["status"] == "overdue"  # read now, in 2026
    assert set(a) >= {"case", "source", "patient_id", "term", "fatal_or_life_threatening", "aware_at", "due_at",
                      "clock_days", "status"}
    earlier = {c["patient_id"] for c in cases(store_url, rsi, "--as-of", before_correction)}
    assert earlier == {"A"}  # before the correction D was not related
    runner = CliRunner()
    submit = runner.invoke(app, ["expedited", "submit", a["case"], "--by", "dr-smith", "--on", "2024-01-15",
                                 "--authority", "EMA", "--rsi", str(rsi), "--store", store_url])
    assert submit.exit_code == 0, submit.output
    assert {c["patient_id"]: c["status"] for c in cases(store_url, rsi)} == {"A": "submitted", "D": "overdue"}
    audit = runner.invoke(app, ["status", "--store", store_url])
    assert audit.exit_code == 0
    Ingestor(ledger).ingest([raw(message("D-ae-r", type="retraction", patient_id="D", occurred_at="2024-03-01",
                                         data={"target_message_id": "D-ae", "reason": "entered in error"}))])
    closed = {c["patient_id"]: c for c in cases(store_url, rsi)}["D"]
    assert closed["status"] == "closed" and "entered in error" in closed["closed_reason"]


def test_submission_needs_a_known_case_and_a_date(sqlite_url: str, tmp_path: Path):
    rsi = tmp_path / "rsi.toml"
    rsi.write_text(RSI)
    ledger = Ledger(Store.parse(sqlite_url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(FEED[:2])])
    runner = CliRunner()
    unknown = runner.invoke(app, ["expedited", "submit", "reg-a/nope", "--by", "x", "--on", "2024-01-15",
                                  "--authority", "EMA", "--rsi", str(rsi), "--store", sqlite_url])
    assert unknown.exit_code == 1 and "no case reg-a/nope" in unknown.output
    bad_date = runner.invoke(app, ["expedited", "submit", "reg-a/A-ae", "--by", "x", "--on", "15/01/2024",
                                   "--authority", "EMA", "--rsi", str(rsi), "--store", sqlite_url])
    assert bad_date.exit_code == 1 and "--on" in bad_date.output and "YYYY-MM-DD" in bad_date.output


def test_the_rule_without_reference_safety_information_is_conservative():
    rsi = load_rsi(RSI)
    event = {"serious": True, "relatedness": "possible", "term": "Fever"}
    assert why_not(event, ["msc infusion"], rsi) is not None  # expected for the product received
    assert why_not(event, [], rsi) is None  # no RSI product received: expectedness cannot be shown
    assert why_not({**event, "meddra_pt": "Pyrexia"}, ["msc infusion"], rsi) is None  # the coded term counts
    assert why_not({**event, "serious": False}, [], rsi) == "not serious"


def test_the_board_lists_cases_by_due_date_and_a_physician_records_a_submission(sqlite_url: str, tmp_path: Path,
                                                                                monkeypatch: Any):
    from streamlit.testing.v1 import AppTest

    rsi = tmp_path / "rsi.toml"
    rsi.write_text(RSI)
    ledger = Ledger(Store.parse(sqlite_url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate([*FEED, CORRECTION])])
    monkeypatch.setenv("SAFETY_MONITOR_STORE", sqlite_url)
    monkeypatch.setenv("SAFETY_MONITOR_RSI", str(rsi))
    CliRunner().invoke(app, ["project", "--store", sqlite_url])
    script = ("import streamlit as st\nfrom dashboard import pages\nfrom dashboard.auth import User\n"
              "from dashboard.state import board_data\nuser = User('physician', '{role}')\n"
              "st.session_state['user'] = user\npages.expedited_page(board_data(), user)\n")
    dsmb = AppTest.from_string(script.format(role="dsmb"), default_timeout=60)
    dsmb.run()
    assert not dsmb.exception and not [b for b in dsmb.button if b.label == "Record"]
    at = AppTest.from_string(script.format(role="safety_physician"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    lines = [m.value for m in at.markdown]
    assert len([x for x in lines if "OVERDUE" in x]) == 2
    assert "Pneumonia" in lines[0] and "7-day clock" in lines[0]  # the earliest due first
    at.text_input(key="authority-reg-a/A-ae").set_value("EMA")
    at.button(key="submit-reg-a/A-ae").click().run()
    assert not at.exception and any("submitted to EMA by physician" in s.value for s in at.success)
    statuses = {c["patient_id"]: c["status"] for c in cases(sqlite_url, rsi)}
    assert statuses == {"A": "submitted_late", "D": "overdue"}  # submitted today, years after its due date


def test_impossible_submissions_are_refused_and_every_submission_is_listed(store_url: str, tmp_path: Path):
    """Issue 23, finding 9: no date in the future or before awareness; a second submission (another
    authority) is listed beside the first; a report after its due date is submitted_late by so many days."""
    rsi = tmp_path / "rsi.toml"
    rsi.write_text(RSI)
    ledger = Ledger(Store.parse(store_url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(FEED[:2])])  # aware 2024-01-11, 7-day clock
    runner = CliRunner()

    def submit(on: str, authority: str) -> Any:
        return runner.invoke(app, ["expedited", "submit", "reg-a/A-ae", "--by", "dr-who", "--on", on,
                                   "--authority", authority, "--rsi", str(rsi), "--store", store_url])

    future = submit("2999-01-01", "EMA")
    assert future.exit_code == 1 and "--on 2999-01-01" in future.output and "future" in future.output
    early = submit("2024-01-10", "EMA")
    assert early.exit_code == 1 and "before the case became known on 2024-01-11" in early.output
    assert cases(store_url, rsi)[0]["status"] == "overdue"  # nothing recorded
    first = submit("2024-01-15", "EMA")
    assert first.exit_code == 0 and json.loads(first.stdout)["status"] == "submitted"
    second = submit("2024-01-25", "MHRA")
    assert json.loads(second.stdout) == {"case": "reg-a/A-ae", "status": "submitted_late", "by": "dr-who",
                                         "on": "2024-01-25", "authority": "MHRA", "days_late": 7}
    (case,) = cases(store_url, rsi)
    assert case["status"] == "submitted" and case["days_late"] is None  # the first report was in time
    assert case["submissions"] == [{"on": "2024-01-15", "authority": "EMA", "by": "dr-who"},
                                   {"on": "2024-01-25", "authority": "MHRA", "by": "dr-who"}]
    Ingestor(ledger).ingest([raw(m, i + 10) for i, m in enumerate(FEED[2:4])])  # B: expected, no case
    late = {**FEED[1], "message_id": "A-ae2", "patient_id": "A"}
    Ingestor(ledger).ingest([raw(message("A2-msc", type="intervention", patient_id="A", occurred_at="2024-01-01",
                                         data={"name": "MSC infusion"}), 20), raw(late, 21)])
    assert runner.invoke(app, ["expedited", "submit", "reg-a/A-ae2", "--by", "dr-who", "--on", "2024-02-01",
                               "--authority", "EMA", "--rsi", str(rsi), "--store", store_url]).exit_code == 0
    late_case = next(c for c in cases(store_url, rsi) if c["case"] == "reg-a/A-ae2")
    assert late_case["status"] == "submitted_late" and late_case["days_late"] == 14


def test_reading_the_clock_leaves_the_cases_as_they_were():
    """The board keeps the cases between visits and reads their clock at each: reading it must not turn
    the kept cases overdue (an earlier ``as_of`` would then see them overdue too)."""
    from datetime import timedelta

    from safety.expedited import Case, with_clock

    due = datetime(2024, 1, 18, 9, tzinfo=UTC)
    case = Case("c1", "reg-a", "P1", "Pneumonia", True, due - timedelta(days=7), due)
    [late] = with_clock([case], due + timedelta(hours=1))
    [in_time] = with_clock([case], due - timedelta(hours=1))
    assert late.status == "overdue" and in_time.status == "open" and case.status == "open"


def test_the_cases_are_read_with_the_collector_paused_and_it_runs_again_after(store_url: str, monkeypatch: Any):
    """Making every fact a message builds tens of thousands of objects and no cycles: the collector's passes
    cost a third of the board's time for it (BENCHMARKS.md), so they wait until it is done."""
    import gc

    from projections import expedited
    from projections.runner import Projector
    from projections.view import View

    ledger = Ledger(Store.parse(store_url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(FEED)])
    Projector(ledger, expedited.ExpeditedModel()).catch_up()
    seen: list[bool] = []
    real = expedited.patient_cases
    monkeypatch.setattr(expedited, "patient_cases", lambda *a, **k: (seen.append(gc.isenabled()), real(*a, **k))[1])
    found = expedited.known_cases(View(ledger.store, expedited.ExpeditedModel()).db, {})
    assert {c.patient_id for c in found} >= {"A"}
    assert seen and not any(seen) and gc.isenabled()
