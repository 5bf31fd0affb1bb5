"""Ingest into the ledger, on SQLite and on PostgreSQL alike: idempotency, conflicts,
quarantine, amendments and concurrent writers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from events.files import read_ndjson
from events.history import patient_history
from events.ingest import Ingestor
from events.ledger import Ledger
from events.parsers import ParserPool
from events.store import Store
from safety.cli import demo_feed_path
from tests.messages import message, raw
from tests.reliability import record


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store)


def test_the_demo_study_ingested_twice_is_all_duplicates_the_second_time(ledger):
    first = Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    position = ledger.position()
    second = Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    assert first.accepted == 326 and first.quarantined == 0
    assert second.as_dict() == {"accepted": 0, "duplicates": 326, "quarantined": 0}
    assert ledger.position() == position


def test_same_id_different_content_is_quarantined_as_a_conflict_and_the_first_stays(ledger):
    first = message("lab-1", data={"analyte": "PLT", "value": 170, "unit": "10^9/L"})
    second = message("lab-1", data={"analyte": "PLT", "value": 89, "unit": "10^9/L"})
    counts = Ingestor(ledger).ingest([raw(first, 1), raw(second, 2)])
    assert counts.as_dict() == {"accepted": 1, "duplicates": 0, "quarantined": 1}
    [q] = ledger.tables.quarantined()
    assert "message_id lab-1 conflict" in q["reason"]
    assert q["source"] == "reg-a"
    history = patient_history(ledger, "reg-a", "P1")
    assert [h["data"]["value"] for h in history] == [170.0]


def test_a_conflict_across_restarts_is_still_caught(store):
    Ingestor(Ledger(store)).ingest([raw(message("a", data={"analyte": "PLT", "value": 1, "unit": "10^9/L"}))])
    again = Ingestor(Ledger(store)).ingest(
        [raw(message("a", data={"analyte": "PLT", "value": 2, "unit": "10^9/L"}))]
    )
    assert again.quarantined == 1


def test_bad_lines_are_quarantined_with_position_and_raw_bytes_and_valid_lines_stored(ledger):
    lines = [
        raw(message("ok-1"), 1),
        raw(b"{not json", 2),
        raw(message("bad-unit", data={"analyte": "PLT", "value": 5, "unit": "mg/dL"}), 3),
        raw(message("ok-2", patient_id="P2"), 4),
    ]
    counts = Ingestor(ledger).ingest(lines)
    assert counts.as_dict() == {"accepted": 2, "duplicates": 0, "quarantined": 2}
    q = ledger.tables.quarantined()
    assert [item["position"] for item in q] == [
        '{"file": "test.ndjson", "line": 2}', '{"file": "test.ndjson", "line": 3}'
    ]
    assert bytes(q[0]["raw"]) == b"{not json"
    assert q[0]["source"] is None and q[1]["source"] == "reg-a"
    assert "unknown unit mg/dL for PLT" in q[1]["reason"]


def test_retraction_and_correction_show_in_history_and_never_remove_the_original(ledger):
    ingestor = Ingestor(ledger)
    ingestor.ingest([raw(message("ae-1", type="adverse_event")),
                     raw(message("lab-1", data={"analyte": "TG", "value": 2.8, "unit": "mmol/L"}))])
    ingestor.ingest([
        raw(message("r-1", type="retraction", data={"target_message_id": "ae-1", "reason": "wrong patient"})),
        raw(message("c-1", type="correction", data={
            "target_message_id": "lab-1", "reason": "unit was mg/dL",
            "data": {"analyte": "TG", "value": 248, "unit": "mg/dL"}})),
    ])
    rows = {r["message_id"]: r for r in patient_history(ledger, "reg-a", "P1")}
    assert set(rows) == {"ae-1", "lab-1", "r-1", "c-1"}
    assert rows["ae-1"]["retracted"] and not rows["ae-1"]["corrected"]
    assert rows["lab-1"]["corrected"] and not rows["lab-1"]["retracted"]
    assert rows["c-1"]["data"]["data"]["value"] == pytest.approx(2.800045)
    assert rows["ae-1"]["data"]["term"] == "Pneumonia"  # the original is kept as it was


@pytest.mark.parametrize(
    ("amendment", "words"),
    [
        (message("r", type="retraction", data={"target_message_id": "nope", "reason": "x"}),
         "unknown target nope"),
        (message("r", type="retraction", patient_id="P2", data={"target_message_id": "lab-1", "reason": "x"}),
         "belongs to patient P1"),
        (message("c", type="correction", data={"target_message_id": "lab-1", "reason": "x",
                                               "data": {"analyte": "PLT", "value": 5, "unit": "mg/dL"}}),
         "unknown unit mg/dL for PLT"),
    ],
)
def test_amendments_with_a_bad_target_or_data_are_quarantined(ledger, amendment, words):
    ingestor = Ingestor(ledger)
    ingestor.ingest([raw(message("lab-1"))])
    counts = ingestor.ingest([raw(amendment)])
    assert counts.quarantined == 1
    assert words in ledger.tables.quarantined()[0]["reason"]


def test_two_writers_on_the_same_patients_lose_nothing(store):
    """Two ingestors, each with its own ledger connection, write the same patients at once."""
    def feed(prefix: str) -> list:
        return [raw(message(f"{prefix}-{i}", patient_id=f"P{i % 5}")) for i in range(300)]

    errors: list[BaseException] = []

    def run(prefix: str) -> None:
        try:
            Ingestor(Ledger(store)).ingest(feed(prefix), batch_size=20)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ledger = Ledger(store)
    ids = [h["message_id"] for p in range(5) for h in patient_history(ledger, "reg-a", f"P{p}")]
    assert sorted(ids) == sorted([f"a-{i}" for i in range(300)] + [f"b-{i}" for i in range(300)])
    record(f"two writers on the same five patients at once ({store.kind})", 2, 600, 0, 0,
           "every message in its patient's history exactly once (optimistic concurrency, retried)")


def test_counts_per_source_add_up(ledger):
    Ingestor(ledger).ingest([raw(message("a")), raw(message("a")), raw(message("b", source="reg-b")),
                             raw(b"[]")])
    counts = {c["source"]: (c["accepted"], c["duplicates"], c["quarantined"])
              for c in ledger.tables.feed_counts()}
    assert counts == {"reg-a": (1, 1, 0), "reg-b": (1, 0, 0), "(unknown)": (0, 0, 1)}


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "encrypted"])
def test_parsing_in_worker_processes_stores_exactly_what_one_process_stores(
        store: Store, tmp_path, monkeypatch: pytest.MonkeyPatch, sealed: bool):
    """Large files are parsed in worker processes (`ingest --workers`); they must judge, encode and,
    with a key, encrypt exactly as the storing process would."""
    import base64
    import os
    import sys
    import types

    from events.sealing import KEY_ENV

    # Spawned parsers import the caller's __main__, as multiprocessing does; in a test worker that has
    # run Streamlit's AppTest it is a page script, which must not run again in a parser.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    if sealed:
        monkeypatch.setenv(KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    else:
        monkeypatch.delenv(KEY_ENV, raising=False)
    feed = list(read_ndjson(str(demo_feed_path())))
    feed[10:10] = [raw("not json", 11), raw(message("MSC-01-lab-1", patient_id="MSC-01"), 12), feed[3]]
    feed.append(raw(message("r1", type="retraction", patient_id="MSC-06", source="umcu-msc-jia",
                            data={"target_message_id": "MSC-06-lab-39", "reason": "haemolysed"}), 400))
    # The first batches are parsed here while the processes start; wait for them, so that they parse.
    submitted: list[int] = []
    submit = ParserPool.submit
    monkeypatch.setattr(ParserPool, "starting", lambda pool: (pool.start(), lambda: True)[1])
    monkeypatch.setattr(ParserPool, "submit", lambda pool, raws, *a, **k: (submitted.append(len(raws)),
                                                                           submit(pool, raws, *a, **k))[1])
    parallel = Ledger(store)
    counts = Ingestor(parallel).ingest(feed, batch_size=40, workers=2)
    assert sum(submitted) == len(feed)
    alone = Ledger(Store.parse(f"sqlite:///{tmp_path}/alone.db"))
    assert counts == Ingestor(alone).ingest(feed, batch_size=40)
    assert counts.duplicates == 1 and counts.quarantined == 1  # the repeated line; "not json"
    assert parallel.tables.message_digest() == alone.tables.message_digest()
    assert [q["reason"] for q in parallel.tables.quarantined()] == [q["reason"] for q in alone.tables.quarantined()]
    history = patient_history(parallel, "umcu-msc-jia", "MSC-06")
    assert any(r["message_id"] == "MSC-06-lab-39" and r["retracted"] for r in history)


def test_new_and_stored_messages_mixed_across_batches_are_judged_as_with_the_index_read_first(store):
    """Ingest judges a batch without reading the message index while the batches before held nothing
    stored before; a message stored before makes the store refuse the batch, which is judged again
    with the index read. The outcome is the same as reading the index every time."""
    def lab(mid: str, value: float, patient: str = "P1") -> Any:
        return raw(message(mid, patient_id=patient, data={"analyte": "PLT", "value": value, "unit": "10^9/L"}))

    ledger = Ledger(store)
    ingestor = Ingestor(ledger)
    first = ingestor.ingest([lab(f"m{i}", 100 + i, f"P{i % 3}") for i in range(30)], batch_size=10)
    assert first.as_dict() == {"accepted": 30, "duplicates": 0, "quarantined": 0}
    cheap = ledger.tables.refuses_taken_keys_cheaply
    assert ingestor._index_first == (0 if cheap else -1)  # a fresh feed: on SQLite, no lookup before the insert
    # a batch of new messages with a re-delivery at its end, one with a stored id and new content, then new ones
    mixed = ([lab(f"n{i}", 1 + i) for i in range(9)] + [lab("m29", 129, "P2")]
             + [lab(f"o{i}", 1 + i) for i in range(9)] + [lab("m3", 999, "P0")]
             + [lab(f"p{i}", 1 + i) for i in range(10)])
    second = ingestor.ingest(mixed, batch_size=10)
    assert second.as_dict() == {"accepted": 28, "duplicates": 1, "quarantined": 1}
    assert ingestor._index_first == (Ingestor.index_first_after_seen - 1 if cheap else -1)  # reads the index now
    [q] = ledger.tables.quarantined()
    assert "message_id m3 conflict" in q["reason"]
    again = Ingestor(ledger).ingest(mixed, batch_size=10)  # a fresh ingestor, all of it stored before
    assert again.as_dict() == {"accepted": 0, "duplicates": 29, "quarantined": 1}
    ids = sorted(h["message_id"] for p in ("P0", "P1", "P2") for h in patient_history(ledger, "reg-a", p))
    assert ids == sorted([f"m{i}" for i in range(30)] + [f"n{i}" for i in range(9)] + [f"o{i}" for i in range(9)]
                         + [f"p{i}" for i in range(10)])


def test_batches_read_while_the_parser_processes_start_are_parsed_here_in_order(store: Store, tmp_path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    """Until its processes are up, ingest parses batches itself; then they take over, in input order."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    checks = iter([False, False, False])  # up at the fourth look
    monkeypatch.setattr(ParserPool, "starting", lambda pool: lambda: next(checks, True))
    feed = list(read_ndjson(str(demo_feed_path())))
    ledger = Ledger(store)
    counts = Ingestor(ledger).ingest(feed, batch_size=40, workers=1)
    alone = Ledger(Store.parse(f"sqlite:///{tmp_path}/alone.db"))
    assert counts == Ingestor(alone).ingest(feed, batch_size=40)
    assert ledger.tables.message_digest() == alone.tables.message_digest()
    order = [e.message_id for e in ledger.patient_events("umcu-msc-jia", "MSC-06")[1:]]
    assert order == [e.message_id for e in alone.patient_events("umcu-msc-jia", "MSC-06")[1:]]


def test_ingest_keeps_what_existed_out_of_the_collectors_passes_and_lets_it_go_after(ledger):
    """The objects alive when a run starts are frozen while it runs (a speed-up: BENCHMARKS.md) and
    collectable again after it, also when it fails, so nothing they hold in a cycle leaks."""
    import gc

    frozen_while: list[int] = []

    def lines(fail: bool):
        frozen_while.append(gc.get_freeze_count())
        yield raw(message("m1"))
        if fail:
            raise OSError("the file went away")

    gc.unfreeze()  # whatever an earlier test left frozen
    assert Ingestor(ledger).ingest(lines(False)).accepted == 1
    with pytest.raises(OSError):
        Ingestor(ledger).ingest(lines(True))
    assert frozen_while[0] > 0 and frozen_while[1] > 0
    assert gc.get_freeze_count() == 0
