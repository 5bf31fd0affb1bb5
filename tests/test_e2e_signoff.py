"""The physician's board in a real browser (issue 24): a sign-off that can never hit the wrong signal,
a data cut that changes the counts, and a patient header that says who the patient is. Debian's
Chromium driven by Playwright against boards started as a user starts them (``safety-monitor demo``),
their log checked for deprecation warnings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from events.store import Store
from projections.board import BoardData
from tests.e2e import CHROMIUM, SHOTS, chromium_args, needs_chromium, start_board, stop_board

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def seed_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    needs_chromium()
    proc, board, url, log = start_board(tmp_path_factory.mktemp("seed"))
    yield board, url
    stop_board(proc, log)


@pytest.fixture(scope="module")
def pilot_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    needs_chromium()
    proc, board, url, log = start_board(tmp_path_factory.mktemp("pilot"), "--study", "pilot")
    yield board, url
    stop_board(proc, log)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=45_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        yield b
        b.close()


def signed_in(browser: Any, board: str, name: str = "physician") -> Any:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(board)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(f"demo-{name}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Feed health" if name == "admin" else "Signals").first).to_be_visible()
    return page


def choose(page: Any, scope: Any, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label`` inside ``scope``."""
    scope.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def status_of(url: str, signal_id: str) -> str:
    return str(BoardData(Store.parse(url)).signals(signal_id=signal_id)[0]["status"])


def wait_for_status(url: str, signal_id: str, status: str) -> None:
    deadline = time.time() + 30
    while status_of(url, signal_id) != status and time.time() < deadline:
        time.sleep(0.5)
    assert status_of(url, signal_id) == status


def test_closing_asks_a_fitting_reason_and_a_note_and_a_second_click_cannot_close_the_next_signal(
        browser: Any, seed_board: tuple[str, str]):
    from playwright.sync_api import expect

    board, url = seed_board
    page = signed_in(browser, board)
    buttons = page.locator("[class*='st-key-close-'] button")
    expect(buttons.first).to_be_visible()
    keyed = page.locator("[class*='st-key-close-']")
    first_id, second_id = (keyed.nth(i).get_attribute("class").split("st-key-close-")[1].split()[0] for i in (0, 1))
    first = BoardData(Store.parse(url)).signals(signal_id=first_id)[0]
    assert first["kind"] == "serious_adverse_event"
    box = buttons.nth(0).bounding_box()
    buttons.nth(0).click()

    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text(first_id)).to_be_visible()  # it names the signal, its kind and its patient
    expect(dialog.get_by_text(first["patient_id"], exact=False).first).to_be_visible()
    expect(dialog.get_by_text("serious_adverse_event", exact=False).first).to_be_visible()
    page.screenshot(path=str(SHOTS / "signoff-1-dialog.png"))
    dialog.get_by_role("button", name="Close this signal").click()  # no reason, no note: refused
    expect(dialog.get_by_text("Closing a serious event signal needs one of these reasons")).to_be_visible()
    assert status_of(url, first_id) == "open"
    dialog.get_by_label("Reason for closing").click()
    options = [o.inner_text() for o in page.get_by_role("option").all()]
    assert "assessed: not related to study treatment" in options and "confirmed MAS" not in options
    page.get_by_role("option", name="assessed and reported as required").click()
    dialog.get_by_role("button", name="Close this signal").click()  # a reason, no note: refused
    expect(dialog.get_by_text("Closing needs a note")).to_be_visible()
    dialog.get_by_label("Note (needed to close)").fill("CIOMS sent to the sponsor; followed up at day 7")
    dialog.get_by_role("button", name="Close this signal").click()
    expect(dialog).to_be_hidden()
    wait_for_status(url, first_id, "closed")

    # the same place, clicked again (a double click's second half): the closed card kept its place, so
    # the pointer is over it, not over the next signal's Close button; the next one is untouched
    page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(1500)
    assert status_of(url, second_id) == "open"
    card = page.locator(f".st-key-signal-{first_id}")
    expect(card.get_by_text("Closed by physician", exact=False)).to_be_visible()
    expect(card.get_by_text("CIOMS sent to the sponsor", exact=False)).to_be_visible()
    expect(card.get_by_text("assessed and reported as required", exact=False)).to_be_visible()
    # the next signal's own button asks for its own confirmation, naming it
    page.locator(f".st-key-close-{second_id} button").dblclick()
    expect(page.get_by_role("dialog").get_by_text(second_id)).to_be_visible()
    assert status_of(url, second_id) == "open"
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "signoff-2-after.png"), full_page=True)
    assert status_of(url, second_id) == "open"
    page.close()


def test_every_page_renders_with_its_data_context(browser: Any, seed_board: tuple[str, str]):
    from playwright.sync_api import expect

    board, _ = seed_board
    page = signed_in(browser, board)
    for name, marker in (("Expedited reports", "SUSAR"), ("Signal detection", "Sequential surveillance"),
                         ("Liver (eDISH)", "Liver safety"),
                         ("Arms and drugs", "By system organ class"), ("Incidence", "Cohort comparison"),
                         ("Efficacy", "Repeat-infusion rule"), ("Patient", "MAS panel"),
                         ("Feed health", "Messages per source"), ("Audit", "Signal workflow: who did what"),
                         ("Signals", "Open signals first")):
        page.get_by_role("link", name=name).click()
        expect(page.get_by_text(marker).first).to_be_visible()
        expect(page.get_by_text("rules: mas-rules", exact=False).first).to_be_visible()
        page.screenshot(path=str(SHOTS / f"page-{name.split()[0].lower()}.png"), full_page=True)
    page.close()
    admin = signed_in(browser, board, "admin")
    admin.get_by_role("link", name="Users").click()
    expect(admin.get_by_text("Add or update user")).to_be_visible()
    admin.close()


def test_a_data_cut_changes_the_arms_counts_and_the_patient_header_says_who(browser: Any,
                                                                             pilot_board: tuple[str, str]):
    from playwright.sync_api import expect

    board, url = pilot_board
    data = BoardData(Store.parse(url))
    first, last = data.clinical_range()
    assert first.year <= 2013 <= last.year
    page = signed_in(browser, board)
    page.get_by_role("link", name="Arms and drugs").click()
    expect(page.get_by_text("By system organ class")).to_be_visible()
    expect(page.get_by_text("Data cut: none", exact=False)).to_be_visible()
    before = page.get_by_text("Fingerprint", exact=False).first.inner_text()
    page.get_by_role("spinbutton", name="year, Clinical data cut").click()  # react-aria's segments
    page.keyboard.type("20130630")
    page.keyboard.press("Escape")  # close the calendar; the value is taken when the field loses focus
    page.get_by_role("heading").first.click()
    expect(page.get_by_text("Data cut: 2013-06-30", exact=False)).to_be_visible()
    expect(page.get_by_text("Fingerprint", exact=False).first).not_to_have_text(before)
    from projections.exposure import Settings as TableSettings
    from safety.cli.wiring import data_cut_time

    whole = data.ae_table(TableSettings())
    cut_answer = data.ae_table(TableSettings(data_cut=data_cut_time("2013-06-30")))
    placebo = next(o for o in cut_answer["overview"] if o["row"] == "any")["by_group"]["Placebo"]
    assert placebo["subjects"] < next(o for o in whole["overview"] if o["row"] == "any")["by_group"]["Placebo"][
        "subjects"]
    n = next(g["subjects"] for g in cut_answer["groups"] if g["name"] == "Placebo")
    shown = f"{placebo['subjects']}/{n} ({placebo['percent']:.1f}%) [{placebo['events']}]"
    expect(page.locator("td[role=gridcell]", has_text=shown).first).to_be_attached()  # the grid draws on a canvas
    page.screenshot(path=str(SHOTS / "arms-data-cut.png"), full_page=True)

    page.get_by_role("link", name="Patient").click()
    choose(page, page, "Patient", "01-701-1015 (cdiscpilot01)")
    header = page.locator("[data-testid='stMarkdownContainer']", has_text="arm:").filter(has_text="01-701-1015").first
    expect(header).to_be_visible()
    text = header.inner_text()
    assert "female" in text and "years" in text and "arm: Placebo" in text and "Alzheimer" in text, text
    page.screenshot(path=str(SHOTS / "patient-header.png"))
    page.close()
