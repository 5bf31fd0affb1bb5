"""Board render times, measured from a real browser (headless Chromium via Playwright)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dashboard.auth import UserStore

# page -> a text (or pattern) that appears only once the page's data is rendered: the last thing it draws
PAGES: tuple[tuple[str, str | re.Pattern[str]], ...] = (
    ("Signals", "· updated"), ("Expedited reports", re.compile(r"No SUSAR case|causality: ")),
    ("Liver (eDISH)", re.compile(r"Subjects by baseline grade|No patient has a liver test")),
    ("Arms and drugs", re.compile(r"\d+ subjects, \d+ events|No subject was exposed")),
    ("Signal detection", re.compile(r"No surveillance plan|observation ends")),
    ("Incidence", "Cohort comparison"), ("Efficacy", "patients with visit assessments and"), ("Patient", "History"),
    ("Feed health", "Messages per source"), ("Audit", "Signal workflow: who did what"))


def render_times(store_url: str, runs: int = 3) -> dict[str, tuple[float, float]]:
    from playwright.sync_api import expect, sync_playwright

    tmp = Path(tempfile.mkdtemp())
    users = tmp / "users.json"
    UserStore(users).add("bench", "safety_physician", "bench-password")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SAFETY_MONITOR_USERS": str(users), "SAFETY_MONITOR_BOARD_REFRESH": "0"}
    command = [sys.executable, "-m", "safety.cli", "dashboard", "--port", str(port), "--store", store_url]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        first: dict[str, list[float]] = {p: [] for p, _ in PAGES}
        again: dict[str, list[float]] = {p: [] for p, _ in PAGES}
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                         "--disable-background-networking"])
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.get_by_role("textbox", name="User name").fill("bench")
                page.get_by_role("textbox", name="Password").fill("bench-password")
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_text("Signed in as")).to_be_visible(timeout=120_000)
                for samples in (first, again):
                    for name, marker in PAGES:
                        start = time.perf_counter()
                        page.get_by_role("link", name=name).click()
                        expect(page.get_by_text(marker).first).to_be_visible(timeout=120_000)
                        page.wait_for_load_state("networkidle")
                        samples[name].append(time.perf_counter() - start)
                page.close()
            browser.close()
        return {name: (statistics.median(first[name]), statistics.median(again[name])) for name, _ in PAGES}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
