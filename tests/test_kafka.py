"""The registry feed over a real Kafka-protocol broker (Tansu on loopback): exactly-once ingest,
dead letters, crashes (SIGKILL), a broker restart, and two consumers sharing a group."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from typer.testing import CliRunner

from events.admission import RawMessage
from events.files import read_ndjson
from events.ingest import Ingestor
from events.kafka import FeedConsumer
from events.ledger import Ledger
from events.publisher import publish
from events.store import Store
from projections.incidence import IncidenceModel, incidence
from projections.runner import Projector
from projections.signal_queries import query_signals
from projections.signals import SignalsModel
from safety.cli import app, demo_feed_path
from safety.incidence import Settings
from tests.broker import Broker
from tests.messages import message
from tests.processes import children_of, still_running
from tests.reliability import record

pytestmark = pytest.mark.kafka


def topic_name() -> str:
    return f"pv.events.{uuid.uuid4().hex[:8]}"


def run_until(feed: FeedConsumer, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    feed.run(lambda: done() or time.time() > deadline)
    assert done(), "the consumer did not finish in time"


def accepted(ledger: Ledger) -> int:
    return sum(c["accepted"] + c["duplicates"] + c["quarantined"] for c in ledger.tables.feed_counts())


def synthetic_feed(n: int, patients: int = 50, seed: int = 1) -> list[bytes]:
    from benchmarks.synthetic import feed_lines

    return feed_lines(n, patients, seed)


def test_the_demo_study_through_kafka_equals_file_ingest(broker: Broker, store: Store, tmp_path: Path):
    topic = topic_name()
    broker.create_topic(topic, 3)
    sent = publish(read_ndjson(str(demo_feed_path())), broker.bootstrap, topic)
    assert sent.sent == 326 and not sent.invalid
    ledger = Ledger(store)
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic)
    run_until(feed, lambda: accepted(ledger) >= 326)
    via_file = Ledger(Store.parse(f"sqlite:///{tmp_path}/file.db"))
    Ingestor(via_file).ingest(read_ndjson(str(demo_feed_path())))
    answers = []
    for led in (ledger, via_file):
        inc = Projector(led, IncidenceModel())
        inc.catch_up()
        sig = Projector(led, SignalsModel())
        sig.catch_up()
        answers.append((
            incidence(inc.view.db, Settings())["categories"],
            sorted((s["id"], s["kind"], s["level"]) for s in query_signals(sig.view.db)),
        ))
    assert answers[0] == answers[1]
    assert ledger.tables.message_digest() == via_file.tables.message_digest()


def test_invalid_messages_go_to_quarantine_and_the_dead_letter_topic(broker: Broker, sqlite_url: str):
    topic = topic_name()
    broker.create_topic(topic, 1)
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    producer.send(topic, key=b"reg-a/P1", value=json.dumps(message("ok-1")).encode())
    producer.send(topic, key=b"reg-a/P1", value=b"{not json")
    producer.send(topic, key=b"reg-a/P1", value=json.dumps(
        message("bad", data={"analyte": "PLT", "value": 1, "unit": "mg/dL"})).encode())
    producer.send(topic, key=b"reg-a/P1", value=json.dumps(message("ok-2")).encode())
    producer.flush()
    producer.close()
    ledger = Ledger(Store.parse(sqlite_url))
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic)
    run_until(feed, lambda: accepted(ledger) >= 4)
    assert feed.stats.counts.as_dict() == {"accepted": 2, "duplicates": 0, "quarantined": 2}
    q = ledger.tables.quarantined()
    assert [json.loads(item["position"]) for item in q] == [
        {"topic": topic, "partition": 0, "offset": 1}, {"topic": topic, "partition": 0, "offset": 2}]
    records = dead_letters(broker, topic, at_least=2)
    assert [r.value for r in records] == [b"{not json", q[1]["raw"]]
    reasons = [dict(r.headers)["reason"].decode() for r in records]
    assert "not JSON" in reasons[0] and "unknown unit mg/dL for PLT" in reasons[1]


def dead_letters(broker: Broker, topic: str, at_least: int) -> list[Any]:
    dlq = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=10)
    tp = TopicPartition(f"{topic}.dlq", 0)
    dlq.assign([tp])
    dlq.seek_to_beginning(tp)
    records: list[Any] = []
    deadline = time.time() + 20
    while len(records) < at_least and time.time() < deadline:
        records += dlq.poll(500).get(tp, [])
    records += dlq.poll(300).get(tp, [])  # and nothing more after them
    dlq.close()
    return records


def test_a_dead_letter_lost_between_commit_and_send_is_sent_at_the_next_start(broker: Broker, store_url: str):
    """The quarantine row commits with its batch; the dead letter is sent from it afterwards. A consumer
    that dies before sending (here: its producer fails) leaves it to the next start, which sends it."""
    topic = topic_name()
    broker.create_topic(topic, 1)
    publish([RawMessage(json.dumps(message("ok-1")).encode(), {})], broker.bootstrap, topic)
    from kafka import KafkaProducer

    raw_producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    raw_producer.send(topic, value=b"{broken")
    raw_producer.flush()
    raw_producer.close()
    ledger = Ledger(Store.parse(store_url))

    class DiesBeforeSending(FeedConsumer):
        def send_dead_letters(self) -> int:
            if self.ledger.tables.undelivered_dead_letters(self.topic):
                raise KafkaError("the process died here")
            return super().send_dead_letters()

    first = DiesBeforeSending(ledger, broker.bootstrap, topic=topic)
    first.connect()
    with pytest.raises(KafkaError):
        while first.stats.counts.total < 2:
            first.poll_once()
    first.close()
    assert ledger.tables.message_digest()[0] == 1 and len(ledger.tables.quarantined()) == 1
    assert dead_letters(broker, topic, at_least=1) == []  # committed, not yet sent
    status = CliRunner().invoke(app, ["status", "--store", store_url, "--topic", topic, "--format", "json"])
    assert json.loads(status.stdout)["dead_letters_waiting"] == 1

    second = FeedConsumer(Ledger(Store.parse(store_url)), broker.bootstrap, topic=topic)
    second.connect()  # sends what the first left
    second.close()
    third = FeedConsumer(Ledger(Store.parse(store_url)), broker.bootstrap, topic=topic)
    third.connect()  # and nothing twice once it was noted sent
    third.close()
    [letter] = dead_letters(broker, topic, at_least=1)
    assert letter.value == b"{broken" and "not JSON" in dict(letter.headers)["reason"].decode()
    assert (second.stats.dead_letters, third.stats.dead_letters) == (1, 0)
    status = CliRunner().invoke(app, ["status", "--store", store_url, "--topic", topic, "--format", "json"])
    assert json.loads(status.stdout)["dead_letters_waiting"] == 0


def consume_process(bootstrap: str, topic: str, store_url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safety.cli", "consume", "--bootstrap", bootstrap, "--topic", topic,
         "--store", store_url, "--batch-size", "200", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(broker: Broker, tmp_path: Path):
    topic = topic_name()
    broker.create_topic(topic, 3)
    lines = synthetic_feed(30000, patients=300)
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger(Store.parse(url))
    rng = random.Random(42)
    kills = 0
    orphans = []
    for chunk in range(10):  # the feed keeps arriving while the consumer is killed again and again
        publish([RawMessage(line, {}) for line in lines[chunk * 3000:(chunk + 1) * 3000]], broker.bootstrap, topic)
        parsers = 2 if chunk % 2 else 0  # half the runs parse a poll in processes while storing the last
        proc = consume_process(broker.bootstrap, topic, url, "--parsers", str(parsers))
        time.sleep(rng.uniform(0.6, 1.6) + (1.0 if parsers else 0.0))  # + the parsers' start
        children = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        orphans += [pid for pid in children if still_running(pid, timeout=10)]
    assert orphans == []  # parser processes end with a killed consumer
    final = consume_process(broker.bootstrap, topic, url)
    started = time.time()
    deadline = started + 120
    while (accepted(ledger) < len(lines) or time.time() < started + 3) and time.time() < deadline:
        time.sleep(0.3)
    final.send_signal(signal.SIGTERM)
    assert final.wait(timeout=30) == 0
    expected = Ledger(Store.parse(f"sqlite:///{tmp_path}/file.db"))
    Ingestor(expected).ingest([RawMessage(line, {}) for line in lines])
    assert kills == 10
    assert ledger.tables.message_digest() == expected.tables.message_digest()
    assert accepted(ledger) == len(lines)  # every message judged exactly once: none counted twice
    record("consumer killed with SIGKILL at random instants, with and without parser processes (Kafka → SQLite)",
           kills, len(lines), 0, 0,
           "count and digest equal file ingest of the same feed")


def test_the_consumer_survives_a_broker_restart(tmp_path: Path):
    own = Broker().start()
    topic = topic_name()
    try:
        own.create_topic(topic, 1)
        lines = synthetic_feed(3000, seed=2)
        publish([RawMessage(line, {}) for line in lines[:1500]], own.bootstrap, topic)
        ledger = Ledger(Store.parse(f"sqlite:///{tmp_path}/ledger.db"))
        feed = FeedConsumer(ledger, own.bootstrap, topic=topic)
        stop = threading.Event()
        worker = threading.Thread(target=feed.run, args=(stop.is_set,), kwargs={"max_backoff": 1.0})
        worker.start()
        deadline = time.time() + 60
        while accepted(ledger) < 1500 and time.time() < deadline:
            time.sleep(0.1)
        own.stop()  # the broker goes away mid-feed, and comes back empty (in-memory storage) ...
        time.sleep(1.5)
        own.start()
        own.create_topic(topic, 1)
        # ... with its offsets starting again at 0: the rest of the feed must not be skipped.
        publish([RawMessage(line, {}) for line in lines[1500:]], own.bootstrap, topic)
        deadline = time.time() + 90
        while accepted(ledger) < 3000 and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        worker.join(timeout=30)
        expected = Ledger(Store.parse(f"sqlite:///{tmp_path}/file.db"))
        Ingestor(expected).ingest([RawMessage(line, {}) for line in lines])
        assert ledger.tables.message_digest() == expected.tables.message_digest()
        counts = ledger.tables.feed_counts()[0]
        assert (counts["accepted"], counts["duplicates"]) == (3000, 0)
        record("broker stopped and restarted mid-feed (in-memory broker: offsets start again)", 1, 3000, 0, 0,
               "digest equals file ingest; no record skipped after the restart")
    finally:
        own.stop()


def test_two_consumers_in_a_group_store_each_message_once(broker: Broker, tmp_path: Path):
    topic = topic_name()
    broker.create_topic(topic, 3)
    lines = synthetic_feed(3000, patients=90, seed=3)
    publish([RawMessage(line, {}) for line in lines], broker.bootstrap, topic)
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger(Store.parse(url))
    group = f"g-{uuid.uuid4().hex[:6]}"
    procs = [consume_process(broker.bootstrap, topic, url, "--group", group) for _ in range(2)]
    deadline = time.time() + 120
    while accepted(ledger) < len(lines) and time.time() < deadline:
        time.sleep(0.3)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    assert ledger.tables.message_digest()[0] == len(lines)
    assert accepted(ledger) == len(lines)
    record("two consumers in one group on a 3-partition topic", 1, len(lines), 0, 0,
           "message index count and judged count equal the feed")


def test_publish_reports_invalid_lines_and_status_shows_offsets(broker: Broker, tmp_path: Path, sqlite_url: str):
    topic = topic_name()
    broker.create_topic(topic, 1)
    feed = tmp_path / "feed.ndjson"
    feed.write_text("\n".join([json.dumps(message("a")), "{broken", json.dumps(message("b"))]) + "\n")
    runner = CliRunner()
    out = runner.invoke(app, ["publish", str(feed), "--bootstrap", broker.bootstrap, "--topic", topic])
    assert out.exit_code == 0
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"sent": 2, "invalid": 1}
    assert "feed.ndjson:2" in out.stderr
    ledger = Ledger(Store.parse(sqlite_url))
    run_until(FeedConsumer(ledger, broker.bootstrap, topic=topic), lambda: accepted(ledger) >= 2)
    status = runner.invoke(app, ["status", "--store", sqlite_url, "--bootstrap", broker.bootstrap,
                                 "--topic", topic, "--format", "json"])
    answer = json.loads(status.stdout)
    assert answer["partitions"][0]["offset"] == 1 and answer["partitions"][0]["lag"] == 0
    assert answer["sources"][0]["accepted"] == 2 and answer["last_message_at"]


def test_a_message_claiming_another_registrys_source_is_quarantined_as_unauthorised(broker: Broker, store_url: str):
    topic = topic_name()
    broker.create_topic(topic, 1)
    publish([RawMessage(json.dumps(message("ok", source="reg-a")).encode(), {}),
             RawMessage(json.dumps(message("intruder", source="reg-b")).encode(), {})], broker.bootstrap, topic)
    ledger = Ledger(Store.parse(store_url))
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic, source="reg-a")
    run_until(feed, lambda: accepted(ledger) >= 2)
    [q] = ledger.tables.quarantined()
    assert q["source"] == "reg-b" and q["reason"].startswith("unauthorised: source reg-b")
    assert ledger.tables.message_digest()[0] == 1 and feed.stats.dead_letters == 1


def test_a_backlog_is_stored_while_the_next_poll_runs_and_transactions_keep_to_their_bytes(broker: Broker,
                                                                                           store: Store):
    """A full poll is handed to the writer thread and stored by a later call (or ``flush``); each
    transaction holds at most ``batch_bytes`` of messages and tracks its own last offset."""
    topic = topic_name()
    broker.create_topic(topic, 1)
    lines = synthetic_feed(600, patients=30, seed=5)
    publish([RawMessage(line, {}) for line in lines], broker.bootstrap, topic)
    ledger = Ledger(store)
    cap = 4 * max(len(line) for line in lines)  # 4 to 8 messages a transaction
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic, batch_size=100, batch_bytes=cap)
    feed.connect()
    try:
        transactions: list[int] = []
        handed = 0
        store_prepared = feed.ingestor.store_prepared

        def counted(batch: Any, *args: Any) -> Any:
            transactions.append(sum(len(item.raw) for item in batch))
            return store_prepared(batch, *args)

        feed.ingestor.store_prepared = counted  # type: ignore[method-assign]
        while feed.stats.polls < 50 and feed.consumer is not None:
            stored_before = feed.stats.counts.total
            reported = feed.poll_once()
            if feed._writing:  # a full poll: stored by a later call, not this one
                handed += 1
                assert reported.total == feed.stats.counts.total - stored_before
            if feed.stats.counts.total + 100 * len(feed._writing) >= len(lines):
                break
        feed.flush()
        assert not feed._writing and handed > 0
        assert feed.stats.counts.accepted == len(lines)
        assert transactions and max(transactions) <= cap and len(transactions) >= len(lines) // 8
        tracked = ledger.tables.tracking_positions(f"kafka:{topic}:")
        assert list(tracked.values()) == [len(lines) - 1]
        assert ledger.tables.message_digest()[0] == len(lines)
    finally:
        feed.close()


def test_runs_cut_records_by_count_and_by_bytes_in_order():
    from events.kafka import runs

    class R:
        def __init__(self, n: int) -> None:
            self.value = b"x" * n

    sizes = [5, 5, 5, 20, 1, 1, 1, 1, 1, 1]
    records = [R(n) for n in sizes]
    cut = [[len(r.value) for r in run] for run in runs(records, max_count=4, max_bytes=10)]
    assert cut == [[5, 5], [5], [20], [1, 1, 1, 1], [1, 1]]
    assert [r for run in runs(records, 3, 100) for r in run] == records
    assert list(runs([], 3, 10)) == []


def test_a_connected_consumer_keeps_its_start_up_out_of_the_collector_and_lets_it_go_at_close(broker: Broker,
                                                                                             store_url: str):
    """Frozen while connected (a speed-up: BENCHMARKS.md); collectable after ``close``, so a consumer that
    reconnects for months does not keep every dropped client's cycles."""
    import gc

    topic = topic_name()
    broker.create_topic(topic, 1)
    gc.unfreeze()  # whatever an earlier test left frozen
    feed = FeedConsumer(Ledger(Store.parse(store_url)), broker.bootstrap, topic=topic)
    feed.connect()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        feed.close()
    assert gc.get_freeze_count() == 0
