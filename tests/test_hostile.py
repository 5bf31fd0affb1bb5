"""Hostile input that the contract once accepted but a store refuses (NUL characters), and stores that
refuse one message of a batch or a read model that cannot apply one event: one bad message never
blocks a feed, and a stopped read model says so instead of failing with a traceback."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from events.admission import Prepared, RawMessage
from events.contract import ContractViolation, Message, parse_message
from events.contract_models import parse_timestamp
from events.files import read_ndjson
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from events.strict_json import content_hash
from projections.board import BoardData
from projections.incidence import IncidenceModel, incidence
from projections.runner import Projector
from projections.signals import SignalsModel
from projections.view import View
from safety.cli import app, demo_feed_path, read_models
from safety.incidence import Settings
from tests.messages import message, raw

SOURCE = "umcu-msc-jia"  # the demo study's: a hostile message that slipped through would change its answers
NUL_PATIENT = message("hostile-lab", source=SOURCE, patient_id="P\u0000 1")
NUL_TERM = message("hostile-ae", source=SOURCE, patient_id="MSC-06", type="adverse_event",
                   occurred_at="2016-01-11", data={"term": "Rash\u0000x", "severity": "severe", "serious": True})


def reason(m: dict[str, Any] | bytes) -> str:
    with pytest.raises(ContractViolation) as exc:
        parse_message(m if isinstance(m, bytes) else json.dumps(m).encode())
    return exc.value.reason


# --- the contract -----------------------------------------------------------------------------------

NUL_FIELDS = [
    ("patient_id", NUL_PATIENT),
    ("message_id", message("m\u0000")),
    ("data.term", NUL_TERM),
    ("data.unit", message(data={"analyte": "PLT", "value": 1, "unit": "10^9/L\u0000"})),
    ("data.outcome", message(type="adverse_event", data={"term": "x", "severity": "mild", "serious": False,
                                                          "outcome": "\u0000"})),
    ("data.data.term", message(type="correction", data={"target_message_id": "x", "reason": "r",
                                                         "data": {"term": "a\u0000"}})),
    ("data.seriousness.0", message(type="adverse_event", data={"term": "x", "severity": "mild", "serious": True,
                                                                "seriousness": ["\u0000"]})),
    ("data.fl\u0000ag", message(data={"analyte": "PLT", "value": 1, "unit": "10^9/L", "fl\u0000ag": 1})),
]


@pytest.mark.parametrize(("where", "m"), NUL_FIELDS, ids=[w for w, _ in NUL_FIELDS])
def test_a_nul_character_anywhere_is_refused_with_the_field_named(where: str, m: dict[str, Any]):
    text = reason(m)
    assert text.startswith(where.replace("\u0000", "\\u0000") + ": contains the NUL character")
    assert "remove it" in text


@pytest.mark.parametrize("field", ["message_id", "patient_id"])
@pytest.mark.parametrize("char", ["\t", "\n", "\x1b", "\x7f"])
def test_identifiers_refuse_control_characters(field: str, char: str):
    assert f"{field}: contains the control character U+{ord(char):04X}" in reason(message(**{field: f"a{char}b"}))


@pytest.mark.parametrize("field", ["target_message_id"])
def test_amendment_targets_refuse_control_characters(field: str):
    m = message(type="retraction", data={field: "a\rb", "reason": "entered twice"})
    assert "data.target_message_id: contains the control character U+000D" in reason(m)


def test_free_text_keeps_tabs_and_line_breaks():
    m = parse_message(json.dumps(message(type="adverse_event", data={
        "term": "Rash,\tface\nand arms", "severity": "mild", "serious": False})).encode())
    assert m.data["term"] == "Rash,\tface\nand arms"


def test_an_escaped_backslash_before_u0000_is_not_a_nul():
    m = parse_message(json.dumps(message(type="adverse_event", data={
        "term": "\\u0000 in a note", "severity": "mild", "serious": False})).encode())
    assert m.data["term"] == "\\u0000 in a note"


@pytest.mark.parametrize("raw_message", [
    b'{"schema_version": 1, "message_id": "a", "message_id": "b"}',
    json.dumps(message()).replace('"unit": "10^9/L"', '"unit": "10^9/L", "value": 9').encode(),
])
def test_a_key_sent_twice_is_refused_as_ambiguous(raw_message: bytes):
    text = reason(raw_message)
    assert "appears twice in one object" in text and "send each field once" in text


# --- ingest: file and Kafka ---------------------------------------------------------------------------


def hostile_feed(tmp_path: Path) -> Path:
    """The demo study with the two hostile messages of issue 17 among its lines."""
    lines = Path(demo_feed_path()).read_text().splitlines()
    lines[100:100] = [json.dumps(NUL_PATIENT)]
    lines[200:200] = [json.dumps(NUL_TERM)]
    path = tmp_path / "hostile.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_answers(url: str) -> dict[str, Any]:
    """What incidence, signals and the board say about a store (every read model brought up to date)."""
    runner = CliRunner()
    out: dict[str, Any] = {}
    for name, args in (("incidence", ["incidence", "--format", "json"]), ("signals", ["signals", "--format", "json"])):
        result = runner.invoke(app, [*args, "--store", url])
        assert result.exit_code == 0, result.output
        out[name] = json.loads(result.stdout)
    return out


def assert_only_the_nul_messages_quarantined(ledger: Ledger) -> None:
    quarantined = ledger.tables.quarantined()
    assert sorted(q["message_id"] for q in quarantined) == ["hostile-ae", "hostile-lab"]
    assert {q["message_id"]: q["reason"].split(":")[0] for q in quarantined} == {
        "hostile-lab": "patient_id", "hostile-ae": "data.term"}
    assert all("NUL character" in q["reason"] for q in quarantined)
    assert ledger.tables.message_digest()[0] == 326  # every demo message stored


def test_the_nul_messages_by_file_are_quarantined_and_every_answer_stands(store_url: str, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(hostile_feed(tmp_path)), "--store", store_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1]) == {"accepted": 326, "duplicates": 0, "quarantined": 2}
    assert_only_the_nul_messages_quarantined(Ledger(Store.parse(store_url)))
    clean = f"sqlite:///{tmp_path}/clean.db"
    assert runner.invoke(app, ["ingest", str(demo_feed_path()), "--store", clean]).exit_code == 0
    got, expected = demo_answers(store_url), demo_answers(clean)
    assert got["incidence"]["categories"] == expected["incidence"]["categories"]  # Table 2 unchanged
    assert [s["id"] for s in got["signals"]] == [s["id"] for s in expected["signals"]]
    report = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html"), "--store", store_url])
    assert report.exit_code == 0, report.output
    board = BoardData(Store.parse(store_url))
    assert board.feed_counts()["quarantined"].sum() == 2
    assert len(board.quarantine()) == 2 and not board.stops()
    assert board.patients() and not board.patient_events(SOURCE, "MSC-06").empty


@pytest.mark.kafka
def test_the_nul_messages_by_kafka_are_quarantined_and_the_offset_moves_past(broker: Any, store_url: str,
                                                                             tmp_path: Path):
    from kafka import KafkaProducer

    from events.kafka import FeedConsumer
    from tests.test_kafka import accepted, run_until, topic_name

    topic = topic_name()
    broker.create_topic(topic, 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for item in read_ndjson(str(hostile_feed(tmp_path))):
        producer.send(topic, value=item.raw)
    producer.flush()
    producer.close()
    ledger = Ledger(Store.parse(store_url))
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic, batch_size=500)
    run_until(feed, lambda: accepted(ledger) >= 328)
    assert_only_the_nul_messages_quarantined(ledger)
    assert list(ledger.tables.tracking_positions("kafka:").values()) == [327]  # past every record
    assert feed.stats.dead_letters == 2
    assert demo_answers(store_url)["incidence"]["patients"] == 6


# --- a store that refuses one message of a batch ---------------------------------------------------------


def refuse_one_message(store: Store, message_id: str) -> None:
    """A database rule, added for the test, that refuses one message's index row (a store's own reason)."""
    if store.kind == "sqlite":
        with sqlite3.connect(str(store.path)) as conn:
            conn.execute(f"CREATE TRIGGER refuse_one BEFORE INSERT ON ledger_message_index WHEN "
                         f"NEW.message_id = '{message_id}' BEGIN SELECT RAISE(ABORT, 'refused by the test rule'); END")
    else:
        with psycopg.connect(host=store.host, port=store.port, user=store.user, dbname=store.dbname,
                             autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{store.schema}".ledger_message_index ADD CONSTRAINT refused_by_the_test_rule'
                         f" CHECK (message_id <> '{message_id}')")


def batch_of(n: int) -> list[RawMessage]:
    return [raw(message(f"m{i}", patient_id=f"P{i % 37}", occurred_at=f"2024-01-{1 + i % 28:02d}"), i)
            for i in range(n)]


def test_a_store_refusal_of_one_message_in_2000_quarantines_it_and_stores_the_rest(store: Store):
    ledger = Ledger(store)
    refuse_one_message(store, "m1234")
    counts = Ingestor(ledger).ingest(batch_of(2000), batch_size=2000)
    assert counts.as_dict() == {"accepted": 1999, "duplicates": 0, "quarantined": 1}
    assert ledger.tables.message_digest()[0] == 1999
    (q,) = ledger.tables.quarantined()
    assert q["message_id"] == "m1234" and json.loads(q["position"]) == {"file": "test.ndjson", "line": 1234}
    assert q["reason"].startswith("the store refused this message (")
    assert ("refused by the test rule" if store.kind == "sqlite" else "refused_by_the_test_rule") in q["reason"]
    # the refused message's patient (P13: 1234 % 37) has no gap in its stream: it took no version
    versions = [e.originator_version for e in ledger.patient_events("reg-a", "P13")]
    assert versions == list(range(1, len(versions) + 1))


def test_a_batch_refused_for_no_single_message_fails_whole_as_before(sqlite_url: str):
    """When no one message is to blame, nothing is stored and the error goes to the caller (today's rule)."""
    store = Store.parse(sqlite_url)
    ledger = Ledger(store)
    with sqlite3.connect(str(store.path)) as conn:  # refuses any batch that holds both
        conn.execute("CREATE TRIGGER pair BEFORE INSERT ON ledger_message_index WHEN NEW.message_id = 'm1' AND "
                     "EXISTS (SELECT 1 FROM ledger_message_index WHERE message_id = 'm0')"
                     " BEGIN SELECT RAISE(ABORT, 'pair refused'); END")
    from eventsourcing.persistence import IntegrityError

    with pytest.raises(IntegrityError, match="pair refused"):
        Ingestor(ledger).ingest(batch_of(2), batch_size=2)
    assert ledger.tables.message_digest()[0] == 0


@pytest.mark.kafka
def test_the_consumer_quarantines_a_refused_message_and_keeps_running(broker: Any, store: Store):
    from events.kafka import FeedConsumer
    from events.publisher import publish
    from tests.test_kafka import accepted, run_until, topic_name

    topic = topic_name()
    broker.create_topic(topic, 1)
    ledger = Ledger(store)
    refuse_one_message(store, "m1234")
    publish(batch_of(2000), broker.bootstrap, topic)
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic, batch_size=2000)
    feed.connect()
    try:
        deadline = datetime.now(UTC).timestamp() + 60
        while accepted(ledger) < 2000 and datetime.now(UTC).timestamp() < deadline:
            feed.poll_once()
        assert feed.stats.counts.as_dict() == {"accepted": 1999, "duplicates": 0, "quarantined": 1}
        publish([raw(message("after"))], broker.bootstrap, topic)  # still running: the next message goes in
        run_until(feed, lambda: accepted(ledger) >= 2001)
    finally:
        feed.close()
    assert ledger.tables.message_digest()[0] == 2000
    assert list(ledger.tables.tracking_positions("kafka:").values()) == [2000]
    (q,) = ledger.tables.quarantined()
    assert q["message_id"] == "m1234" and "the store refused this message" in q["reason"]


# --- read models -------------------------------------------------------------------------------------


def legacy_append(ledger: Ledger, m: dict[str, Any]) -> None:
    """Append a message as the ledger took it before the contract refused NUL (bypassing the contract)."""
    now = datetime.now(UTC)
    msg = Message(m["message_id"], m["source"], m["patient_id"], m["type"], parse_timestamp(m["occurred_at"]),
                  None, m["data"], content_hash(m))
    ingestor = Ingestor(ledger)
    stored = ingestor.encoder.recorded(msg, now)
    prepared = Prepared(msg.key, msg.source, msg.message_id, msg.patient_id, msg.type, msg.content_hash, None,
                        stored.topic, stored.state, None)
    counts, _ = ingestor.store_prepared([RawMessage(b"legacy", {})], [prepared], now, None)
    assert counts.accepted == 1


def test_a_store_holding_nul_events_from_before_the_fix_projects_and_answers(store_url: str):
    """The incidence read model once failed for good on such an event; it now writes the text escaped."""
    store = Store.parse(store_url)
    ledger = Ledger(store)
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    legacy_append(ledger, NUL_TERM)
    runner = CliRunner()
    result = runner.invoke(app, ["rebuild", "--store", store_url])
    assert result.exit_code == 0, result.output
    answer = demo_answers(store_url)["incidence"]
    terms = {term for e in answer["episodes"] for term in e["serious"]}
    assert any(t.startswith("Rash") for t in terms)  # projected (escaped on PostgreSQL, kept on SQLite)
    assert answer["categories"]["serious"]["post"]["events"] == 5  # the demo's 4 and the legacy one
    status = json.loads(runner.invoke(app, ["status", "--format", "json", "--store", store_url]).stdout)
    assert all(m["stopped"] is None and m["behind"] == 0 for m in status["read_models"])


def block_incidence_term(store: Store, term: str) -> None:
    """A rule in the incidence read model, added for the test, that refuses one term (a model that cannot
    apply an event)."""
    view = View(store, IncidenceModel())
    if store.kind == "sqlite":
        with sqlite3.connect(str(view.db.sqlite_path)) as conn:
            conn.execute(f"CREATE TRIGGER block BEFORE INSERT ON incidence_facts WHEN NEW.term = '{term}'"
                         " BEGIN SELECT RAISE(ABORT, 'term blocked by the test rule'); END")
    else:
        with psycopg.connect(host=store.host, port=store.port, user=store.user, dbname=store.dbname,
                             autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{store.schema}".incidence_facts ADD CONSTRAINT term_blocked_by_the_test_rule'
                         f" CHECK (term <> '{term}')")


def unblock_incidence_term(store: Store) -> None:
    view = View(store, IncidenceModel())
    if store.kind == "sqlite":
        with sqlite3.connect(str(view.db.sqlite_path)) as conn:
            conn.execute("DROP TRIGGER block")
    else:
        with psycopg.connect(host=store.host, port=store.port, user=store.user, dbname=store.dbname,
                             autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{store.schema}".incidence_facts DROP CONSTRAINT term_blocked_by_the_test_rule')


def test_a_read_model_that_cannot_apply_an_event_stops_there_and_says_so(store_url: str):
    store = Store.parse(store_url)
    ledger = Ledger(store)
    runner = CliRunner()
    for model in read_models():
        View(store, model)  # the read models' tables exist before the rule is added
    block_incidence_term(store, "Blocked")
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    blocked = message("blocked-ae", source=SOURCE, patient_id="MSC-06", type="adverse_event",
                      occurred_at="2016-01-11", data={"term": "Blocked", "severity": "severe", "serious": True})
    Ingestor(ledger).ingest([raw(blocked), raw(message("later", source=SOURCE, patient_id="MSC-06"), 2)])
    head = ledger.position()

    result = runner.invoke(app, ["incidence", "--format", "json", "--store", store_url])
    assert result.exit_code == 1
    assert "the incidence read model stopped at ledger position" in result.output
    assert "could not be applied" in result.output and "Traceback" not in result.output
    # the other read models went on: signals holds the later message and answers
    signals = runner.invoke(app, ["signals", "--format", "json", "--store", store_url])
    assert signals.exit_code == 0, signals.output
    assert any(s["kind"] == "serious_adverse_event" and "Blocked" in json.dumps(s["evidence"])
               for s in json.loads(signals.stdout))
    status = json.loads(runner.invoke(app, ["status", "--format", "json", "--store", store_url]).stdout)
    states = {m["name"]: m for m in status["read_models"]}
    stop = states["incidence"]["stopped"]
    assert stop is not None and stop["position"] < stop["notification_id"] <= head
    assert "blocked" in stop["reason"].lower()
    assert states["signals"]["stopped"] is None and states["signals"]["behind"] == 0
    # the board says which read model stopped, where and why
    board = BoardData(store)
    (board_stop,) = board.stops()
    assert board_stop.model == "incidence" and board_stop.notification_id == stop["notification_id"]
    frame = board.read_models()
    assert frame.set_index("read model").loc["incidence", "state"] == "stopped"
    # a follower leaves it stopped (no retry every poll); project retries once the cause is gone
    assert Projector(ledger, IncidenceModel()).catch_up() == 0
    assert runner.invoke(app, ["project", "--store", store_url]).exit_code == 1
    unblock_incidence_term(store)
    fixed = runner.invoke(app, ["project", "--store", store_url])
    assert fixed.exit_code == 0, fixed.output
    answer = demo_answers(store_url)["incidence"]
    assert answer["ledger_position"] == stop["notification_id"]  # the blocked event is in the answer now
    assert answer["categories"]["serious"]["post"]["events"] == 5
    assert not BoardData(store).stops()


def test_a_live_page_the_store_refuses_is_escaped_or_stopped_at_as_a_large_page_is(store_url: str):
    """A page of a few events (the live path) is written on PostgreSQL without waiting for each statement's
    answer (``projections.db.pipeline``); what the store refuses in it is still found: a NUL written
    escaped, and a read model that cannot apply an event stopped exactly there, the event before it kept."""
    store = Store.parse(store_url)
    ledger = Ledger(store)
    View(store, IncidenceModel())
    block_incidence_term(store, "Blocked")
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    projector = Projector(ledger, IncidenceModel())
    projector.catch_up()
    legacy_append(ledger, NUL_TERM)
    nul_at = ledger.position()
    blocked = message("blocked-ae", source=SOURCE, patient_id="MSC-06", type="adverse_event",
                      occurred_at="2016-01-11", data={"term": "Blocked", "severity": "severe", "serious": True})
    Ingestor(ledger).ingest([raw(blocked), raw(message("later", source=SOURCE, patient_id="MSC-06"), 2)])
    projector.catch_up()
    stop = projector.view.stopped()
    assert stop is not None and stop.position == nul_at and stop.notification_id == nul_at + 1
    assert "blocked" in stop.reason.lower()
    answer = incidence(projector.view.db, Settings())
    assert answer["ledger_position"] == nul_at
    assert any(t.startswith("Rash") for e in answer["episodes"] for t in e["serious"])
    assert answer["categories"]["serious"]["post"]["events"] == 5  # the demo's 4 and the NUL one


def test_signals_go_on_while_incidence_is_stopped_in_a_follower(sqlite_url: str):
    """The projector of the live path: a stopped read model does not stop the others in the same loop."""
    store = Store.parse(sqlite_url)
    ledger = Ledger(store)
    View(store, IncidenceModel())
    block_incidence_term(store, "Blocked")
    projectors = [Projector(ledger, IncidenceModel()), Projector(ledger, SignalsModel())]
    Ingestor(ledger).ingest([raw(message("ae", type="adverse_event",
                                         data={"term": "Blocked", "severity": "severe", "serious": True}))])
    for p in projectors:
        p.catch_up()
    Ingestor(ledger).ingest([raw(message("lab-2", occurred_at="2024-03-02"))])
    assert [p.catch_up() for p in projectors] == [0, 1]
    assert projectors[0].view.stopped() is not None and projectors[1].view.stopped() is None
    assert incidence(projectors[0].view.db, Settings())["ledger_position"] == 0
