"""End to end in a real browser: Debian's Chromium driven by Playwright against the demo board.

Signs in as a safety physician, finds patient 6's MAS warning with its evidence, opens the
patient, and saves a screenshot of each page under test-results/screenshots/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e import CHROMIUM, SHOTS, chromium_args, free_port, needs_chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    needs_chromium()
    tmp = tmp_path_factory.mktemp("board")
    port = free_port()
    env = {**os.environ, "SAFETY_MONITOR_USERS": str(tmp / "users.json"),
           "SAFETY_MONITOR_BOARD_REFRESH": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safety.cli", "demo", "--port", str(port), "--store", f"sqlite:///{tmp}/ledger.db"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the board did not start: " + (proc.stdout.read().decode() if proc.stdout else ""))
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)


def test_a_safety_physician_sees_patient_6s_warning_and_opens_the_patient(board: str):
    from playwright.sync_api import expect, sync_playwright

    # A page render on a loaded two-core machine (the other test worker busy) can take longer than
    # expect's 5 s default.
    expect.set_options(timeout=30_000)

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(board)
        expect(page.get_by_text("Sign in to see patient safety data.")).to_be_visible()
        page.screenshot(path=str(SHOTS / "0-sign-in.png"))
        page.get_by_role("textbox", name="User name").fill("physician")
        page.get_by_role("textbox", name="Password").fill("demo-physician")
        page.get_by_role("button", name="Sign in").click()

        warning = page.get_by_text("mas_trend · MSC-06", exact=False).first
        expect(warning).to_be_visible()
        expect(page.get_by_text("WBC fell 47% from 3.2 to 1.7", exact=False)).to_be_visible()
        expect(page.get_by_text("PLT fell 48% from 170 to 89", exact=False)).to_be_visible()
        expect(page.get_by_text("ESR rose 105% from 40 to 82", exact=False)).to_be_visible()
        expect(page.get_by_text("TG rose 133% from 1.2 to 2.8", exact=False)).to_be_visible()
        page.screenshot(path=str(SHOTS / "1-signals.png"), full_page=True)

        page.locator("[class*='st-key-open-mas_trend-MSC-06'] button").click()
        expect(page.get_by_text("MAS panel")).to_be_visible()
        expect(page.get_by_text("MSC-06").first).to_be_visible()
        page.wait_for_timeout(1500)  # let the charts draw
        page.screenshot(path=str(SHOTS / "2-patient.png"), full_page=True)

        for name, marker in (("Incidence", "Cohort comparison"), ("Arms and drugs", "By system organ class"),
                             ("Efficacy", "Repeat-infusion rule"),
                             ("Feed health", "Messages per source"),
                             ("Audit", "Signal workflow: who did what")):
            page.get_by_role("link", name=name).click()
            expect(page.get_by_text(marker)).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(SHOTS / f"3-{name.split()[0].lower()}.png"), full_page=True)
        browser.close()
