"""Incidence before and after the intervention: Table 2 of the seed study, data cuts, amendments,
and a projection that gives the same tables incrementally as when rebuilt."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.files import read_ndjson
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.incidence import COLUMNS, IncidenceModel, incidence
from projections.runner import Projector
from safety.cli import demo_feed_path
from safety.incidence import Fact, Settings, patient_incidence
from tests.messages import message, raw

SERIOUS = {"term": "Pneumonia", "severity": "severe", "serious": True}


def answer(ledger: Ledger, s: Settings | None = None, as_of: datetime | None = None) -> dict:
    s = s or Settings()
    projector = Projector(ledger, IncidenceModel())
    projector.catch_up()
    return incidence(projector.view.db, s, as_of)


@pytest.fixture
def demo_ledger(store: Store) -> Ledger:
    ledger = Ledger(store)
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    return ledger


def test_the_demo_study_reproduces_table_2(demo_ledger):
    a = answer(demo_ledger)
    serious, moderate = a["categories"]["serious"], a["categories"]["moderate_severe"]
    assert a["patients"] == 6
    assert (serious["pre"]["events"], serious["post"]["events"]) == (2, 4)
    assert round(serious["pre"]["monthly_incidence"], 2) == 0.67
    assert round(serious["post"]["monthly_incidence"], 2) == 0.33
    assert round(serious["pre"]["incidence_per_person_month"], 3) == 0.111
    assert round(serious["post"]["incidence_per_person_month"], 3) == 0.056
    assert round(serious["p_fisher_person_months"], 2) == 0.60
    assert (moderate["pre"]["events"], moderate["post"]["events"]) == (1, 1)
    assert round(moderate["pre"]["monthly_incidence"], 2) == 0.33
    assert round(moderate["post"]["monthly_incidence"], 2) == 0.08
    assert round(moderate["pre"]["incidence_per_person_month"], 3) == 0.056
    assert round(moderate["post"]["incidence_per_person_month"], 3) == 0.014
    assert round(moderate["p_fisher_person_months"], 2) == 0.36
    assert serious["pre"]["person_months"] == 18 and serious["post"]["person_months"] == 72


# Table 2, per patient: (serious pre, serious post, moderate-severe pre, moderate-severe post)
TABLE_2 = {
    "MSC-01": (0.67, 0.17, 0, 0), "MSC-02": (0, 0.08, 0, 0), "MSC-03": (0, 0, 0.33, 0.08),
    "MSC-04": (0, 0, 0, 0), "MSC-05": (0, 0, 0, 0), "MSC-06": (0, 0.08, 0, 0),
}


def test_per_patient_rows_equal_table_2(demo_ledger):
    rows = {r["patient_id"]: r for r in answer(demo_ledger)["per_patient"]}
    got = {
        pid: tuple(round(r[c][side]["monthly_incidence"], 2)
                   for c in ("serious", "moderate_severe") for side in ("pre", "post"))
        for pid, r in rows.items()
    }
    assert got == TABLE_2


def test_the_episode_table_names_the_terms_and_treatment_changes(demo_ledger):
    episodes = {(e["patient_id"], e["episode"]): e for e in answer(demo_ledger)["episodes"]}
    assert episodes[("MSC-01", "-3-0")]["serious"] == ["Haematemesis (drug-induced)", "Faecal impaction"]
    assert episodes[("MSC-02", "9-12")]["serious"] == ["Bilateral pneumonia"]
    assert episodes[("MSC-03", "3-6")]["moderate_severe"] == ["Upper respiratory tract infection"]
    assert "Wk 11: MSC infusion" in episodes[("MSC-01", "0-3")]["treatments"]
    assert "Wk 28: rituximab start" in episodes[("MSC-02", "6-9")]["treatments"]
    assert [label for (pid, label) in episodes if pid == "MSC-06"] == ["-3-0", "0-3", "3-6", "6-9", "9-12"]


def test_retraction_lowers_counts_and_as_of_before_it_gives_the_old_numbers(demo_ledger):
    before = answer(demo_ledger)
    cut = datetime.now(UTC)
    time.sleep(0.01)
    Ingestor(demo_ledger).ingest([raw(message(
        "retract-pneumonia", type="retraction", source="umcu-msc-jia", patient_id="MSC-02",
        occurred_at="2015-06-01", data={"target_message_id": "MSC-02-ae-1", "reason": "entered in error"}))])
    after = answer(demo_ledger)
    then = answer(demo_ledger, as_of=cut)
    assert after["categories"]["serious"]["post"]["events"] == 3
    assert then["categories"] == before["categories"]
    assert then["ledger_position"] == before["ledger_position"] < after["ledger_position"]
    assert after["fingerprint"] != then["fingerprint"]
    assert answer(demo_ledger, as_of=cut)["fingerprint"] == then["fingerprint"]  # reproducible


def test_data_cut_stops_person_time_and_excludes_later_events(demo_ledger):
    # Patient 1's week-30 faecal impaction is after this cut; the cut falls 6 months after his anchor.
    a = answer(demo_ledger, Settings(data_cut=datetime(2014, 9, 4, tzinfo=UTC)))
    p1 = next(r for r in a["per_patient"] if r["patient_id"] == "MSC-01")
    assert p1["serious"]["post"]["events"] == 1
    assert p1["serious"]["post"]["months"] == pytest.approx(6.0, abs=0.05)
    assert a["patients"] == 3  # patients 4-6 had no infusion by then
    assert a["data_cut"] == "2014-09-03"


def anchor_facts(*extra: Fact) -> list[Fact]:
    return [Fact("i", "intervention", datetime(2020, 1, 1, tzinfo=UTC), {"name": "MSC infusion"}), *extra]


def test_a_linked_hospitalisation_is_not_counted_twice_and_an_unlinked_one_is_serious():
    at = datetime(2020, 3, 1, tzinfo=UTC)
    facts = anchor_facts(
        Fact("ae", "adverse_event", at, {"term": "Colitis", "severity": "moderate", "serious": False}),
        Fact("h1", "hospitalisation", at, {"reason": "colitis", "adverse_event_message_id": "ae"}),
        Fact("h2", "hospitalisation", at, {"reason": "fall"}),
    )
    p = patient_incidence("s", "p", facts, Settings())
    assert p is not None
    assert p.events["serious"]["post"] == 2  # the AE made serious by its admission, and the fall
    assert p.events["moderate_severe"]["post"] == 0
    assert p.events["all"]["post"] == 2


def test_grade_two_counts_as_moderate_severe_and_withdrawal_stops_person_time():
    facts = anchor_facts(
        Fact("a", "adverse_event", datetime(2020, 2, 1, tzinfo=UTC),
             {"term": "Rash", "ctcae_grade": 2, "serious": False}),
        Fact("w", "withdrawal", datetime(2020, 7, 1, tzinfo=UTC), {"reason": "moved"}),
        Fact("b", "adverse_event", datetime(2020, 8, 1, tzinfo=UTC),
             {"term": "Rash", "severity": "severe", "serious": False}),
    )
    p = patient_incidence("s", "p", facts, Settings())
    assert p is not None
    assert p.events["moderate_severe"]["post"] == 1
    assert p.months("post") == 6.0


def test_a_patient_without_the_anchor_is_left_out():
    assert patient_incidence("s", "p", [Fact("x", "intervention", datetime(2020, 1, 1, tzinfo=UTC),
                                             {"name": "Other"})], Settings()) is None


def table(projector: Projector) -> list[tuple]:
    return projector.view.db.query(
        "SELECT " + ", ".join(c for c in COLUMNS if c != "recorded_at")
        + " FROM {t}incidence_facts ORDER BY notification_id")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=325), max_size=4, unique=True),
       page=st.integers(min_value=1, max_value=97))
def test_incremental_projection_equals_rebuild(tmp_path_factory, cuts, page):
    """Ingest the demo in chunks, catching up after each, with any page size: same rows as a rebuild."""
    store = Store.parse(f"sqlite:///{tmp_path_factory.mktemp('inc')}/ledger.db")
    ledger = Ledger(store)
    lines = list(read_ndjson(str(demo_feed_path())))
    projector = Projector(ledger, IncidenceModel(), page=page)
    bounds = [0, *sorted(cuts), len(lines)]
    for a, b in pairwise(bounds):
        Ingestor(ledger).ingest(lines[a:b], batch_size=50)
        projector.catch_up()
    projector.catch_up()  # nothing left: counts nothing twice
    incremental = table(projector)
    fresh = Projector(ledger, IncidenceModel(), page=1000)
    fresh.rebuild()
    assert table(fresh) == incremental
    assert len(incremental) == len({row[0] for row in incremental})


def test_incremental_equals_rebuild_on_each_store(store):
    ledger = Ledger(store)
    lines = list(read_ndjson(str(demo_feed_path())))
    projector = Projector(ledger, IncidenceModel(), page=7)
    for start in range(0, len(lines), 60):
        Ingestor(ledger).ingest(lines[start:start + 60])
        projector.catch_up()
    incremental = table(projector)
    projector.rebuild()
    assert table(projector) == incremental


def test_a_hospitalisation_goes_with_its_retracted_event_but_counts_while_its_event_is_unknown():
    at = datetime(2020, 3, 1, tzinfo=UTC)
    admission = Fact("h", "hospitalisation", at, {"reason": "x", "adverse_event_message_id": "ae"})
    gone = patient_incidence("s", "p", anchor_facts(admission), Settings(), retracted={"ae"})
    pending = patient_incidence("s", "p", anchor_facts(admission), Settings())
    assert gone is not None and pending is not None
    assert gone.events["serious"]["post"] == 0
    assert pending.events["serious"]["post"] == 1


def test_reading_only_the_patients_with_an_intervention_gives_the_answer_of_reading_everyone(store, monkeypatch):
    """Issue 28: the query reads only the patients with an intervention (the only ones an anchor can be
    found for); a name corrected into the anchor, an anchor retracted, a knowledge time and a data cut give
    what reading every patient gives, with the same ledger position in the fingerprint."""
    import projections.incidence as module

    intervention = {"name": "MSC infusion"}
    messages = [
        message("a1", type="intervention", patient_id="A", occurred_at="2024-03-01", data=intervention),
        message("a2", type="adverse_event", patient_id="A", occurred_at="2024-02-01", data=SERIOUS),
        message("a3", type="adverse_event", patient_id="A", occurred_at="2024-05-01", data=SERIOUS),
        message("b1", type="intervention", patient_id="B", occurred_at="2024-03-01", data={"name": "other"}),
        message("b2", type="adverse_event", patient_id="B", occurred_at="2024-04-01", data=SERIOUS),
        message("c1", type="adverse_event", patient_id="C", occurred_at="2024-04-01", data=SERIOUS),
        message("d1", type="intervention", patient_id="D", occurred_at="2024-03-01", data=intervention),
        message("d2", type="adverse_event", patient_id="D", occurred_at="2024-04-01", data=SERIOUS),
    ]
    ledger = Ledger(store)
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(messages)])
    between = datetime.now(UTC)
    time.sleep(0.01)
    amendments = [
        message("b3", type="correction", patient_id="B", occurred_at="2024-06-01",
                data={"target_message_id": "b1", "reason": "name", "data": intervention}),
        message("d3", type="retraction", patient_id="D", occurred_at="2024-06-01",
                data={"target_message_id": "d1", "reason": "wrong patient"}),
        message("c2", type="adverse_event", patient_id="C", occurred_at="2024-07-01", data=SERIOUS),
    ]
    Ingestor(ledger).ingest([raw(m, 20 + i) for i, m in enumerate(amendments)])
    read_all = module.load_facts
    for as_of in (None, between):
        for s in (Settings(), Settings(data_cut=datetime(2024, 4, 15, tzinfo=UTC))):
            narrow = answer(ledger, s, as_of)
            monkeypatch.setattr(module, "load_facts", lambda db, at, anchored=False: read_all(db, at))
            everyone = answer(ledger, s, as_of)
            monkeypatch.setattr(module, "load_facts", read_all)
            assert narrow == everyone
    assert {p["patient_id"] for p in answer(ledger)["per_patient"]} == {"A", "B"}
    assert {p["patient_id"] for p in answer(ledger, as_of=between)["per_patient"]} == {"A", "D"}
