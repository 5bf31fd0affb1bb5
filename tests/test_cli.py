"""The command line as a registry engineer uses it: ingest, quarantine, history, schema, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safety.cli import app, demo_feed_path
from tests.messages import message, ndjson

runner = CliRunner()


def run(*args: str, store_url: str | None = None) -> tuple[int, str]:
    full = [*args, "--store", store_url] if store_url else list(args)
    result = runner.invoke(app, full)
    return result.exit_code, result.stdout


def test_ingest_prints_the_counts_and_quarantine_lists_bad_lines(tmp_path: Path, store_url: str):
    feed = tmp_path / "feed.ndjson"
    feed.write_text(ndjson(
        message("a"),
        "this is not json",
        message("b", data={"analyte": "PLT", "value": 5, "unit": "mg/dL"}),
        message("a"),
    ))
    code, out = run("ingest", str(feed), store_url=store_url)
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"accepted": 1, "duplicates": 1, "quarantined": 2}

    code, out = run("quarantine", "--format", "json", store_url=store_url)
    items = json.loads(out)
    assert code == 0 and len(items) == 2
    assert items[0]["position"] == {"file": str(feed), "line": 2}
    assert items[0]["raw"] == "this is not json" and items[0]["source"] is None
    assert items[1]["source"] == "reg-a" and "data.unit" in items[1]["reason"]

    code, out = run("quarantine", "--format", "raw", store_url=store_url)
    assert out.splitlines()[0] == "this is not json"


def test_history_lists_the_patient_in_clinical_time_order(tmp_path: Path, sqlite_url: str):
    feed = tmp_path / "feed.ndjson"
    feed.write_text(ndjson(
        message("late", occurred_at="2024-03-05"),
        message("early", occurred_at="2024-03-01"),
        message("r", type="retraction", occurred_at="2024-03-06",
                data={"target_message_id": "late", "reason": "duplicate entry"}),
    ))
    run("ingest", str(feed), store_url=sqlite_url)
    code, out = run("history", "--source", "reg-a", "--patient", "P1", "--format", "json",
                    store_url=sqlite_url)
    rows = json.loads(out)
    assert code == 0
    assert [r["message_id"] for r in rows] == ["early", "late", "r"]
    assert [r["retracted"] for r in rows] == [False, True, False]
    assert {"message_id", "type", "occurred_at", "recorded_at", "retracted", "corrected"} <= set(rows[0])


def test_missing_file_and_bad_store_url_fail_with_a_clear_message(tmp_path: Path, sqlite_url: str):
    code, _ = run("ingest", str(tmp_path / "nope.ndjson"), store_url=sqlite_url)
    assert code == 1
    result = runner.invoke(app, ["quarantine", "--store", "sqlite:relative.db"])
    assert result.exit_code == 1
    assert "absolute path" in result.stderr


def test_store_comes_from_the_environment_when_no_option(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SAFETY_MONITOR_STORE", f"sqlite:///{tmp_path}/env.db")
    feed = tmp_path / "feed.ndjson"
    feed.write_text(ndjson(message("a")))
    assert run("ingest", str(feed))[0] == 0
    assert (tmp_path / "env.db").exists()


def test_default_store_is_a_file_under_the_working_directory(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SAFETY_MONITOR_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _ = run("demo", "--no-board")
    assert code == 0
    assert (tmp_path / "safety-monitor-data" / "ledger.db").exists()


def test_schema_is_json_schema_of_every_type():
    code, out = run("schema")
    schema = json.loads(out)
    assert code == 0 and len(schema["oneOf"]) == 12


def test_the_shipped_demo_feed_is_what_the_builder_writes():
    from scripts.build_seed_study import render

    assert demo_feed_path().read_text(encoding="utf-8") == render()


@pytest.mark.parametrize("patient", [f"MSC-0{i}" for i in range(1, 7)])
def test_every_demo_patient_has_an_enrolment_and_an_msc_infusion(patient: str):
    lines = [json.loads(line) for line in demo_feed_path().read_text().splitlines()]
    types = {m["type"] for m in lines if m["patient_id"] == patient}
    assert {"enrolment", "intervention", "treatment", "lab_result"} <= types


def test_incidence_json_has_the_documented_keys_and_report_is_self_contained(tmp_path: Path, sqlite_url: str):
    assert run("demo", "--no-board", store_url=sqlite_url)[0] == 0
    code, out = run("incidence", "--format", "json", store_url=sqlite_url)
    a = json.loads(out)
    assert code == 0
    assert {"anchor", "pre_months", "post_months", "as_of", "fingerprint", "patients", "categories",
            "per_patient", "episodes"} <= set(a)
    serious = a["categories"]["serious"]
    assert {"pre", "post", "rate_ratio", "rate_ratio_ci95_low", "rate_ratio_ci95_high",
            "p_exact_conditional", "p_fisher_person_months"} <= set(serious)
    assert {"events", "person_months", "monthly_incidence", "incidence_per_person_month", "ci95_low",
            "ci95_high"} <= set(serious["pre"])
    assert {"source", "patient_id", "anchor_date", "serious"} <= set(a["per_patient"][0])

    code, out = run("incidence", "--format", "csv", "--pre-months", "6", store_url=sqlite_url)
    assert code == 0 and out.splitlines()[0].startswith("fingerprint,source,patient_id")
    code, _ = run("incidence", "--as-of", "2030-01-01T00:00:00+01:00", "--data-cut", "2015-12-31",
                  store_url=sqlite_url)
    assert code == 0
    assert run("incidence", "--data-cut", "31/12/2015", store_url=sqlite_url)[0] == 1

    out_file = tmp_path / "dsmb.html"
    assert run("report", "--out", str(out_file), store_url=sqlite_url)[0] == 0
    page = out_file.read_text()
    assert a["fingerprint"] in page and "<svg" in page and "Fisher" in page
    assert "<script" not in page and "src=" not in page and "http" not in page.split("<body>")[1]


def test_rebuild_replays_the_read_models(sqlite_url: str):
    run("demo", "--no-board", store_url=sqlite_url)
    before = json.loads(run("incidence", "--format", "json", store_url=sqlite_url)[1])
    assert run("rebuild", store_url=sqlite_url)[0] == 0
    after = json.loads(run("incidence", "--format", "json", store_url=sqlite_url)[1])
    assert after["categories"] == before["categories"]


def test_the_generator_is_deterministic_and_its_invalid_share_is_quarantined(tmp_path: Path, sqlite_url: str):
    first = runner.invoke(app, ["generate", "--patients", "60", "--years", "1", "--seed", "5"]).stdout
    second = runner.invoke(app, ["generate", "--patients", "60", "--years", "1", "--seed", "5"]).stdout
    other = runner.invoke(app, ["generate", "--patients", "60", "--years", "1", "--seed", "6"]).stdout
    assert first == second and first != other
    feed = tmp_path / "feed.ndjson"
    feed.write_text(first)
    from events.contract import ContractViolation, parse_message

    invalid = 0
    for line in first.splitlines():
        try:
            parse_message(line.encode())
        except ContractViolation:
            invalid += 1
    code, out = run("ingest", str(feed), store_url=sqlite_url)
    counts = json.loads(out.strip().splitlines()[-1])
    assert code == 0
    assert counts["quarantined"] >= invalid > 0  # conflicts and unknown targets are quarantined too
    assert counts["accepted"] > 0.95 * len(first.splitlines())


def test_demo_replay_raises_patient_6_warning_the_moment_the_second_panel_arrives(sqlite_url: str):
    """`demo --replay` feeds the study in clinical-time order, one message at a time, so the board shows
    the evolving MAS as it happened: watch at the second panel's platelets, warning at its ESR."""
    from events.files import read_ndjson
    from events.ledger import Ledger
    from events.store import Store
    from projections.runner import Projector
    from projections.signal_queries import query_signals
    from projections.signals import SignalsModel
    from safety.cli import in_clinical_order, replay_messages

    ledger = Ledger(Store.parse(sqlite_url))
    messages = in_clinical_order(list(read_ndjson(str(demo_feed_path()))))
    times = [json.loads(m.raw)["occurred_at"] for m in messages]
    assert len(messages) == 326 and times[0] < times[-1]
    signals = Projector(ledger, SignalsModel())
    first: dict[str, str] = {}

    def look(i: int) -> None:
        signals.catch_up()
        for s in query_signals(signals.view.db, patient="MSC-06", kind="mas_trend"):
            first.setdefault(s["level"], json.loads(messages[i].raw)["message_id"])

    replay_messages(ledger, messages, 0.0, after_each=look)
    assert first == {"watch": "MSC-06-lab-40", "warning": "MSC-06-lab-41"}
    code, out = run("signals", "--format", "json", store_url=sqlite_url)
    assert code == 0 and [s["patient_id"] for s in json.loads(out) if s["kind"] == "mas_trend"] == ["MSC-06"]


def test_ingest_rebuild_and_catch_up_show_progress_bars_on_a_terminal(tmp_path: Path, sqlite_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch):
    import io

    from rich.console import Console

    import safety.cli.wiring

    screen = io.StringIO()
    monkeypatch.setattr(safety.cli.wiring, "err", Console(file=screen, force_terminal=True, width=100))
    assert run("ingest", str(demo_feed_path()), store_url=sqlite_url)[0] == 0
    assert run("rebuild", store_url=sqlite_url)[0] == 0
    shown = screen.getvalue()
    assert "ingest seed-study.ndjson" in shown and "100%" in shown
    assert "rebuild incidence" in shown and "rebuild signals" in shown
    quiet = io.StringIO()  # not a terminal (a pipe, a log file): no bar, no control codes
    monkeypatch.setattr(safety.cli.wiring, "err", Console(file=quiet, force_terminal=False))
    assert run("ingest", str(demo_feed_path()), store_url=sqlite_url)[0] == 0
    assert "\x1b[" not in quiet.getvalue() and "ingest seed-study" not in quiet.getvalue()


def test_sigterm_stops_the_board_and_its_follower_with_it(sqlite_url: str):
    """`docker stop` or a service manager sends SIGTERM: the board and the projector it started must
    not outlive the command (a stale board would keep the port and show a frozen ledger)."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from tests.processes import children_of, still_running

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "dashboard", "--port", str(port),
                             "--store", sqlite_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    children: list[int] = []
    while len(children) < 2 and time.time() < deadline:
        time.sleep(0.2)
        children = children_of(proc.pid)
    assert len(children) == 2, "the board and its follower did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert [pid for pid in children if still_running(pid, timeout=15)] == []
