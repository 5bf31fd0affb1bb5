"""File ingest throughput: our batched ingest against the naive eventsourcing way and the raw ceiling.

Run: ``.venv/bin/python -m benchmarks.ingest [--events N] [--runs R] [--no-postgres]``; writes the
"File ingest" section of BENCHMARKS.md. All figures of one run come from the same process on the
same synthetic feed, so the ratios hold even on a noisy shared machine.

- command: ``safety-monitor ingest FILE`` as a user runs it (process start included), with its peak
  resident memory;
- ours: ``Ingestor`` (parse + validate + idempotency + batches of 5000 per transaction), with the
  contract's fast path and, in the same run, with the reference path alone
  (``SAFETY_MONITOR_CONTRACT=reference``);
- naive: the same validation, then one ``Application.save`` per event (one transaction each),
  the way the eventsourcing documentation writes a command handler (aggregates kept in memory);
- raw ceiling: ``executemany`` of the same stored-event rows in one transaction, no validation.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from benchmarks import report
from benchmarks.procs import high_water_mb, process_tree
from benchmarks.report import write_section
from benchmarks.stores import PG, drop, fresh_store
from benchmarks.synthetic import feed_lines
from events import contract
from events.admission import RawMessage, prepare
from events.contract import parse_message
from events.domain import EVENT_CLASS, Patient
from events.encoding import StateEncoder
from events.ingest import Ingestor
from events.ledger import Ledger
from events.recorders import hex_id
from events.store import Store
from safety.cli.wiring import FILE_BATCH_SIZE

#: where issue 15 started from, kept in view as later runs replace the section
BEFORE_ISSUE_15 = ("\nBefore issue 15 (2026-11-26 15:56 UTC, reference loop 14.1 ms): sqlite 20,944/s in-process, "
                   "9.5× naive; postgresql 13,888/s in-process.\n")


def ours(store: Store, lines: list[bytes]) -> float:
    """As ``safety-monitor ingest`` runs on a large file: one parser process, its batch size."""
    ledger = Ledger(store)
    raws = [RawMessage(line, {"line": i}) for i, line in enumerate(lines, 1)]
    start = time.perf_counter()
    counts = Ingestor(ledger).ingest(raws, batch_size=FILE_BATCH_SIZE, workers=1)
    elapsed = time.perf_counter() - start
    assert counts.accepted == len(lines), counts
    return len(lines) / elapsed


T = TypeVar("T")


def use_contract(path: str) -> None:
    """``fast`` (the default) or ``reference``, in this process and the parser processes it starts."""
    os.environ["SAFETY_MONITOR_CONTRACT"] = path
    contract._FAST.clear()


def command(store: Store, lines: list[bytes]) -> tuple[float, float]:
    """``safety-monitor ingest FILE`` in a process of its own: events/s, and the peak resident memory
    (MB) of the largest process it ran (itself or a parser)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".ndjson", delete=False) as f:
        f.write(b"\n".join(lines) + b"\n")
    try:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "ingest", f.name, "--store", store.url],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        peak = 0.0
        while proc.poll() is None:
            peak = max([peak, *(high_water_mb(pid) for pid in process_tree(proc.pid))])
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        out = proc.stdout.read() if proc.stdout else b""
    finally:
        os.unlink(f.name)
    assert proc.returncode == 0 and b'"accepted": %d' % len(lines) in out, out
    return len(lines) / elapsed, peak


def naive(store: Store, lines: list[bytes]) -> float:
    ledger = Ledger(store)
    patients: dict[str, Patient] = {}
    start = time.perf_counter()
    for line in lines:
        m = parse_message(line)
        patient = patients.get(m.patient_id)
        if patient is None:
            patient = patients[m.patient_id] = Patient(source=m.source, patient_id=m.patient_id)
        patient.trigger_event(
            EVENT_CLASS[m.type], source=m.source, patient_id=m.patient_id, message_id=m.message_id,
            occurred_at=m.occurred_at, reported_at=m.reported_at, data=m.data,
            content_hash=m.content_hash,
        )
        ledger.save(patient)
    return len(lines) / (time.perf_counter() - start)


def raw_ceiling(store: Store, lines: list[bytes]) -> float:
    """executemany of the stored-event rows ours writes, in one transaction, into a plain table."""
    ledger = Ledger(store)
    ingest_rows = Ingestor(ledger)
    now = datetime.now(UTC)
    encoder = StateEncoder(ledger.mapper)
    batch = ingest_rows._decide(  # the rows our ingest would write, prepared outside the timing
        [RawMessage(line, {}) for line in lines],
        [prepare(line, now, encoder) for line in lines],
        now,
    )
    stored = batch.stored
    rows = [(hex_id(s.originator_id), s.originator_version, s.topic, s.state) for s in stored]
    if store.kind == "sqlite":
        import sqlite3

        assert store.path is not None
        conn = sqlite3.connect(store.path.with_suffix(".raw.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (originator_id TEXT, originator_version INTEGER, topic TEXT,"
                     " state BLOB, PRIMARY KEY (originator_id, originator_version))")
        start = time.perf_counter()
        with conn:
            conn.executemany("INSERT INTO t VALUES (?,?,?,?)", rows)
        elapsed = time.perf_counter() - start
        conn.close()
    else:
        import psycopg

        with psycopg.connect(PG) as conn:
            conn.execute(f'CREATE TABLE "{store.schema}".t (originator_id uuid, originator_version'
                         " bigint, topic text, state bytea, PRIMARY KEY (originator_id, originator_version))")
            conn.commit()
            start = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(f'INSERT INTO "{store.schema}".t VALUES (%s,%s,%s,%s)', rows)
            conn.commit()
            elapsed = time.perf_counter() - start
    return len(lines) / elapsed


def where_time_goes(lines: list[bytes], tmp: Path) -> str:
    """Single-process cost per event of each ingest stage."""
    sample = lines[:20_000]
    now = datetime.now(UTC)
    parse_us = {}
    for path in ("reference", "fast"):
        use_contract(path)
        t = time.perf_counter()
        for line in sample:
            parse_message(line, now=now)
        parse_us[path] = (time.perf_counter() - t) / len(sample) * 1e6
    store = fresh_store("sqlite", tmp)
    ledger = Ledger(store)
    encoder = StateEncoder(ledger.mapper)
    t = time.perf_counter()
    items = [prepare(line, now, encoder) for line in sample]
    prepare_us = (time.perf_counter() - t) / len(sample) * 1e6
    t = time.perf_counter()
    for i in range(0, len(sample), 2000):  # to a parser process and back, as ingest passes them
        pickle.loads(pickle.dumps(sample[i : i + 2000]))
        pickle.loads(pickle.dumps(items[i : i + 2000]))
    passing_us = (time.perf_counter() - t) / len(sample) * 1e6
    ingestor = Ingestor(ledger)
    raws = [RawMessage(line, {}) for line in sample]
    decide = store_ = 0.0
    for i in range(0, len(sample), 2000):
        t = time.perf_counter()
        batch = ingestor._decide(raws[i : i + 2000], items[i : i + 2000], now, read_index=False)
        decide += time.perf_counter() - t
        t = time.perf_counter()
        ledger.append_stored(batch.stored, admissions=batch.admissions,
                             counts=batch.count_rows(now.isoformat()))
        store_ += time.perf_counter() - t
        ingestor._versions.update(batch.versions)
    t = time.perf_counter()
    for i in range(0, len(sample), 2000):  # the same messages again: every one looked up, a duplicate
        ingestor._decide(raws[i : i + 2000], items[i : i + 2000], now)
    again_us = (time.perf_counter() - t) / len(sample) * 1e6
    n = len(sample)
    judge_us, store_us = decide / n * 1e6, store_ / n * 1e6
    total_us = prepare_us + passing_us + judge_us + store_us
    return (
        "Where the time goes (SQLite, one process, µs of CPU per event): parse and validate "
        f"{parse_us['fast']:.1f} with the fast path ({parse_us['reference']:.1f} with the reference path "
        f"alone); build and serialise the event {prepare_us - parse_us['fast']:.1f} (these two run in the parser "
        f"process); passing a batch to it and back {passing_us:.1f}; judge (stream versions; the message index "
        f"is not read while batches hold only new messages) {judge_us:.1f}; insert and commit {store_us:.1f} "
        f"(main process). In all {total_us:.1f} µs, so two cores cap ingest near {2e6 / total_us:,.0f} "
        "events/s. A re-delivered feed is judged against the index read first: "
        f"{again_us:.1f} µs an event. The fast path (events/contract_fast.py) decodes and checks a message with "
        "msgspec types generated from the pydantic models and sends anything it does not take to the reference "
        "path; what is left of parsing is the content hash (canonical JSON and SHA-256), lab unit conversion and "
        "the times; msgspec also writes the event (the json module's bytes). The insert's commit is an fsync per "
        "batch (SQLite's WAL at synchronous=FULL, kept for durability). The parser process and the main process "
        "each take about half the work, so neither waits long for the other; a second parser gains nothing on "
        "two cores."
    )


def median_of(runs: int, kind: str, fn: Callable[[Store, list[bytes]], float], lines: list[bytes],
              tmp: Path) -> tuple[float, list[float]]:
    rates = on_fresh_stores(runs, kind, fn, lines, tmp)
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-events", type=int, default=1_000_000,
                        help="lines of the file the command's peak memory is measured on (SQLite)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of BENCHMARKS.md")
    args = parser.parse_args()
    if args.out:
        report.PATH = args.out
    lines = feed_lines(args.events, max(1, args.events // 100))
    naive_lines = lines[: args.naive_events]
    rows = []
    kinds = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            use_contract("fast")
            cmd_runs = command_runs(kind, lines, Path(tmp), args.runs)
            cmd = statistics.median(r for r, _ in cmd_runs)
            rss = max(m for _, m in cmd_runs)
            our_runs, ref_runs = [], []
            for _ in range(args.runs):  # alternately, so a slow spell of the host or the server hits both
                for path, runs in (("fast", our_runs), ("reference", ref_runs)):
                    use_contract(path)
                    runs += on_fresh_stores(1, kind, ours, lines, Path(tmp))
            use_contract("fast")
            our, ref = statistics.median(our_runs), statistics.median(ref_runs)
            slow, _ = median_of(args.runs, kind, naive, naive_lines, Path(tmp))
            ceiling, _ = median_of(args.runs, kind, raw_ceiling, lines, Path(tmp))
            rows.append((kind, cmd, rss, our, our_runs, ref, slow, ceiling))
            print(f"{kind}: command {cmd:,.0f}/s ({rss:.0f} MB) ours {our:,.0f}/s reference {ref:,.0f}/s "
                  f"naive {slow:,.0f}/s raw {ceiling:,.0f}/s")
    table = [
        "| store | `ingest` command (events/s, median) | ÷ naive | peak memory | in-process, fast path | runs "
        "| in-process, reference path | naive `save()` per event | raw executemany ceiling | target | gap |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for kind, cmd, rss, our, our_runs, ref, slow, ceiling in rows:
        if kind == "sqlite":
            target, gap = "15× naive", "met" if cmd / slow >= 15 else f"short: {cmd / slow:.1f}× of 15×"
        else:
            target, gap = "30,000/s", "met" if cmd >= 30_000 else f"short by {30_000 - cmd:,.0f}/s ({cmd / 30_000:.0%})"
        table.append(
            f"| {kind} | {cmd:,.0f} | {cmd / slow:.1f}× | {rss:.0f} MB | {our:,.0f} | "
            f"{', '.join(f'{r:,.0f}' for r in our_runs)} | {ref:,.0f} | {slow:,.0f} | {ceiling:,.0f} | {target} "
            f"| {gap} |"
        )
    body = "\n".join(table) + (
        f"\n\n{args.events:,} synthetic messages over {max(1, args.events // 100):,} patients "
        f"(50% lab results, 35% adverse events, 15% hospitalisations); naive on the first "
        f"{len(naive_lines):,}; medians of {args.runs} runs, each on a fresh store. The command's rate counts "
        "its whole run, process start and the parser processes' start included; peak memory is the largest "
        "resident size of any process it ran.\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        big = feed_lines(args.memory_events, max(1, args.memory_events // 100))
        (rate, rss), = command_runs("sqlite", big, Path(tmp), 1)
        body += (f"\nMemory: `safety-monitor ingest` of a {len(big):,}-line file (SQLite) peaked at {rss:.0f} MB "
                 f"resident in its largest process (target: under 500 MB), at {rate:,.0f} events/s.\n")
        del big
        body += "\n" + where_time_goes(lines, Path(tmp)) + "\n"
    body += previous_run(report.previous_section("File ingest")) + BEFORE_ISSUE_15
    write_section("File ingest", "python -m benchmarks.ingest " + " ".join(sys.argv[1:]), body)


def command_runs(kind: str, lines: list[bytes], tmp: Path, runs: int) -> list[tuple[float, float]]:
    return on_fresh_stores(runs, kind, command, lines, tmp)


def on_fresh_stores(runs: int, kind: str, fn: Callable[[Store, list[bytes]], T], lines: list[bytes],
                    tmp: Path) -> list[T]:
    """``fn`` run ``runs`` times, each on a fresh store dropped afterwards."""
    out = []
    for _ in range(runs):
        store = fresh_store(kind, tmp)
        try:
            out.append(fn(store, lines))
        finally:
            drop(store)
    return out


def previous_run(section: str) -> str:
    """The figures this run replaces, so a change (of code or of host speed) stays visible."""
    stamp = re.search(r"Measured: (.*?)  $", section, re.M)
    loop = re.search(r"reference loop ([\d.]+) ms", section)
    rows = re.findall(r"^\| (sqlite|postgresql) \| ([\d,]+) \| ([\d.]+×) \|", section, re.M)  # command ÷ naive
    figures = "; ".join(f"{kind} {ours}/s by the command ({ratio} naive)" for kind, ours, ratio in rows)
    if not rows:  # the earlier layout: in-process rate, runs, naive, ratio
        old = re.findall(r"^\| (sqlite|postgresql) \| ([\d,]+) \| [^|]* \| ([\d,]+) \| ([\d.]+×)", section, re.M)
        figures = "; ".join(f"{kind} {ours}/s in-process, naive {slow}/s ({ratio})" for kind, ours, slow, ratio in old)
    if not stamp or not figures:
        return ""
    host = f", reference loop {loop.group(1)} ms" if loop else ", reference loop not recorded"
    return f"\nPrevious run ({stamp.group(1)}{host}): {figures}.\n"


if __name__ == "__main__":
    main()
