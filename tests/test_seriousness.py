"""Seriousness as ICH E2A defines it (issue 23, finding 10): the criteria decide with the flag, a
contradiction is a data query, and every death raises an alert, from SDTM and from contract messages."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from safety.cli import app
from safety.seriousness import contradiction, criteria, fatal, serious
from tests.test_sdtm import rows_of, write_transfer

DEATHS = {"01-701-1211": "SUDDEN DEATH", "01-704-1445": "COMPLETED SUICIDE", "01-710-1083": "MYOCARDIAL INFARCTION"}


def test_the_criteria_decide_with_the_flag():
    assert serious({"serious": True}) and not serious({"serious": False})
    assert serious({"serious": False, "seriousness": ["hospitalisation"]})
    assert serious({"serious": False, "outcome": "FATAL"}) and fatal({"outcome": "FATAL"})
    assert fatal({"ctcae_grade": 5}) and criteria({"ctcae_grade": 5}) == ["death"]
    assert criteria({"seriousness": ["life-threatening", "death"]}) == ["life-threatening", "death"]
    assert contradiction({"serious": True, "seriousness": ["death"]}) is None
    assert contradiction({"serious": False}) is None
    query = contradiction({"serious": False, "seriousness": ["death"]})
    assert query is not None and "death" in query and "ICH E2A" in query


def signals_of(url: str, *args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["signals", "--format", "json", "--store", url, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_pilots_deaths_raise_alerts_and_its_contradictions_data_queries(store_url: str, tmp_path: Path):
    ae = rows_of("ae")
    folder = write_transfer(tmp_path / "t1", {"DM": rows_of("dm"), "AE": ae})
    assert CliRunner().invoke(app, ["import-sdtm", str(folder), "--source", "cdisc-pilot", "--store", store_url,
                                    "--transfer", "T1"]).exit_code == 0
    signals = signals_of(store_url, "--source", "cdisc-pilot")
    deaths = {s["patient_id"]: s for s in signals if s["kind"] == "death"}
    assert set(deaths) == set(DEATHS)
    assert all(s["level"] == "alert" for s in deaths.values())
    assert {pid: s["evidence"][0]["term"] for pid, s in deaths.items()} == DEATHS
    # each signal carries the patient's arm (issue 27): the actual arm, DM's ACTARM
    actual = {r["USUBJID"]: r["ACTARM"] for r in rows_of("dm")}
    assert all(s["arm"] == actual[s["patient_id"]] for s in signals)
    contradictions = [r for r in ae if r["AESER"] != "Y" and any(
        r.get(c) == "Y" for c in ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE"))]
    queries = [s for s in signals if s["kind"] == "data_query"]
    assert len(queries) == len(contradictions) >= 3
    assert all(s["level"] == "watch" and "ICH E2A" in s["details"]["query"] for s in queries)
    table = json.loads(CliRunner().invoke(app, ["ae-table", "--by", "arm", "--format", "json",
                                                "--store", store_url]).stdout)
    fatal_row = next(o for o in table["overview"] if o["row"] == "fatal")
    assert sum(c["subjects"] for c in fatal_row["by_group"].values()) == 3


def test_a_contract_message_with_a_death_outcome_is_serious_and_raises_an_alert(sqlite_url: str, tmp_path: Path):
    base = {"schema_version": 1, "source": "reg", "patient_id": "P1"}
    feed = [
        {**base, "message_id": "e1", "type": "enrolment", "occurred_at": "2024-01-01T00:00:00Z",
         "data": {"sex": "F", "condition": "sJIA"}},
        {**base, "message_id": "a1", "type": "adverse_event", "occurred_at": "2024-02-01T00:00:00Z",
         "data": {"term": "Sepsis", "severity": "severe", "serious": False, "outcome": "fatal"}},
        {**base, "message_id": "w1", "type": "withdrawal", "occurred_at": "2024-02-02T00:00:00Z",
         "data": {"reason": "died", "death": True}},
    ]
    path = tmp_path / "feed.ndjson"
    path.write_text("\n".join(json.dumps(m) for m in feed) + "\n")
    assert CliRunner().invoke(app, ["ingest", str(path), "--store", sqlite_url]).exit_code == 0
    kinds = sorted((s["kind"], s["level"]) for s in signals_of(sqlite_url))
    assert kinds == [("data_query", "watch"), ("death", "alert"), ("death", "alert")]
