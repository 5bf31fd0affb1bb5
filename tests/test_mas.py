"""MAS early warning: patient 6 of the seed study, unit-independence, the 2016 criteria at their
published boundaries, clinical-time evaluation, the MS score, and the signal workflow."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.files import read_ndjson
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from events.workflow import act_on_signal
from projections.runner import Projector
from projections.signal_queries import query_signals, signal_actions
from projections.signals import SignalsModel, load_config
from safety.cli import demo_feed_path
from safety.mas import (
    Finding,
    History,
    Lab,
    LabIndex,
    _ferritin_above,
    _ms_findings_known,
    criteria_2016,
    ferritin_esr_ratio,
    fired_at,
    ms_score,
    rules_with_results,
)
from tests.messages import message, raw

CONFIG = load_config()
T0 = datetime(2020, 5, 4, 9, tzinfo=UTC)


def signals_of(ledger: Ledger, **filters) -> list[dict]:
    projector = Projector(ledger, SignalsModel())
    projector.catch_up()
    return query_signals(projector.view.db, **filters)


@pytest.fixture
def demo(store: Store) -> Ledger:
    ledger = Ledger(store)
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    return ledger


def test_patient_6_gets_a_mas_trend_warning_and_the_criteria_say_why_not_met(demo):
    [s] = signals_of(demo, kind="mas_trend")
    assert (s["patient_id"], s["level"], s["status"]) == ("MSC-06", "warning", "open")
    fired = {e["rule"]: e for e in s["evidence"]}
    assert set(fired) == {"wbc_falling", "platelets_falling", "esr_rising", "triglycerides_rising"}
    assert (fired["wbc_falling"]["previous"], fired["wbc_falling"]["current"]) == (3.2, 1.7)
    assert (fired["platelets_falling"]["previous"], fired["platelets_falling"]["current"]) == (170, 89)
    assert (fired["esr_rising"]["previous"], fired["esr_rising"]["current"]) == (40, 82)
    assert (fired["triglycerides_rising"]["previous"], fired["triglycerides_rising"]["current"]) == (1.2, 2.8)
    for e in s["evidence"]:
        assert {"rule", "analyte", "previous", "current", "unit", "change_pct", "previous_at", "current_at"} <= set(e)
    c = s["criteria_2016"]
    assert c["met"] is False and c["fever"] is False
    assert "afebrile" in c["reasons"]
    assert "ferritin 41.2 ug/L not above 684" in c["reasons"]
    assert c["items"]["ferritin"]["value"] == 41.2
    assert "blunted" in c["note"]  # tocilizumab stopped 9 weeks before
    assert s["priority"] == "high"
    assert any("tocilizumab stopped 9 weeks" in reason for reason in s["context"])
    assert s["occurred_at"].startswith("2015-10-26T14:10")


def test_patients_1_to_5_get_no_mas_signal(demo):
    mas = [s for s in signals_of(demo) if s["kind"] != "serious_adverse_event"]
    assert {s["patient_id"] for s in mas} == {"MSC-06"}


def test_serious_adverse_events_raise_alerts(demo):
    sae = signals_of(demo, kind="serious_adverse_event")
    assert len(sae) == 6 and {s["level"] for s in sae} == {"alert"}


def _patient_6_panels(units: str) -> list[dict]:
    si = units == "si"
    def labs(mid: str, at: str, wbc, plt, esr, tg, fib, ferritin=None):
        out = [("WBC", wbc, "10^9/L"), ("PLT", plt, "10^9/L" if si else "10^3/µL"), ("ESR", esr, "mm/h"),
               ("TG", tg if si else round(tg * 88.57, 3), "mmol/L" if si else "mg/dL"),
               ("FIBRINOGEN", fib if si else fib * 100, "g/L" if si else "mg/dL")]
        if ferritin is not None:
            out.append(("FERRITIN", ferritin, "ug/L" if si else "ng/mL"))
        return [message(f"{mid}-{a}", patient_id="P6", occurred_at=at, data={"analyte": a, "value": v, "unit": u})
                for a, v, u in out]
    return [
        message("enrol", type="enrolment", patient_id="P6", occurred_at="2015-06-15",
                data={"sex": "M", "diagnosis": "systemic", "mas_history": True}),
        *labs("v", "2015-10-24T09:30:00Z", 3.2, 170, 40, 1.2, 3.8),
        message("er-finding", type="clinical_finding", patient_id="P6", occurred_at="2015-10-26T14:10:00Z",
                data={"fever": False, "cns_involvement": True}),
        *labs("er", "2015-10-26T14:10:00Z", 1.7, 89, 82, 2.8, 3.4, 41.2),
    ]


def _mas_signals(store_url: str, msgs: list[dict]) -> list[dict]:
    ledger = Ledger(Store.parse(store_url))
    Ingestor(ledger).ingest([raw(m) for m in msgs])
    return [{k: s[k] for k in ("id", "kind", "level", "occurred_at", "criteria_2016")}
            | {"evidence": [(e["rule"], round(e["previous"], 3), round(e["current"], 3), e["unit"])
                            for e in s["evidence"]]}
            for s in signals_of(ledger) if s["kind"] != "serious_adverse_event"]


def test_the_same_patient_in_other_units_gives_the_same_signal(tmp_path):
    si = _mas_signals(f"sqlite:///{tmp_path}/si.db", _patient_6_panels("si"))
    us = _mas_signals(f"sqlite:///{tmp_path}/us.db", _patient_6_panels("conventional"))
    assert si and si == us
    assert si[0]["level"] == "warning"


def test_panels_arriving_in_reverse_or_random_order_give_the_same_final_signals(tmp_path):
    msgs = _patient_6_panels("si")
    in_order = _mas_signals(f"sqlite:///{tmp_path}/a.db", msgs)
    reverse = _mas_signals(f"sqlite:///{tmp_path}/b.db", list(reversed(msgs)))
    shuffled = msgs[:]
    random.Random(3).shuffle(shuffled)
    ledger = Ledger(Store.parse(f"sqlite:///{tmp_path}/c.db"))
    projector = Projector(ledger, SignalsModel())
    for m in shuffled:  # one at a time, the projection catching up after each
        Ingestor(ledger).ingest([raw(m)])
        projector.catch_up()
    one_by_one = [s for s in query_signals(projector.view.db) if s["kind"] != "serious_adverse_event"]
    assert in_order == reverse
    assert [s["id"] for s in one_by_one] == [s["id"] for s in in_order]


# --- 2016 criteria at the published boundaries ----------------------------------------------------

def history(fever: bool | None = True, temperature: float | None = None, **labs: float) -> History:
    h = History("s", "p", diagnosis="systemic")
    units = {"FERRITIN": "ug/L", "PLT": "10^9/L", "AST": "U/L", "TG": "mmol/L", "FIBRINOGEN": "g/L",
             "LDH": "U/L", "ESR": "mm/h"}
    for analyte, value in labs.items():
        h.labs.append(Lab(analyte, analyte, value, units[analyte], T0))
    data = {}
    if fever is not None:
        data["fever"] = fever
    if temperature is not None:
        data["temperature_c"] = temperature
    if data:
        h.findings.append(Finding(T0, data))
    return h


@pytest.mark.parametrize(
    ("labs", "met"),
    [
        ({"FERRITIN": 685, "PLT": 181, "AST": 48.1}, True),     # <= for platelets, > for AST
        ({"FERRITIN": 684, "PLT": 100, "AST": 100}, False),     # ferritin must be > 684
        ({"FERRITIN": 2000, "PLT": 181.1, "AST": 48}, None),    # neither holds; TG, fibrinogen unknown
        ({"FERRITIN": 2000, "TG": 156 / 88.57, "FIBRINOGEN": 3.6, "PLT": 300, "AST": 20}, False),  # TG >
        ({"FERRITIN": 2000, "TG": 157 / 88.57, "FIBRINOGEN": 3.6}, True),  # fibrinogen <= 3.6 g/L
        ({"FERRITIN": 2000, "FIBRINOGEN": 3.61, "PLT": 181}, None),
        ({"FERRITIN": 2000, "FIBRINOGEN": 3.61, "PLT": 181.5, "AST": 30, "TG": 1.0}, False),
    ],
)
def test_criteria_follow_the_published_operators(labs, met):
    assert criteria_2016(history(fever=True, **labs), T0, CONFIG)["met"] is met


def test_criteria_are_not_evaluable_when_items_are_missing_and_name_them():
    c = criteria_2016(history(fever=True, FERRITIN=2000, PLT=100), T0, CONFIG)
    assert c["met"] is None
    assert set(c["missing"]) == {"ast", "triglycerides", "fibrinogen"}


def test_fever_from_temperature_at_the_configurable_cut_off():
    assert criteria_2016(history(fever=None, temperature=38.0, FERRITIN=900, PLT=100, AST=60), T0, CONFIG)["met"]
    c = criteria_2016(history(fever=None, temperature=37.9, FERRITIN=900, PLT=100, AST=60), T0, CONFIG)
    assert c["met"] is False and c["fever"] is False
    unknown = criteria_2016(history(fever=None, FERRITIN=900, PLT=100, AST=60), T0, CONFIG)
    assert unknown["met"] is None and unknown["missing"][0] == "fever"


def test_a_febrile_patient_meeting_the_criteria_gets_an_alert(sqlite_url):
    ledger = Ledger(Store.parse(sqlite_url))
    at = "2021-02-01T10:00:00Z"
    msgs = [message("f", type="clinical_finding", occurred_at=at, data={"temperature_c": 39.2})]
    for analyte, value, unit in (("FERRITIN", 5400, "ng/mL"), ("PLT", 120, "10^9/L"), ("AST", 95, "U/L")):
        msgs.append(message(analyte, occurred_at=at, data={"analyte": analyte, "value": value, "unit": unit}))
    Ingestor(ledger).ingest([raw(m) for m in msgs])
    [s] = signals_of(ledger, kind="mas_criteria_2016")
    assert s["level"] == "alert" and s["criteria_2016"]["met"] is True


# --- MS score (Minoia 2019) worked examples from clinical.md s2a -----------------------------------

@pytest.mark.parametrize(
    ("plt", "ldh", "fib_mg_dl", "ferritin", "expected", "flagged"),
    [(150, 600, 200, 5000, -1.45, True), (450, 300, 500, 800, -4.27, False)],
)
def test_ms_score_worked_examples(plt, ldh, fib_mg_dl, ferritin, expected, flagged):
    h = history(fever=True, PLT=plt, LDH=ldh, FIBRINOGEN=fib_mg_dl / 100, FERRITIN=ferritin)
    h.findings[0] = Finding(T0, {"fever": True, "cns_involvement": False, "haemorrhage": False,
                                 "active_arthritis": True})
    score = ms_score(h, T0, CONFIG)
    assert score["score"] == pytest.approx(expected, abs=0.01)
    assert score["flagged"] is flagged


def test_ms_score_names_missing_inputs():
    assert ms_score(history(fever=True, PLT=100), T0, CONFIG)["missing"] == [
        "LDH", "FIBRINOGEN", "FERRITIN", "cns_involvement", "haemorrhage", "active_arthritis"]


# --- the evaluation asks the criteria and the score only where they can hold -------------------------

#: each analyte over a range that crosses its thresholds (canonical units)
_RANGES = {"FERRITIN": 4000, "PLT": 500, "AST": 200, "TG": 5, "FIBRINOGEN": 6, "LDH": 2000, "ESR": 100}
_LAB = st.sampled_from(sorted(_RANGES)).flatmap(
    lambda a: st.tuples(st.just(a), st.floats(0, _RANGES[a]), st.integers(0, 3)))
_FINDING = st.tuples(st.integers(0, 3), st.fixed_dictionaries({}, optional={
    "fever": st.booleans(), "temperature_c": st.floats(35, 41), "cns_involvement": st.booleans(),
    "haemorrhage": st.booleans(), "active_arthritis": st.booleans()}))


@settings(max_examples=400, deadline=None)
@given(labs=st.lists(_LAB, min_size=4, max_size=20), findings=st.lists(_FINDING, min_size=1, max_size=4))
def test_the_moments_skipped_are_those_where_neither_the_criteria_nor_the_score_can_flag(labs, findings):
    """``evaluate`` asks ``criteria_2016`` only where ferritin is above 684 and ``ms_score`` only where every
    clinical input is known: at every moment of a random history, a met criteria or a flagged score
    implies the guard let it through, so no signal is lost to the shortcut."""
    h = History("s", "p", diagnosis="systemic")
    h.labs.extend(Lab(f"m{i}", a, v, "u", T0 + timedelta(days=d)) for i, (a, v, d) in enumerate(labs))
    h.findings.extend(Finding(T0 + timedelta(days=d), data) for d, data in findings)
    index = LabIndex(h.labs)
    for at in sorted({lab.at for lab in h.labs} | {f.at for f in h.findings}):
        if criteria_2016(h, at, CONFIG, index)["met"]:
            assert _ferritin_above(index, at, CONFIG)
        if ms_score(h, at, CONFIG, index).get("flagged"):
            assert _ms_findings_known(h, at, CONFIG)


_ANY_LAB = st.sampled_from(sorted({**_RANGES, "WBC": 20, "CRP": 200})).flatmap(
    lambda a: st.tuples(st.just(a), st.floats(0, {**_RANGES, "WBC": 20, "CRP": 200}[a]), st.integers(0, 20)))


@settings(max_examples=400, deadline=None)
@given(labs=st.lists(_ANY_LAB, min_size=1, max_size=20), findings=st.lists(_FINDING, max_size=3))
def test_what_the_evaluation_leaves_unasked_could_not_hold(labs, findings):
    """``evaluate`` tries at each moment only the rules with a result of their analyte, and the criteria,
    the score and the ratio only for a patient with a ferritin (each needs one), the score only with
    findings: at every moment of a random history, asking everything finds nothing more."""
    h = History("s", "p", diagnosis="systemic")
    h.labs.extend(Lab(f"m{i}", a, v, "u", T0 + timedelta(days=d)) for i, (a, v, d) in enumerate(labs))
    h.findings.extend(Finding(T0 + timedelta(days=d), data) for d, data in findings)
    index = LabIndex(h.labs)
    rules = rules_with_results(index, CONFIG)
    for at in sorted({lab.at for lab in h.labs} | {f.at for f in h.findings}):
        assert fired_at(index, at, CONFIG, rules) == fired_at(index, at, CONFIG)
        if "FERRITIN" not in index.times:
            assert not criteria_2016(h, at, CONFIG, index)["met"]
            assert not ferritin_esr_ratio(h, at, CONFIG, index).get("flagged")
        if "FERRITIN" not in index.times or not h.findings:
            assert not ms_score(h, at, CONFIG, index).get("flagged")


# --- the workflow ----------------------------------------------------------------------------

def test_acknowledge_review_and_close_are_recorded_with_the_user(demo):
    [s] = signals_of(demo, kind="mas_trend")
    assert act_on_signal(demo, s["id"], "ack", "dr.jones", "seen, calling the ward") == "acknowledged"
    assert act_on_signal(demo, s["id"], "review", "dr.jones", "bloods repeated") == "under_review"
    with pytest.raises(ValueError, match="Closing needs a reason"):
        act_on_signal(demo, s["id"], "close", "dr.jones", "")
    assert act_on_signal(demo, s["id"], "close", "dr.smith", "treated", "confirmed MAS") == "closed"
    with pytest.raises(ValueError, match="is closed already"):
        act_on_signal(demo, s["id"], "ack", "dr.jones", "")
    [after] = signals_of(demo, kind="mas_trend")
    assert after["status"] == "closed"
    projector = Projector(demo, SignalsModel())
    trail = signal_actions(projector.view.db, s["id"])
    assert [(a["action"], a["by_user"]) for a in trail] == [
        ("ack", "dr.jones"), ("review", "dr.jones"), ("close", "dr.smith")]
    assert trail[-1]["reason"] == "confirmed MAS"
    projector.rebuild()  # the actions are facts in the ledger: a rebuild keeps the status
    assert query_signals(projector.view.db, kind="mas_trend")[0]["status"] == "closed"
    earlier = datetime.fromisoformat(trail[0]["at"].replace("Z", "+00:00")) - timedelta(microseconds=1)
    assert query_signals(projector.view.db, kind="mas_trend", as_of=earlier)[0]["status"] == "open"


def test_signals_json_from_the_command_line(sqlite_url):
    from typer.testing import CliRunner

    from safety.cli import app

    runner = CliRunner()
    runner.invoke(app, ["demo", "--no-board", "--store", sqlite_url])
    out = runner.invoke(app, ["signals", "--status", "open", "--patient", "MSC-06", "--format", "json",
                              "--store", sqlite_url])
    rows = json.loads(out.stdout)
    assert {r["kind"] for r in rows} == {"mas_trend", "serious_adverse_event"}
    mas = next(r for r in rows if r["kind"] == "mas_trend")
    ack = runner.invoke(app, ["signal", "ack", mas["id"], "--by", "dr.jones", "--note", "seen", "--store", sqlite_url])
    assert ack.exit_code == 0 and json.loads(ack.stdout)["status"] == "acknowledged"
    bad = runner.invoke(app, ["signal", "ack", "nope", "--by", "x", "--store", sqlite_url])
    assert bad.exit_code == 1
