"""Fault-test results, collected into RELIABILITY.md at the end of the test session."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "test-results" / "reliability"
# scripts/test (the whole suite) writes the repository's RELIABILITY.md; a partial run writes under
# test-results/ so that it never replaces the full table with a few rows.
REPORT = Path(os.environ.get("SAFETY_MONITOR_RELIABILITY_REPORT",
                             Path(__file__).resolve().parent.parent / "test-results" / "RELIABILITY.md"))


def record(fault: str, injected: int, messages: int, lost: int, duplicated: int, note: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    row = {"fault": fault, "injected": injected, "messages": messages, "lost": lost, "duplicated": duplicated,
           "note": note, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    (RESULTS / f"{uuid.uuid4().hex}.json").write_text(json.dumps(row))


def write_report() -> None:
    """RELIABILITY.md from every result of this test run (scripts/test clears them first)."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))] if RESULTS.exists() else []
    if not rows:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Reliability",
        "",
        "Written by the test suite (`scripts/test`) from its fault tests; every row is a test that passed",
        "only if nothing was lost and nothing was stored twice (checked by count and by a digest of the",
        "ledger against file ingest of the same feed, or against a rebuild).",
        "",
        "| fault | injected | messages | lost | duplicated | how it was checked | when |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["fault"]):
        lines.append(f"| {r['fault']} | {r['injected']} | {r['messages']:,} | {r['lost']} | {r['duplicated']} | "
                     f"{r['note']} | {r['at']} |")
    REPORT.write_text("\n".join(lines) + "\n\n" + INBOUND)


#: the inbound-transfer rules (issue 23), kept with the table so that the report says what its fuzz rows test
INBOUND = (Path(__file__).resolve().parent / "reliability_inbound.md").read_text()
