"""Where a signals rebuild's time goes (issue 28): wall time of each phase of a rebuild at registry size, on
both stores, measured with timers around the projector's parts (no profiler), written to BENCHMARKS.md.

    .venv/bin/python -m benchmarks.rebuild_phases [--patients 15000] [--runs 2] [--no-postgres]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.stores import drop, fresh_store
from events.admission import RawMessage
from events.generator import generate
from events.ingest import Ingestor
from events.ledger import Ledger
from projections.live_detection import LiveDetection
from projections.runner import Projector
from projections.signals import SignalsModel
from projections.view import View

#: (label, owner, method): the parts timed, in the order a rebuild meets them
PARTS: tuple[tuple[str, Any, str], ...] = (
    ("empty the read model", View, "reset"),
    ("write the pages (the projector's share; the workers read and decode meanwhile)", View, "write_rows"),
    ("make the deferred indexes", Projector, "_make_indexes"),
    ("evaluate every patient (worker processes) and store their signals", SignalsModel, "_evaluate"),
    ("derive the detection shares", LiveDetection, "update"),
    ("finish in all (evaluation, shares, the list of patients, the commit)", View, "finish"),
)


#: the parts that follow one another (the others are within them)
WHOLE = ("reset", "_make_indexes", "finish")
PAGES = "pages phase (read, decode and make rows in the workers, write in the projector), by difference"


@contextmanager
def timed_parts(spent: dict[str, float]) -> Iterator[None]:
    """Add each part's wall time to ``spent`` while the block runs."""
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in PARTS]

    def timer(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start
        return timed

    for (label, owner, name), (_, _, fn) in zip(PARTS, originals, strict=True):
        setattr(owner, name, timer(label, fn))
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def phases(ledger: Ledger, runs: int) -> tuple[list[float], dict[str, list[float]]]:
    totals, parts = [], defaultdict(list)
    for _ in range(runs):
        spent: dict[str, float] = defaultdict(float)
        with timed_parts(spent):
            start = time.perf_counter()
            Projector(ledger, SignalsModel()).rebuild()
            totals.append(time.perf_counter() - start)
        for label, _, _ in PARTS:
            parts[label].append(spent[label])
        parts[PAGES].append(totals[-1] - sum(spent[label] for label, _, name in PARTS if name in WHOLE))
    return totals, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=15_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    args = report.parse_args(parser)
    lines = [RawMessage(line.encode(), {}) for line in generate(args.patients, 3.0, seed=11)]
    kinds = ["sqlite"] if args.no_postgres else ["sqlite", "postgresql"]
    columns: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            store = fresh_store(kind, Path(tmp))
            try:
                ledger = Ledger(store)
                Ingestor(ledger).ingest(lines, batch_size=2000)
                columns[kind] = phases(ledger, args.runs)
            finally:
                drop(store)
    rows = ["| part of the rebuild | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for label in [PARTS[0][0], PAGES, *(label for label, _, _ in PARTS[1:])]:
        rows.append(f"| {label} | " + " | ".join(f"{statistics.median(columns[k][1][label]):.2f} s" for k in kinds)
                    + " |")
    rows.append("| **rebuild** | " + " | ".join(f"**{statistics.median(columns[k][0]):.2f} s**" for k in kinds)
                + " |")
    body = "\n".join(rows) + (
        f"\n\n{args.patients:,} patients, {len(lines):,} generated messages; medians of {args.runs} rebuilds, "
        "wall time of each part (timers around the projector's methods). The pages phase is the rebuild less "
        "the parts that follow it; the projector's writing is within it, while the workers read, decode and "
        "make the rows (`projections.bulk`). Finish holds the evaluation and the shares.\n")
    report.publish("Where a signals rebuild's time goes", "benchmarks.rebuild_phases", body)


if __name__ == "__main__":
    main()
