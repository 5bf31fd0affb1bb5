"""The ``safety-monitor`` command line: the one place that wires the store, ledger, read models and board.

Exit codes: 0 the command did its work (for ``ingest``: every line was judged, quarantined ones
included); 1 the store or an input file could not be used (the message says which and why);
2 the command line itself was wrong.
"""

from __future__ import annotations

import base64
import json
import os
import signal as signals  # not `signal`: that name is the signal command below
import subprocess
import sys
import time as time_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
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
#: standard error, with Rich markup off: paths, labels and reasons are the user's text, printed as written
#: (with markup on, "[[product]]" lost its brackets and a path holding "[/bold]" crashed: issue 23)
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def out_console() -> Console:
    """Standard output: the terminal's width, or wide enough not to fold tables in a pipe or a file; markup
    off, as on standard error (table cells hold the sender's text)."""
    console = Console(markup=False, highlight=False)
    return console if console.is_terminal else Console(width=200, markup=False, highlight=False)

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


def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import psycopg
    from eventsourcing.persistence import PersistenceError

    return (PersistenceError, sqlite3.Error, psycopg.Error, OSError)


STORE_ERRORS = _store_errors()


def store_refused(exc: BaseException) -> str:
    """What to tell a person when the store refused a batch (the transaction rolled back whole)."""
    text = str(exc)
    hint = ""
    if "full" in text.lower() or "No space" in text:
        hint = " The disk holding the store is full: free space, then"
    elif "connection" in text.lower() or "terminat" in text.lower() or "server" in text.lower():
        hint = " The database server went away: when it is back,"
    else:
        hint = " Fix the cause, then"
    return (f"the store refused a batch ({type(exc).__name__}: {text.strip()}); nothing of that batch was "
            f"stored.{hint} run the same command again: messages already stored count as duplicates.")


def fail(message: str) -> typer.Exit:
    err.print(f"error: {message}", style="red")
    return typer.Exit(1)


#: the commands that may create a store (each says so when it does); every other one refuses a missing store
CREATING = ("ingest", "import-sdtm", "consume", "demo")


def open_ledger(store_url: str | None, create: bool = False) -> Any:
    """The ledger of ``--store``. A store that does not exist is refused (a mistyped path must not answer
    "no signals" from a new empty store) unless the command creates stores, which then says so."""
    from events.ledger import Ledger
    from events.store import Store, StoreURLError, store_exists

    try:
        store = Store.resolve(store_url)
        if not store_exists(store):
            if not create:
                raise StoreURLError(f"no store at {store.display()}: check --store (or SAFETY_MONITOR_STORE); only "
                                    f"{', '.join(CREATING)} create a store")
            err.print(f"creating a new store at {store.display()}")
        return Ledger(store)
    except StoreURLError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # the database refused: name it and stop, nothing was written
        raise fail(f"cannot open the store ({type(exc).__name__}: {exc})") from None


def demo_feed_path() -> Path:
    return Path(str(resources.files("events") / "demo" / "seed-study.ndjson"))


def pilot_path() -> Path:
    """The CDISC pilot study's SDTM datasets, as shipped (events/sdtm/pilot)."""
    return Path(str(resources.files("events") / "sdtm" / "pilot"))


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
        int, typer.Option(min=-1, max=16, help="parser processes; -1: 1 for inputs over 8 MB, else 0 (a second "
                          "gains nothing on two cores: BENCHMARKS.md)")
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
    ledger = open_ledger(store, create=True)
    ingestor = Ingestor(ledger)
    total = IngestCounts()
    try:
        with _progress() as progress:
            for path in paths:
                size = size_of(path)
                parsers = workers if workers >= 0 else (1 if (size or 0) > 8_000_000 else 0)
                task = progress.add_task(f"ingest {Path(path).name}", total=size)

                def tracked(p: str = path, t: Any = task) -> Iterator[Any]:
                    read = 0  # advanced a MiB at a time: once a line would cost a lock and a redraw check
                    for item in read_ndjson(p):
                        read += len(item.raw) + 1
                        if read >= 1 << 20:
                            progress.advance(t, read)
                            read = 0
                        yield item
                    progress.advance(t, read)

                total.add(ingestor.ingest(tracked(), batch_size=batch_size, workers=parsers))
    except STORE_ERRORS as exc:
        typer.echo(json.dumps(ingestor.committed.as_dict()))
        raise fail(store_refused(exc)) from None
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
        out_console().print(table)


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
    table = Table("occurred_at", "type", "message_id", "recorded_at", "retracted", "corrected", "transfer")
    for r in rows:
        table.add_row(
            r["occurred_at"], r["type"], r["message_id"], r["recorded_at"],
            "yes" if r["retracted"] else "", "yes" if r["corrected"] else "",
            (r["data"].get("origin") or {}).get("transfer", ""),
        )
    out_console().print(table)


DEMO_USERS = (("physician", "safety_physician"), ("dsmb", "dsmb"), ("admin", "admin"))


def in_clinical_order(messages: list[Any]) -> list[Any]:
    """The study as it happened: by occurred_at (stable, so same-day messages keep the file's order)."""
    from events.contract import parse_timestamp
    from safety.vocabulary import AMENDMENT_TYPES

    def when(m: Any) -> tuple[datetime, int]:
        obj = json.loads(m.raw)
        # an amendment is told after what it amends, even when it is dated the same instant
        return parse_timestamp(obj["occurred_at"]), int(obj["type"] in AMENDMENT_TYPES)

    return sorted(messages, key=when)


def replay_messages(ledger: Any, messages: list[Any], delay: float,
                    after_each: Callable[[int], None] | None = None) -> None:
    """Append one message at a time, as a registry would send them, so the board shows signals live."""
    from events.ingest import Ingestor

    ingestor = Ingestor(ledger)
    for i, m in enumerate(messages):
        ingestor.ingest([m])
        if after_each:
            after_each(i)
        time_module.sleep(delay)


@app.command()
def demo(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="port of the board")] = 8501,
    no_board: Annotated[bool, typer.Option("--no-board", help="load the study, do not start the board")] = False,
    replay: Annotated[
        bool, typer.Option("--replay", help="feed the study message by message in clinical-time order")
    ] = False,
    delay: Annotated[float, typer.Option(help="seconds between replayed messages")] = 0.3,
    study: Annotated[
        str, typer.Option(help="seed: the six MSC-treated JIA patients; pilot: the CDISC pilot trial (three arms, "
                               "real labs), imported from SDTM")
    ] = "seed",
) -> None:
    """Load a demo study (by default the seed study: six MSC-treated JIA patients) and start the board on it."""
    import threading

    from dashboard.auth import UserStore, users_path
    from events.files import read_ndjson
    from events.ingest import Ingestor

    ledger = open_ledger(store, create=True)
    users = UserStore(users_path(ledger.store))
    if not users.list():
        for name, role in DEMO_USERS:
            users.add(name, role, f"demo-{name}")
    if study not in ("seed", "pilot"):
        raise fail(f"--study {study!r}: use seed or pilot")
    if study == "pilot":
        from events.sdtm.importer import import_transfer
        from events.sdtm.readers import read_transfer

        with _progress_steps() as steps:
            summary = import_transfer(ledger, read_transfer([pilot_path()]), "cdiscpilot01", "pilot-1",
                                      lambda: _transfer_state(ledger, "cdiscpilot01"), progress=steps, by="demo")
        _catch_up(ledger, *read_models(), required=False)
        err.print(f"CDISC pilot study imported into {ledger.store.display()}: "
                  f"{json.dumps({k: v for k, v in summary.items() if k != 'domains'})}")
        if not no_board:
            err.print("demo sign-in: physician / demo-physician (also dsmb / demo-dsmb, admin / demo-admin)")
            _run_board(ledger.store.url, port)
        return
    messages = list(read_ndjson(str(demo_feed_path())))
    if replay and not no_board:
        ordered = in_clinical_order(messages)
        threading.Thread(target=replay_messages, args=(ledger, ordered, delay), daemon=True).start()
        err.print(f"replaying {len(ordered)} messages in clinical-time order, one every {delay:g} s")
    else:
        counts = Ingestor(ledger).ingest(messages)
        _catch_up(ledger, *read_models(), required=False)
        err.print(f"demo study loaded into {ledger.store.display()}: {json.dumps(counts.as_dict())}")
    if not no_board:
        err.print("demo sign-in: physician / demo-physician (also dsmb / demo-dsmb, admin / demo-admin)")
        _run_board(ledger.store.url, port)


users_app = typer.Typer(help="Local users of the board (Argon2-hashed passwords in a file).", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="the user's sign-in name")],
    role: Annotated[str, typer.Option(help="safety_physician, dsmb or admin")],
    store: StoreOption = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Add a user (or set a new password and role); the password is asked for, never echoed."""
    from dashboard.auth import UserStore, users_path
    from events.store import Store
    from events.workflow import record_audit

    resolved = Store.resolve(store)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        UserStore(users_path(resolved)).add(name, role, password)
    except ValueError as exc:
        raise fail(str(exc)) from None
    record_audit(open_ledger(store, create=True), os.environ.get("USER", "cli"), "user change", f"{name} as {role}")
    err.print(f"{name} saved as {role} in {users_path(resolved)}")


@users_app.command("list")
def users_list(store: StoreOption = None) -> None:
    """List the board's users and roles."""
    from dashboard.auth import UserStore, users_path
    from events.store import Store

    for user in UserStore(users_path(Store.resolve(store))).list():
        typer.echo(f"{user.name}\t{user.role}")


@app.command()
def dashboard(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="port of the board")] = 8501,
) -> None:
    """Start the board alone, on the chosen store."""
    from events.store import Store

    _run_board(Store.resolve(store).url, port)


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"
    table = "table"


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    from events.contract import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise fail(f"--as-of: {exc}") from None


def _data_cut(value: str | None) -> datetime | None:
    """A clinical data cut DATE: everything that occurred on or before that day."""
    if value is None:
        return None
    from safety.vocabulary import date_in_range

    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise fail(f"--data-cut: {value!r} is not a date; write YYYY-MM-DD") from None
    try:
        date_in_range(day, "--data-cut")
    except ValueError as exc:
        raise fail(str(exc)) from None
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def _projector(ledger: Any, model: Any) -> Any:
    from projections.runner import Projector

    return Projector(ledger, model)


def _catch_up(ledger: Any, *models: Any, retry: bool = False, required: bool = True) -> list[Any]:
    """Bring read models up to date (with a progress bar when there is much to do); a stopped one
    (``projections.runner.Stop``) is tried again with ``retry``. Each read model goes on whatever another
    does; then, when the answer needs them (``required``), a stopped one fails the command with its
    position and reason, since its answers would silently miss events."""
    from projections.runner import ReadModelStopped

    stops = []
    for model in models:
        projector = _projector(ledger, model)
        behind = ledger.position() - projector.view.position(ledger.name)
        with _progress() as progress:
            task = progress.add_task(f"project {model.name}", total=max(behind, 1))
            projector.catch_up(lambda n, _pos, t=task: progress.advance(t, n), retry=retry)
        stop = projector.view.stopped()
        if stop is not None:
            stops.append(stop)
            if not required:
                err.print(f"error: {ReadModelStopped(stop)}", style="red")
    if stops and required:
        raise fail("; ".join(str(ReadModelStopped(stop)) for stop in stops))
    return stops


AnchorOption = Annotated[str, typer.Option(help="intervention name that anchors the windows")]
PreOption = Annotated[int, typer.Option(min=1, max=120, help="months before the anchor")]
PostOption = Annotated[int, typer.Option(min=1, max=120, help="months from the anchor")]
AsOfOption = Annotated[
    str | None, typer.Option(help="knowledge time (ISO 8601; UTC when no offset): what the ledger had recorded then")
]
DataCutOption = Annotated[str | None, typer.Option(help="clinical data cut YYYY-MM-DD: events that occurred by then")]


def _incidence_answer(
    ledger: Any, anchor: str, pre_months: int, post_months: int, as_of: str | None, data_cut: str | None
) -> dict[str, Any]:
    from projections.incidence import IncidenceModel, incidence
    from projections.runner import View
    from safety.incidence import Settings

    _catch_up(ledger, IncidenceModel())
    settings = Settings(anchor, pre_months, post_months, _data_cut(data_cut))
    view = View(ledger.store, IncidenceModel())
    return incidence(view.db, settings, _as_of(as_of))


@app.command(name="incidence")
def incidence_command(
    store: StoreOption = None,
    anchor: AnchorOption = "MSC infusion",
    pre_months: PreOption = 3,
    post_months: PostOption = 12,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
) -> None:
    """Monthly incidence before and after the anchor intervention, with exact tests (Table 2)."""
    from projections.report import incidence_csv, incidence_table

    answer = _incidence_answer(open_ledger(store), anchor, pre_months, post_months, as_of, data_cut)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    elif format is ReportFormat.csv:
        typer.echo(incidence_csv(answer), nl=False)
    else:
        out_console().print(incidence_table(answer))


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")],
    store: StoreOption = None,
    anchor: AnchorOption = "MSC infusion",
    pre_months: PreOption = 3,
    post_months: PostOption = 12,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    changes_since: Annotated[
        str | None, typer.Option(help="list what SDTM transfers changed since this time (ISO 8601), e.g. the last "
                                      "review")
    ] = None,
) -> None:
    """Write the DSMB report: one self-contained HTML file."""
    from projections.efficacy import EfficacyModel, efficacy
    from projections.incidence import utc_text
    from projections.liver import lab_shifts
    from projections.report import dsmb_html
    from projections.runner import View
    from projections.signals import SignalsModel
    from projections.transfers import TransfersModel, transfer_changes

    ledger = open_ledger(store)
    answer = _incidence_answer(ledger, anchor, pre_months, post_months, as_of, data_cut)
    _catch_up(ledger, EfficacyModel(), TransfersModel(), SignalsModel())
    eff = efficacy(View(ledger.store, EfficacyModel()).db, anchor=anchor)
    shifts = lab_shifts(View(ledger.store, SignalsModel()).db, as_of=_as_of(as_of))
    ae = ae_table_answer(ledger, "arm", None, None, 0.0, as_of, data_cut)
    since = _as_of(changes_since)
    changes = transfer_changes(View(ledger.store, TransfersModel()).db, utc_text(since) if since else None)
    out.write_text(dsmb_html(answer, eff, changes if changes or since else None,
                             since.isoformat() if since else None, shifts, ae), encoding="utf-8")
    from events.workflow import record_audit

    record_audit(ledger, os.environ.get("USER", "cli"), "download", f"DSMB report {answer['fingerprint']} to {out}")
    err.print(f"report written to {out} (fingerprint {answer['fingerprint']})")


def read_models() -> list[Any]:
    from projections.audit import AuditModel
    from projections.efficacy import EfficacyModel
    from projections.expedited import ExpeditedModel
    from projections.exposure import ExposureModel
    from projections.incidence import IncidenceModel
    from projections.signals import SignalsModel
    from projections.transfers import TransfersModel

    return [IncidenceModel(), SignalsModel(), AuditModel(), EfficacyModel(), TransfersModel(), ExpeditedModel(),
            ExposureModel()]


expedited_app = typer.Typer(help="The expedited-reporting clock of SUSARs (7 or 15 calendar days).")
app.add_typer(expedited_app, name="expedited")
RSIOption = Annotated[
    Path | None, typer.Option("--rsi", help="reference safety information (TOML; default $SAFETY_MONITOR_RSI)")
]


def _rsi(path: Path | None) -> tuple[dict[str, frozenset[str]], bool]:
    """The reference safety information, and whether one was given."""
    from safety.expedited import RSIError, load_rsi

    chosen = path or (Path(os.environ["SAFETY_MONITOR_RSI"]) if os.environ.get("SAFETY_MONITOR_RSI") else None)
    if chosen is None:
        return {}, False
    try:
        return load_rsi(chosen.read_text(encoding="utf-8")), True
    except OSError as exc:
        raise fail(f"--rsi {chosen}: {exc}") from None
    except RSIError as exc:
        raise fail(f"--rsi {chosen}: {exc}") from None


@expedited_app.callback(invoke_without_command=True)
def expedited_cases_command(
    ctx: typer.Context,
    as_of: AsOfOption = None,
    rsi: RSIOption = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    store: StoreOption = None,
) -> None:
    """List SUSAR cases with their awareness time, due date and status (open, overdue, submitted, closed)."""
    if ctx.invoked_subcommand is not None:
        return
    from projections.expedited import ExpeditedModel, expedited_cases
    from projections.runner import View

    reference, given = _rsi(rsi)
    if not given:
        err.print("no reference safety information (--rsi or SAFETY_MONITOR_RSI): every serious related event is "
                  "taken as unexpected")
    ledger = open_ledger(store)
    _catch_up(ledger, ExpeditedModel())
    cases = expedited_cases(View(ledger.store, ExpeditedModel()).db, reference, _as_of(as_of))
    if format is Format.json:
        typer.echo(json.dumps({"cases": cases}, indent=2, ensure_ascii=False))
        return
    table = Table("case", "patient", "term", "7-day", "aware", "due", "days left", "status")
    for c in cases:
        left = "" if c["status"] in ("submitted", "submitted_late", "closed") else f"{c['days_left']:.1f}"
        table.add_row(c["case"], f"{c['source']}/{c['patient_id']}", c["term"],
                      "yes" if c["fatal_or_life_threatening"] else "", c["aware_at"][:16], c["due_at"][:16], left,
                      c["status"] + (f" ({c['closed_reason']})" if c["closed_reason"] else "")
                      + (f" ({c['days_late']} days late)" if c["days_late"] else "")
                      + (f": {c['submitted']}" if c["submitted"] else ""))
    out_console().print(table)


@expedited_app.command("submit")
def expedited_submit(
    case: Annotated[str, typer.Argument(metavar="CASE", help="the case id (safety-monitor expedited lists them)")],
    by: Annotated[str, typer.Option("--by", help="who submitted the report")],
    on: Annotated[str, typer.Option("--on", help="the date it was submitted, YYYY-MM-DD")],
    authority: Annotated[str, typer.Option("--authority", help="where it went: EMA, MHRA, FDA ...")],
    rsi: RSIOption = None,
    store: StoreOption = None,
) -> None:
    """Record the submission of a case's expedited report (an audited ledger event)."""
    from events.workflow import submit_expedited
    from projections.expedited import ExpeditedModel, expedited_cases
    from projections.runner import View

    ledger = open_ledger(store)
    _catch_up(ledger, ExpeditedModel())
    known = {c["case"]: c for c in expedited_cases(View(ledger.store, ExpeditedModel()).db, _rsi(rsi)[0])}
    if case not in known:
        raise fail(f"no case {case}: list them with safety-monitor expedited")
    try:
        submit_expedited(ledger, case, by, on, authority, aware_at=datetime.fromisoformat(known[case]["aware_at"]))
    except ValueError as exc:
        raise fail(str(exc)) from None
    late = (date.fromisoformat(on) - datetime.fromisoformat(known[case]["due_at"]).date()).days
    typer.echo(json.dumps({"case": case, "status": "submitted_late" if late > 0 else "submitted", "by": by, "on": on,
                           "authority": authority, "days_late": late if late > 0 else None}))


@app.command(name="import-sdtm")
def import_sdtm(
    paths: Annotated[list[str], typer.Argument(help="SDTM datasets (.xpt, .json, .ndjson, gzipped or not) or folders")],
    source: Annotated[str, typer.Option(help="the sponsor or registry the transfer comes from")],
    transfer: Annotated[
        str | None, typer.Option(help="the transfer's label (default: from the files' content, so the same files "
                                      "get the same label)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan (new, corrected, retracted, unchanged "
                                                            "per domain) and write nothing")] = False,
    allow_mass_retraction: Annotated[
        bool, typer.Option("--allow-mass-retraction", help="apply a transfer that retracts more than 20% of a "
                                                           "domain's current records (refused otherwise)")
    ] = False,
    max_mib: Annotated[int, typer.Option(min=1, help="the most one dataset may decompress to, in MiB")] = 2048,
    store: StoreOption = None,
) -> None:
    """Import an SDTM transfer: each record a message, and each later transfer only its differences.

    Prints as its last line {"transfer": ..., "new": n, "corrected": n, "retracted": n, "unchanged": n,
    "quarantined": n, "kept": n, "domains": {...}, "stored": {...}}. Exit 2 when a file is not a whole
    dataset or the transfer is refused (nothing stored changes); otherwise as ingest.
    """
    import re

    from events.sdtm.importer import ImportInterrupted, TransferRefused, import_transfer
    from events.sdtm.readers import DatasetError, read_transfer

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", source):
        raise fail(f"--source {source!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if transfer is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", transfer):
        raise fail(f"--transfer {transfer!r}: use 1-40 letters, digits, '.', '_' or '-'")
    try:
        datasets = read_transfer(paths, max_bytes=max_mib * 2**20)
        ledger = open_ledger(store, create=not dry_run)
        with _progress_steps() as steps:
            summary = import_transfer(
                ledger, datasets, source, transfer, lambda: _transfer_state(ledger, source),
                allow_mass_retraction=allow_mass_retraction, dry_run=dry_run, progress=steps,
                waiting=lambda: err.print("another import into this store is running: waiting for it to finish"))
    except (DatasetError, TransferRefused) as exc:
        err.print(f"refused: {exc}", style="red")
        raise typer.Exit(2) from None
    except ImportInterrupted as exc:
        typer.echo(json.dumps(exc.stored))
        raise fail(store_refused(exc.__cause__ or exc)) from None
    for domain, records in summary.pop("unmapped", {}).items():
        err.print(f"{domain}: {records} records read; this domain is not mapped (docs/sdtm-mapping.md)")
    if not dry_run:
        from projections.transfers import TransfersModel

        _catch_up(ledger, TransfersModel())
    typer.echo(json.dumps(summary))


def _transfer_state(ledger: Any, source: str) -> Any:
    """The transfers read model's answer for ``source``, brought up to date first."""
    from projections.runner import View
    from projections.transfers import TransfersModel, transfer_state

    model = TransfersModel()
    _catch_up(ledger, model)
    return transfer_state(View(ledger.store, model).db, source)


@contextmanager
def _progress_steps() -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    """Progress bars for a service function's steps: each call ends the bar before it, starts its own
    and returns its advance. The display starts with the first step, so work before it (catching up a
    read model, with a bar of its own) is not inside another live display."""
    progress = _progress()
    started = False

    def step(label: str, total: int | None) -> Callable[[int], None]:
        nonlocal started
        if not started:
            progress.start()
            started = True
        for earlier in progress.tasks:
            progress.update(earlier.id, total=earlier.total or 1, completed=earlier.total or 1)
        task = progress.add_task(label, total=None if total is None else max(total, 1))
        return lambda n: progress.advance(task, n)

    try:
        yield step
    finally:
        if started:
            progress.stop()


@app.command(name="efficacy")
def efficacy_command(
    store: StoreOption = None,
    anchor: AnchorOption = "MSC infusion",
    at_week: Annotated[int, typer.Option(help="the week compared with baseline (week 0)")] = 8,
    cut_offs: Annotated[
        str, typer.Option(help="disease-activity cut-off set: 'ACR 2021' or 'Consolaro 2012'")
    ] = "ACR 2021",
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
) -> None:
    """Disease activity per visit (JADAS, cJADAS), ACR-Pedi, the repeat-infusion rule, and paired pre/post tests."""
    from projections.efficacy import EfficacyModel, efficacy
    from projections.runner import View
    from safety.efficacy import CUT_OFF_SETS

    if cut_offs not in CUT_OFF_SETS:
        raise fail(f"--cut-offs {cut_offs!r}: use one of {', '.join(CUT_OFF_SETS)}")
    ledger = open_ledger(store)
    _catch_up(ledger, EfficacyModel())
    answer = efficacy(View(ledger.store, EfficacyModel()).db, anchor=anchor, at_week=at_week, cut_off_set=cut_offs)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if format is ReportFormat.csv:
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["source", "patient_id", "date", "week", "jadas71", "jadas10", "cjadas10", "marker",
                         "state_jadas10", "state_cjadas10", "cut_off_set", "acr_pedi_baseline", "flare"])
        for p in answer["patients"]:
            for v in p["visits"]:
                writer.writerow([p["source"], p["patient_id"], v["date"], v["week"], v["jadas71"], v["jadas10"],
                                 v["cjadas10"], v["marker"], v["state_jadas10"], v["state_cjadas10"],
                                 v["cut_off_set"], v["acr_pedi_baseline"], v["flare"]])
        typer.echo(out.getvalue(), nl=False)
        return
    table = Table("variable", "baseline median (range)", f"week {at_week} median (range)", "n", "p (Wilcoxon)",
                  title=f"Baseline against week {at_week}")
    for variable, c in answer["comparison"][f"week {at_week}"].items():
        table.add_row(variable, f"{c['before_median']:g} ({c['before_range'][0]:g}-{c['before_range'][1]:g})",
                      f"{c['after_median']:g} ({c['after_range'][0]:g}-{c['after_range'][1]:g})", str(c["n"]),
                      "–" if c["p_wilcoxon"] is None else f"{c['p_wilcoxon']:.3f}")
    console = out_console()
    console.print(table)
    from safety.efficacy import WILCOXON_METHOD

    console.print(f"p-values: {WILCOXON_METHOD}")
    decisions = Table("patient", "week", "repeat infusion", "why", title="Repeat-infusion rule")
    for p in answer["patients"]:
        for d in p["repeat_infusion"]:
            decisions.add_row(p["patient_id"], str(d["week"]), "allowed" if d["allowed"] else "no",
                              "; ".join(d["reasons"]))
        for dev in p["deviations"]:
            decisions.add_row(p["patient_id"], dev["date"], "DEVIATION", dev["what"])
    console.print(decisions)


@app.command(name="signals")
def signals_command(
    store: StoreOption = None,
    status: Annotated[str | None, typer.Option(help="open, acknowledged, under_review or closed")] = None,
    patient: Annotated[str | None, typer.Option(help="a patient_id")] = None,
    source: Annotated[str | None, typer.Option(help="a source")] = None,
    kind: Annotated[str | None, typer.Option(help="mas_trend, mas_criteria_2016, ms_score, ...")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="knowledge time (ISO 8601): signals first raised by then, with the status they had then"),
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="with --diff: a MAS or liver rules file (TOML) to compare with the "
                                                  "live rules")
    ] = None,
    diff: Annotated[bool, typer.Option("--diff", help="report what --rules would add, remove or change")] = False,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Safety signals: open first, by level and time, each with its evidence.

    With --rules FILE --diff: evaluate the whole ledger under another rules file and list the signals it
    would add, remove, or raise at another level or time, without touching the live read models."""
    from events.domain import SIGNAL_STATUSES
    from projections.runner import View
    from projections.signals import SignalsModel, query_signals

    if diff or rules is not None:
        if not (diff and rules is not None):
            raise fail("give --rules FILE with --diff")
        _signals_diff(store, rules, format)
        return

    if status is not None and status not in SIGNAL_STATUSES:
        raise fail(f"--status {status!r}: use {', '.join(SIGNAL_STATUSES)}")
    ledger = open_ledger(store)
    model = SignalsModel()
    _catch_up(ledger, model)
    rows = query_signals(View(ledger.store, model).db, status=status, patient=patient, source=source,
                         kind=kind, as_of=_as_of(as_of))
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("id", "patient", "kind", "level", "priority", "status", "occurred_at", "evidence")
    for r in rows:
        evidence = "; ".join(
            f"{e['analyte']} {e['previous']:g}->{e['current']:g} {e['unit']}" if "analyte" in e else e.get("term", "")
            for e in r["evidence"]
        )
        table.add_row(r["id"], f"{r['source']}/{r['patient_id']}", r["kind"], r["level"], r["priority"],
                      r["status"], r["occurred_at"][:16], evidence)
    out_console().print(table)


class GroupBy(StrEnum):
    arm = "arm"
    drug = "drug"


@app.command(name="edish")
def edish_command(
    by: Annotated[GroupBy, typer.Option("--by", help="group patients by arm or by each drug started")] = GroupBy.arm,
    as_of: AsOfOption = None,
    after_first_exposure: Annotated[
        bool, typer.Option("--after-first-exposure", help="peaks after each patient's first exposure only")
    ] = False,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """eDISH: each patient's peak ALT, AST, bilirubin and ALP as multiples of the ULN, the quadrant and
    potential Hy's law (FDA 2009 DILI guidance; thresholds in safety/liver_rules.toml)."""
    from projections.liver import edish_view
    from projections.runner import View
    from projections.signals import SignalsModel

    ledger = open_ledger(store)
    model = SignalsModel()
    _catch_up(ledger, model)
    answer = edish_view(View(ledger.store, model).db, model.liver, by=by.value, as_of=_as_of(as_of),
                        after_first_exposure=after_first_exposure)
    columns = ["source", "patient_id", "group", "peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln",
               "peak_alp_xuln", "quadrant", "potential_hys_law", "reason"]
    _rows_out(answer, answer["patients"], columns, format, f"eDISH by {by.value} ({answer['rules_version']})")


def _rows_out(answer: dict[str, Any], rows: list[dict[str, Any]], columns: list[str], format: ReportFormat,
              title: str) -> None:
    """An answer as JSON (whole), CSV (its rows) or a table (its rows)."""
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    elif format is ReportFormat.csv:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r[c] for c in columns} for r in rows)
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*("" if r[c] is None else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])
                            for c in columns))
        out_console().print(table)


@app.command(name="lab-shifts")
def lab_shifts_command(
    by: Annotated[GroupBy, typer.Option("--by", help="group patients by arm or by each drug started")] = GroupBy.arm,
    as_of: AsOfOption = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """CTCAE v5.0 shift tables: patients by baseline grade and worst post-baseline grade, per test and group."""
    from projections.liver import lab_shifts
    from projections.runner import View
    from projections.signals import SignalsModel

    ledger = open_ledger(store)
    model = SignalsModel()
    _catch_up(ledger, model)
    answer = lab_shifts(View(ledger.store, model).db, by=by.value, as_of=_as_of(as_of))
    columns = ["test", "term", "group", "baseline_grade", "worst_grade", "patients"]
    _rows_out(answer, answer["rows"], columns, format,
              f"{answer['version']} shifts by {by.value} (baseline: {answer['baseline']})")


class TableBy(StrEnum):
    arm = "arm"
    drug = "drug"
    drug_class = "drug_class"


def ae_table_answer(ledger: Any, by: str, control: str | None, lag_days: int | None, min_percent: float,
                    as_of: str | None, data_cut: str | None) -> dict[str, Any]:
    """The treatment-emergent adverse-event tables, with the read model brought up to date first."""
    from projections.exposure import ExposureModel, Settings, ae_tables
    from projections.runner import View

    model = ExposureModel()
    _catch_up(ledger, model)
    settings = Settings(by, control, lag_days, min_percent, _data_cut(data_cut))
    try:
        return ae_tables(View(ledger.store, model).db, settings, _as_of(as_of))
    except ValueError as exc:
        raise fail(str(exc)) from None


@app.command(name="ae-table")
def ae_table_command(
    by: Annotated[TableBy, typer.Option("--by", help="groups: the (actual) arm, each drug, or each drug class "
                                                     "a subject was exposed to")] = TableBy.arm,
    control: Annotated[str | None, typer.Option(help="the control group of the comparisons (default: the one "
                                                     "group named like placebo, if any)")] = None,
    lag_days: Annotated[int | None, typer.Option(min=0, max=3650, help="days after the last exposure that still "
                                                 "count (by arm default: no upper bound; by drug: 30)")] = None,
    min_percent: Annotated[float, typer.Option(min=0, max=100, help="show terms reaching this percentage of "
                                                                   "subjects in at least one group")] = 0.0,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """Treatment-emergent adverse events by arm or drug: subject incidence, exposure-adjusted rates
    (Garwood intervals) and comparisons with the control (Miettinen-Nurminen, exact conditional)."""
    from projections.report import ae_rows

    answer = ae_table_answer(open_ledger(store), by.value, control, lag_days, min_percent, as_of, data_cut)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    rows = ae_rows(answer, compact=format is ReportFormat.table)
    columns = list(rows[0]) if rows else ["level", "soc", "row"]
    _rows_out(answer, rows, columns, format,
              f"Treatment-emergent adverse events by {by.value} (fingerprint {answer['fingerprint']}; "
              f"control {answer['control'] or 'none'})")


def _signals_diff(store: str | None, rules: Path, format: Format) -> None:
    import tomllib

    from projections.runner import View
    from projections.signals import SignalsModel, diff_rules, load_config
    from safety.liver import load_liver_config

    try:
        text = rules.read_text(encoding="utf-8")
        parsed = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"--rules {rules}: {exc}") from None
    model = SignalsModel()
    try:
        if "hys_law" in parsed:
            config, liver = model.config, load_liver_config(text)
        elif "rules" in parsed:
            config, liver = load_config(text), model.liver
        else:
            raise fail(f"--rules {rules}: neither MAS rules ([rules]) nor liver rules ([hys_law])")
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"--rules {rules}: {exc}: compare with safety/mas_rules.toml or safety/liver_rules.toml") from None
    ledger = open_ledger(store)
    _catch_up(ledger, model)
    answer = diff_rules(View(ledger.store, model).db, config, liver)
    if format is Format.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    table = Table("change", "id", "patient", "kind", "live", "with --rules",
                  title=f"{rules.name}: {answer['unchanged']} signals unchanged")
    for change in ("added", "removed", "changed"):
        for r in answer[change]:
            shown = ["" if r[k] is None else f"{r[k]['level']} {r[k]['occurred_at'][:10]}" for k in ("live", "other")]
            table.add_row(change, r["id"], f"{r['source']}/{r['patient_id']}", r["kind"], *shown)
    out_console().print(table)


class SignalAction(StrEnum):
    ack = "ack"
    review = "review"
    close = "close"


@app.command()
def signal(
    action: Annotated[SignalAction, typer.Argument(help="ack, review or close")],
    signal_id: Annotated[str, typer.Argument(metavar="ID", help="the signal's id")],
    by: Annotated[str, typer.Option("--by", help="who acts (recorded in the audit trail)")],
    note: Annotated[str, typer.Option(help="what was seen or decided")] = "",
    reason: Annotated[str | None, typer.Option(help="for close: confirmed MAS, not MAS, duplicate, other")] = None,
    store: StoreOption = None,
) -> None:
    """Acknowledge, review or close a signal; recorded as an event with the user and the note."""
    from events.workflow import act_on_signal
    from projections.runner import View
    from projections.signals import SignalsModel, query_signals

    ledger = open_ledger(store)
    model = SignalsModel()
    _catch_up(ledger, model)
    if not query_signals(View(ledger.store, model).db, signal_id=signal_id):
        raise fail(f"no signal with id {signal_id}: list them with safety-monitor signals")
    try:
        status = act_on_signal(ledger, signal_id, action.value, by, note, reason)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _catch_up(ledger, model)
    typer.echo(json.dumps({"id": signal_id, "status": status, "by": by}))


@app.command()
def project(
    store: StoreOption = None,
    follow: Annotated[bool, typer.Option("--follow", help="keep following new events until stopped")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls when idle")] = 0.02,
    with_notify: Annotated[
        bool, typer.Option("--notify", help="with --follow, also send notifications (as notify --follow does)")
    ] = False,
) -> None:
    """Bring the read models up to date; with --follow, keep them so (polling).

    A read model that stopped on an event it could not apply is tried again here (not by --follow,
    which leaves it stopped and keeps the others current); exit 1 if one is still stopped."""
    from projections.runner import Projector

    ledger = open_ledger(store)
    if not follow:
        if _catch_up(ledger, *read_models(), retry=True, required=False):
            raise typer.Exit(1)
        return
    projectors = [Projector(ledger, model) for model in read_models()]
    send = _notifier(ledger, all_pending=False) if with_notify else None
    stopping = _stop_flag()
    err.print("following the ledger; Ctrl+C or SIGTERM stops")
    last_sent = 0.0
    while not stopping():
        busy = sum(p.catch_up() for p in projectors)
        if send is not None and (busy or time_module.monotonic() - last_sent > 5):  # retries come due when idle
            counts = send(None)
            last_sent = time_module.monotonic()
            if counts.sent or counts.failed:
                err.print(f"notify: {json.dumps(counts.as_dict())}")
        if not busy:
            time_module.sleep(interval)


def _notifier(ledger: Any, *, all_pending: bool, delivery_timeout: float = 10.0) -> Callable[..., Any]:
    """A notify round over the ledger's signals, by the channels the environment configures: each call
    sends what is due (every pending delivery with ``all_pending``, else those past their back-off)."""
    from projections.delivery import Deliveries, notify_once
    from projections.runner import View
    from projections.signals import SignalsModel

    transports = _transports(delivery_timeout)
    if not transports:
        raise fail("no channel configured: set SAFETY_MONITOR_SMTP_URL (with _NOTIFY_FROM and _NOTIFY_TO) or "
                   "SAFETY_MONITOR_WEBHOOK_URL")
    deliveries, signals_db = Deliveries(ledger.store), View(ledger.store, SignalsModel()).db
    board_url = os.environ.get("SAFETY_MONITOR_BOARD_URL")
    def send(deadline: float | None = None) -> Any:
        return notify_once(deliveries, signals_db, transports, board_url, all_pending=all_pending, deadline=deadline)

    return send


@app.command()
def generate(
    patients: Annotated[int, typer.Option(min=1, help="number of patients")] = 1000,
    years: Annotated[float, typer.Option(min=0.1, max=20, help="years of follow-up")] = 3.0,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same bytes")] = 1,
    sources: Annotated[int, typer.Option(min=1, max=100, help="number of registries")] = 1,
    truth: Annotated[Path | None, typer.Option(help="write the known MAS trajectories here (JSON)")] = None,
) -> None:
    """Write a deterministic synthetic registry feed (contract v1, NDJSON) to standard output."""
    from events.generator import Truth
    from events.generator import generate as lines

    known = Truth()
    out = sys.stdout
    for line in lines(patients, years, seed, sources, truth=known):
        out.write(line + "\n")
    out.flush()
    if truth is not None:
        truth.write_text(json.dumps({"mas": known.mas}, indent=1))
    err.print(f"{patients} patients over {years:g} years; {len(known.mas)} evolving-MAS trajectories")


BootstrapOption = Annotated[str, typer.Option("--bootstrap", help="Kafka bootstrap server HOST:PORT")]
TopicOption = Annotated[str, typer.Option("--topic", help="the feed topic")]


@app.command()
def consume(
    bootstrap: BootstrapOption,
    topic: TopicOption = "pv.events",
    group: Annotated[str | None, typer.Option(help="consumer group, to share partitions between consumers")] = None,
    dlq_topic: Annotated[str | None, typer.Option(help="dead-letter topic (default: TOPIC.dlq)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=20000, help="records per poll and transaction")] = 500,
    batch_mib: Annotated[
        float, typer.Option(min=0.001, help="at most this many MiB of messages per transaction (and in memory "
                            "per batch)")
    ] = 4.0,
    poll_timeout: Annotated[int, typer.Option(min=1, help="poll timeout in milliseconds")] = 200,
    with_projections: Annotated[bool, typer.Option("--project", help="also keep the read models up to date")] = False,
    parsers: Annotated[
        int, typer.Option(min=0, max=16, help="parser processes: a backlog is parsed there while this one stores "
                          "(one is as fast as two on two cores and leaves a core free: BENCHMARKS.md)")
    ] = 1,
    source: Annotated[
        str | None,
        typer.Option(help="the registry this topic belongs to: other sources are quarantined as unauthorised"),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Consume the registry feed from Kafka into the ledger, exactly once; stops cleanly on SIGINT/SIGTERM."""
    import logging

    stopping = _stop_flag()  # first: a stop asked for during start-up is honoured too
    from events.kafka import FeedConsumer, UndecodableBatch
    from projections.runner import Projector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ledger = open_ledger(store, create=True)
    after = None
    if with_projections:
        projectors = [Projector(ledger, model) for model in read_models()]

        def after() -> None:
            for p in projectors:
                p.catch_up()

    feed = FeedConsumer(ledger, bootstrap, topic=topic, group=group, dlq_topic=dlq_topic,
                        batch_size=batch_size, batch_bytes=int(batch_mib * (1 << 20)), poll_timeout_ms=poll_timeout,
                        client=_kafka_client(),
                        after_batch=after, source=source, parsers=parsers)
    err.print(f"consuming {topic} from {bootstrap} into {ledger.store.display()}")
    try:
        stats = feed.run(stopping)
    except UndecodableBatch as exc:  # noted for status and Feed health; a restart resumes at the offset
        raise fail(str(exc)) from None
    typer.echo(json.dumps({**stats.counts.as_dict(), "dead_letters": stats.dead_letters,
                           "reconnects": stats.reconnects}))


@app.command()
def publish(
    paths: Annotated[list[str], typer.Argument(help="NDJSON files; - reads standard input")],
    bootstrap: BootstrapOption,
    topic: TopicOption = "pv.events",
    compression: Annotated[
        str, typer.Option(help="none, gzip, snappy, lz4 or zstd (lz4 and zstd are the usual production choice)")
    ] = "none",
) -> None:
    """Validate NDJSON messages and publish the valid ones, keyed source/patient_id (acks=all, idempotent)."""
    from events.files import read_ndjson
    from events.kafka import COMPRESSION_TYPES
    from events.kafka import publish as send

    if compression not in COMPRESSION_TYPES:
        raise fail(f"--compression {compression!r}: use one of {', '.join(COMPRESSION_TYPES)}")

    total_sent, invalid = 0, []
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise fail(f"no such file: {path}")
        result = send(read_ndjson(path), bootstrap, topic, client=_kafka_client(), compression=compression)
        total_sent += result.sent
        invalid += result.invalid
    for position, reason in invalid:
        err.print(f"not sent: {position.get('file')}:{position.get('line')}: {reason}")
    typer.echo(json.dumps({"sent": total_sent, "invalid": len(invalid)}))


@app.command()
def status(
    store: StoreOption = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap", help="also ask the broker for lag")] = None,
    topic: TopicOption = "pv.events",
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Feed status: per-partition offsets and lag, last message time, counts per source, dead letters
    waiting to be sent, and each read model's position (and stop, if it stopped)."""
    from events.kafka import TRACKING_PREFIX, partition_lag

    ledger = open_ledger(store)
    stored = ledger.tables.tracking_positions(TRACKING_PREFIX)
    if bootstrap:
        partitions = partition_lag(bootstrap, topic, stored, client=_kafka_client())
    else:
        partitions = [{"tracking": name, "offset": offset} for name, offset in sorted(stored.items())]
    sources = ledger.tables.feed_counts()
    from projections.runner import read_model_dbs, read_model_states

    answer = {
        "store": ledger.store.display(),
        "ledger_position": ledger.position(),
        "partitions": partitions,
        "last_message_at": max((s["last_message_at"] for s in sources), default=None),
        "sources": sources,
        # quarantined from the topic, committed, not yet on its dead-letter topic (sent at the next start)
        "dead_letters_waiting": len(ledger.tables.undelivered_dead_letters(topic)),
        # each read model's position against the ledger's, and where and why it stopped, if it did
        "read_models": read_model_states(read_model_dbs(ledger.store, read_models()), ledger.position()),
        # record batches a consumer stopped at because it could not decode them (open: not yet got past)
        "feed_faults": ledger.tables.feed_faults(),
    }
    if format is Format.json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out_console().print_json(json.dumps(answer))


def _transports(timeout: float = 10.0) -> list[Any]:
    """The channels configured by environment (SAFETY_MONITOR_SMTP_URL ..., SAFETY_MONITOR_WEBHOOK_URL ...)."""
    from projections.transports import MailTransport, WebhookTransport
    from safety.notifications import smtp_settings

    out: list[Any] = []
    smtp = os.environ.get("SAFETY_MONITOR_SMTP_URL")
    if smtp:
        recipients = [a.strip() for a in os.environ.get("SAFETY_MONITOR_NOTIFY_TO", "").split(",") if a.strip()]
        sender = os.environ.get("SAFETY_MONITOR_NOTIFY_FROM")
        if not recipients or not sender:
            raise fail("SAFETY_MONITOR_SMTP_URL is set: set SAFETY_MONITOR_NOTIFY_FROM and SAFETY_MONITOR_NOTIFY_TO "
                       "(comma-separated) too")
        try:
            out.append(MailTransport(smtp_settings(smtp), sender, recipients, timeout=timeout))
        except ValueError as exc:
            raise fail(str(exc)) from None
    webhook = os.environ.get("SAFETY_MONITOR_WEBHOOK_URL")
    if webhook:
        if not webhook.startswith(("http://", "https://")):
            raise fail(f"SAFETY_MONITOR_WEBHOOK_URL {webhook!r}: use an http:// or https:// URL")
        out.append(WebhookTransport(webhook, os.environ.get("SAFETY_MONITOR_WEBHOOK_SECRET"), timeout=timeout))
    return out


@app.command()
def notify(
    once: Annotated[bool, typer.Option("--once", help="send what is due and exit")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="keep sending as signals arrive, until stopped")] = False,
    interval: Annotated[float, typer.Option(help="seconds between rounds with --follow")] = 5.0,
    delivery_timeout: Annotated[
        float, typer.Option(min=0.5, max=300, help="seconds one mail or webhook call may take")] = 10.0,
    timeout: Annotated[float, typer.Option(min=1, help="seconds one round may take in all; the rest stays "
                                                       "pending for the next")] = 120.0,
    store: StoreOption = None,
) -> None:
    """Send each new signal at warning or alert (and each rise to such a level) once by mail and once by webhook.

    Channels by environment: SAFETY_MONITOR_SMTP_URL, _NOTIFY_FROM, _NOTIFY_TO; SAFETY_MONITOR_WEBHOOK_URL,
    _WEBHOOK_SECRET; SAFETY_MONITOR_BOARD_URL for the links. Prints as its last line
    {"sent": n, "failed": n, "pending": n} (a mail and a webhook call count one each). With --once, exit 3
    when a delivery failed or was left untried in this run (each failure printed on standard error).
    """
    from projections.delivery import RunCounts
    from projections.signals import SignalsModel

    if once == follow:
        raise fail("give --once or --follow")
    ledger = open_ledger(store)
    send = _notifier(ledger, all_pending=once, delivery_timeout=delivery_timeout)
    stopping = _stop_flag()
    total = RunCounts()
    while True:
        _catch_up(ledger, SignalsModel(), required=False)
        counts = send(time_module.monotonic() + timeout)
        total.add(counts)
        for failure in counts.failures:
            err.print(f"delivery failed: {failure}", style="red")
        if counts.untried:
            err.print(f"{counts.untried} deliveries not tried: the round's --timeout of {timeout:g} s ran "
                      "out; they stay pending", style="red")
        if once or stopping():
            break
        if counts.sent or counts.failed:
            err.print(json.dumps(counts.as_dict()))
        slept = 0.0
        while slept < interval and not stopping():
            time_module.sleep(0.1)
            slept += 0.1
        if stopping():
            break
    typer.echo(json.dumps(total.as_dict()))
    if once and (total.failed or total.untried):
        raise typer.Exit(3)


def _kafka_client() -> dict[str, Any]:
    """SASL settings from the environment (SAFETY_MONITOR_KAFKA_USER / _PASSWORD), if any."""
    user = os.environ.get("SAFETY_MONITOR_KAFKA_USER")
    if not user:
        return {}
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user, "sasl_plain_password": os.environ.get("SAFETY_MONITOR_KAFKA_PASSWORD", "")}


def _stop_flag() -> Any:
    flag = {"stop": False}

    def handler(*_: Any) -> None:
        flag["stop"] = True

    signals.signal(signals.SIGINT, handler)
    signals.signal(signals.SIGTERM, handler)
    return lambda: flag["stop"]


@app.command()
def rekey(
    to: Annotated[str, typer.Option("--to", help="URL of a new, empty store for the copy")],
    new_key_file: Annotated[
        Path | None, typer.Option(help="file with the new key (base64 of 16, 24 or 32 random bytes)")
    ] = None,
    no_key: Annotated[bool, typer.Option("--no-key", help="store the copy without encryption")] = False,
    store: StoreOption = None,
) -> None:
    """Rotate the encryption key: copy the ledger into a new store sealed with the new key.

    The current key comes from SAFETY_MONITOR_CIPHER_KEY or SAFETY_MONITOR_CIPHER_KEY_FILE.
    """
    import base64

    from events.ledger import Ledger
    from events.rekey import copy_ledger
    from events.sealing import KEY_FILE_ENV, Sealer
    from events.store import Store, StoreURLError

    if (new_key_file is None) == (not no_key):
        raise fail("give either --new-key-file FILE or --no-key")
    new_key = None
    if new_key_file is not None:
        try:
            new_key = base64.b64decode(new_key_file.read_text().strip(), validate=True)
        except (OSError, ValueError) as exc:
            raise fail(f"--new-key-file: {exc}") from None
        if len(new_key) not in (16, 24, 32):
            raise fail("--new-key-file: use 16, 24 or 32 random bytes, base64-encoded")
    old = open_ledger(store)
    try:
        target = Ledger(Store.parse(to), seal=Sealer(new_key))
    except StoreURLError as exc:
        raise fail(str(exc)) from None
    with _progress() as progress:
        task = progress.add_task("rekey", total=max(old.position(), 1))
        try:
            copied = copy_ledger(old, target, on_page=lambda n: progress.advance(task, n))
        except ValueError as exc:
            raise fail(str(exc)) from None
    setting = f"{KEY_FILE_ENV}={new_key_file}" if new_key_file else "with no key set,"
    err.print(f"copied {copied} events into {target.store.display()}; now build its read models: "
              f"{setting} safety-monitor rebuild --store {to}")


@app.command()
def rebuild(store: StoreOption = None) -> None:
    """Replay every read model from the start of the ledger."""
    from projections.runner import ReadModelStopped

    ledger = open_ledger(store)
    stopped = False
    for model in read_models():
        projector = _projector(ledger, model)
        with _progress() as progress:
            task = progress.add_task(f"rebuild {model.name}", total=max(ledger.position(), 1))
            n = projector.rebuild(lambda k, _pos, t=task: progress.advance(t, k))
        err.print(f"{model.name}: {n} events replayed")
        stop = projector.view.stopped()
        if stop is not None:
            stopped = True
            err.print(f"error: {ReadModelStopped(stop)}", style="red")
    if stopped:
        raise typer.Exit(1)


def _run_board(store_url: str, port: int) -> None:
    """Start the board and a projector that keeps its read models up to date; stop both together."""
    script = Path(str(resources.files("dashboard") / "app.py"))
    root = Path(str(resources.files("dashboard"))).parent
    env = {**os.environ, "SAFETY_MONITOR_STORE": store_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    # the board's follower also notifies when a channel is configured (SAFETY_MONITOR_SMTP_URL, _WEBHOOK_URL)
    notifying = ["--notify"] if os.environ.get("SAFETY_MONITOR_SMTP_URL") or os.environ.get(
        "SAFETY_MONITOR_WEBHOOK_URL") else []
    follower = subprocess.Popen(
        [sys.executable, "-m", "safety.cli", "project", "--follow", *notifying, "--store", store_url], env=env)
    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop, a service manager) stops the board like Ctrl+C

    signals.signal(signals.SIGTERM, stop)
    err.print(f"board at http://localhost:{port}  (Ctrl+C stops it)")
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
    ]
    try:
        code = subprocess.call(command, env=env)  # kills the board if interrupted
    except KeyboardInterrupt:
        code = 0
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    raise typer.Exit(code)


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
