"""What the browser tests share: Debian's Chromium, its flags, where screenshots go, a free port."""

from __future__ import annotations

import os
import shutil
import signal as signals
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-results" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_chromium() -> None:
    """Skip without Chromium, except under CI=true, where a missing browser fails."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("CI=true but Chromium is missing: scripts/test installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    SHOTS.mkdir(parents=True, exist_ok=True)


def chromium_args() -> list[str]:
    return ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"]


def start_board(tmp: Path, *study: str) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    """``safety-monitor demo`` on a new SQLite store in ``tmp``, its output in ``tmp/board.log``; returns
    the process, the board's URL, the store URL and the log."""
    port, url = free_port(), f"sqlite:///{tmp}/ledger.db"
    log = tmp / "board.log"
    env = {**os.environ, "SAFETY_MONITOR_USERS": str(tmp / "users.json"), "SAFETY_MONITOR_BOARD_REFRESH": "3"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "safety.cli", "demo", "--port", str(port), "--store", url,
                                 *study], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    board = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{board}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, board, url, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("the board did not start: " + log.read_text(errors="replace")[-3000:])


def stop_board(proc: subprocess.Popen[bytes], log: Path) -> None:
    os.killpg(proc.pid, signals.SIGTERM)
    proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    # no deprecated Streamlit argument on any page visited (Streamlit says "deprecated", or "will be removed")
    assert not any(w in text.lower() for w in ("deprecat", "will be removed", "use_container_width")), text[-3000:]
