"""The projector's reading of the ledger (issue 28's live path): a catch-up reads each page once, a short
page ends it, and its position reaches the ledger's head even when the last events are of topics the
read model does not take (the next poll then scans nothing again)."""

from __future__ import annotations

from typing import Any

import pytest

from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.efficacy import EfficacyModel
from projections.incidence import IncidenceModel
from projections.runner import Projector
from projections.signals import SignalsModel
from tests.messages import message, raw


def counted_pages(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The start of every page the ledger is asked for from now on."""
    starts: list[int] = []
    page = ledger.page

    def counting(start: int, limit: int, topics: Any) -> Any:
        starts.append(start)
        return page(start, limit, topics)

    monkeypatch.setattr(ledger, "page", counting)
    return starts


def test_a_catch_up_reads_each_page_once_and_tracks_the_head(store: Store, monkeypatch: pytest.MonkeyPatch):
    ledger = Ledger(store)
    ingest = Ingestor(ledger).ingest
    ingest([raw(message("e1", type="enrolment")), raw(message("ae1", type="adverse_event"), 2)])
    projector = Projector(ledger, IncidenceModel(), page=2)
    starts = counted_pages(ledger, monkeypatch)
    assert projector.catch_up() == 2
    assert len(starts) == 2  # a full page, then a short (empty) one: every event read once
    # the last events are lab results, which incidence does not take: one short page, position at the head
    ingest([raw(message("ae2", type="adverse_event", occurred_at="2024-04-01T08:00:00Z"), 3),
            raw(message("lab1"), 4), raw(message("lab2", occurred_at="2024-05-01T08:00:00Z"), 5)])
    starts.clear()
    assert projector.catch_up() == 1
    assert len(starts) == 1
    assert projector.view.position(ledger.name) == ledger.position()
    starts.clear()
    assert projector.catch_up() == 0 and starts == []  # nothing new: not even a page is read
    # the answer is the one a rebuild gives
    fresh = Projector(Ledger(Store.parse(store.url)), IncidenceModel())
    fresh.rebuild()
    rows = "SELECT notification_id, type, patient_id FROM {t}incidence_facts ORDER BY 1"
    assert projector.view.db.query(rows) == fresh.view.db.query(rows) and len(projector.view.db.query(rows)) == 3


def test_a_read_model_file_syncs_at_checkpoints_and_the_ledger_at_every_commit(tmp_path):
    """A read model on SQLite is derived (a power cut undoes whole commits and its position with them):
    its file does not wait for the disk at each commit; the ledger, the record itself, does."""
    store = Store.parse(f"sqlite:///{tmp_path}/ledger.db")
    ledger = Ledger(store)
    Ingestor(ledger).ingest([raw(message("e1", type="enrolment"))])
    projector = Projector(ledger, IncidenceModel())
    projector.catch_up()
    with projector.view.recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA synchronous")
        assert c.fetchall()[0][0] == 1  # NORMAL
    with ledger.recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA synchronous")
        assert c.fetchall()[0][0] == 2  # FULL


@pytest.mark.parametrize("model_class", [IncidenceModel, EfficacyModel, SignalsModel])
def test_a_bulk_load_makes_its_indexes_once_at_the_end(store: Store, model_class):
    """Issue 28: a read model filled from nothing goes without the indexes its writes do not read (each
    page's commit rewrote most of their leaves) and has them all at the end, with the rows the same
    events give when they arrive one at a time."""
    ledger = Ledger(store)
    messages = ([message(f"e{p}", type="enrolment", patient_id=f"P{p}") for p in range(4)]
                + [message(f"i{p}", type="intervention", patient_id=f"P{p}") for p in range(4)]
                + [message(f"ae{p}", type="adverse_event", patient_id=f"P{p}") for p in range(4)]
                + [message(f"esr{p}", patient_id=f"P{p}", data={"analyte": "ESR", "value": 30, "unit": "mm/h"})
                   for p in range(4)])
    model = model_class()
    projector = Projector(ledger, model, page=3)
    names = {name for name, _ in projector.view.deferred_indexes()}
    assert names == set(model.deferred_indexes)

    def indexes() -> set[str]:
        if store.kind == "sqlite":
            rows = projector.view.db.query("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = projector.view.db.query("SELECT indexname FROM pg_indexes WHERE schemaname = {p}", [store.schema])
        return {r[0] for r in rows} & names

    for i, m in enumerate(messages):  # one at a time: never a bulk load
        Ingestor(ledger).ingest([raw(m, i)])
        projector.catch_up()
        assert indexes() == names
    rows = f"SELECT * FROM {{t}}{model.tables[0]} ORDER BY 1"
    arrived = projector.view.db.query(rows)
    during: list[set[str]] = []
    write = model.write
    model.write = lambda cursor, db, events: (during.append(indexes()), write(cursor, db, events))[1]
    projector.rebuild()
    assert len(during) > 1 and all(seen == set() for seen in during)  # every page went without them
    assert indexes() == names
    assert projector.view.db.query(rows) == arrived and arrived


class _Deferring:
    """A read model with deferred work, as signals has after a backlog: ``finish`` says whether it wrote."""

    name, topics, tables = "deferring", ("events.domain:Patient.LabResult",), ()

    def __init__(self) -> None:
        self.pending = False

    def create_statements(self, db: Any) -> list[str]:
        return []

    def write(self, cursor: Any, db: Any, events: Any) -> None:
        self.pending = True

    def finish(self, cursor: Any, db: Any) -> bool:
        wrote, self.pending = self.pending, False
        return wrote


def test_a_read_models_revision_moves_only_when_what_it_holds_changes(store: Store):
    """The key of the board's kept answers: events of other topics move the position, not the revision;
    events of its topics, deferred work done and a rebuild each move it, and it never goes back."""
    from events.workflow import record_audit
    from projections.view import revision_in

    ledger = Ledger(store)
    ingest = Ingestor(ledger).ingest
    ingest([raw(message("e1", type="enrolment")), raw(message("ae1", type="adverse_event"), 2)])
    projector = Projector(ledger, IncidenceModel())
    projector.catch_up()
    seen = [revision_in(projector.view.db, "incidence")]
    ingest([raw(message("lab1"))])  # not incidence's
    record_audit(ledger, "physician", "sign-in")
    projector.catch_up()
    assert projector.view.position(ledger.name) == ledger.position()
    assert revision_in(projector.view.db, "incidence") == seen[-1]
    ingest([raw(message("ae2", type="adverse_event", occurred_at="2024-04-01T08:00:00Z"))])
    projector.catch_up()
    seen.append(revision_in(projector.view.db, "incidence"))
    projector.rebuild()
    seen.append(revision_in(projector.view.db, "incidence"))
    assert len(set(seen)) == 3 and seen == sorted(seen)  # each moved, forward

    deferring = Projector(ledger, _Deferring())  # type: ignore[arg-type]
    deferring.view.finish(deferring.model)
    assert revision_in(deferring.view.db, "deferring") == ()  # nothing deferred, nothing written
    deferring.model.pending = True  # type: ignore[attr-defined]
    deferring.view.finish(deferring.model)
    after_finish = revision_in(deferring.view.db, "deferring")
    deferring.view.finish(deferring.model)
    assert after_finish == (1,) and revision_in(deferring.view.db, "deferring") == after_finish
