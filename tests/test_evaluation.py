"""Issue 28: a large backlog of patients (a rebuild, new rules) is evaluated in worker processes on the
machine's other cores; every signal, status, liver view and detection share equals the evaluation in one
process, on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from events.admission import RawMessage
from events.generator import generate
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections import evaluation, forked
from projections.runner import Projector
from projections.signals import SignalsModel

TABLES = ("signals", "signal_raises", "liver_views", "detection_pairs", "detection_totals", "detection_patients")


def read_model(projector: Projector) -> dict[str, list[tuple[Any, ...]]]:
    db = projector.view.db
    out = {}
    for table in TABLES:
        rows = db.query(f"SELECT * FROM {{t}}{table}")
        if table == "signal_raises":  # its own sequence numbers differ between runs
            rows = [row[1:] for row in rows]
        out[table] = sorted(rows, key=repr)
    return out


def test_worker_processes_evaluate_exactly_as_one_process(store_url: str, monkeypatch: pytest.MonkeyPatch):
    ledger = Ledger(Store.parse(store_url))
    lines = list(generate(120, 2.0, seed=23, mas_share=0.15))
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=500)
    projector = Projector(ledger, SignalsModel(), page=400)  # a backlog of pages: evaluated once, at the end
    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 10**9)
    projector.rebuild()
    alone = read_model(projector)
    assert len(alone["signals"]) > 20 and len(alone["liver_views"]) == 120 and alone["detection_pairs"]

    used: list[int] = []
    in_workers = evaluation.in_workers
    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 1)
    monkeypatch.setattr(evaluation, "CHUNK", 17)
    monkeypatch.setattr(forked, "workers", lambda: 2)
    monkeypatch.setattr(evaluation, "in_workers", lambda *a: used.append(a[-1]) or in_workers(*a))
    projector.rebuild()
    assert used == [2]
    assert read_model(projector) == alone
    # the live path (one page, its facts not committed yet) stays in the projecting process
    extra = ('{"schema_version":1,"message_id":"x-1","source":"registry-1","patient_id":"P000001",'
             '"type":"lab_result","occurred_at":"2023-06-01","data":{"analyte":"PLT","value":40,"unit":"10^9/L"}}')
    Ingestor(ledger).ingest([RawMessage(extra.encode(), {})])
    projector.catch_up()
    assert used == [2]


def test_with_encryption_at_rest_the_workers_answers_are_the_same(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    """The worker processes seal and unseal with the store's key as the projecting process does: every
    answer read back (signals, eDISH, shift tables) equals the evaluation in one process."""
    import base64
    import os

    from events.sealing import KEY_ENV
    from projections.liver import edish_view, lab_shifts
    from projections.signal_queries import query_signals
    from safety.liver import load_liver_config

    monkeypatch.setenv(KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    ledger = Ledger(Store.parse(sqlite_url))
    lines = list(generate(60, 2.0, seed=29, mas_share=0.15))
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=500)
    projector = Projector(ledger, SignalsModel(), page=400)

    def answers() -> list[Any]:
        db = projector.view.db
        signals = [{k: v for k, v in s.items() if k != "updated_at"} for s in query_signals(db)]
        return [signals, edish_view(db, load_liver_config(), after_first_exposure=False), lab_shifts(db)]

    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 10**9)
    projector.rebuild()
    alone = answers()
    assert alone[0] and alone[1]["patients"]
    assert b"P000001" not in b"".join(str(r).encode() for r in projector.view.db.query("SELECT * FROM {t}liver_views"))
    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 1)
    monkeypatch.setattr(forked, "workers", lambda: 2)
    projector.rebuild()
    assert answers() == alone


def test_a_chunk_the_parent_fails_to_store_ends_the_workers_without_a_hang(sqlite_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """The parent stops taking the workers' chunks when storing one fails: the error reaches the caller,
    nothing of that evaluation is committed, the workers end, and the next catch-up evaluates everyone."""
    import multiprocessing

    ledger = Ledger(Store.parse(sqlite_url))
    lines = list(generate(60, 2.0, seed=31, mas_share=0.15))
    Ingestor(ledger).ingest([RawMessage(line.encode(), {}) for line in lines], batch_size=500)
    projector = Projector(ledger, SignalsModel(), page=400)
    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 1)
    monkeypatch.setattr(evaluation, "CHUNK", 7)
    monkeypatch.setattr(forked, "workers", lambda: 2)
    store = SignalsModel._store
    calls: list[int] = []

    def failing(self: SignalsModel, *args: Any) -> None:
        calls.append(1)
        if len(calls) > 1:  # every chunk after the first, in the first try and the one with its text escaped
            raise RuntimeError("disk full")
        store(self, *args)

    monkeypatch.setattr(SignalsModel, "_store", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        projector.rebuild()
    assert not multiprocessing.active_children()
    assert projector.view.db.query("SELECT * FROM {t}signals") == []
    monkeypatch.setattr(SignalsModel, "_store", store)
    projector.catch_up()
    after = read_model(projector)
    monkeypatch.setattr(evaluation, "PARALLEL_FROM", 10**9)
    projector.rebuild()
    assert read_model(projector) == after
