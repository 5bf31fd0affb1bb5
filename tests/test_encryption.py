"""Encryption at rest: with a key configured, no patient id, adverse-event term or lab value is stored in
clear anywhere (ledger, index, quarantine, read models; SQLite files and PostgreSQL tables), and every
answer is still the same."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from events.admission import RawMessage
from events.files import read_ndjson
from events.history import patient_history
from events.ingest import Ingestor
from events.ledger import Ledger
from events.sealing import KEY_ENV, CipherKeyError, configured_key
from events.store import Store
from events.workflow import act_on_signal
from projections.incidence import IncidenceModel, incidence
from projections.runner import Projector
from projections.signal_queries import query_signals, signal_actions
from projections.signals import SignalsModel
from safety.cli import demo_feed_path, read_models
from safety.incidence import Settings
from tests.messages import raw

NEEDLES = (b"MSC-06", b"MSC-01", b"Macrophage activation", b"Faecal impaction", b"Bilateral pneumonia", b"41.2",
           b"confirmed by the ward")


# Clock readings (received_at, last_message_at) are not patient data, and "…:41.2…" in one would be a false hit.
CLOCK_READING = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def stored_bytes(store: Store) -> bytes:
    """Everything the store holds, as bytes (clock readings blanked): SQLite files (WAL included), or every
    PostgreSQL row."""
    return CLOCK_READING.sub(b"", _all_bytes(store))


def _all_bytes(store: Store) -> bytes:
    if store.kind == "sqlite":
        assert store.path is not None
        return b"".join(p.read_bytes() for p in sorted(store.path.parent.iterdir()) if p.is_file()
                        and p.name.startswith(store.path.stem))
    import psycopg

    chunks = []
    with psycopg.connect(host=store.host, port=store.port, user=store.user, dbname=store.dbname) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                              (store.schema,)).fetchall()
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{store.schema}"."{table}"').fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv(KEY_ENV, value)
    return value


def test_with_a_key_nothing_identifying_is_stored_in_clear_and_answers_are_unchanged(key: str, store: Store):
    ledger = Ledger(store)
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    Ingestor(ledger).ingest([raw(b'{"patient_id": "MSC-06", "note": "Macrophage activation 41.2"')])
    for model in read_models():
        Projector(ledger, model).catch_up()
    [mas] = query_signals(Projector(ledger, SignalsModel()).view.db, kind="mas_trend")
    act_on_signal(ledger, mas["id"], "ack", "dr.jones", "confirmed by the ward")
    for model in read_models():
        Projector(ledger, model).catch_up()

    blob = stored_bytes(store)
    assert blob  # the scan saw the data
    assert [n for n in NEEDLES if n in blob] == []

    # ... and everything still reads in clear through the system
    answer = incidence(Projector(ledger, IncidenceModel()).view.db, Settings())
    serious = answer["categories"]["serious"]
    assert (serious["pre"]["events"], serious["post"]["events"]) == (2, 4)
    signals_db = Projector(ledger, SignalsModel()).view.db
    [mas] = query_signals(signals_db, patient="MSC-06", kind="mas_trend")
    assert mas["patient_id"] == "MSC-06" and mas["evidence"][0]["analyte"] == "WBC"
    assert signal_actions(signals_db, mas["id"])[0]["note"] == "confirmed by the ward"
    assert any(r["data"].get("term") == "Macrophage activation syndrome (evolving)"
               for r in patient_history(ledger, "umcu-msc-jia", "MSC-06"))
    [q] = ledger.tables.quarantined()
    assert b"MSC-06" in bytes(q["raw"]) and "not JSON" in q["reason"]
    from projections.board import BoardData

    board = BoardData(store)  # the Feed health page shows the quarantine in clear too
    shown = board.quarantine()
    assert "not JSON" in shown["reason"].iloc[0]
    assert "MSC-06" in board.quarantined_raw(int(shown["id"].iloc[0]))
    again = Ingestor(Ledger(store)).ingest(read_ndjson(str(demo_feed_path())))
    assert again.accepted == 0  # idempotency keys still match under their tokens


def test_a_bad_key_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(KEY_ENV, "not base64!")
    with pytest.raises(CipherKeyError, match="not base64"):
        configured_key()
    monkeypatch.setenv(KEY_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(CipherKeyError, match="16, 24 or 32"):
        configured_key()
    monkeypatch.delenv(KEY_ENV)
    key_file = tmp_path / "key"
    key_file.write_text(base64.b64encode(os.urandom(16)).decode() + "\n")
    monkeypatch.setenv("SAFETY_MONITOR_CIPHER_KEY_FILE", str(key_file))
    assert configured_key() is not None and len(configured_key() or b"") == 16


def test_the_scan_finds_clear_text_when_no_key_is_set(monkeypatch: pytest.MonkeyPatch, store: Store):
    """Guards the test above: without a key the same scan does find the data."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    ledger = Ledger(store)
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    for model in read_models():
        Projector(ledger, model).catch_up()
    blob = stored_bytes(store)
    assert b"MSC-06" in blob and b"Faecal impaction" in blob and b"41.2" in blob


def test_rekey_copies_the_ledger_under_a_new_key_and_answers_stay_the_same(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path):
    from typer.testing import CliRunner

    from safety.cli import app

    old_key, new_key = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_url, new_url = f"sqlite:///{tmp_path}/old/ledger.db", f"sqlite:///{tmp_path}/new/ledger.db"
    key_file = tmp_path / "new.key"
    key_file.write_text(new_key)
    runner = CliRunner()
    monkeypatch.setenv(KEY_ENV, old_key)
    assert runner.invoke(app, ["demo", "--no-board", "--store", old_url]).exit_code == 0
    old_ledger = Ledger(Store.parse(old_url))
    Ingestor(old_ledger).ingest([raw(b"{broken MSC-06")] + [
        RawMessage(b"{broken " + str(offset).encode(), {"topic": "pv.events", "partition": 0, "offset": offset})
        for offset in (7, 8)])
    sent = old_ledger.tables.undelivered_dead_letters("pv.events")[0]  # offset 7 went out, 8 did not
    old_ledger.tables.mark_dead_lettered([sent["id"]], "2026-11-26T12:00:00+00:00")
    before = runner.invoke(app, ["incidence", "--format", "json", "--store", old_url]).stdout
    result = runner.invoke(app, ["rekey", "--to", new_url, "--new-key-file", str(key_file), "--store", old_url])
    assert result.exit_code == 0, result.stderr
    assert runner.invoke(app, ["rekey", "--to", new_url, "--new-key-file", str(key_file),
                               "--store", old_url]).exit_code == 1  # never into a store that holds data
    monkeypatch.setenv(KEY_ENV, new_key)
    assert runner.invoke(app, ["rebuild", "--store", new_url]).exit_code == 0
    after = runner.invoke(app, ["incidence", "--format", "json", "--store", new_url]).stdout
    assert _without_fingerprint(after) == _without_fingerprint(before)
    monkeypatch.setenv(KEY_ENV, old_key)
    original = Ledger(Store.parse(old_url))
    monkeypatch.setenv(KEY_ENV, new_key)
    copied = Ledger(Store.parse(new_url))
    assert original.tables.message_digest() == copied.tables.message_digest()
    assert [q["raw"] for q in copied.tables.quarantined()] == [b"{broken MSC-06", b"{broken 7", b"{broken 8"]
    assert [d["raw"] for d in copied.tables.undelivered_dead_letters("pv.events")] == [b"{broken 8"]
    blob = stored_bytes(Store.parse(new_url))
    assert [n for n in NEEDLES if n in blob] == []


def _without_fingerprint(text: str) -> dict:
    import json

    answer = json.loads(text)
    answer.pop("fingerprint")
    answer.pop("ledger_position")
    return answer
