"""The command line's one wiring place (cosmicpython's bootstrap): opening the store and the ledger, the
read models and bringing them up to date, the notification channels, progress, the consoles, and the
options every command shares. No command builds any of these on its own.
"""

from __future__ import annotations

import os
import signal as signals  # not `signal`: the workflow module has a command of that name
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

#: standard error, with Rich markup off: paths, labels and reasons are the user's text, printed as written
#: (with markup on, "[[product]]" lost its brackets and a path holding "[/bold]" crashed: issue 23)
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def out_console() -> Console:
    """Standard output: the terminal's width, or wide enough not to fold tables in a pipe or a file; markup
    off, as on standard error (table cells hold the sender's text)."""
    console = Console(markup=False, highlight=False)
    return console if console.is_terminal else Console(width=200, markup=False, highlight=False)


# --- options every command shares ------------------------------------------------------------------------

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST:PORT/DB "
        "(default: $SAFETY_MONITOR_STORE, else ./safety-monitor-data/ledger.db)",
    ),
]
AnchorOption = Annotated[str, typer.Option(help="intervention name that anchors the windows")]
PreOption = Annotated[int, typer.Option(min=1, max=120, help="months before the anchor")]
PostOption = Annotated[int, typer.Option(min=1, max=120, help="months from the anchor")]
AsOfOption = Annotated[
    str | None, typer.Option(help="knowledge time (ISO 8601; UTC when no offset): what the ledger had recorded then")
]
DataCutOption = Annotated[str | None, typer.Option(help="clinical data cut YYYY-MM-DD: events that occurred by then")]
RSIOption = Annotated[
    Path | None, typer.Option("--rsi", help="reference safety information (TOML; default $SAFETY_MONITOR_RSI)")
]
BootstrapOption = Annotated[str, typer.Option("--bootstrap", help="Kafka bootstrap server HOST:PORT")]
TopicOption = Annotated[str, typer.Option("--topic", help="the feed topic")]


class Format(StrEnum):
    json = "json"
    table = "table"


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"
    table = "table"


# --- failures ---------------------------------------------------------------------------------------------


def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import psycopg
    from eventsourcing.persistence import PersistenceError

    return (PersistenceError, sqlite3.Error, psycopg.Error, OSError)


STORE_ERRORS = _store_errors()


def store_refused(exc: BaseException) -> str:
    """What to tell a person when the store refused a batch (the transaction rolled back whole)."""
    text = str(exc)
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


# --- the store, the ledger, the read models ----------------------------------------------------------------

#: messages per transaction of ``ingest``: each commit waits for the disk (an fsync), and at 2000 those
#: waits left a core idle; 5000 made ingesting 200,000 messages 8% faster for 15 MB more memory
#: (BENCHMARKS.md, "File ingest")
FILE_BATCH_SIZE = 5000

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


#: the surveillance plan the live signals read model and the surveillance command read by default
PLAN_ENV = "SAFETY_MONITOR_SURVEILLANCE"


def surveillance_plan() -> str | None:
    """The text of the plan named by $SAFETY_MONITOR_SURVEILLANCE (None when unset), checked: a plan that
    cannot be used stops the command with the field named, before anything is projected."""
    from safety.rules_file import RulesError
    from safety.surveillance import load_plan

    name = os.environ.get(PLAN_ENV)
    if not name:
        return None
    try:
        text = Path(name).read_text(encoding="utf-8")
        load_plan(text)
    except (OSError, UnicodeDecodeError, RulesError) as exc:
        raise fail(f"${PLAN_ENV} ({name}): {exc}; fix the plan or unset {PLAN_ENV} "
                   "(docs/signal-detection.md)") from None
    return text


def signals_model() -> Any:
    """The signals read model as it is projected: with the live surveillance plan, so every process that
    brings it up to date derives the same registry-wide signals."""
    from projections.signals import SignalsModel

    return SignalsModel(surveillance_plan=surveillance_plan())


def report_sources(ledger: Any) -> Any:
    """What the DSMB report reads: every read model it needs, brought up to date, and the rules in force."""
    from projections.dsmb import ReportSources
    from projections.dsmb.content import rules_in_force
    from projections.efficacy import EfficacyModel
    from projections.exposure import ExposureModel
    from projections.incidence import IncidenceModel
    from projections.transfers import TransfersModel
    from projections.view import View

    signals = signals_model()
    models = (IncidenceModel(), ExposureModel(), signals, EfficacyModel(), TransfersModel())
    catch_up(ledger, *models)
    incidence, exposure, signals_db, efficacy, transfers = (View(ledger.store, m).db for m in models)
    rules = rules_in_force(signals.config.version, signals.liver.version, signals.live.rules.version)
    return ReportSources(incidence, exposure, signals_db, efficacy, transfers, signals.liver, rules)


def project_worker(store_url: str, follow: bool, lease_seconds: float, interval: float) -> None:
    """One worker process of ``project --workers N`` (the target of each process it starts)."""
    from projections.workers import run_worker

    run_worker(open_ledger(store_url), read_models(), follow=follow, lease_seconds=lease_seconds,
               interval=interval, stopping=stop_flag())


def project_in_workers(ledger: Any, workers: int, segments: int, lease_seconds: float, follow: bool,
                       interval: float) -> list[Any]:
    """Partition the store's projections (PostgreSQL; once) and project them in ``workers`` local worker
    processes, which share the segments with any other machine's; without ``follow``, once they are done,
    catch up here whatever a worker left (one killed meanwhile). The stops that remain."""
    import multiprocessing
    import time as time_module

    from projections.db import ReadDB
    from projections.partitions import Partitions

    if ledger.store.kind != "postgresql":
        raise ValueError(f"--workers {workers}: SQLite projects in one process (its writes are serialised); "
                         "run `safety-monitor project` without --workers, or use PostgreSQL")
    from projections.runner import read_model_dbs

    dbs = read_model_dbs(ledger.store, read_models())  # the tables, made once here: workers racing would collide
    count = Partitions(ReadDB(ledger.store)).enable(segments, list(dbs), ledger.name)
    err.print(f"{workers} worker process{'es' if workers > 1 else ''} over {count} segments"
              + ("; Ctrl+C or SIGTERM stops" if follow else ""))
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=project_worker, args=(ledger.store.url, follow, lease_seconds, interval),
                               name=f"projection-worker-{i}") for i in range(workers)]
    for p in processes:
        p.start()
    stopping = stop_flag()
    try:
        while any(p.is_alive() for p in processes):
            if stopping():
                for p in processes:
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signals.SIGTERM)
            time_module.sleep(0.2)
    finally:
        for p in processes:
            p.join()
    return catch_up(ledger, *read_models(), retry=True, required=False)


def read_models() -> list[Any]:
    """Every read model, in the order they are brought up to date and rebuilt."""
    from projections.audit import AuditModel
    from projections.efficacy import EfficacyModel
    from projections.expedited import ExpeditedModel
    from projections.exposure import ExposureModel
    from projections.incidence import IncidenceModel
    from projections.transfers import TransfersModel

    return [IncidenceModel(), signals_model(), AuditModel(), EfficacyModel(), TransfersModel(), ExpeditedModel(),
            ExposureModel()]


def catch_up(ledger: Any, *models: Any, retry: bool = False, required: bool = True) -> list[Any]:
    """Bring read models up to date, with a progress bar each (``projections.runner.catch_up``); when the
    answer needs them (``required``), a stopped one fails the command with its position and reason,
    since its answers would silently miss events."""
    from projections.runner import catch_up as project
    from projections.view import ReadModelStopped

    with progress_steps() as steps:
        stops = project(ledger, models, retry=retry, step=steps)
    for stop in stops:
        if not required:
            err.print(f"error: {ReadModelStopped(stop)}", style="red")
    if stops and required:
        raise fail("; ".join(str(ReadModelStopped(stop)) for stop in stops))
    return stops


def view_db(ledger: Any, model: Any) -> Any:
    """The database of a read model (brought up to date first), for a question's answer."""
    from projections.view import View

    catch_up(ledger, model)
    return View(ledger.store, model).db


def transfer_state(ledger: Any, source: str) -> Any:
    """The transfers read model's answer for ``source``, brought up to date first."""
    from projections.transfers import TransfersModel
    from projections.transfers import transfer_state as state

    return state(view_db(ledger, TransfersModel()), source)


# --- inputs shared by several commands ----------------------------------------------------------------------


def as_of_time(value: str | None) -> datetime | None:
    """``--as-of``: a knowledge time (ISO 8601, UTC when no offset)."""
    if value is None:
        return None
    from events.contract_models import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise fail(f"--as-of: {exc}") from None


def data_cut_time(value: str | None) -> datetime | None:
    """``--data-cut``: a clinical data cut DATE, everything that occurred on or before that day."""
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


def reference_safety_information(path: Path | None) -> tuple[dict[str, frozenset[str]], bool]:
    """The reference safety information (``--rsi`` or SAFETY_MONITOR_RSI), and whether one was given."""
    from safety.expedited import RSIError, load_rsi

    chosen = path or (Path(os.environ["SAFETY_MONITOR_RSI"]) if os.environ.get("SAFETY_MONITOR_RSI") else None)
    if chosen is None:
        return {}, False
    try:
        return load_rsi(chosen.read_text(encoding="utf-8")), True
    except (OSError, UnicodeDecodeError, RSIError) as exc:
        raise fail(f"--rsi {chosen}: {exc}") from None


def kafka_client() -> dict[str, Any]:
    """SASL settings from the environment (SAFETY_MONITOR_KAFKA_USER / _PASSWORD), if any."""
    user = os.environ.get("SAFETY_MONITOR_KAFKA_USER")
    if not user:
        return {}
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user, "sasl_plain_password": os.environ.get("SAFETY_MONITOR_KAFKA_PASSWORD", "")}


def transports(timeout: float = 10.0) -> list[Any]:
    """The notification channels configured by environment (SAFETY_MONITOR_SMTP_URL ...,
    SAFETY_MONITOR_WEBHOOK_URL ...)."""
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


def notifier(ledger: Any, *, all_pending: bool, delivery_timeout: float = 10.0) -> Callable[..., Any]:
    """A notify round over the ledger's signals, by the configured channels: each call sends what is due
    (every pending delivery with ``all_pending``, else those past their back-off), until its deadline."""
    from projections.delivery import Deliveries, notify_once
    from projections.view import View

    channels = transports(delivery_timeout)
    if not channels:
        raise fail("no channel configured: set SAFETY_MONITOR_SMTP_URL (with _NOTIFY_FROM and _NOTIFY_TO) or "
                   "SAFETY_MONITOR_WEBHOOK_URL")
    deliveries, signals_db = Deliveries(ledger.store), View(ledger.store, signals_model()).db
    board_url = os.environ.get("SAFETY_MONITOR_BOARD_URL")

    def send(deadline: float | None = None) -> Any:
        return notify_once(deliveries, signals_db, channels, board_url, all_pending=all_pending, deadline=deadline)

    return send


# --- long work and stopping -------------------------------------------------------------------------------


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


@contextmanager
def progress_steps() -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    """Progress bars for a service function's steps: each call ends the bar before it, starts its own
    and returns its advance. The display starts with the first step, so work before it (catching up a
    read model, with a bar of its own) is not inside another live display."""
    progress = progress_bar()
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


def stop_flag() -> Callable[[], bool]:
    """True once SIGINT or SIGTERM arrived (long-running commands stop cleanly at their next step)."""
    flag = {"stop": False}

    def handler(*_: Any) -> None:
        flag["stop"] = True

    signals.signal(signals.SIGINT, handler)
    signals.signal(signals.SIGTERM, handler)
    return lambda: flag["stop"]


# --- packaged data ------------------------------------------------------------------------------------------


def demo_feed_path() -> Path:
    return Path(str(resources.files("events") / "demo" / "seed-study.ndjson"))


def pilot_path() -> Path:
    """The CDISC pilot study's SDTM datasets, as shipped (events/sdtm/pilot)."""
    return Path(str(resources.files("events") / "sdtm" / "pilot"))
