"""Operations: running the monitor (read models, keys, notifications, the demo and the board, the
contract's schema)."""

from __future__ import annotations

import json
import os
import signal as signals  # not `signal`: a command of the workflow family
import subprocess
import sys
import time as time_module
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from events.replay import in_clinical_order, replay_messages
from safety.cli.wiring import (
    StoreOption,
    catch_up,
    demo_feed_path,
    err,
    fail,
    notifier,
    open_ledger,
    pilot_path,
    progress_bar,
    progress_steps,
    project_in_workers,
    read_models,
    signals_model,
    stop_flag,
    transfer_state,
)


def project(
    store: StoreOption = None,
    follow: Annotated[bool, typer.Option("--follow", help="keep following new events until stopped")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls when idle")] = 0.02,
    with_notify: Annotated[
        bool, typer.Option("--notify", help="with --follow, also send notifications (as notify --follow does)")
    ] = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help="PostgreSQL: project in N worker "
                                                "processes over the store's segments; the same command on another "
                                                "machine joins them")] = None,
    segments: Annotated[int, typer.Option("--segments", min=1, max=1024, help="with --workers, the first time: "
                                          "how many segments the streams are split into (fixed after)")] = 16,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", min=1, max=600, help="with --workers: how long "
                                                 "a worker's claim on a segment lasts unless renewed")] = 15.0,
) -> None:
    """Bring the read models up to date; with --follow, keep them so (polling).

    A read model that stopped on an event it could not apply is tried again here (not by --follow,
    which leaves it stopped and keeps the others current); exit 1 if one is still stopped. With
    --workers N (PostgreSQL), N processes share the store's segments (docs/operations.md)."""
    from projections.runner import Projector

    ledger = open_ledger(store)
    if workers is not None:
        from projections.view import ReadModelStopped

        try:
            stops = project_in_workers(ledger, workers, segments, lease_seconds, follow, interval)
        except ValueError as exc:
            raise fail(str(exc)) from None
        for stop in stops:
            err.print(f"error: {ReadModelStopped(stop)}", style="red")
        if stops:
            raise typer.Exit(1)
        return
    if not follow:
        if catch_up(ledger, *read_models(), retry=True, required=False):
            raise typer.Exit(1)
        return
    projectors = [Projector(ledger, model) for model in read_models()]
    send = notifier(ledger, all_pending=False) if with_notify else None
    stopping = stop_flag()
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


def rebuild(store: StoreOption = None) -> None:
    """Replay every read model from the start of the ledger."""
    from projections.runner import Projector
    from projections.view import ReadModelStopped

    ledger = open_ledger(store)
    stopped = False
    for model in read_models():
        projector = Projector(ledger, model)
        with progress_steps() as steps:
            advance = steps(f"rebuild {model.name}", ledger.position())

            def on_page(k: int, _pos: int, step: Callable[[int], None] = advance) -> None:
                step(k)

            n = projector.rebuild(on_page)
        err.print(f"{model.name}: {n} events replayed")
        stop = projector.view.stopped()
        if stop is not None:
            stopped = True
            err.print(f"error: {ReadModelStopped(stop)}", style="red")
    if stopped:
        raise typer.Exit(1)


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
    with progress_bar() as progress:
        task = progress.add_task("rekey", total=max(old.position(), 1))
        try:
            copied = copy_ledger(old, target, on_page=lambda n: progress.advance(task, n))
        except ValueError as exc:
            raise fail(str(exc)) from None
    setting = f"{KEY_FILE_ENV}={new_key_file}" if new_key_file else "with no key set,"
    err.print(f"copied {copied} events into {target.store.display()}; now build its read models: "
              f"{setting} safety-monitor rebuild --store {to}")


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

    if once == follow:
        raise fail("give --once or --follow")
    ledger = open_ledger(store)
    send = notifier(ledger, all_pending=once, delivery_timeout=delivery_timeout)
    stopping = stop_flag()
    total = RunCounts()
    while True:
        catch_up(ledger, signals_model(), required=False)
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


DEMO_USERS = (("physician", "safety_physician"), ("dsmb", "dsmb"), ("admin", "admin"))


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

        with progress_steps() as steps:
            summary = import_transfer(ledger, read_transfer([pilot_path()]), "cdiscpilot01", "pilot-1",
                                      lambda: transfer_state(ledger, "cdiscpilot01"), progress=steps, by="demo")
        catch_up(ledger, *read_models(), required=False)
        err.print(f"CDISC pilot study imported into {ledger.store.display()}: "
                  f"{json.dumps({k: v for k, v in summary.items() if k not in ('domains', 'unmapped')})}")
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
        catch_up(ledger, *read_models(), required=False)
        err.print(f"demo study loaded into {ledger.store.display()}: {json.dumps(counts.as_dict())}")
    if not no_board:
        err.print("demo sign-in: physician / demo-physician (also dsmb / demo-dsmb, admin / demo-admin)")
        _run_board(ledger.store.url, port)


def dashboard(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="port of the board")] = 8501,
) -> None:
    """Start the board alone, on the chosen store."""
    from events.store import Store

    _run_board(Store.resolve(store).url, port)


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


def schema() -> None:
    """Print the JSON Schema of the registry-feed contract v1."""
    from events.contract_models import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))
