"""Real registry producers: librdkafka (confluent-kafka) under every codec Kafka defines, our own
publisher's codecs, a consumer that cannot decode a batch (it stops, names the codec and the offset,
and resumes there once fixed), and the read_committed isolation that keeps aborted transactions out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from kafka.protocol.consumer.offsets import IsolationLevel

from events.files import read_ndjson
from events.ingest import Ingestor
from events.kafka import COMPRESSION_TYPES, FeedConsumer, decode_fix
from events.ledger import Ledger
from events.publisher import publish
from events.store import Store
from projections.incidence import IncidenceModel, incidence
from projections.runner import Projector
from safety.cli import demo_feed_path
from safety.incidence import Settings
from tests.broker import Broker
from tests.test_kafka import accepted, run_until, topic_name

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent


def demo_lines() -> list[bytes]:
    return [m.raw for m in read_ndjson(str(demo_feed_path()))]


def librdkafka_publish(broker: Broker, topic: str, lines: list[bytes], compression: str) -> None:
    """What a registry's integration engine does: idempotent, acks=all, keyed source/patient_id."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                         "compression.type": compression, "linger.ms": 5, "log_level": 3})
    for line in lines:
        m = json.loads(line)
        producer.produce(topic, key=f"{m['source']}/{m['patient_id']}".encode(), value=line)
    assert producer.flush(30) == 0, "librdkafka could not deliver every message"


def file_ingest_answer(tmp_path: Path) -> tuple[Any, Any]:
    ledger = Ledger(Store.parse(f"sqlite:///{tmp_path}/file.db"))
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    return incidence_of(ledger), ledger.tables.message_digest()


def incidence_of(ledger: Ledger) -> Any:
    projector = Projector(ledger, IncidenceModel())
    projector.catch_up()
    return incidence(projector.view.db, Settings())["categories"]


@pytest.mark.parametrize("compression", COMPRESSION_TYPES)
def test_librdkafka_under_every_codec_gives_the_incidence_of_file_ingest(broker: Broker, store: Store,
                                                                        tmp_path: Path, compression: str):
    topic = topic_name()
    broker.create_topic(topic, 3)
    librdkafka_publish(broker, topic, demo_lines(), compression)
    ledger = Ledger(store)
    feed = FeedConsumer(ledger, broker.bootstrap, topic=topic)
    run_until(feed, lambda: accepted(ledger) >= 326)
    assert feed.stats.counts.as_dict() == {"accepted": 326, "duplicates": 0, "quarantined": 0}
    expected_incidence, expected_digest = file_ingest_answer(tmp_path)
    assert ledger.tables.message_digest() == expected_digest
    assert incidence_of(ledger) == expected_incidence


@pytest.mark.parametrize("compression", COMPRESSION_TYPES)
def test_publish_compresses_with_every_codec(broker: Broker, sqlite_url: str, compression: str):
    topic = topic_name()
    broker.create_topic(topic, 1)
    sent = publish(read_ndjson(str(demo_feed_path())), broker.bootstrap, topic, compression=compression)
    assert sent.sent == 326
    ledger = Ledger(Store.parse(sqlite_url))
    run_until(FeedConsumer(ledger, broker.bootstrap, topic=topic), lambda: accepted(ledger) >= 326)
    assert ledger.tables.message_digest()[0] == 326


def test_publish_refuses_a_codec_kafka_does_not_define():
    with pytest.raises(ValueError, match="use one of none, gzip, snappy, lz4, zstd"):
        publish([], "127.0.0.1:1", compression="brotli")


def test_the_consumer_reads_committed_records_only(broker: Broker, sqlite_url: str):
    """Aborted transactions must never reach the ledger: the consumer fetches with read_committed. The Tansu
    test broker does not filter them itself (docs/operations.md has the check against Apache Kafka), so
    this test checks the setting the fetcher sends."""
    topic = topic_name()
    broker.create_topic(topic, 1)
    feed = FeedConsumer(Ledger(Store.parse(sqlite_url)), broker.bootstrap, topic=topic)
    feed.connect()
    try:
        assert feed.consumer is not None
        assert feed.consumer.config["isolation_level"] == "read_committed"
        assert feed.consumer._fetcher._isolation_level == IsolationLevel.READ_COMMITTED
    finally:
        feed.close()


@pytest.mark.parametrize(("codec", "package"), [("lz4", "lz4"), ("snappy", "python-snappy"), ("zstd", "zstandard")])
def test_the_fix_for_a_missing_codec_names_the_package(codec: str, package: str):
    from kafka.errors import UnsupportedCodecError

    fix = decode_fix(UnsupportedCodecError(f"Libraries for {codec} compression codec not found"))
    assert f"install {package}" in fix and codec in fix


def consume_command(broker: Broker, topic: str, store_url: str) -> list[str]:
    return [sys.executable, "-m", "safety.cli", "consume", "--bootstrap", broker.bootstrap, "--topic", topic,
            "--store", store_url, "--parsers", "0"]


def test_a_missing_codec_stops_the_consumer_at_its_offset_and_a_fixed_one_resumes_there(
        broker: Broker, store_url: str, tmp_path: Path):
    topic = topic_name()
    broker.create_topic(topic, 1)
    lines = demo_lines()
    librdkafka_publish(broker, topic, lines[:100], "gzip")
    librdkafka_publish(broker, topic, lines[100:], "lz4")
    blocked = tmp_path / "without-lz4" / "lz4"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('lz4 removed from this environment by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(ROOT)])}

    started = time.monotonic()
    run = subprocess.run(consume_command(broker, topic, store_url), env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stderr
    assert time.monotonic() - started < 30  # seconds, not a reconnect loop
    error = run.stderr.replace("\n", " ")
    assert f"topic {topic} partition 0 at offset 100" in error
    assert "compressed it with lz4" in error and "install lz4" in error and "resumes at offset 100" in error
    ledger = Ledger(Store.parse(store_url))
    assert ledger.tables.message_digest()[0] == 100  # what came before the batch is stored, nothing after
    assert list(ledger.tables.tracking_positions("kafka:").values()) == [99]
    (fault,) = ledger.tables.feed_faults()
    assert fault["open"] and fault["offset"] == 100 and "lz4" in fault["cause"]
    status = subprocess.run([sys.executable, "-m", "safety.cli", "status", "--format", "json", "--store", store_url],
                            env=env, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["feed_faults"][0]["open"] is True

    fixed_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    consumer = subprocess.Popen(consume_command(broker, topic, store_url), env=fixed_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while accepted(ledger) < 326 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        consumer.terminate()
        _out, err = consumer.communicate(timeout=30)
    assert consumer.returncode == 0, err
    expected_incidence, expected_digest = file_ingest_answer(tmp_path)
    assert ledger.tables.message_digest() == expected_digest  # nothing skipped, nothing twice
    assert incidence_of(ledger) == expected_incidence
    assert not ledger.tables.feed_faults()[0]["open"]

