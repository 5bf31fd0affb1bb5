"""The ``safety-monitor`` command line: the one place that wires the store, ledger, read models and board.

Exit codes: 0 the command did its work (for ``ingest``: every line was judged, quarantined ones
included); 1 the store or an input file could not be used (the message says which and why);
2 the command line itself was wrong.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Event-sourced pharmacovigilance safety monitor for paediatric rheumatology.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST:PORT/DB "
        "(default: $SAFETY_MONITOR_STORE, else ./safety-monitor-data/ledger.db)",
    ),
]


class Format(StrEnum):
    json = "json"
    table = "table"


class QuarantineFormat(StrEnum):
    json = "json"
    table = "table"
    raw = "raw"


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def open_ledger(store_url: str | None) -> Any:
    from events.ledger import Ledger
    from events.store import Store, StoreURLError

    try:
        store = Store.resolve(store_url)
        return Ledger(store)
    except StoreURLError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # the database refused: name it and stop, nothing was written
        raise fail(f"cannot open the store ({type(exc).__name__}: {exc})") from None


def demo_feed_path() -> Path:
    return Path(str(resources.files("events") / "demo" / "seed-study.ndjson"))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the registry-feed contract v1."""
    from events.contract import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="NDJSON files; - reads standard input")],
    store: StoreOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=20000, help="messages per transaction")] = 2000,
    workers: Annotated[
        int, typer.Option(min=-1, max=16, help="parser processes; -1: 2 for inputs over 8 MB, else 0")
    ] = -1,
) -> None:
    """Validate NDJSON messages and append them; bad lines go to the quarantine.

    Prints one JSON line: {"accepted": N, "duplicates": N, "quarantined": N}.
    """
    from events.files import read_ndjson, size_of
    from events.ingest import IngestCounts, Ingestor

    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise fail(f"no such file: {path}")
    ledger = open_ledger(store)
    ingestor = Ingestor(ledger)
    total = IngestCounts()
    with _progress() as progress:
        for path in paths:
            size = size_of(path)
            parsers = workers if workers >= 0 else (2 if (size or 0) > 8_000_000 else 0)
            task = progress.add_task(f"ingest {Path(path).name}", total=size)

            def tracked(p: str = path, t: Any = task) -> Iterator[Any]:
                for item in read_ndjson(p):
                    progress.advance(t, len(item.raw) + 1)
                    yield item

            total.add(ingestor.ingest(tracked(), batch_size=batch_size, workers=parsers))
    typer.echo(json.dumps(total.as_dict()))


@app.command()
def quarantine(
    store: StoreOption = None,
    format: Annotated[QuarantineFormat, typer.Option("--format")] = QuarantineFormat.table,
) -> None:
    """List quarantined messages with their reason, source, position and raw bytes.

    ``--format raw`` prints the raw messages one per line, to fix and ingest again.
    """
    ledger = open_ledger(store)
    items = [
        {
            "id": q["id"],
            "received_at": q["received_at"],
            "source": q["source"],
            "message_id": q["message_id"],
            "position": json.loads(q["position"]),
            "reason": q["reason"],
            "raw": bytes(q["raw"]).decode("utf-8", errors="replace"),
            "raw_base64": base64.b64encode(bytes(q["raw"])).decode(),
        }
        for q in ledger.tables.quarantined()
    ]
    if format is QuarantineFormat.json:
        typer.echo(json.dumps(items, indent=2, ensure_ascii=False))
    elif format is QuarantineFormat.raw:
        for item in items:
            sys.stdout.buffer.write(base64.b64decode(item["raw_base64"]) + b"\n")
    else:
        table = Table("id", "source", "position", "reason")
        for item in items:
            table.add_row(str(item["id"]), item["source"] or "", json.dumps(item["position"]), item["reason"])
        Console().print(table)


@app.command()
def history(
    source: Annotated[str, typer.Option(help="the registry that sent the patient's messages")],
    patient: Annotated[str, typer.Option(help="the source's patient_id")],
    store: StoreOption = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """A patient's messages in clinical-time order, with recording time and amendments."""
    from events.history import patient_history

    rows = patient_history(open_ledger(store), source, patient)
    if not rows:
        raise fail(f"no messages for patient {patient} of source {source}")
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("occurred_at", "type", "message_id", "recorded_at", "retracted", "corrected")
    for r in rows:
        table.add_row(
            r["occurred_at"], r["type"], r["message_id"], r["recorded_at"],
            "yes" if r["retracted"] else "", "yes" if r["corrected"] else "",
        )
    Console().print(table)


@app.command()
def demo(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="port of the board")] = 8501,
    no_board: Annotated[bool, typer.Option("--no-board", help="load the study, do not start the board")] = False,
) -> None:
    """Load the seed study (six MSC-treated JIA patients) and start the board on it."""
    from events.files import read_ndjson
    from events.ingest import Ingestor

    ledger = open_ledger(store)
    counts = Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    err.print(f"demo study loaded into {ledger.store.display()}: {json.dumps(counts.as_dict())}")
    if not no_board:
        _run_board(ledger.store.url, port)


@app.command()
def dashboard(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="port of the board")] = 8501,
) -> None:
    """Start the board alone, on the chosen store."""
    from events.store import Store

    _run_board(Store.resolve(store).url, port)


def _run_board(store_url: str, port: int) -> None:
    script = Path(str(resources.files("dashboard") / "app.py"))
    env = {**os.environ, "SAFETY_MONITOR_STORE": store_url}
    err.print(f"board at http://localhost:{port}  (Ctrl+C stops it)")
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    try:
        raise typer.Exit(subprocess.call(command, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
