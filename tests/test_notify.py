"""Notifications against a real SMTP server (aiosmtpd) and a real HTTP server on loopback: each warning
and alert of the demo study arrives once by mail and once by webhook with a valid signature; a second
run sends nothing; a receiver that was down gets everything on the next run; a notifier killed between
the send and its record repeats at most once, under the same idempotency key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from events.files import read_ndjson
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.delivery import Deliveries
from projections.runner import Projector
from projections.signal_queries import query_signals
from projections.signals import SignalsModel
from safety.cli import app, demo_feed_path
from safety.notifications import SIGNATURE_HEADER, notification_id, retry_after, signature, smtp_settings
from tests.broker import free_port

SECRET = "s3cret-for-the-test"
ROOT = Path(__file__).resolve().parent.parent


class Inbox:
    """aiosmtpd handler: every message received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


class Webhook:
    """An HTTP server on loopback that keeps every call (and can answer slowly)."""

    def __init__(self, delay: float = 0.0, port: int | None = None):
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.delay = delay
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.calls.append((dict(self.headers), body))
                time.sleep(hook.delay)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_store(url: str) -> list[dict[str, Any]]:
    """The demo study in a store, its signals projected; returns the signals at warning or alert."""
    ledger = Ledger(Store.parse(url))
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    projector = Projector(ledger, SignalsModel())
    projector.catch_up()
    return [s for s in query_signals(projector.view.db) if s["level"] in ("warning", "alert")]


def notify(url: str, env: dict[str, str], *options: str) -> dict[str, int]:
    result = CliRunner().invoke(app, ["notify", "--once", "--store", url, *options], env=env)
    counts = json.loads(result.stdout.splitlines()[-1])
    # exit 3 when a delivery failed in this run (issue 23), each failure named on standard error
    assert result.exit_code == (3 if counts["failed"] else 0), result.output
    if counts["failed"]:
        assert result.stderr.count("delivery failed:") == counts["failed"]
    return counts  # type: ignore[no-any-return]


def channels(smtp_port: int, webhook_url: str) -> dict[str, str]:
    return {"SAFETY_MONITOR_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "SAFETY_MONITOR_NOTIFY_FROM": "monitor@example.org",
            "SAFETY_MONITOR_NOTIFY_TO": "physician@example.org, deputy@example.org",
            "SAFETY_MONITOR_WEBHOOK_URL": webhook_url, "SAFETY_MONITOR_WEBHOOK_SECRET": SECRET,
            "SAFETY_MONITOR_BOARD_URL": "https://board.example.org"}


def test_each_warning_and_alert_arrives_once_by_mail_and_by_webhook(store_url: str, smtp: tuple[Inbox, int]):
    inbox, port = smtp
    due = demo_store(store_url)
    assert {s["level"] for s in due} == {"warning", "alert"}
    hook = Webhook()
    try:
        env = channels(port, hook.url)
        assert notify(store_url, env) == {"sent": 2 * len(due), "failed": 0, "pending": 0}
        assert notify(store_url, env) == {"sent": 0, "failed": 0, "pending": 0}  # nothing twice
    finally:
        hook.close()
    expected = {notification_id(s["id"], s["level"]) for s in due}
    assert {m["Idempotency-Key"] for m in inbox.messages} == expected and len(inbox.messages) == len(due)
    assert {h["Idempotency-Key"] for h, _ in hook.calls} == expected and len(hook.calls) == len(due)
    for headers, body in hook.calls:
        assert headers[SIGNATURE_HEADER] == signature(SECRET, body)
        sent = json.loads(body)
        assert set(sent) == {"notification_id", "signal", "summary", "link"}
        assert set(sent["signal"]) == {"id", "kind", "level", "source", "patient_id", "occurred_at"}
        assert sent["link"].startswith("https://board.example.org/?signal=")
    mail = next(m for m in inbox.messages if "mas_trend" in m["Subject"])
    assert "MSC-06" in mail["Subject"] and mail["To"] == "physician@example.org, deputy@example.org"
    assert "WBC fell" in mail.get_content()


def test_a_receiver_that_was_down_gets_everything_on_the_next_run(sqlite_url: str, smtp: tuple[Inbox, int]):
    inbox, port = smtp
    due = demo_store(sqlite_url)
    closed = free_port()
    down = notify(sqlite_url, channels(port, f"http://127.0.0.1:{closed}/hook"))
    assert down == {"sent": len(due), "failed": len(due), "pending": len(due)}  # mail went, the webhook did not
    rows = Deliveries(Store.parse(sqlite_url)).rows()
    failed = [r for r in rows if r["channel"] == "webhook"]
    assert all(r["status"] == "pending" and r["attempts"] == 1 and "Connection refused" in r["last_error"]
               for r in failed)
    hook = Webhook(port=closed)
    try:
        assert notify(sqlite_url, channels(port, hook.url)) == {"sent": len(due), "failed": 0, "pending": 0}
    finally:
        hook.close()
    assert len(hook.calls) == len(due) and len(inbox.messages) == len(due)


def test_a_notifier_killed_between_send_and_record_repeats_at_most_once_with_the_same_key(sqlite_url: str):
    due = demo_store(sqlite_url)
    hook = Webhook(delay=30)  # holds the first call: the notifier is killed while it waits for the answer
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAFETY_MONITOR_WEBHOOK_URL": hook.url,
           "SAFETY_MONITOR_WEBHOOK_SECRET": SECRET}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "notify", "--once", "--store", sqlite_url],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not hook.calls and time.time() < deadline:
            time.sleep(0.05)
        assert hook.calls, "the notifier never called"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        first_key = hook.calls[0][0]["Idempotency-Key"]
        hook.delay = 0
        run = subprocess.run([sys.executable, "-m", "safety.cli", "notify", "--once", "--store", sqlite_url],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.splitlines()[-1]) == {"sent": len(due), "failed": 0, "pending": 0}
    finally:
        hook.close()
    keys = [h["Idempotency-Key"] for h, _ in hook.calls]
    assert keys.count(first_key) == 2  # the repeat, with the same key
    assert all(keys.count(k) == 1 for k in set(keys) - {first_key})
    assert set(keys) == {notification_id(s["id"], s["level"]) for s in due}


def test_without_a_channel_notify_says_what_to_set(sqlite_url: str):
    env = {k: "" for k in ("SAFETY_MONITOR_SMTP_URL", "SAFETY_MONITOR_WEBHOOK_URL")}
    CliRunner().invoke(app, ["ingest", "-", "--store", sqlite_url], input="")  # a store, empty
    result = CliRunner().invoke(app, ["notify", "--once", "--store", sqlite_url], env=env)
    assert result.exit_code == 1 and "no channel configured" in result.output


def test_smtp_urls_and_retry_backoff():
    s = smtp_settings("smtp+starttls://alice:p%40ss@mail.example.org:2587")
    assert (s.host, s.port, s.security, s.user, s.password) == ("mail.example.org", 2587, "starttls", "alice", "p@ss")
    assert smtp_settings("smtps://u:p@h").port == 465 and smtp_settings("smtp://relay:25").security == "none"
    with pytest.raises(ValueError, match="smtp://HOST:PORT"):
        smtp_settings("http://relay")
    assert [retry_after(n) for n in (1, 2, 3)] == [30, 60, 120] and retry_after(20) == 3600


def test_the_projector_follower_notifies_when_asked(sqlite_url: str):
    """`project --follow --notify` (the board's follower, when a channel is configured) sends as it projects."""
    ledger = Ledger(Store.parse(sqlite_url))
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))  # not projected yet: the follower does it
    hook = Webhook()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAFETY_MONITOR_WEBHOOK_URL": hook.url}
    proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "project", "--follow", "--notify",
                             "--store", sqlite_url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        expected = None
        while time.time() < deadline:
            projected = query_signals(Projector(ledger, SignalsModel()).view.db)
            expected = {notification_id(s["id"], s["level"]) for s in projected if s["level"] in ("warning", "alert")}
            if expected and {h["Idempotency-Key"] for h, _ in hook.calls} == expected:
                break
            time.sleep(0.3)
        assert expected and {h["Idempotency-Key"] for h, _ in hook.calls} == expected
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        hook.close()
    assert len(hook.calls) == len(expected)


def test_a_hanging_receiver_costs_one_delivery_timeout_each_within_the_rounds_deadline(sqlite_url: str,
                                                                                         smtp: tuple[Inbox, int]):
    """A webhook server that accepts and never answers: each call ends at --delivery-timeout, the round at
    --timeout, the rest stays pending, and the command says so with exit 3 (issue 23, finding 8)."""
    import socket
    import time

    _, port = smtp
    due = demo_store(sqlite_url)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["notify", "--once", "--store", sqlite_url, "--delivery-timeout", "0.5",
                                          "--timeout", "2"],
                                    env=channels(port, f"http://127.0.0.1:{silent.getsockname()[1]}/hook"))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.exit_code == 3, result.output
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts["failed"] >= 1 and counts["pending"] >= 1
    assert "timed out" in result.stderr and "not tried" in result.stderr
    assert elapsed < 2 + 0.5 + 5  # the deadline, one call in flight, and start-up; never 20 s a call
    assert counts["sent"] + counts["failed"] < 2 * len(due)
