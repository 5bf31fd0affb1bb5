"""Partitioned projections on PostgreSQL (issue 28): the answers of every question with 1, 2 or 3 worker
processes equal the single-process answers; a worker killed with SIGKILL mid-batch loses and doubles
nothing once another has taken its segments over after the lease; status names each segment's worker;
SQLite says it projects in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from events.admission import RawMessage
from events.generator import generate
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.db import ReadDB
from projections.partitions import Partitions, segment_of
from projections.runner import Projector
from projections.signals import SignalsModel
from safety.cli import app
from safety.cli.wiring import read_models
from tests.conftest import _pg_admin

pytestmark = pytest.mark.postgres
QUESTIONS = (["incidence"], ["ae-table"], ["ae-table", "--by", "drug"], ["edish", "--all-values"], ["lab-shifts"],
             ["disproportionality"], ["signals"])


@pytest.fixture
def second_pg_url(pg_url: str) -> Iterator[str]:
    """Another fresh schema beside ``pg_url`` (the single-process twin)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with _pg_admin() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_url.split("?")[0] + f"?schema={schema}"
    finally:
        with _pg_admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def fill(url: str, patients: int = 120) -> None:
    lines = list(generate(patients, 2.0, seed=5))
    Ingestor(Ledger(Store.parse(url))).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=2000)


def answers(url: str) -> dict[str, Any]:
    """Every question's answer, but what says when it was computed (signals' raise and update times)."""
    out = {}
    for question in QUESTIONS:
        result = CliRunner().invoke(app, [*question, "--format", "json", "--store", url])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        if question == ["signals"]:
            answer = sorted(({k: v for k, v in s.items() if k not in ("raised_at", "updated_at")} for s in answer),
                            key=lambda s: s["id"])
        out[" ".join(question)] = answer
    return out


def project(url: str, *options: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "safety.cli", "project", "--store", url, *options],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_answer_with_n_workers_equals_the_single_process_answer(pg_url: str, second_pg_url: str,
                                                                      workers: int):
    for url in (pg_url, second_pg_url):
        fill(url)
    # the database's segment filter and Python's agree, and the segments together are the whole ledger
    ledger = Ledger(Store.parse(pg_url))
    topics = SignalsModel().topics
    everything = ledger.notifications(0, 10**6, topics=topics)
    shares = [ledger.segment_notifications(0, 10**6, topics, k, 6) for k in range(6)]
    assert all(segment_of(n.originator_id, 6) == k for k, share in enumerate(shares) for n in share)
    assert sorted(n.id for share in shares for n in share) == [n.id for n in everything]
    assert project(second_pg_url).returncode == 0
    # projected in one process first: the segments go on from its positions and apply nothing twice
    assert project(pg_url).returncode == 0
    first = {"schema_version": 1, "message_id": "late-0", "source": "registry-1", "patient_id": "P000002",
             "type": "adverse_event", "occurred_at": "2023-05-01", "data": {"term": "Rash", "severity": "mild",
                                                                            "serious": False}}
    for url in (pg_url, second_pg_url):
        Ingestor(Ledger(Store.parse(url))).ingest([RawMessage(json.dumps(first).encode(), {})])
    assert project(second_pg_url).returncode == 0
    done = project(pg_url, "--workers", str(workers), "--segments", "6", "--lease-seconds", "3")
    assert done.returncode == 0, done.stderr
    assert f"{workers} worker process" in done.stderr and "6 segments" in done.stderr
    assert answers(pg_url) == answers(second_pg_url)
    # every segment's position is the ledger's: nothing left behind, and the store says it is partitioned
    status = status_of(pg_url)
    assert len(status["segments"]) == 6 and all(not any(s["behind"].values()) for s in status["segments"])
    assert all(m["behind"] == 0 for m in status["read_models"])
    from projections.board import BoardData

    feed_health = BoardData(Store.parse(pg_url)).segments()  # the Feed health page's table
    assert len(feed_health) == 6 and {"segment", "worker", "signals behind"} <= set(feed_health.columns)
    # a new event after the workers stopped: a question's own catch-up projects it into its segment
    more = {"schema_version": 1, "message_id": "late-1", "source": "registry-1", "patient_id": "P000001",
            "type": "adverse_event", "occurred_at": "2023-06-01", "data": {"term": "Rash", "severity": "mild",
                                                                           "serious": False}}
    for url in (pg_url, second_pg_url):
        Ingestor(Ledger(Store.parse(url))).ingest([RawMessage(json.dumps(more).encode(), {})])
    assert answers(pg_url) == answers(second_pg_url)


def status_of(url: str) -> dict[str, Any]:
    """What ``status --format json`` says of a store (its error, if it fails)."""
    result = CliRunner().invoke(app, ["status", "--format", "json", "--store", url])
    assert result.exit_code == 0, (result.output, result.exception)
    return dict(json.loads(result.stdout))


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the read models hold, in an order of their own (not the order workers wrote it in), but the
    time each event was recorded (the two stores were filled one after the other)."""
    db = ReadDB(Store.parse(url))

    def facts(table: str) -> list[tuple[Any, ...]]:
        columns = [c for (c,) in db.query("SELECT column_name FROM information_schema.columns WHERE table_schema"
                                           " = {p} AND table_name = {p} ORDER BY ordinal_position",
                                           [db.store.schema, table]) if c != "recorded_at"]
        return db.query(f"SELECT {', '.join(columns)} FROM {{t}}{table} ORDER BY notification_id")

    return {
        "incidence": facts("incidence_facts"),
        "exposure": facts("exposure_facts"),
        "signal_facts": db.query("SELECT notification_id, message_id, type, data FROM {t}signal_facts ORDER BY 1"),
        "signals": db.query("SELECT id, kind, level, occurred_at, evidence FROM {t}signals ORDER BY id"),
        "detection": db.query("SELECT drug, term, a FROM {t}detection_totals ORDER BY drug, term"),
    }


def test_a_worker_killed_mid_batch_is_taken_over_after_its_lease_and_nothing_is_lost_or_doubled(
        pg_url: str, second_pg_url: str, tmp_path: Path):
    for url in (pg_url, second_pg_url):
        fill(url, patients=600)
    for model in read_models():
        Projector(Ledger(Store.parse(second_pg_url)), model).catch_up()
    options = ["--follow", "--workers", "1", "--segments", "8", "--lease-seconds", "3", "--interval", "0.2"]
    cmd = [sys.executable, "-m", "safety.cli", "project", "--store", pg_url, *options]
    errors = [tmp_path / "first.err", tmp_path / "second.err"]  # what a worker that failed said
    first, second = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=path.open("w"), start_new_session=True)
                     for path in errors)
    db = ReadDB(Store.parse(pg_url))
    owners: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while len(owners) < 2 and time.monotonic() < deadline:  # both workers hold segments
            time.sleep(0.2)
            if db.table_exists("projection_segments"):
                owners = {lease.owner for lease in Partitions(db).leases() if lease.owner}
        assert len(owners) == 2, (owners, *(path.read_text()[-3000:] for path in errors))
        os.killpg(first.pid, signal.SIGKILL)  # the worker process and its parent, mid-batch
        first.wait()
        ledger = Ledger(Store.parse(pg_url))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = status_of(pg_url)
            if all(m["behind"] == 0 for m in status["read_models"]):
                break
            time.sleep(0.5)
        live = {s["owner"] for s in status["segments"]}
        assert len(live) == 1 and None not in live, (live, errors[1].read_text()[-3000:])  # the survivor holds all
        assert ledger.position() > 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    assert table_rows(pg_url) == table_rows(second_pg_url)


def test_a_starting_worker_waits_for_no_writer(pg_url: str):
    """A worker starting on a store whose tables exist locks none of them: ``CREATE INDEX IF NOT EXISTS``
    takes its table's lock before it looks for the index, and a worker starting beside one writing
    deadlocked with it (the writer then waited on the starter's lock on the detection tables)."""
    import psycopg

    fill(pg_url, patients=3)
    for model in read_models():
        Projector(Ledger(Store.parse(pg_url)), model).catch_up()
    late = {"schema_version": 1, "message_id": "late-0", "source": "registry-1", "patient_id": "P000002",
            "type": "lab_result", "occurred_at": "2023-05-01",
            "data": {"analyte": "WBC", "value": 3.1, "unit": "10^9/L"}}
    Ingestor(Ledger(Store.parse(pg_url))).ingest([RawMessage(json.dumps(late).encode(), {})])
    schema = Store.parse(pg_url).schema
    done: list[str] = []

    def start() -> None:  # what a starting worker does: its views, then a first catch-up
        for model in read_models():
            Projector(Ledger(Store.parse(pg_url)), model).catch_up()
            done.append(model.name)

    with psycopg.connect(pg_url.split("?")[0]) as writer:  # a worker of another segment, mid-page
        writer.execute(f'LOCK TABLE "{schema}".signal_facts, "{schema}".detection_pairs,'
                       f' "{schema}".incidence_facts IN ROW EXCLUSIVE MODE')
        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        starter.join(timeout=30)
        started_beside_the_writer = not starter.is_alive()
        writer.rollback()
    starter.join(timeout=60)
    assert started_beside_the_writer, f"the starting worker waited on the writer's tables after {done}"
    assert done == [m.name for m in read_models()]


def test_a_new_plan_on_a_partitioned_store_derives_every_segments_shares_again(pg_url: str, second_pg_url: str):
    """Each segment notes the detection settings it derived its patients' shares under, and derives them
    again itself when they change (a global note and mark made the workers of two segments deadlock on
    each other's patients): with a plan added, the segments' signals equal a single-process rebuild's."""
    from tests.messages import message, raw
    from tests.test_live_detection import comparable
    from tests.test_surveillance import PLAN, registry

    first, late = registry()
    for url in (pg_url, second_pg_url):
        Ingestor(Ledger(Store.parse(url))).ingest([raw(m, i) for i, m in enumerate(first + late)])
    ledger = Ledger(Store.parse(pg_url))
    unplanned = Projector(ledger, SignalsModel())
    Partitions(ReadDB(ledger.store)).enable(4, ["signals"], ledger.name)
    unplanned.catch_up()
    planned = Projector(ledger, SignalsModel(surveillance_plan=PLAN))
    lab = message("P001-lab", type="lab_result", patient_id="P001", occurred_at="2024-06-01",
                  data={"analyte": "WBC", "value": 6.1, "unit": "10^9/L"})
    Ingestor(ledger).ingest([raw(lab, 0)])
    planned.catch_up()
    fresh_ledger = Ledger(Store.parse(second_pg_url))
    Ingestor(fresh_ledger).ingest([raw(lab, 0)])
    fresh = Projector(fresh_ledger, SignalsModel(surveillance_plan=PLAN))
    fresh.rebuild()
    assert [s for s in comparable(planned) if s[1] == "sequential"]
    assert comparable(planned) == comparable(fresh)
    noted = dict(planned.view.db.query("SELECT key, value FROM {t}detection_state"))
    assert {f"settings/segment {k}" for k in range(4)} <= set(noted)
    assert {noted[f"settings/segment {k}"] for k in range(4)} == {SignalsModel(surveillance_plan=PLAN).live.settings}


def test_sqlite_says_it_projects_in_one_process(sqlite_url: str):
    fill(sqlite_url, patients=5)
    result = CliRunner().invoke(app, ["project", "--workers", "2", "--store", sqlite_url])
    assert result.exit_code == 1 and "SQLite projects in one process" in result.output


def test_a_patients_events_all_fall_in_one_segment():
    from events.domain import patient_uuid

    stream = patient_uuid("registry-1", "P000001")
    assert {segment_of(stream, 8) for _ in range(3)} == {(stream.int & 0xFFFFFFFF) % 8}
    spread = {segment_of(patient_uuid("r", f"P{i}"), 8) for i in range(200)}
    assert spread == set(range(8))



def test_a_kept_answers_version_moves_when_a_segment_behind_the_others_writes(store_url: str):
    """The board keeps answers per revision of a read model. A segment behind the others writes events with
    lower ids than those already projected: the last id alone would not move, and the board would show the
    answer from before them. Each segment's writes move its own revision."""
    from eventsourcing.persistence import Tracking

    from projections.view import View, revision_in

    class Kept:
        name, topics, tables = "kept", ("events.domain:Patient.LabResult",), ()

        def create_statements(self, db: ReadDB) -> list[str]:
            return []

        def write(self, cursor: Any, db: ReadDB, events: Any) -> None:
            pass

    view = View(Store.parse(store_url), Kept())  # type: ignore[arg-type]
    view.write([(10, None)], Tracking("Ledger#1", 10), after=0)
    ahead = revision_in(view.db, "kept")
    view.write([(5, None)], Tracking("Ledger#0", 5), after=0)  # the segment behind catches up
    assert revision_in(view.db, "kept") != ahead
    view.write([], Tracking("Ledger#0", 9), after=5)  # nothing of its topics up to 9: only the position moves
    assert revision_in(view.db, "kept") == (1, 1)
