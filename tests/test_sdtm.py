"""CDISC SDTM transfers: the pilot study imported whole, the same records in every format giving the
same messages, later transfers as differences (new, corrected, retracted, unchanged), partial dates
imputed by the documented rule, bad records quarantined, and an imported study working like a fed one."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest
from typer.testing import CliRunner

from events.contract import parse_message
from events.ledger import Ledger
from events.sdtm.readers import read_dataset, read_transfer
from events.sdtm.transfer import TransferState, plan_transfer
from events.store import Store
from safety.cli import app
from safety.partial_dates import PartialDateError, impute_end, impute_start

PILOT = Path(__file__).resolve().parent.parent / "events" / "sdtm" / "pilot"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def rows_of(name: str) -> list[dict[str, Any]]:
    (path,) = PILOT.glob(f"{name}.*")
    return list(read_dataset(path).rows())


def import_sdtm(url: str, *paths: Path | str, transfer: str | None = None) -> dict[str, Any]:
    args = ["import-sdtm", *map(str, paths), "--source", "cdisc-pilot", "--store", url]
    if transfer:
        args += ["--transfer", transfer]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# --- partial dates ------------------------------------------------------------------------------------


def test_a_partial_start_is_the_earliest_day_but_not_before_a_first_exposure_it_could_follow():
    assert impute_start("2014-01", date(2014, 1, 20)).value == "2014-01-20"
    assert impute_start("2014-01", date(2014, 3, 2)).value == "2014-01-01"  # exposure outside January
    assert impute_start("2014").value == "2014-01-01"
    full = impute_start("2014-01-03T10:00")
    assert (full.value, full.imputed) == ("2014-01-03T10:00", False)
    assert impute_start("2014-01").as_sent == "2014-01" and impute_start("2014-01").imputed


def test_a_partial_end_is_the_latest_day():
    assert impute_end("2016-02").value == "2016-02-29"
    assert impute_end("2014").value == "2014-12-31"


@pytest.mark.parametrize("bad", ["2014-13", "14-01-01", "2014-02-30", "yesterday"])
def test_what_is_not_a_date_is_refused(bad: str):
    with pytest.raises(PartialDateError):
        impute_start(bad)


# --- formats --------------------------------------------------------------------------------------------


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _json_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) for v in present):
        return "integer"
    if present and all(isinstance(v, (int, float)) for v in present):
        return "double"
    return "string"


def write_dataset_json_11(rows: list[dict[str, Any]], name: str, path: Path, ndjson: bool) -> None:
    columns = list(rows[0])
    meta = {"datasetJSONCreationDateTime": "2026-12-01T00:00:00", "datasetJSONVersion": "1.1.0",
            "itemGroupOID": f"IG.{name}", "records": len(rows), "name": name, "label": name,
            "columns": [{"itemOID": f"IT.{name}.{c}", "name": c, "label": c,
                         "dataType": _json_type([r[c] for r in rows])} for c in columns]}
    data = [[r[c] for c in columns] for r in rows]
    if ndjson:
        path.write_text("\n".join([json.dumps(meta), *(json.dumps(d) for d in data)]) + "\n")
    else:
        path.write_text(json.dumps({**meta, "rows": data}))


def write_dataset_json_10(rows: list[dict[str, Any]], name: str, path: Path) -> None:
    columns = list(rows[0])
    items = [{"OID": "ITEMGROUPDATASEQ", "name": "ITEMGROUPDATASEQ", "label": "Record identifier",
              "type": "integer"}] + [{"OID": f"IT.{name}.{c}", "name": c, "label": c,
                                      "type": _json_type([r[c] for r in rows])} for c in columns]
    group = {"records": len(rows), "name": name, "label": name, "items": items,
             "itemData": [[i, *(r[c] for c in columns)] for i, r in enumerate(rows, start=1)]}
    path.write_text(json.dumps({"creationDateTime": "2026-12-01T00:00:00", "datasetJSONVersion": "1.0.0",
                                "clinicalData": {"studyOID": "CDISCPILOT01", "metaDataVersionOID": "MDV",
                                                 "itemGroupData": {f"IG.{name}": group}}}))


def write_xpt(rows: list[dict[str, Any]], name: str, path: Path, version: int) -> None:
    frame = _frame(rows)
    for column in frame.columns:  # XPORT text columns cannot hold None
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: "" if v is None else v)
    pyreadstat.write_xport(frame, str(path), table_name=name, file_format_version=version)


def convert(rows_by_domain: dict[str, list[dict[str, Any]]], folder: Path, fmt: str) -> Path:
    folder.mkdir()
    for name, rows in rows_by_domain.items():
        target = folder / f"{name.lower()}{'.ndjson' if fmt == 'ndjson' else '.json' if 'json' in fmt else '.xpt'}"
        if fmt == "json-1.1":
            write_dataset_json_11(rows, name, target, ndjson=False)
        elif fmt == "ndjson":
            write_dataset_json_11(rows, name, target, ndjson=True)
        elif fmt == "json-1.0":
            write_dataset_json_10(rows, name, target)
        else:
            write_xpt(rows, name, target, 8 if fmt == "xpt-v8" else 5)
    return folder


def planned(folder: Path) -> list[tuple[str, str, Any]]:
    plan = plan_transfer(read_transfer([folder]), "cdisc-pilot", "T1", TransferState(), NOW)
    out = []
    for m in plan.messages:
        parsed = parse_message(m.raw, now=NOW)
        out.append((parsed.message_id, parsed.occurred_at.isoformat(), parsed.data))
    return sorted(out, key=lambda t: t[0])


def test_the_same_study_in_every_format_gives_the_same_messages(tmp_path: Path):
    """The pilot's DM, AE, SUPPAE, EX, DS and TS (and 3,000 lab results), converted to XPORT v5 and v8,
    Dataset-JSON 1.1 (.json and .ndjson) and Dataset-JSON 1.0: the same message ids and the same events."""
    domains = {name: rows_of(name.lower()) for name in ("DM", "AE", "SUPPAE", "EX", "DS", "TS")}
    domains["LB"] = rows_of("lb")[:3000]
    reference = planned(convert(domains, tmp_path / "xpt-v5", "xpt-v5"))
    assert len(reference) > 4000
    for fmt in ("xpt-v8", "json-1.1", "ndjson", "json-1.0"):
        assert planned(convert(domains, tmp_path / fmt, fmt)) == reference, fmt
    formats = {fmt: {d.format for d in read_transfer([tmp_path / fmt])} for fmt in ("xpt-v5", "xpt-v8", "json-1.1",
                                                                                   "ndjson", "json-1.0")}
    assert formats == {"xpt-v5": {"xpt-v5"}, "xpt-v8": {"xpt-v8"}, "json-1.1": {"dataset-json-1.1"},
                       "ndjson": {"dataset-ndjson-1.1"}, "json-1.0": {"dataset-json-1.0"}}


def test_gzip_files_read_as_the_plain_ones(tmp_path: Path):
    plain = tmp_path / "ae.xpt"
    with gzip.open(PILOT / "ae.xpt.gz") as src:
        plain.write_bytes(src.read())
    assert list(read_dataset(plain).rows()) == rows_of("ae")


# --- the pilot, whole --------------------------------------------------------------------------------------


def test_the_pilot_imports_whole_with_nothing_quarantined(store_url: str):
    summary = import_sdtm(store_url, PILOT, transfer="T1")
    assert summary["quarantined"] == 0
    domains = summary["domains"]
    assert domains["AE"] == {"records": 1191, "new": 1191, "corrected": 0, "retracted": 0, "unchanged": 0, "kept": 0,
                             "quarantined": 0}
    assert domains["LB"]["records"] == domains["LB"]["new"] == 59580
    assert domains["DM"]["new"] == 306
    ledger = Ledger(Store.parse(store_url))
    counts = Counter(r[0] for r in ledger.tables._fetch(
        ledger.tables._sql("SELECT type FROM {s}ledger_message_index")))
    assert counts["adverse_event"] == 1191 and counts["lab_result"] == 59580 and counts["enrolment"] == 306
    subject = [e for e in ledger.patient_events("cdisc-pilot", "01-701-1015") if hasattr(e, "data")]
    enrolment = next(e.data for e in subject if e.type == "enrolment")
    assert enrolment["arm"] == "Placebo" and enrolment["first_exposure_on"].startswith("2014-01-02")
    assert "Alzheimer" in enrolment["condition"]
    labs = [e.data for e in subject if e.type == "lab_result"]
    alt = next(d for d in labs if d["analyte"] == "ALT")
    assert alt["unit"] == "U/L" and "reference_high" in alt
    assert any(d.get("standardised") is False for d in labs)  # tests outside the table kept, own code
    again = import_sdtm(store_url, PILOT, transfer="T1")
    assert again["new"] == again["corrected"] == again["retracted"] == 0
    assert again["unchanged"] == summary["new"]


# --- later transfers ---------------------------------------------------------------------------------------


def write_transfer(folder: Path, domains: dict[str, list[dict[str, Any]]]) -> Path:
    folder.mkdir()
    for name, rows in domains.items():
        write_dataset_json_11(rows, name, folder / f"{name.lower()}.json", ndjson=False)
    return folder


def test_a_second_transfer_is_exactly_its_differences(sqlite_url: str, tmp_path: Path):
    dm, ae, lb = rows_of("dm"), rows_of("ae"), rows_of("lb")[:500]
    first = import_sdtm(sqlite_url, write_transfer(tmp_path / "t1", {"DM": dm, "AE": ae, "LB": lb}), transfer="T1")
    assert first["new"] == len(dm) + len(ae) + len(lb)
    between = datetime.now(UTC).isoformat()
    identity = Counter((r["USUBJID"], r["AETERM"], r["AESTDTC"], r["AESPID"]) for r in ae)
    unique = [i for i, r in enumerate(ae) if identity[(r["USUBJID"], r["AETERM"], r["AESTDTC"], r["AESPID"])] == 1]
    second = [dict(r) for r in ae]
    changed = next(second[i] for i in unique if second[i]["AESEV"] == "MILD")
    changed["AESEV"] = "MODERATE"
    removed = second.pop(unique[10])
    added = {**second[0], "AETERM": "SYNCOPE", "AEDECOD": "SYNCOPE", "AESTDTC": "2014-03-01"}
    second.insert(5, added)
    for seq, r in enumerate(second, start=1):  # the sponsor renumbered AESEQ from 1 again
        r["AESEQ"] = seq
    assert sum(a["AESEQ"] != b["AESEQ"] for a, b in zip(ae, second, strict=True)) > 1000
    summary = import_sdtm(sqlite_url, write_transfer(tmp_path / "t2", {"AE": second}), transfer="T2")
    assert summary["domains"]["AE"] == {"records": len(ae), "new": 1, "corrected": 1, "retracted": 1, "kept": 0,
                                        "unchanged": len(ae) - 2, "quarantined": 0}
    assert summary["domains"].keys() == {"AE"}  # only AE: no lab result retracted
    assert (summary["new"], summary["corrected"], summary["retracted"]) == (1, 1, 1)
    history = CliRunner().invoke(app, ["history", "--source", "cdisc-pilot", "--patient", changed["USUBJID"],
                                       "--format", "json", "--store", sqlite_url])
    rows = json.loads(history.stdout)
    assert any(r["type"] == "correction" and r["data"]["data"]["severity"] == "moderate" for r in rows)
    removed_history = json.loads(CliRunner().invoke(app, ["history", "--source", "cdisc-pilot", "--patient",
                                                          removed["USUBJID"], "--format", "json",
                                                          "--store", sqlite_url]).stdout)
    assert any(r["type"] == "retraction" and r["data"]["reason"] == "absent from transfer T2" for r in removed_history)
    assert import_sdtm(sqlite_url, tmp_path / "t2", transfer="T2")["unchanged"] == len(ae)  # again: nothing
    report = tmp_path / "dsmb.html"
    result = CliRunner().invoke(app, ["report", "--out", str(report), "--changes-since", between,
                                      "--store", sqlite_url])
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "Data transfers since" in page and "<td>T2</td>" in page and "<td>T1</td>" not in page
    status = json.loads(CliRunner().invoke(app, ["status", "--format", "json", "--store", sqlite_url]).stdout)
    assert all(m["stopped"] is None for m in status["read_models"])


def test_a_partial_onset_is_imputed_flagged_and_kept_as_sent(sqlite_url: str, tmp_path: Path):
    dm, ae = rows_of("dm"), rows_of("ae")
    partial = next(r for r in ae if r["AESTDTC"] and len(r["AESTDTC"]) == 7)
    first = next(r["RFXSTDTC"] for r in dm if r["USUBJID"] == partial["USUBJID"])
    import_sdtm(sqlite_url, write_transfer(tmp_path / "t1", {"DM": dm, "AE": ae}), transfer="T1")
    ledger = Ledger(Store.parse(sqlite_url))
    events = ledger.patient_events("cdisc-pilot", partial["USUBJID"])
    ae_events = [e for e in events if getattr(e, "type", None) == "adverse_event"
                 and e.data["origin"].get("as_sent", {}).get("occurred_at") == partial["AESTDTC"]]
    assert ae_events
    expected = impute_start(partial["AESTDTC"], date.fromisoformat(first)).value
    assert ae_events[0].occurred_at.date().isoformat() == expected


def test_bad_records_are_quarantined_with_domain_file_and_row_and_the_rest_imported(sqlite_url: str, tmp_path: Path):
    ae = rows_of("ae")[:50]
    ae[3] = {**ae[3], "USUBJID": None}
    ae[7] = {**ae[7], "AESTDTC": "2014-13-45"}
    lb = rows_of("lb")[:20]
    lb[2] = {**lb[2], "LBSTRESU": "furlongs", "LBTESTCD": "ALT"}
    summary = import_sdtm(sqlite_url, write_transfer(tmp_path / "t1", {"DM": rows_of("dm"), "AE": ae, "LB": lb}),
                          transfer="T1")
    assert summary["domains"]["AE"]["quarantined"] == 2 and summary["domains"]["AE"]["new"] == 48
    assert summary["domains"]["LB"]["quarantined"] == 1
    ledger = Ledger(Store.parse(sqlite_url))
    quarantined = ledger.tables.quarantined()
    where = {(json.loads(q["position"])["domain"], json.loads(q["position"])["row"]): q["reason"] for q in quarantined}
    assert "USUBJID: missing" in where[("AE", 4)]
    assert "AESTDTC" in where[("AE", 8)]
    assert "unknown unit furlongs for ALT" in where[("LB", 3)]
    assert all(json.loads(q["position"])["file"] in ("ae.json", "lb.json") for q in quarantined)


def test_an_imported_study_is_just_another_source(sqlite_url: str, tmp_path: Path):
    """The demo study and a pilot import in one store: Table 2 stands, the pilot's serious events raise
    signals, and the board shows its subjects and labs."""
    from projections.board import BoardData
    from safety.cli import demo_feed_path

    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(demo_feed_path()), "--store", sqlite_url]).exit_code == 0
    before = json.loads(runner.invoke(app, ["incidence", "--format", "json", "--store", sqlite_url]).stdout)
    folder = tmp_path / "pilot"
    shutil.copytree(PILOT, folder)
    (folder / "lb.json.gz").unlink()
    write_transfer(tmp_path / "labs", {"LB": rows_of("lb")[:2000]})
    shutil.copy(tmp_path / "labs" / "lb.json", folder / "lb.json")
    import_sdtm(sqlite_url, folder, transfer="T1")
    after = json.loads(runner.invoke(app, ["incidence", "--format", "json", "--store", sqlite_url]).stdout)
    assert after["categories"] == before["categories"]
    signals = json.loads(runner.invoke(app, ["signals", "--source", "cdisc-pilot", "--format", "json",
                                             "--store", sqlite_url]).stdout)
    criteria = ("AESER", "AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE")  # ICH E2A (issue 23)
    serious = [r for r in rows_of("ae") if any(r.get(c) == "Y" for c in criteria)]
    assert len(serious) == 36
    assert {s["patient_id"] for s in signals if s["kind"] in ("serious_adverse_event", "death")} == {
        r["USUBJID"] for r in serious}
    board = BoardData(Store.parse(sqlite_url))
    pilot = [p for p in board.patients() if p[0] == "cdisc-pilot"]
    assert len(pilot) == 306
    labs = board.patient_labs("cdisc-pilot", "01-701-1015")
    assert {"ALT", "AST", "BILI", "ALP"} <= set(labs["analyte"])
    transfers = board.transfers().set_index("domain")
    assert transfers.loc["AE", "new"] == 1191 and transfers.loc["LB", "new"] == 2000
    assert set(transfers["transfer"]) == {"T1"}


def test_a_nul_character_in_a_transfer_is_quarantined_on_every_store(store_url: str, tmp_path: Path):
    """The SDTM path refuses what no store can keep, as file and Kafka ingest do (issue 17)."""
    ae = rows_of("ae")[:30]
    ae[4] = {**ae[4], "AETERM": "RASH\u0000X", "AEDECOD": None}
    summary = import_sdtm(store_url, write_transfer(tmp_path / "t1", {"DM": rows_of("dm"), "AE": ae}), transfer="T1")
    assert summary["domains"]["AE"]["quarantined"] == 1 and summary["domains"]["AE"]["new"] == 29
    ledger = Ledger(Store.parse(store_url))
    (q,) = ledger.tables.quarantined()
    assert "contains the NUL character" in q["reason"] and json.loads(q["position"])["row"] == 5
