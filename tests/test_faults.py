"""Faults that must lose nothing: a projector killed mid-batch, a full disk under the SQLite store,
PostgreSQL restarted mid-ingest, two writers at once. Bounded in time, loopback only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.synthetic import feed_lines
from events.admission import RawMessage
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.runner import Projector
from projections.signals import SignalsModel
from safety.cli import app
from tests.conftest import IN_CI
from tests.reliability import record


def rows(projector: Projector) -> dict[str, list[tuple]]:
    db = projector.view.db
    return {
        "signal_facts": db.query("SELECT notification_id, message_id, type, data FROM {t}signal_facts ORDER BY 1"),
        "signals": db.query("SELECT id, kind, level, evidence FROM {t}signals ORDER BY id"),
    }


def test_a_projector_killed_mid_batch_resumes_to_what_a_rebuild_gives(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger(Store.parse(url))
    lines = feed_lines(40_000, 400, seed=9)
    Ingestor(ledger).ingest([RawMessage(line, {}) for line in lines], batch_size=2000)
    kills = 0
    for delay in (0.8, 1.1, 1.4, 1.7):
        proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "project", "--store", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    resumed = Projector(ledger, SignalsModel())
    resumed.catch_up()
    after_kills = rows(resumed)
    fresh = Projector(Ledger(Store.parse(url)), SignalsModel())
    fresh.rebuild()
    assert kills >= 1
    assert after_kills == rows(fresh)
    record("projector killed with SIGKILL mid-batch, then resumed", kills, len(lines), 0, 0,
           "signals read model equals a rebuild from zero")


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        if IN_CI:
            pytest.fail(f"CI=true but a small tmpfs cannot be mounted: {exc}")
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_gives_a_clear_error_keeps_the_ledger_intact_and_ingest_resumes(small_disk: Path, tmp_path: Path):
    feed = tmp_path / "feed.ndjson"
    lines = feed_lines(30_000, 300, seed=4)
    feed.write_bytes(b"\n".join(lines) + b"\n")
    url = f"sqlite:///{small_disk}/ledger.db"
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(feed), "--store", url, "--batch-size", "500"])
    assert first.exit_code == 1
    assert "disk" in first.stderr.lower() and "nothing of that batch was stored" in first.stderr
    ledger = Ledger(Store.parse(url))
    stored, _ = ledger.tables.message_digest()
    assert 0 < stored < len(lines)
    with ledger.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        c.execute("PRAGMA integrity_check")
        assert c.fetchone()[0] == "ok"
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = runner.invoke(app, ["ingest", str(feed), "--store", url, "--batch-size", "500"])
    assert again.exit_code == 0
    counts = json.loads(again.stdout.strip().splitlines()[-1])
    assert counts["accepted"] == len(lines) - stored and counts["duplicates"] == stored
    expected = Ledger(Store.parse(f"sqlite:///{tmp_path}/expected.db"))
    Ingestor(expected).ingest([RawMessage(line, {}) for line in lines])
    resumed = Ledger(Store.parse(url))
    assert resumed.tables.message_digest() == expected.tables.message_digest()
    record("disk full under the SQLite store (4 MB tmpfs), then space returned", 1, len(lines), 0, 0,
           "integrity_check ok; resumed ingest's digest equals file ingest")


def _pg_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return [versions[-1], "main"] if versions else []


@pytest.mark.serial
@pytest.mark.postgres
def test_postgresql_restarted_mid_ingest_fails_cleanly_or_resumes_and_a_rerun_completes(pg_url: str, tmp_path: Path):
    cluster = _pg_cluster()
    if not cluster or not shutil.which("pg_ctlcluster"):
        if IN_CI:
            pytest.fail("CI=true but pg_ctlcluster is not available to restart PostgreSQL")
        pytest.skip("pg_ctlcluster not available")
    feed = tmp_path / "feed.ndjson"
    lines = feed_lines(60_000, 600, seed=8)
    feed.write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "ingest", str(feed), "--store", pg_url,
                             "--batch-size", "500", "--workers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.0)
    restart = threading.Thread(target=lambda: subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"], check=True, capture_output=True))
    restart.start()
    restart.join(timeout=120)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), err.decode()
    if proc.returncode == 1:
        assert b"nothing of that batch was stored" in err
    for _ in range(60):  # the server is back
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            break
        time.sleep(0.5)
    rerun = CliRunner().invoke(app, ["ingest", str(feed), "--store", pg_url])
    assert rerun.exit_code == 0, rerun.stderr
    expected = Ledger(Store.parse(f"sqlite:///{tmp_path}/expected.db"))
    Ingestor(expected).ingest([RawMessage(line, {}) for line in lines])
    reran = Ledger(Store.parse(pg_url))
    assert reran.tables.message_digest() == expected.tables.message_digest()
    record("PostgreSQL restarted (pg_ctlcluster) mid-ingest, then the ingest run again", 1, len(lines), 0, 0,
           f"first run exit {proc.returncode}; digest after the rerun equals file ingest")


def test_two_projectors_of_one_read_model_racing_for_the_same_page_agree_with_a_rebuild(store: Store):
    """The board starts its own follower beside `project --follow` or `consume --project`: when both
    write the same page, the second must carry on from where the first got, not die."""
    ledger = Ledger(store)
    Ingestor(ledger).ingest([RawMessage(line, {}) for line in feed_lines(3_000, 60, seed=4)], batch_size=500)
    slow, fast = Projector(ledger, SignalsModel(), page=500), Projector(Ledger(store), SignalsModel(), page=500)
    write = slow.view.write
    raced = []

    def write_after_the_other(events: list, tracking: object, after: int, **options: object) -> None:
        if not raced:
            raced.append(fast.catch_up())  # the other projector takes everything meanwhile
        write(events, tracking, after, **options)  # type: ignore[arg-type]

    slow.view.write = write_after_the_other  # type: ignore[method-assign]
    slow.catch_up()
    assert raced and raced[0] > 0
    fresh = Projector(Ledger(store), SignalsModel())
    fresh.rebuild()
    assert rows(slow) == rows(fresh)
    record(f"two projectors of one read model racing for the same pages ({store.kind})", 1, 3_000, 0, 0,
           "signals read model equals a rebuild from zero")


def test_two_live_projectors_racing_for_a_small_page_agree_with_a_rebuild(store: Store):
    """A live page (under ``COPY_FROM`` events) is written in PostgreSQL's pipeline mode, where the claim on
    the position is checked just before the commit: the projector that lost the race for it still carries
    on from where the other got, and neither writes an event twice."""
    ledger = Ledger(store)
    lines = feed_lines(300, 20, seed=5)
    ingest = Ingestor(ledger).ingest
    ingest([RawMessage(line, {}) for line in lines[:270]], batch_size=100)
    slow, fast = Projector(ledger, SignalsModel(), page=10), Projector(Ledger(store), SignalsModel(), page=10)
    slow.catch_up()
    write = slow.view.write
    raced: list[int] = []

    def write_after_the_other(events: list, tracking: object, after: int, **options: object) -> None:
        if events:
            raced.append(fast.catch_up())  # the other projector takes the same page meanwhile
        write(events, tracking, after, **options)  # type: ignore[arg-type]

    slow.view.write = write_after_the_other  # type: ignore[method-assign]
    for start in range(270, 300, 6):  # each delivery a live page of a few events
        ingest([RawMessage(line, {}) for line in lines[start:start + 6]], batch_size=6)
        slow.catch_up()
    assert len(raced) >= 5 and all(n > 0 for n in raced[1:])
    assert slow.view.position(ledger.name) == ledger.position()
    fresh = Projector(Ledger(store), SignalsModel())
    fresh.rebuild()
    assert rows(slow) == rows(fresh)
    record(f"two live projectors racing for the same small page ({store.kind})", 5, 30, 0, 0,
           "signals read model equals a rebuild from zero")
