"""What the browser tests share: Debian's Chromium, its flags, where screenshots go, a free port."""

from __future__ import annotations

import shutil
import socket
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
