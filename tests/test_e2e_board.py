"""End to end in a real browser: Debian's Chromium driven by Playwright against the demo board.

Signs in as a safety physician, finds patient 6's MAS warning with its evidence, opens the
patient, and saves a screenshot of each page under test-results/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import CHROMIUM, SHOTS, chromium_args, needs_chromium, start_board, stop_board

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    needs_chromium()
    proc, board_url, _, log = start_board(tmp_path_factory.mktemp("board"))
    yield board_url
    stop_board(proc, log)


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
