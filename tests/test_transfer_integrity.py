"""Inbound integrity of SDTM transfers (issue 23, findings 1-6): a damaged or partial transfer is refused
whole, a mass retraction needs a word, re-sent and relabelled transfers apply as their own steps,
record identity does not depend on row order, a refused update never retracts, DM is one record per
subject, and imports into one store run one at a time with the counts the ledger stored."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from events.ledger import Ledger
from events.store import Store
from safety.cli import app
from tests.test_sdtm import PILOT, rows_of, write_dataset_json_11

SOURCE = "cdisc-pilot"


def run(url: str, *paths: Path | str, transfer: str | None = None, extra: tuple[str, ...] = ()) -> Any:
    args = ["import-sdtm", *map(str, paths), "--source", SOURCE, "--store", url, *extra]
    if transfer:
        args += ["--transfer", transfer]
    return CliRunner().invoke(app, args)


def imported(url: str, *paths: Path | str, transfer: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    result = run(url, *paths, transfer=transfer, extra=extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def folder_of(path: Path, domains: dict[str, list[dict[str, Any]]]) -> Path:
    path.mkdir()
    for name, rows in domains.items():
        write_dataset_json_11(rows, name, path / f"{name.lower()}.json", ndjson=False)
    return path


def current_adverse_events(url: str) -> dict[str, str]:
    """An independent reading of the ledger: each adverse event's message id -> its term, less those
    retracted (amendments applied by hand, not through any read model)."""
    ledger = Ledger(Store.parse(url))
    events, retracted, position = {}, set(), 0
    while batch := ledger.notifications(position, 5000):
        for n in batch:
            e = ledger.decode(n)
            if getattr(e, "type", None) == "adverse_event":
                events[e.message_id] = e.data["term"]
            elif getattr(e, "type", None) == "retraction":
                retracted.add(e.data["target_message_id"])
        position = batch[-1].id
    return {m: t for m, t in events.items() if m not in retracted}


def quarantine_reasons(url: str) -> list[dict[str, Any]]:
    ledger = Ledger(Store.parse(url))
    return ledger.tables.quarantined()  # type: ignore[no-any-return]


def stored_count(url: str) -> int:
    return Ledger(Store.parse(url)).position()


@pytest.fixture(scope="module")
def ae_rows() -> list[dict[str, Any]]:
    return rows_of("ae")


@pytest.fixture(scope="module")
def dm_rows() -> list[dict[str, Any]]:
    return rows_of("dm")


@pytest.fixture
def loaded(store_url: str, tmp_path: Path, dm_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]) -> str:
    """A store holding the pilot's DM and AE (1,191 events)."""
    imported(store_url, folder_of(tmp_path / "t1", {"DM": dm_rows, "AE": ae_rows}), transfer="T1")
    assert len(current_adverse_events(store_url)) == 1191
    return store_url


# --- 1. transfers are complete or refused ---------------------------------------------------------------


def refused_whole(url: str, result: Any, before: int, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words), result.output
    assert "Traceback" not in result.output
    assert stored_count(url) == before  # nothing stored changed


def test_a_cut_xport_file_is_refused_and_nothing_changes(loaded: str, tmp_path: Path):
    whole = gzip.decompress((PILOT / "ae.xpt.gz").read_bytes())
    for cut in (700_001, 700_000):  # mid-record, and at an 80-byte boundary inside an observation
        (tmp_path / "cut").mkdir(exist_ok=True)
        (tmp_path / "cut" / "ae.xpt").write_bytes(whole[:cut])
        before = stored_count(loaded)
        refused_whole(loaded, run(loaded, tmp_path / "cut" / "ae.xpt"), before, "ae.xpt", "send")
    assert len(current_adverse_events(loaded)) == 1191


def test_a_dataset_json_with_fewer_rows_than_its_records_is_refused(loaded: str, tmp_path: Path,
                                                                    ae_rows: list[dict[str, Any]]):
    path = tmp_path / "ae.json"
    write_dataset_json_11(ae_rows, "AE", path, ndjson=False)
    document = json.loads(path.read_text())
    document["rows"] = document["rows"][:600]  # records still says 1191
    path.write_text(json.dumps(document))
    refused_whole(loaded, run(loaded, path), stored_count(loaded), "records says 1191", "600 rows", "AE")
    objects = {**document, "records": 600, "rows": [dict(zip([c["name"] for c in document["columns"]], r,
                                                            strict=True)) for r in document["rows"]]}
    path.write_text(json.dumps(objects))
    refused_whole(loaded, run(loaded, path), stored_count(loaded), "row 1 is an object")
    assert len(current_adverse_events(loaded)) == 1191


def test_an_empty_or_partial_transfer_needs_a_word_and_dry_run_writes_nothing(loaded: str, tmp_path: Path,
                                                                              ae_rows: list[dict[str, Any]]):
    empty = tmp_path / "empty" / "ae.json.gz"
    empty.parent.mkdir()
    document = {"datasetJSONVersion": "1.1.0", "records": 0, "name": "AE",
                "columns": [{"itemOID": "IT.AE.USUBJID", "name": "USUBJID", "dataType": "string"}], "rows": []}
    empty.write_bytes(gzip.compress(json.dumps(document).encode()))
    refused_whole(loaded, run(loaded, empty), stored_count(loaded), "AE: the transfer would retract 1191 of its 1191",
                  "--allow-mass-retraction")
    part = folder_of(tmp_path / "part", {"AE": ae_rows[:100]})
    plan = imported(loaded, part, extra=("--dry-run",))
    assert plan["dry_run"] and plan["domains"]["AE"]["retracted"] == plan["retracted"] > 1000
    assert plan["domains"]["AE"]["unchanged"] == 100
    refused_whole(loaded, run(loaded, part), stored_count(loaded), "would retract")
    assert len(current_adverse_events(loaded)) == 1191
    applied = imported(loaded, part, extra=("--allow-mass-retraction",))
    assert applied["stored"]["accepted"] == applied["retracted"]
    assert len(current_adverse_events(loaded)) == 1191 - applied["retracted"]


def test_a_small_retraction_goes_through_without_a_word(loaded: str, tmp_path: Path,
                                                         dm_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]):
    summary = imported(loaded, folder_of(tmp_path / "t2", {"DM": dm_rows, "AE": ae_rows[:-5]}), transfer="T2")
    assert summary["retracted"] == 5
    assert len(current_adverse_events(loaded)) == 1186


# --- 2. re-sent and relabelled transfers ------------------------------------------------------------------


def test_retracting_restoring_and_retracting_again_leaves_the_records_retracted(
        store_url: str, tmp_path: Path, dm_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]):
    half = folder_of(tmp_path / "half", {"DM": dm_rows, "AE": ae_rows[:595]})
    whole = folder_of(tmp_path / "whole", {"DM": dm_rows, "AE": ae_rows})
    allow = ("--allow-mass-retraction",)
    sizes = []
    for folder in (half, whole, half, whole, half):  # default labels: the same files, the same label
        summary = imported(store_url, folder, extra=allow)
        sizes.append(len(current_adverse_events(store_url)))
        planned = summary["new"] + summary["corrected"] + summary["retracted"] + summary["quarantined"]
        assert summary["stored"]["accepted"] + summary["stored"]["quarantined"] == planned  # what was stored
        assert summary["stored"]["duplicates"] == 0
    assert sizes == [595, 1191, 595, 1191, 595]
    status = json.loads(CliRunner().invoke(app, ["history", "--source", SOURCE, "--patient", ae_rows[-1]["USUBJID"],
                                                 "--format", "json", "--store", store_url]).stdout)
    assert sum(r["type"] == "retraction" for r in status) >= 2


def test_a_label_reused_for_other_content_is_refused(loaded: str, tmp_path: Path, ae_rows: list[dict[str, Any]]):
    other = folder_of(tmp_path / "other", {"AE": ae_rows[:-1]})
    refused_whole(loaded, run(loaded, other, transfer="T1"), stored_count(loaded), "--transfer T1",
                  "label of its own")
    assert imported(loaded, other, transfer="T2")["retracted"] == 1


# --- 3. identity independent of order ---------------------------------------------------------------------


def test_the_same_rows_in_another_order_change_nothing(loaded: str, tmp_path: Path, ae_rows: list[dict[str, Any]]):
    shuffled = list(reversed(ae_rows))
    for seq, r in enumerate(shuffled, start=1):
        shuffled[seq - 1] = {**r, "AESEQ": seq}  # renumbered, as sponsors do
    summary = imported(loaded, folder_of(tmp_path / "t2", {"AE": shuffled}), transfer="T2")
    assert summary["domains"]["AE"] == {"records": 1191, "new": 0, "corrected": 0, "retracted": 0,
                                        "unchanged": 1191, "quarantined": 0, "kept": 0}


# --- 4. a refused update never retracts -------------------------------------------------------------------


def test_a_quarantined_update_keeps_the_earlier_version(loaded: str, tmp_path: Path, ae_rows: list[dict[str, Any]]):
    second = [dict(r) for r in ae_rows]
    victim = next(i for i, r in enumerate(second) if r["AEENDTC"])
    second[victim]["AEENDTC"] = "2014-13-40"
    before = current_adverse_events(loaded)
    summary = imported(loaded, folder_of(tmp_path / "t2", {"AE": second}), transfer="T2")
    assert summary["domains"]["AE"]["quarantined"] == 1 and summary["domains"]["AE"]["kept"] == 1
    assert summary["retracted"] == 0
    assert current_adverse_events(loaded) == before
    (q,) = [q for q in quarantine_reasons(loaded) if "AEENDTC" in q["reason"]]
    assert json.loads(q["position"])["transfer"] == "T2"


# --- 5. DM: one record per subject; no record of a subject DM does not name ------------------------------


def test_a_second_dm_record_and_records_of_unknown_subjects_are_quarantined(
        store_url: str, tmp_path: Path, dm_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]):
    subject = next(r for r in dm_rows if r["ACTARM"] == "Placebo")
    dm = [*dm_rows, {**subject, "ARM": "Xanomeline High Dose", "ACTARM": "Xanomeline High Dose"}]
    stranger = {**ae_rows[0], "USUBJID": "01-999-9999"}
    summary = imported(store_url, folder_of(tmp_path / "t1", {"DM": dm, "AE": [*ae_rows, stranger]}), transfer="T1")
    assert summary["domains"]["DM"]["quarantined"] == 1 and summary["domains"]["DM"]["new"] == len(dm_rows)
    assert summary["domains"]["AE"]["quarantined"] == 1 and summary["domains"]["AE"]["new"] == 1191
    reasons = [q["reason"] for q in quarantine_reasons(store_url)]
    assert any("a second DM record of " + subject["USUBJID"] in r for r in reasons)
    assert any("01-999-9999" in r and "not in DM" in r for r in reasons)
    ledger = Ledger(Store.parse(store_url))
    events = ledger.patient_events(SOURCE, subject["USUBJID"])
    (enrolment,) = [e for e in events if getattr(e, "type", None) == "enrolment"]
    assert enrolment.data["actual_arm"] == "Placebo"


# --- 6. one import at a time --------------------------------------------------------------------------------


def test_two_imports_at_once_run_one_after_the_other_and_print_what_was_stored(
        store_url: str, tmp_path: Path, dm_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]):
    folder = folder_of(tmp_path / "t1", {"DM": dm_rows, "AE": ae_rows})
    command = [sys.executable, "-m", "safety.cli", "import-sdtm", str(folder), "--source", SOURCE,
               "--store", store_url]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if store_url.startswith("sqlite"):
        CliRunner().invoke(app, ["ingest", "-", "--store", store_url], input="")  # the store exists first
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    summaries = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert sorted(s["stored"]["accepted"] for s in summaries) == [0, 1191 + len(dm_rows)]
    assert sorted(s["new"] for s in summaries) == [0, 1191 + len(dm_rows)]
    assert len(current_adverse_events(store_url)) == 1191


# --- 7. malformed shapes end in a clear refusal, never a traceback ----------------------------------------

META = {"datasetJSONVersion": "1.1.0", "name": "AE", "records": 1,
        "columns": [{"itemOID": "IT.AE.USUBJID", "name": "USUBJID", "dataType": "string"},
                    {"itemOID": "IT.AE.AETERM", "name": "AETERM", "dataType": "string"}]}


def _document(rows: str, **meta: Any) -> bytes:
    return (json.dumps({**META, **meta})[:-1] + f', "rows": {rows}}}').encode()


SHAPES: dict[str, tuple[str, bytes, str]] = {
    "a row of the wrong length": ("ae.json", _document('[["01-701-1015"]]'), "row 1 has 1 values for 2 columns"),
    "a column without a name": ("ae.json", _document('[["a", "b"]]', columns=[{"itemOID": "X"}, {"name": "B"}]),
                                "column 1 has no name"),
    "JSON cut short": ("ae.json", _document('[["01-701-1015", "HEADACHE"]]')[:-12], "cut short"),
    "a lone surrogate": ("ae.json", _document('[["01-701-1015", "\\ud800"]]'), "unpaired surrogate"),
    "10**400": ("ae.json", _document('[["01-701-1015", ' + "1" + "0" * 400 + "]]"), "number out of range"),
    "a list as USUBJID": ("ae.json", _document('[[["01-701-1015"], "HEADACHE"]]'), "column USUBJID: a JSON array"),
    "Latin-1 bytes": ("ae.json", _document('[["01-701-1015", "CÉPHALÉE"]]').replace(
        "CÉPHALÉE".encode(), "CÉPHALÉE".encode("latin-1")), "not UTF-8"),
    "200,000-deep nesting": ("ae.json", _document("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    "a truncated .gz": ("ae.json.gz", gzip.compress(_document('[["01-701-1015", "HEADACHE"]]'))[:-6],
                        "gzip stream is damaged or cut short"),
    "an NDJSON row cut short": ("ae.ndjson", json.dumps(META).encode() + b'\n["01-701-1015", "HEAD', "line 2"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_malformed_dataset_is_refused_with_what_is_wrong(loaded: str, tmp_path: Path, shape: str):
    name, content, words = SHAPES[shape]
    path = tmp_path / name
    path.write_bytes(content)
    refused_whole(loaded, run(loaded, path), stored_count(loaded), name, words)


def test_a_header_only_xport_file_is_refused(loaded: str, tmp_path: Path):
    whole = gzip.decompress((PILOT / "ae.xpt.gz").read_bytes())
    header = whole[: whole.index(b"HEADER RECORD*******OBS") + 80]
    path = tmp_path / "ae.xpt"
    path.write_bytes(header + whole[len(header) : len(header) + 80])  # the headers and one 80-byte record
    refused_whole(loaded, run(loaded, path), stored_count(loaded), "ae.xpt", "cut short")


def test_a_gzip_expanding_to_400_mib_is_read_as_a_stream(tmp_path: Path):
    """The finding: a 408 KB .json.gz expanding to 400 MB took 1.8 GB; it is read as a stream now."""
    path = tmp_path / "ae.json.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_document("[")[:-1])  # "rows": [ and no closing brace yet
        for _ in range(400):
            f.write(b" " * (1 << 20))
        f.write(b'["01-701-1015", "HEADACHE"]]}')
    assert path.stat().st_size < 600_000
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec
    probe = ("from events.sdtm.readers import read_dataset\n"
             f"rows = list(read_dataset({str(path)!r}).rows())\nassert len(rows) == 1, rows\n"
             "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert int(out.stdout.strip()) < 400 * 1024  # kB: well under the 400 MiB it expands to
