"""Kafka adapter for registry feeds: the exactly-once consumer and the dead-letter topic (the publisher
is ``events.publisher``).

Offsets live in the ledger, not in the broker: each partition's records of a poll are appended in
one transaction with an eventsourcing ``Tracking`` row (``kafka:TOPIC:TOPIC_ID:PARTITION`` ->
offset). On start, and whenever partitions are assigned, the consumer seeks to the stored offset
+ 1, so a crash at any instant loses nothing and stores nothing twice. The topic id is part of the
name: a topic deleted and created again (or an in-memory broker restarted) starts afresh instead of
skipping its new records. Dead letters are sent after the batch commits, from the quarantine rows
that commit with it (an outbox), so a crash in between delays them but never loses one.
"""

from __future__ import annotations

import gc
import logging
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError

from events.admission import Prepared, RawMessage, Rejected
from events.ingest import IngestCounts, Ingestor
from events.ledger import Ledger
from events.parsers import ParserPool

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "pv.events"
TRACKING_PREFIX = "kafka:"
#: at most this many bytes of message values in one transaction (and in memory per batch)
DEFAULT_BATCH_BYTES = 4 << 20


def tracking_name(topic: str, topic_id: object, partition: int) -> str:
    return f"{TRACKING_PREFIX}{topic}:{topic_id}:{partition}"


#: what a poll raises when the client cannot decode a record batch (as against a broker it cannot reach)
DECODE_ERRORS = (UnsupportedCodecError, CorruptRecordError, struct.error, ValueError, IndexError)
#: the Python package that brings each codec kafka-python reads (gzip is built in)
CODEC_PACKAGES = {"lz4": "lz4", "snappy": "python-snappy", "zstd": "zstandard"}
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


class UndecodableBatch(Exception):
    """A record batch this consumer cannot decode. The consumer stops there rather than skip it or
    retry for ever: nothing after it is stored until it can be read, so nothing is lost."""

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.cause = f"{type(cause).__name__}: {cause}"
        self.fix = decode_fix(cause)
        super().__init__(f"cannot decode the record batch of topic {topic} partition {partition} at offset "
                         f"{offset} ({self.cause}): {self.fix}. Then start the consumer again: it resumes at "
                         f"offset {offset}; nothing has been skipped")


def decode_fix(cause: BaseException) -> str:
    """What to install or fix for a batch that cannot be decoded."""
    text = str(cause)
    missing = re.search(r"Libraries for (\w+) compression codec not found", text)
    if missing:
        codec = missing.group(1)
        package = CODEC_PACKAGES.get(codec, codec)
        return (f"the producer compressed it with {codec}, whose library is missing here: install {package} "
                f"(pip install '{package}'; the monitor's own install brings it)")
    if isinstance(cause, UnsupportedCodecError):
        return ("the producer used a compression type Kafka does not define: ask the registry to send with "
                f"{', '.join(COMPRESSION_TYPES)}")
    if isinstance(cause, CorruptRecordError):
        return ("the batch failed its checks (CRC or length): ask the registry to send those messages again, "
                "or the broker's operator to check the partition's log")
    return ("the batch is not in a record format this consumer reads (Kafka message formats v0 to v2): check "
            "the producer's client and the broker")


@dataclass
class ConsumerStats:
    counts: IngestCounts = field(default_factory=IngestCounts)
    polls: int = 0
    dead_letters: int = 0
    reconnects: int = 0


@dataclass(frozen=True)
class _Parsing:
    """Records of one partition from a poll (a run of them, at most a batch's count and bytes),
    parsing: call ``items`` for the result."""

    tp: TopicPartition
    raws: list[RawMessage]
    tracking: Tracking
    now: datetime
    items: Callable[[], list[Prepared | Rejected]]


@dataclass
class _Written:
    """What storing some batches did, for the consumer's thread to act on."""

    counts: IngestCounts = field(default_factory=IngestCounts)
    #: partitions whose offsets another consumer of the group had stored first: seek past them
    sought: set[TopicPartition] = field(default_factory=set)
    quarantined: bool = False


def runs(records: Sequence[Any], max_count: int, max_bytes: int) -> Iterator[Sequence[Any]]:
    """``records`` in order, cut into runs of at most ``max_count`` records and ``max_bytes`` bytes of
    values (a record larger than ``max_bytes`` is a run of its own): one transaction each."""
    start, size = 0, 0
    for i, record in enumerate(records):
        n = len(record.value or b"")
        if i > start and (i - start >= max_count or size + n > max_bytes):
            yield records[start:i]
            start, size = i, 0
        size += n
    if start < len(records):
        yield records[start:]


class _SeekOnAssign(ConsumerRebalanceListener):
    def __init__(self, feed: FeedConsumer):
        self.feed = feed

    def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to commit: offsets are stored with each batch in the ledger."""

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.feed.seek(list(assigned))


class FeedConsumer:
    """Consumes contract-v1 messages into the ledger, exactly once per message."""

    def __init__(
        self,
        ledger: Ledger,
        bootstrap: str,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str | None = None,
        dlq_topic: str | None = None,
        batch_size: int = 500,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        poll_timeout_ms: int = 200,
        client: dict[str, Any] | None = None,
        after_batch: Callable[[], None] | None = None,
        source: str | None = None,
        parsers: int = 0,
    ):
        self.ledger = ledger
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.dlq_topic = dlq_topic or f"{topic}.dlq"
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.poll_timeout_ms = poll_timeout_ms
        self.client = client or {}
        self.after_batch = after_batch
        self.ingestor = Ingestor(ledger, allowed_source=source)
        #: processes that parse each poll's records in parallel (0: parse in this process)
        self.parsers = parsers
        self._parser_pool: ParserPool | None = None
        # With a backlog, the last poll's batches are stored in this thread while the next poll is
        # fetched and decoded (the database releases the GIL while it writes and syncs).
        self._writer: ThreadPoolExecutor | None = None
        self._writing: deque[Future[_Written]] = deque()  # polls handed to the writer, oldest first
        self._settled = IngestCounts()  # stored since the last poll_once or flush returned
        #: backlog polls the writer may hold (parsing or storing) while this thread polls again
        self.polls_in_flight = 2
        self._dead_letter_mark = 0  # quarantine ids up to here need no look again
        self.stats = ConsumerStats()
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._seek_topic_id: object = None

    # --- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,  # the test broker answers a waiting fetch late (perf notes)
            # A message in a transaction the producer aborted must never reach the immutable ledger.
            isolation_level="read_committed",
            max_poll_records=self.batch_size,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            **self.client,
        )
        self.producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", **self.client)
        if self.parsers > 0 and self._parser_pool is None:  # started here, not during the first poll
            self._parser_pool = ParserPool(self.parsers, self.ledger)
            self._parser_pool.start()
        # What is made by now (modules, clients, the parser processes' handles) lives while the consumer is
        # connected: kept out of the collector's full passes, which walked all of it every few batches
        # (consumer CPU 31.4 -> 28.9 µs an event; BENCHMARKS.md). ``close`` lets it be collected again.
        gc.freeze()
        self._ensure_topic(self.dlq_topic)
        if self.group:
            self.consumer.subscribe([self.topic], listener=_SeekOnAssign(self))
        else:
            partitions = self._partitions()
            self.consumer.assign(partitions)
            self.seek(partitions)
        self.send_dead_letters()  # what a crash left between a batch's commit and its dead letters

    def _partitions(self, timeout: float = 30.0) -> list[TopicPartition]:
        assert self.consumer is not None
        deadline = time.monotonic() + timeout
        while True:
            found = self.consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            if time.monotonic() > deadline:
                raise KafkaError(f"topic {self.topic} not found on {self.bootstrap}")
            time.sleep(0.2)

    def _ensure_topic(self, name: str) -> None:
        """Create the dead-letter topic if the broker does not have it (not every broker auto-creates)."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, **self.client)
        try:
            if name not in admin.list_topics():
                admin.create_topics([NewTopic(name, 1, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def _topic_id(self) -> object:
        assert self.consumer is not None
        return self.consumer._client.cluster.topic_id(self.topic)

    def seek(self, partitions: Sequence[TopicPartition]) -> None:
        """Position each partition after the last offset the ledger stored for it (once the batches
        being stored are in)."""
        assert self.consumer is not None
        self._settle([])
        stored = self.ledger.tables.tracking_positions(f"{TRACKING_PREFIX}{self.topic}:")
        topic_id = self._topic_id()
        self._seek_topic_id = topic_id
        for tp in partitions:
            offset = stored.get(tracking_name(tp.topic, topic_id, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset + 1)

    def close(self) -> None:
        """Disconnect. A transaction under way is let finish (its dead letters wait for the next start:
        an outbox); call ``flush`` first to act on it here."""
        writing, self._writing = self._writing, deque()
        for future in writing:
            try:
                self.stats.counts.add(future.result().counts)
            except Exception:
                log.warning("a batch was not stored; a reconnect reads it again", exc_info=True)
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if self._parser_pool is not None:
            self._parser_pool.close()
            self._parser_pool = None
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("close failed", exc_info=True)
        self.consumer = self.producer = None
        gc.unfreeze()  # what this connection made (clients, buffers) can be collected once dropped

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool], *, max_backoff: float = 10.0) -> ConsumerStats:
        """Consume until ``stop()``; on broker trouble, reconnect with exponential back-off."""
        backoff = 0.2
        while not stop():
            try:
                if self.consumer is None:
                    self.connect()
                self.poll_once()
                backoff = 0.2
            except UndecodableBatch as exc:
                self._stop_at(exc)
                raise
            except KafkaError as exc:
                log.warning("broker unavailable (%s); reconnecting in %.1f s", exc, backoff)
                self.close()
                self.stats.reconnects += 1
                slept = 0.0
                while slept < backoff and not stop():
                    time.sleep(0.1)
                    slept += 0.1
                backoff = min(max_backoff, backoff * 2)
        if self.consumer is not None:
            try:
                self.flush()  # a graceful stop stores what is parsed; a kill leaves it to be read again
            except KafkaError as exc:  # stored, but its dead letters wait for the next start (outbox)
                log.warning("dead letters not sent at stop (%s); the next start sends them", exc)
        self.close()
        return self.stats

    def _stop_at(self, exc: UndecodableBatch) -> None:
        """Store what was decoded before the batch, note the fault for status and Feed health, disconnect."""
        log.error("%s", exc)
        try:
            self.flush()
        except KafkaError as flush_error:  # stored; the dead letters wait for the next start (outbox)
            log.warning("dead letters not sent at stop (%s); the next start sends them", flush_error)
        self.ledger.tables.record_feed_fault(
            tracking_name(exc.topic, self._seek_topic_id, exc.partition), exc.topic, exc.partition, exc.offset,
            exc.cause, exc.fix, self.ingestor.now().isoformat())
        self.close()

    def _poll(self) -> dict[TopicPartition, list[Any]]:
        """The client's poll, with a batch it cannot decode named by topic, partition and offset."""
        assert self.consumer is not None
        try:
            return self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)
        except DECODE_ERRORS as exc:
            # kafka-python keeps the partition's records it failed on; its position is the first offset
            # not yet returned, where the failing batch starts.
            failing = getattr(getattr(self.consumer, "_fetcher", None), "_next_partition_records", None)
            tp = getattr(failing, "topic_partition", None) or min(self.consumer.assignment())
            offset = getattr(failing, "next_fetch_offset", None)
            raise UndecodableBatch(tp.topic, tp.partition, self.consumer.position(tp) if offset is None else offset,
                                   exc) from exc

    def poll_once(self) -> IngestCounts:
        """One poll: each partition's records in transactions with their offset (at most ``batch_size``
        records and ``batch_bytes`` bytes each); returns what was stored meanwhile.

        With a backlog (a full poll) the work overlaps: while this poll's records are stored (in the
        writer thread, after parsing in the parser processes if any), the next call fetches and decodes
        the next poll. At the head of the feed each poll is stored before the call returns, so a new
        message is not held back.
        """
        assert self.consumer is not None
        polled = self._poll()
        self.stats.polls += 1
        topic_id = self._topic_id()
        if topic_id != self._seek_topic_id and self.consumer.assignment():
            # The topic was created anew (or an in-memory broker restarted): its offsets start
            # again, so positions of the old topic mean nothing. Start the new one from its beginning;
            # message ids make anything seen before a duplicate, never a loss.
            log.warning("topic %s has a new id (%s): reading it from the beginning", self.topic, topic_id)
            self.stats.reconnects += 1
            self.seek(sorted(self.consumer.assignment()))
            return self._report()
        fresh = [self._parse(tp, run, topic_id) for tp, records in polled.items()
                 for run in runs(records, self.batch_size, self.batch_bytes)]
        if sum(len(records) for records in polled.values()) >= self.batch_size:
            while len(self._writing) >= self.polls_in_flight:
                self._settle_oldest(fresh)
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="ledger-writer")
            self._writing.append(self._writer.submit(self._write, fresh))
        else:
            self._settle(fresh)
            self._after(self._write(fresh), [])
        return self._report()

    def flush(self) -> IngestCounts:
        """Wait for the batches being stored, and act on them (seeks, dead letters, ``after_batch``)."""
        self._settle([])
        return self._report()

    def _report(self) -> IngestCounts:
        out, self._settled = self._settled, IngestCounts()
        return out

    def _parse(self, tp: TopicPartition, records: Sequence[Any], topic_id: object) -> _Parsing:
        raws = [RawMessage(r.value if r.value is not None else b"",
                           {"topic": tp.topic, "partition": tp.partition, "offset": r.offset})
                for r in records]
        now = self.ingestor.now()
        return _Parsing(tp, raws, Tracking(tracking_name(tp.topic, topic_id, tp.partition), records[-1].offset),
                        now, self.ingestor.parse(raws, now, self._parser_pool))

    def _write(self, batches: list[_Parsing]) -> _Written:
        """Store ``batches`` in order, each in one transaction with its offset: the database work only,
        so that it can run in the writer thread. A partition found stored by another consumer of the
        group is noted, and its later batches left to be read again."""
        out = _Written()
        for b in batches:
            if b.tp in out.sought:
                continue
            try:
                counts, rejected = self.ingestor.store_prepared(b.raws, b.items(), b.now, b.tracking)
            except IntegrityError:
                out.sought.add(b.tp)
                continue
            out.counts.add(counts)
            out.quarantined = out.quarantined or bool(rejected)
        return out

    def _settle(self, following: list[_Parsing]) -> None:
        """Wait for the writer thread to store every poll handed to it, acting on each in turn."""
        while self._writing:
            self._settle_oldest(following)

    def _settle_oldest(self, following: list[_Parsing]) -> None:
        """Wait for the oldest poll handed to the writer (raising what it raised), then act on it."""
        self._after(self._writing.popleft().result(), following)

    def _after(self, written: _Written, following: list[_Parsing]) -> None:
        """What follows a store, in the consumer's thread: seek past offsets another consumer stored
        (dropping ``following`` batches of those partitions, read before the seek), send dead
        letters, tell ``after_batch``."""
        for tp in sorted(written.sought):
            log.info("offsets of %s already stored; seeking past them", tp)
            self.seek([tp])
        following[:] = [b for b in following if b.tp not in written.sought]
        if written.quarantined:
            self.send_dead_letters()
        self.stats.counts.add(written.counts)
        self._settled.add(written.counts)
        if written.counts.total and self.after_batch:
            self.after_batch()

    def send_dead_letters(self) -> int:
        """Send every message quarantined from this topic that has not gone to the dead-letter topic
        yet, then note it sent. An outbox: the quarantine row commits with its batch, so a crash before
        the send is made good at the next start (at least once: a crash after it may send it twice)."""
        assert self.producer is not None
        # Below the mark everything was sent by this consumer or belongs to another topic's feed.
        pending = self.ledger.tables.undelivered_dead_letters(self.topic, self._dead_letter_mark)
        for item in pending:
            where = item["position"]
            headers = [("reason", item["reason"].encode()), ("source_topic", str(where["topic"]).encode()),
                       ("source_partition", str(where["partition"]).encode()),
                       ("source_offset", str(where["offset"]).encode())]
            self.producer.send(self.dlq_topic, value=item["raw"], headers=headers)
        if pending:
            self.producer.flush(timeout=30)
            self.ledger.tables.mark_dead_lettered([item["id"] for item in pending],
                                                  self.ingestor.now().isoformat())
            self.stats.dead_letters += len(pending)
            self._dead_letter_mark = pending[-1]["id"]
        return len(pending)


def partition_lag(bootstrap: str, topic: str, stored: dict[str, int],
                  client: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per partition: the offset stored in the ledger, the broker's end offset, and the lag."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             **(client or {}))
    try:
        found: set[int] = set()
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:  # metadata may not have arrived yet
            found = consumer.partitions_for_topic(topic) or set()
            if not found:
                time.sleep(0.1)
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        ends = consumer.end_offsets(partitions) if partitions else {}
        topic_id = consumer._client.cluster.topic_id(topic)
        rows = []
        for tp in partitions:
            offset = stored.get(tracking_name(topic, topic_id, tp.partition))
            consumed = 0 if offset is None else offset + 1
            rows.append({"topic": topic, "partition": tp.partition, "offset": offset,
                         "end_offset": ends.get(tp), "lag": max(0, (ends.get(tp) or 0) - consumed)})
        return rows
    finally:
        consumer.close()
