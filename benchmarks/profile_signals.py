"""Where the signals read model's time goes (issue 28): cProfile of a rebuild and of the incremental path
(one new lab result, then catch-up) on a generated registry, SQLite, written to BENCHMARKS.md.

    .venv/bin/python -m benchmarks.profile_signals [--patients 3000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path

from benchmarks import report
from benchmarks.stores import fresh_store
from events.admission import RawMessage
from events.generator import generate
from events.ingest import Ingestor
from events.ledger import Ledger
from projections.runner import Projector
from projections.signals import SignalsModel

#: where a function's own time is counted: the first matching part of its file's path
AREAS = (("safety/mas", "MAS rules (safety/mas.py)"), ("safety/liver", "liver rules (safety/liver.py)"),
         ("safety/ctcae", "liver views: CTCAE grades and shifts"), ("projections/liver", "liver views: the rows"),
         ("projections/facts", "facts to histories (projections/facts.py)"),
         ("projections/evaluation", "evaluating a chunk of patients (projections/evaluation.py)"),
         ("projections/signals", "signals model: writing facts, storing signals"),
         ("events/encoding", "decoding events (events/encoding.py)"), ("events/ledger", "reading pages (lean)"),
         ("msgspec", "JSON (msgspec)"), ("projections/db", "JSON helpers (projections/db.py)"),
         ("projections/live_detection", "live detection shares"), ("safety/screening", "detection screen"),
         ("projections/exposure", "building subjects for detection"),
         ("eventsourcing", "eventsourcing: reading and decoding events"), ("json", "JSON (stdlib)"),
         ("sqlite3", "SQLite calls"), ("psycopg", "PostgreSQL calls"), ("datetime", "datetime"))


def areas(stats: pstats.Stats) -> list[tuple[str, float]]:
    totals: dict[str, float] = defaultdict(float)
    for (file, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{name}"
        label = next((a for key, a in AREAS if key in where), "other (Python built-ins, the rest)")
        totals[label] += tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])


def profiled(fn: object) -> tuple[float, pstats.Stats]:
    profile = cProfile.Profile()
    profile.enable()
    fn()  # type: ignore[operator]
    profile.disable()
    stats = pstats.Stats(profile)
    return stats.total_tt, stats  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=3000)
    args = report.parse_args(parser)
    with tempfile.TemporaryDirectory() as tmp:
        store = fresh_store("sqlite", Path(tmp))
        ledger = Ledger(store)
        lines = list(generate(args.patients, 3.0, seed=11))
        Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=2000)
        projector = Projector(ledger, SignalsModel())
        rebuild_total, rebuild_stats = profiled(projector.rebuild)

        def incremental() -> None:
            ingestor = Ingestor(ledger)
            for i in range(200):
                raw = json.dumps({"schema_version": 1, "message_id": f"inc-{uuid.uuid4().hex}",
                                  "source": "registry-1", "patient_id": f"P{i + 1:06d}", "type": "lab_result",
                                  "occurred_at": "2024-06-01", "data": {"analyte": "PLT", "value": 300,
                                                                        "unit": "10^9/L"}}).encode()
                ingestor.ingest_batch([RawMessage(raw, {})])
                projector.catch_up()

        inc_total, inc_stats = profiled(incremental)
    rows = ["| area (own time) | rebuild | share | incremental, 200 lab results (ingest included) | share |",
            "|---|---:|---:|---:|---:|"]
    inc = dict(areas(inc_stats))
    for label, seconds in areas(rebuild_stats):
        rows.append(f"| {label} | {seconds:.2f} s | {seconds / rebuild_total:.0%} | {inc.get(label, 0.0) * 1000:.0f} ms"
                    f" | {inc.get(label, 0.0) / inc_total:.0%} |")
    body = "\n".join(rows) + (
        f"\n\nSQLite, {args.patients:,} patients, {len(lines):,} messages; cProfile's own time per function, "
        f"summed by where the function lives (the profiler slows pure Python more than C calls). Rebuild "
        f"{rebuild_total:.1f} s under the profiler; the incremental path {inc_total / 200 * 1000:.2f} ms per lab "
        "result including its ingest. Every new fact re-evaluates the patient's whole history (parse its facts, "
        "apply the amendments, run every MAS and liver rule), which is what the per-event cost is made of.\n")
    report.publish("Where the signals read model's time goes", "benchmarks.profile_signals", body)


if __name__ == "__main__":
    main()
