"""The board with Streamlit's AppTest: sign-in first, each role sees what it may, every page renders
on the demo study, and acting on a signal records the signed-in user."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboard.auth import PAGES_BY_ROLE, SignInLimiter
from events.ledger import Ledger
from events.store import Store
from projections.board import BoardData
from safety.cli import app as cli

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture
def demo_store(store_url, tmp_path, monkeypatch) -> str:
    """The demo study on each store (SQLite, PostgreSQL), with the board's settings pointing at it."""
    url = store_url
    monkeypatch.setenv("SAFETY_MONITOR_STORE", url)
    monkeypatch.setenv("SAFETY_MONITOR_BOARD_REFRESH", "0")
    monkeypatch.setenv("SAFETY_MONITOR_BOARD_WARM", "0")  # no thread computing beside the test (tested below)
    monkeypatch.setenv("SAFETY_MONITOR_USERS", str(tmp_path / "users.json"))
    assert CliRunner().invoke(cli, ["demo", "--no-board", "--store", url]).exit_code == 0
    return url


def signed_in(name: str, password: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click()
    at.run()
    return at


def test_nobody_sees_data_before_signing_in(demo_store):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Safety monitor"]
    assert not any("MSC-06" in m.value for m in at.markdown)
    # the one chart, drawn off the page so the browser loads the chart code meanwhile, holds made-up numbers
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1 and "MSC" not in str(charts[0].proto) and "preload" in str(charts[0].proto)


def test_a_wrong_password_is_refused(demo_store):
    at = signed_in("physician", "wrong-password")
    assert "Unknown user or wrong password." in [e.value for e in at.error]
    assert "user" not in at.session_state


def test_failed_sign_ins_are_rate_limited():
    limiter = SignInLimiter()
    for _ in range(5):
        limiter.failed("eve", now=1000.0)
    assert limiter.locked("eve", now=1001.0)
    assert not limiter.locked("eve", now=1000.0 + 301)


@pytest.mark.parametrize(("name", "role"), [("physician", "safety_physician"), ("dsmb", "dsmb"), ("admin", "admin")])
def test_each_role_gets_its_pages_only(demo_store, name, role):
    at = signed_in(name, f"demo-{name}")
    assert not at.exception
    assert at.session_state["user"].role == role
    assert list(at.session_state["pages"]) == list(PAGES_BY_ROLE[role])


PAGE_SCRIPT = """
import streamlit as st
from dashboard import pages
from dashboard.auth import User
from dashboard.state import board_data
user = User("{name}", "{role}")
st.session_state["user"] = user
st.session_state.setdefault("pages", {{}})
data = board_data()
{call}
"""
CALLS = {
    "signals": "pages.signals_page(data, user)",
    "incidence": "pages.incidence_page(data)",
    "expedited": "pages.expedited_page(data, user)",
    "liver": "pages.liver_page(data)",
    "arms": "pages.arms_page(data)",
    "efficacy": "pages.efficacy_page(data)",
    "patient": "st.session_state['patient'] = ('umcu-msc-jia', 'MSC-06')\npages.patient_page(data)",
    "feed": "pages.feed_page(data)",
    "audit": "pages.audit_page(data)",
    "users": "pages.users_page()",
    "detection": "pages.detection_page(data)",
}


def page(name: str, user: str = "physician", role: str = "safety_physician") -> AppTest:
    at = AppTest.from_string(PAGE_SCRIPT.format(name=user, role=role, call=CALLS[name]), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_signals_page_shows_patient_6s_warning_with_its_evidence(demo_store):
    at = page("signals")
    text = " ".join(m.value for m in at.markdown)
    assert "**WARNING**] · mas_trend · **MSC-06**" in text
    assert "WBC fell 47% from 3.2 to 1.7" in text and "PLT fell 48% from 170 to 89" in text
    assert "ESR rose 105% from 40 to 82" in text and "TG rose 133% from 1.2 to 2.8" in text
    assert "2016 classification criteria: **not met**" in text


def test_the_incidence_page_shows_table_2(demo_store):
    at = page("incidence", "dsmb", "dsmb")
    cohort = at.dataframe[0].value
    serious = cohort[cohort["category"] == "serious"].set_index("window")
    assert serious.loc["pre", "events"] == 2 and serious.loc["post", "events"] == 4
    assert round(serious.loc["pre", "p Fisher (person-months)"], 2) == 0.60
    assert any("Fingerprint" in c.value for c in at.caption)


@pytest.mark.parametrize("name", ["patient", "feed", "audit", "users", "efficacy", "expedited", "liver", "arms",
                                  "detection"])
def test_every_other_page_renders(demo_store, name):
    page(name, "admin" if name == "users" else "physician", "admin" if name == "users" else "safety_physician")


def test_acting_on_a_signal_records_the_user_and_dsmb_cannot_act(demo_store):
    dsmb = page("signals", "dsmb", "dsmb")
    assert not [b for b in dsmb.button if b.label.startswith("Acknowledge")]
    at = page("signals")
    data = BoardData(Store.parse(demo_store))
    mas = data.signals(kind="mas_trend")[0]
    at.button(key=f"ack-{mas['id']}").click()
    at.run()
    assert not at.exception
    assert not data.actions(mas["id"])  # the card's button only asks: nothing is recorded yet
    at.button(key=f"confirm-ack-{mas['id']}").click()
    at.run()
    assert not at.exception
    assert any("Acknowledged by physician" in c.value for c in at.caption)
    trail = BoardData(Store.parse(demo_store))
    from projections.runner import Projector
    from projections.signals import SignalsModel

    Projector(Ledger(Store.parse(demo_store)), SignalsModel()).catch_up()
    assert [(a["action"], a["by_user"]) for a in trail.actions(mas["id"])] == [("ack", "physician")]


def test_users_add_hashes_the_password_records_the_change_and_refuses_bad_roles(tmp_path, monkeypatch, store_url):
    import json as jsonlib

    from dashboard.auth import UserStore
    from projections.audit import AuditModel, audit_log
    from projections.runner import Projector

    url = store_url
    users = tmp_path / "users.json"
    monkeypatch.setenv("SAFETY_MONITOR_USERS", str(users))
    runner = CliRunner()
    ok = runner.invoke(cli, ["users", "add", "dr.jones", "--role", "safety_physician", "--password-stdin",
                             "--store", url], input="correct horse battery\n")
    assert ok.exit_code == 0
    stored = jsonlib.loads(users.read_text())
    assert stored["dr.jones"]["role"] == "safety_physician"
    assert "correct horse" not in users.read_text() and stored["dr.jones"]["hash"].startswith("$argon2")
    assert UserStore(users).verify("dr.jones", "correct horse battery") is not None
    assert UserStore(users).verify("dr.jones", "wrong") is None
    bad = runner.invoke(cli, ["users", "add", "eve", "--role", "superuser", "--password-stdin", "--store", url],
                        input="long enough password\n")
    assert bad.exit_code == 1 and "--role" in bad.stderr
    short = runner.invoke(cli, ["users", "add", "eve", "--role", "dsmb", "--password-stdin", "--store", url],
                          input="short\n")
    assert short.exit_code == 1 and "8 characters" in short.stderr
    listed = runner.invoke(cli, ["users", "list", "--store", url])
    assert listed.stdout.strip() == "dr.jones\tsafety_physician"
    projector = Projector(Ledger(Store.parse(url)), AuditModel())
    projector.catch_up()
    trail = [(a["action"], a["detail"]) for a in audit_log(projector.view.db)]
    assert trail == [("user change", "dr.jones as safety_physician")]


def test_signing_in_is_recorded_in_the_audit_trail(demo_store):
    from projections.audit import AuditModel, audit_log
    from projections.runner import Projector

    signed_in("dsmb", "demo-dsmb")
    projector = Projector(Ledger(Store.parse(demo_store)), AuditModel())
    projector.catch_up()
    assert ("dsmb", "sign-in") in [(a["by_user"], a["action"]) for a in audit_log(projector.view.db)]


def test_an_expired_session_asks_for_sign_in_again(demo_store):
    at = signed_in("physician", "demo-physician")
    assert "user" in at.session_state
    at.session_state["signed_in_at"] = 0.0  # signed in long ago
    at.run()
    assert "Your session expired: sign in again." in [w.value for w in at.warning]
    assert "user" not in at.session_state


def test_feed_health_shows_dead_letters_waiting_per_topic(demo_store):
    """Quarantined Kafka messages whose dead letter is not sent yet (a consumer died in between) show
    beside the topic's partitions, and leave the count once sent."""
    from eventsourcing.persistence import Tracking

    from events.admission import RawMessage
    from events.ingest import Ingestor

    ledger = Ledger(Store.parse(demo_store))
    where = [{"topic": "pv.events", "partition": 0, "offset": n} for n in (0, 1)]
    Ingestor(ledger).ingest_batch([RawMessage(b"{broken", where[0]), RawMessage(b"[]", where[1])],
                                  Tracking("kafka:pv.events:t1:0", 1))
    offsets = BoardData(Store.parse(demo_store)).partition_offsets()
    assert offsets["dead letters waiting (topic)"].tolist() == [2]
    first = ledger.tables.undelivered_dead_letters("pv.events")[0]
    ledger.tables.mark_dead_lettered([first["id"]], "2026-11-26T15:00:00+00:00")
    assert BoardData(Store.parse(demo_store)).dead_letters_waiting() == {"pv.events": 1}
    at = page("feed")
    [partitions] = [d.value for d in at.dataframe if "dead letters waiting (topic)" in d.value.columns]
    assert partitions["dead letters waiting (topic)"].tolist() == [1]


def test_the_signal_detection_page_shows_pairs_and_the_surveillance_path(demo_store, tmp_path, monkeypatch):
    """Issue 26's page: the disproportionality table and plot, and each planned pair's LLR against its CV."""
    plan = tmp_path / "plan.toml"
    plan.write_text('[[pair]]\nname = "toci-mas"\ndrug = "tocilizumab"\nterms = ["Macrophage activation syndrome '
                    '(evolving)"]\nbackground_per_100py = 5.0\nstart = "2013-01-01"\nupper_limit = 5\nmin_events = 1\n'
                    'alpha = 0.05\n')
    monkeypatch.setenv("SAFETY_MONITOR_SURVEILLANCE", str(plan))
    at = page("detection")
    assert any("Sequential surveillance" in h.value for h in at.subheader)
    assert any("toci-mas" in m.value and "CV" in m.value for m in at.markdown)
    at.number_input(key="detect_min").set_value(1).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert {"drug", "term", "a", "ic025", "signal"} <= set(table.columns) and len(table)


def test_a_registry_wide_signal_has_a_card_of_its_own(demo_store, tmp_path, monkeypatch):
    """A ``sequential`` signal (issue 26) names no patient: its card says registry-wide, carries the
    MaxSPRT evidence and leads to the Signal detection page instead of a patient."""
    from events.ingest import Ingestor
    from tests.messages import raw
    from tests.test_surveillance import PLAN, registry

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    monkeypatch.setenv("SAFETY_MONITOR_SURVEILLANCE", str(plan))
    first, late = registry()
    Ingestor(Ledger(Store.parse(demo_store))).ingest([raw(m, i) for i, m in enumerate(first + late)])
    assert CliRunner().invoke(cli, ["project", "--store", demo_store]).exit_code == 0
    at = page("signals")
    text = " ".join(m.value for m in at.markdown)
    assert "**ALERT**] · sequential · **registry-wide**" in text
    assert "MaxSPRT: LLR" in text and "tocilizumab – neutropenia, neutrophil count decreased" in text
    assert any(b.label == "Open signal detection" for b in at.button)


def test_the_incidence_page_prepares_the_dsmb_report_for_either_session(demo_store):
    """Issue 27: the board prepares the open or the closed session's report, as HTML or PDF."""
    at = page("incidence", "dsmb", "dsmb")
    at.button(key="dsmb_prepare").click().run()
    assert not at.exception, at.exception
    fingerprint, banner, form, body = at.session_state["dsmb_file"]
    assert banner == "Closed session — confidential" and form == "HTML"
    assert b"Adverse events before and after MSC infusion" in body and fingerprint.encode() in body
    at.radio(key="dsmb_session").set_value("open")
    at.radio(key="dsmb_format").set_value("PDF")
    at.button(key="dsmb_prepare").click().run()
    assert not at.exception, at.exception
    _, banner, form, body = at.session_state["dsmb_file"]
    assert banner == "Open session" and form == "PDF" and body.startswith(b"%PDF")


def test_the_data_cut_picker_spans_every_fact_without_scanning_them(demo_store):
    """Issue 28: the first and last clinical day come from the span the signals read model keeps as facts
    arrive, equal to a scan of every fact; a store projected before the span was kept still answers."""
    data = BoardData(Store.parse(demo_store))
    db = data.signals_db
    first, last = db.query("SELECT MIN(occurred_at), MAX(occurred_at) FROM {t}signal_facts")[0]
    assert db.query("SELECT MIN(first), MAX(last) FROM {t}signal_span")[0] == (first, last)
    span = data.clinical_range()
    assert span is not None and (span[0].isoformat(), span[1].isoformat()) == (first[:10], last[:10])
    with db.connect() as conn:
        conn.cursor().execute(db.sql("DELETE FROM {t}signal_span"))
    assert data.clinical_range() == span


def test_the_expedited_and_liver_pages_keep_their_answers_until_their_read_model_moves(demo_store):
    """Issue 28: the SUSAR cases and the liver views are kept between visits, keyed by their read model's
    position (counting them took most of these pages' time): a new case or liver result shows at the next
    visit, and the clock is read at every visit."""
    from events.ingest import Ingestor
    from projections.expedited import ExpeditedModel
    from projections.runner import Projector
    from projections.signals import SignalsModel
    from tests.messages import message, raw

    expedited, liver = page("expedited"), page("liver")
    liver.checkbox(key="edish_all").check().run()
    assert any("No SUSAR case" in i.value for i in expedited.info)
    assert any("No patient has a liver test" in i.value for i in liver.info)
    expedited.run()
    liver.run()  # visited again, nothing new: the same answers
    assert any("No SUSAR case" in i.value for i in expedited.info)
    assert any("No patient has a liver test" in i.value for i in liver.info)
    source, patient = "umcu-msc-jia", "MSC-01"
    ledger = Ledger(Store.parse(demo_store))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate([
        message("new-ae", type="adverse_event", source=source, patient_id=patient, occurred_at="2014-04-01",
                reported_at="2014-04-02T09:00:00Z",
                data={"term": "Hepatitis", "severity": "severe", "serious": True, "relatedness": "probable"}),
        message("new-alt", source=source, patient_id=patient, occurred_at="2014-04-01",
                data={"analyte": "ALT", "value": 400, "unit": "U/L", "reference_high": 40}),
        message("new-bili", source=source, patient_id=patient, occurred_at="2014-04-01",
                data={"analyte": "BILI", "value": 60, "unit": "umol/L", "reference_high": 21}),
    ])])
    for model in (ExpeditedModel(), SignalsModel()):
        Projector(ledger, model).catch_up()
    expedited.run()
    liver.run()
    assert not expedited.exception and not liver.exception
    [card] = [m.value for m in expedited.markdown if "Hepatitis" in m.value]
    assert patient in card and "OVERDUE" in card  # due in 2014, read now
    assert not any("No patient has a liver test" in i.value for i in liver.info)
    assert patient in set(liver.dataframe[-1].value["patient_id"])  # in the Hy's law range


def test_the_signals_page_draws_the_most_urgent_cards_first_and_more_on_request(demo_store):
    """Twenty cards at first (the browser draws each before the page shows), the rest a click away."""
    from dashboard.pages.signals_page import CARDS_PER_PAGE
    from events.ingest import Ingestor
    from projections.runner import Projector
    from projections.signals import SignalsModel
    from tests.messages import message, raw

    ledger = Ledger(Store.parse(demo_store))
    Ingestor(ledger).ingest([raw(message(f"sae-{i}", type="adverse_event", patient_id=f"P{i:02d}"), i)
                             for i in range(CARDS_PER_PAGE + 5)])
    Projector(ledger, SignalsModel()).catch_up()
    total = len(BoardData(Store.parse(demo_store)).signals())
    assert total > CARDS_PER_PAGE

    def cards(at: AppTest) -> list[str]:
        return [m.value for m in at.markdown if m.value.startswith(":") and "-background[**" in m.value]

    at = page("signals")
    assert len(cards(at)) == CARDS_PER_PAGE
    assert any(f"{total} signals (showing the first {CARDS_PER_PAGE})" in c.value for c in at.caption)
    assert "**ALERT**" in cards(at)[0]  # the most urgent first
    at.button(key="more_signals").click().run()
    assert not at.exception
    assert len(cards(at)) == min(total, 2 * CARDS_PER_PAGE)


#: the BoardData methods behind the answers the board keeps for every session (``dashboard.warm``)
KEPT = ("ae_table", "ae_cases", "expedited_known", "edish", "lab_shifts", "disproportionality", "incidence")
#: the pages that keep an answer for every session
WARMED = ("arms", "expedited", "liver", "detection", "incidence")


def asked_read_models(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the name of each ``KEPT`` method in the order the board asks it (it still answers)."""
    asked: list[str] = []
    for name in KEPT:
        method = getattr(BoardData, name)
        monkeypatch.setattr(BoardData, name, lambda self, *a, _m=method, _n=name, **k: (asked.append(_n),
                                                                                          _m(self, *a, **k))[1])
    return asked


def test_each_pages_first_answer_is_computed_before_its_first_visit(demo_store, monkeypatch):
    """Issue 28: the warm-up computes, through the pages' own cached functions, exactly the answer each page
    shows first (every control at its default), so the first visitor after a start asks no read model for it;
    a page whose default changed without its ``warm`` would be asked here."""
    import streamlit as st

    from dashboard import warm

    st.cache_data.clear()
    assert warm.warm(BoardData(Store.parse(demo_store))) == []
    asked = asked_read_models(monkeypatch)
    for name in WARMED:
        page(name)
    assert asked == []
    st.cache_data.clear()
    page("arms")  # and without the warm-up, the page computes its own
    assert asked == ["ae_table", "ae_cases"]


def test_a_sign_in_leaves_the_kept_answers_and_new_data_has_them_counted_again(demo_store, monkeypatch):
    """A sign-in is an audit entry in the ledger, and the board's follower moves every read model's position
    past it: kept by position, every answer was counted again at each session's first visit (Liver 1.1 s
    instead of 0.6 s at 15,000 patients). Kept by the read models' revisions, only new data of theirs does."""
    import streamlit as st

    from dashboard import warm
    from events.ingest import Ingestor
    from events.workflow import record_audit
    from projections.runner import catch_up
    from safety.cli.wiring import read_models
    from tests.messages import message, raw

    st.cache_data.clear()
    data = BoardData(Store.parse(demo_store))
    assert warm.warm(data) == []
    ledger = Ledger(Store.parse(demo_store))
    revisions = (data.signals_revision(), data.exposure_revision(), data.expedited_revision(),
                 data.incidence_revision())
    record_audit(ledger, "physician", "sign-in", "role safety_physician")
    catch_up(ledger, read_models())
    assert (data.signals_revision(), data.exposure_revision(), data.expedited_revision(),
            data.incidence_revision()) == revisions
    asked = asked_read_models(monkeypatch)
    for name in WARMED:
        page(name)
    assert asked == []
    Ingestor(ledger).ingest([raw(message("new-lab", patient_id="P-NEW", source="revision-test",
                                         data={"analyte": "ALT", "value": 90, "unit": "U/L",
                                               "reference_high": 40}))])
    catch_up(ledger, read_models())
    assert data.signals_revision() != revisions[0]
    assert (data.exposure_revision(), data.expedited_revision(), data.incidence_revision()) == revisions[1:]
    page("liver")
    assert asked == ["edish"]  # the demo has no liver panel: the page ends with its message


def test_a_failing_answer_leaves_the_others_to_be_computed_and_the_board_running(demo_store):
    from dashboard import warm

    done: list[str] = []

    def broken(_data: BoardData) -> None:
        raise RuntimeError("read model missing")

    assert warm.warm(BoardData(Store.parse(demo_store)), [broken, lambda d: done.append("next")]) == [__name__]
    assert done == ["next"]


def test_the_warm_up_runs_in_its_own_thread_and_only_its_script_run_warning_is_dropped(demo_store, monkeypatch):
    import logging

    from dashboard import warm

    ran: list[str] = []
    monkeypatch.setattr(warm, "warm", lambda data: ran.append(type(data).__name__))
    thread = warm.start(BoardData(Store.parse(demo_store)))
    thread.join(timeout=30)
    assert ran == ["BoardData"] and thread.name == warm.THREAD and thread.daemon
    record = logging.LogRecord("streamlit", logging.WARNING, __file__, 1, "missing ScriptRunContext", None, None)
    record.threadName = warm.THREAD
    assert not warm._OUTSIDE_SCRIPT_RUN.filter(record)
    record.threadName = "MainThread"
    assert warm._OUTSIDE_SCRIPT_RUN.filter(record)
