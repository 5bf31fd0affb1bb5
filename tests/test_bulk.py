"""Issue 28: a large backlog's pages are read, decoded and made into rows in worker processes
(``projections.bulk``); the read model is the one the projector's page-by-page path writes, on both stores,
and anything out of the ordinary goes on page by page as before."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from events.admission import RawMessage
from events.generator import generate
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections import bulk
from projections.efficacy import EfficacyModel
from projections.runner import Projector
from projections.signals import SignalsModel
from projections.view import View

#: every table of each model, with the columns that differ between two runs left out (sequence numbers)
TABLES = {"signals": ("signal_facts", "signal_dirty", "signal_span", "signals", "signal_raises", "liver_views",
                      "detection_pairs", "detection_totals", "detection_patients"),
          "efficacy": ("efficacy_facts",)}


def contents(projector: Projector) -> dict[str, Any]:
    db = projector.view.db
    out: dict[str, Any] = {"position": projector.view.position(projector.ledger.name)}
    for table in TABLES[projector.model.name]:
        rows = db.query(f"SELECT * FROM {{t}}{table}")
        out[table] = sorted((row[1:] if table == "signal_raises" else row for row in rows), key=repr)
    return out


@pytest.fixture
def ledger(store_url: str) -> Ledger:
    ledger = Ledger(Store.parse(store_url))
    lines = list(generate(60, 2.0, seed=29, mas_share=0.2))
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=500)
    return ledger


def spans_written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Use workers for any backlog of more than a page; returns the positions their spans were written at."""
    monkeypatch.setattr(bulk, "SPANS_FROM", 1)
    monkeypatch.setattr(bulk, "SPAN_PAGES", {"sqlite": 1, "postgresql": 1})
    monkeypatch.setattr(bulk, "workers", lambda: 2)
    written: list[int] = []
    write_rows = View.write_rows
    monkeypatch.setattr(View, "write_rows", lambda self, rows, tracking, after: (
        written.append(tracking.notification_id), write_rows(self, rows, tracking, after))[1])
    return written


@pytest.mark.parametrize("model_class", [SignalsModel, EfficacyModel])
def test_a_backlog_read_in_workers_gives_the_read_model_of_page_by_page(ledger: Ledger, model_class: Any,
                                                                        monkeypatch: pytest.MonkeyPatch):
    projector = Projector(ledger, model_class(), page=97)  # spans that end mid-stream and mid-patient
    monkeypatch.setattr(bulk, "SPANS_FROM", 10**9)
    projector.rebuild()
    by_page = contents(projector)
    assert by_page["position"] == ledger.position() and len(by_page[TABLES[model_class.name][0]]) > 1000

    written = spans_written(monkeypatch)
    projector.rebuild()
    assert len(written) > 10 and written == sorted(written)
    assert contents(projector) == by_page
    # spans of several pages, one transaction each
    monkeypatch.setattr(bulk, "SPAN_PAGES", {"sqlite": 3, "postgresql": 3})
    written.clear()
    projector.rebuild()
    assert len(written) > 3 and all(b - a <= 3 * 97 for a, b in pairwise(written))
    assert contents(projector) == by_page


def test_a_span_a_worker_cannot_read_goes_on_page_by_page_and_stops_at_the_same_event(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    """An event the model cannot apply: the projector's own path meets it, keeps everything before it and
    records the same stop as when every page is read in the projecting process."""
    poisoned = ledger.position() // 2
    rows = SignalsModel.rows

    def refusing(self: SignalsModel, db: Any, events: Sequence[tuple[int, Any]]) -> Any:
        if any(nid == poisoned for nid, _ in events):
            raise ValueError("cannot apply this event")
        return rows(self, db, events)

    monkeypatch.setattr(SignalsModel, "rows", refusing)  # in the forked workers too
    projector = Projector(ledger, SignalsModel(), page=97)
    monkeypatch.setattr(bulk, "SPANS_FROM", 10**9)
    projector.rebuild()
    stop = projector.view.stopped()
    assert stop is not None and stop.notification_id == poisoned and stop.position == poisoned - 1
    by_page = contents(projector)

    written = spans_written(monkeypatch)
    projector.rebuild()
    assert written and max(written) < poisoned
    again = projector.view.stopped()
    assert again is not None and replace(again, stopped_at=stop.stopped_at) == stop
    assert contents(projector) == by_page


def test_a_span_the_store_refuses_goes_on_page_by_page(ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    projector = Projector(ledger, SignalsModel(), page=97)
    monkeypatch.setattr(bulk, "SPANS_FROM", 10**9)
    projector.rebuild()
    by_page = contents(projector)

    written = spans_written(monkeypatch)
    write_rows = View.write_rows

    def refused_third(self: View, rows: Any, tracking: Any, after: int) -> None:
        if len(written) == 3:
            raise OperationalError("database is locked")
        write_rows(self, rows, tracking, after)

    monkeypatch.setattr(View, "write_rows", refused_third)
    projector.rebuild()
    assert len(written) == 3  # three spans from the workers, then page by page from the fourth
    assert contents(projector) == by_page


def test_a_backlog_cut_short_is_evaluated_whole_by_the_next_process(ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    """A deferred backlog marks its patients once, from its first page (``signal_backlog``): a process that
    dies after some pages leaves that mark committed with them, and the next one evaluates every patient of
    the backlog, those of the pages before the crash included."""
    projector = Projector(ledger, SignalsModel(), page=97)
    projector.rebuild()
    whole = contents(projector)

    write_rows = SignalsModel.write_rows
    pages: list[int] = []

    def dying(self: SignalsModel, *args: Any) -> None:
        pages.append(1)
        if len(pages) == 6:
            raise KeyboardInterrupt  # the process is stopped mid-backlog
        write_rows(self, *args)

    monkeypatch.setattr(SignalsModel, "write_rows", dying)
    monkeypatch.setattr(View, "finish", lambda *a: None)  # killed: its finally blocks never run
    with pytest.raises(KeyboardInterrupt):
        Projector(ledger, SignalsModel(), page=97).rebuild()
    monkeypatch.undo()
    cut = Projector(ledger, SignalsModel(), page=97)
    assert 0 < cut.view.position(ledger.name) < ledger.position()
    first = cut.view.db.query("SELECT MIN(notification_id) FROM {t}signal_facts")[0][0]
    assert cut.view.db.query("SELECT writer, since FROM {t}signal_backlog") == [("all", first)]
    assert cut.view.db.query("SELECT COUNT(*) FROM {t}signals") == [(0,)]

    cut.catch_up()
    assert contents(cut) == whole
    assert cut.view.db.query("SELECT * FROM {t}signal_backlog") == []


def test_a_backlog_on_a_store_in_use_evaluates_only_its_own_patients(store_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch):
    ledger = Ledger(Store.parse(store_url))
    lines = list(generate(40, 2.0, seed=31, mas_share=0.2))
    by_patient: dict[str, list[str]] = {}
    for line in lines:
        by_patient.setdefault(json.loads(line)["message_id"].split("-")[0], []).append(line)  # bad ones too
    first, later = sorted(by_patient)[:30], sorted(by_patient)[30:]
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for p in first for line in by_patient[p]])
    projector = Projector(ledger, SignalsModel(), page=97)
    projector.catch_up()

    evaluated: list[str] = []
    from projections import evaluation
    evaluate_chunk = evaluation.evaluate_chunk
    monkeypatch.setattr(evaluation, "evaluate_chunk", lambda fetch, db, keys, *a: (
        evaluated.extend(db.sealer.untoken(pid) for _, pid in keys), evaluate_chunk(fetch, db, keys, *a))[1])
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for p in later for line in by_patient[p]])
    assert ledger.position() - projector.view.position(ledger.name) > 97  # a backlog: deferred
    projector = Projector(ledger, SignalsModel(), page=97)  # a new process: its liver check runs too
    projector.catch_up()
    assert sorted(evaluated) == later


def test_under_encryption_at_rest_facts_read_as_stored_text_make_the_same_rows(sqlite_url: str,
                                                                               monkeypatch: pytest.MonkeyPatch):
    """A bulk load reads the signals model's facts as their stored text (``Ledger.decode_as_text``); with the
    ledger encrypted and the read model sealed, every page's rows are those its events make, unsealed."""
    import base64
    import os

    from events.domain import Patient
    from events.encoding import RecordedText
    from events.sealing import KEY_ENV

    monkeypatch.setenv(KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    ledger = Ledger(Store.parse(sqlite_url))
    lines = list(generate(30, 2.0, seed=37, mas_share=0.2))
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=500)
    model = SignalsModel()
    db = Projector(ledger, model).view.db
    assert db.sealer.enabled

    def opened(rows: Any) -> Any:
        facts, dirty, actions, exposure = rows
        return [(*f[:7], db.sealer.unseal(f[7])) for f in facts], dirty, actions, exposure

    notes = ledger.page(0, 10**6, model.topics)
    as_text = [(n.id, ledger.decode_as_text(n)) for n in notes]
    decoded = [(n.id, ledger.decode(n)) for n in notes]
    assert all((type(text) is RecordedText) == isinstance(event, Patient.Recorded)
               for (_, text), (_, event) in zip(as_text, decoded, strict=True))
    assert opened(model.rows(db, as_text)) == opened(model.rows(db, decoded))
