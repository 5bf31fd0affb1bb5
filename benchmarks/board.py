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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.auth import UserStore

# page -> a text (or pattern) that appears only once the page's data is rendered: the last thing it draws
# (and then its charts: ``CHARTS_DRAWN``)
PAGES: tuple[tuple[str, str | re.Pattern[str]], ...] = (
    ("Signals", "· updated"), ("Expedited reports", re.compile(r"No SUSAR case|causality: ")),
    ("Liver (eDISH)", re.compile(r"Subjects by baseline grade|No patient has a liver test")),
    ("Arms and drugs", re.compile(r"\d+ subjects, \d+ events|No subject was exposed")),
    ("Signal detection", re.compile(r"No surveillance plan|observation ends")),
    ("Incidence", "Cohort comparison"), ("Efficacy", "patients with visit assessments and"), ("Patient", "History"),
    ("Feed health", "Messages per source"), ("Audit", "Signal workflow: who did what"))


#: the pages only an administrator sees, visited in a session of their own from the administrator's landing page
ADMIN_PAGES: tuple[tuple[str, str | re.Pattern[str]], ...] = (("Users", "Add or update user"),)
ADMIN_LANDING = "Feed health"

#: the page a user lands on after signing in (the first of ``PAGES``); its row is reached from another page
LANDING = PAGES[0][0]
SIGN_IN = "Sign-in, to the landing page"
#: seconds between a page's content and the next click (the browser may still be drawing below the marker)
SETTLE = 1.0

PASSWORD = "bench-password"

#: every chart on the page drawn. Streamlit shows a chart's place at once and draws the chart once its code is
#: loaded, which on a session's first chart page came after the marker text (eDISH: text at 0.3-0.6 s, the
#: chart at 1.2-1.4 s): a page is timed to its charts too.
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(chart => {
    const drawn = chart.querySelector('canvas, svg.marks');
    return drawn !== null && drawn.getBoundingClientRect().width > 0; })"""


@dataclass
class PageTimes:
    """One page's samples, in seconds: its first visit in each browser session and a visit after going
    through every other page (``again``)."""

    first: list[float] = field(default_factory=list)
    again: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float]:
        """The median first visit, the median later one, and the slowest of all (the server's caches cold)."""
        return statistics.median(self.first), statistics.median(self.again or self.first), max(self.first + self.again)


def render_times(store_url: str, runs: int = 3, only: tuple[str, ...] = ()) -> dict[str, tuple[float, float, float]]:
    """Per page (``only`` these, when given), from the click on its link to its content: the median first
    visit, the median visit after the others, and the slowest. Signing in is timed on its own, to the
    landing page's content; the pages are then visited once it has drawn, each from another page (the
    landing page last) a second after the last one's content, so no page's time holds the tail of the one
    before."""
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    users = tmp / "users.json"
    UserStore(users).add("bench", "safety_physician", PASSWORD)
    UserStore(users).add("bench-admin", "admin", PASSWORD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SAFETY_MONITOR_USERS": str(users), "SAFETY_MONITOR_BOARD_REFRESH": "0"}
    command = [sys.executable, "-m", "safety.cli", "dashboard", "--port", str(port), "--store", store_url]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    markers = dict(PAGES + ADMIN_PAGES)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        pages = [name for name, _ in PAGES[1:] + PAGES[:1] if not only or name in only]
        admin_pages = [name for name, _ in ADMIN_PAGES if not only or name in only]
        times = {name: PageTimes() for name in [SIGN_IN, *pages, *admin_pages]}
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                         "--disable-background-networking"])
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                times[SIGN_IN].first.append(_sign_in(page, url, "bench", markers[LANDING]))
                time.sleep(SETTLE)
                for visit in ("first", "again"):
                    for name in pages:
                        getattr(times[name], visit).append(_visit(page, name, markers[name]))
                page.close()
                if admin_pages:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    _sign_in(page, url, "bench-admin", markers[ADMIN_LANDING])
                    time.sleep(SETTLE)
                    for visit in ("first", "again"):
                        for name in admin_pages:
                            getattr(times[name], visit).append(_visit(page, name, markers[name]))
                        _visit(page, ADMIN_LANDING, markers[ADMIN_LANDING])  # each visit from another page
                    page.close()
            browser.close()
        return {name: t.row() for name, t in times.items()}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _sign_in(page: Any, url: str, user: str, landing: str | re.Pattern[str]) -> float:
    """Sign in from a fresh page; seconds from the click to the landing page's content."""
    from playwright.sync_api import expect

    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    start = time.perf_counter()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(landing).first).to_be_visible(timeout=120_000)
    page.wait_for_function(CHARTS_DRAWN, timeout=120_000)
    page.wait_for_load_state("networkidle")
    return time.perf_counter() - start


def _visit(page: Any, name: str, marker: str | re.Pattern[str]) -> float:
    """Click a page's link; seconds to its content. Then a pause, as a user reads before the next click, so
    no page's time holds the tail of the one before."""
    from playwright.sync_api import expect

    start = time.perf_counter()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_text(marker).first).to_be_visible(timeout=120_000)
    page.wait_for_function(CHARTS_DRAWN, timeout=120_000)
    page.wait_for_load_state("networkidle")
    elapsed = time.perf_counter() - start
    time.sleep(SETTLE)
    return elapsed
