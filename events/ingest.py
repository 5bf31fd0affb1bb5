"""Ingest: judge each raw message (accept, duplicate, quarantine) and append batches atomically.

Every path (NDJSON files, Kafka) feeds raw bytes with their position through :class:`Ingestor`.
A batch is one transaction: events, idempotency keys, quarantined messages, per-source counts and
(for Kafka) the consumed offset. If another writer got there first (a key or a patient version
already taken), the whole batch is judged again against what is now stored.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.utils import get_topic

from events.admission import Prepared, RawMessage, Rejected, prepare
from events.contract import ContractViolation, validate_data
from events.domain import Patient, patient_hex, patient_uuid
from events.encoding import StateEncoder
from events.ledger import Ledger
from events.parsers import ParserPool, frozen_heap
from events.recorders import AdmissionRow, CountRow, IndexedMessage, QuarantineRow, refusal
from events.strict_json import storable
from safety.vocabulary import AMENDMENT_TYPES

log = logging.getLogger(__name__)

UNKNOWN_SOURCE = "(unknown)"
PATIENT_TOPIC = get_topic(Patient)


@dataclass
class IngestCounts:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: IngestCounts) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.quarantined

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "quarantined": self.quarantined}


@dataclass
class _Batch:
    """What one pass over a batch decided, ready to append."""

    stored: list[StoredEvent] = field(default_factory=list)
    admissions: list[AdmissionRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    per_source: dict[str, Counter[str]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # next version by stream id (hex)
    #: a message of the batch was stored before (a re-delivery, or a conflicting one)
    seen_before: bool = False
    rejected: list[tuple[RawMessage, str]] = field(default_factory=list)

    def count(self, source: str | None, outcome: str) -> None:
        key = source or UNKNOWN_SOURCE
        counter = self.per_source.get(key)
        if counter is None:
            counter = self.per_source[key] = Counter()
        counter[outcome] += 1

    def totals(self) -> IngestCounts:
        c: Counter[str] = Counter()
        for counter in self.per_source.values():
            c.update(counter)
        return IngestCounts(c["accepted"], c["duplicates"], c["quarantined"])

    def count_rows(self, now: str) -> list[CountRow]:
        return [
            (source, c["accepted"], c["duplicates"], c["quarantined"], now)
            for source, c in sorted(self.per_source.items())
        ]


class Ingestor:
    """Validates raw messages and appends them to the ledger in batches."""

    max_attempts = 20
    #: after a batch holding a message stored before, this many read the message index first
    index_first_after_seen = 16
    #: batches in flight per parser process (a deeper queue smooths the two processes' pace)
    window = 4

    def __init__(self, ledger: Ledger, *, now: Callable[[], datetime] | None = None,
                 allowed_source: str | None = None):
        self.ledger = ledger
        self.now = now or (lambda: datetime.now(UTC))
        #: when set, messages claiming any other source are quarantined as unauthorised
        self.allowed_source = allowed_source
        # Next free version per patient stream; valid while this process is the only writer,
        # corrected by re-reading after any conflict.
        self._versions: dict[str, int] = {}
        self.encoder = StateEncoder(ledger.mapper)
        #: what was committed so far by this ingestor (reported when a later batch fails)
        self.committed = IngestCounts()
        #: batches still to judge with the message index read first (0: judge without reading it, where
        #: the store refuses a taken key cheaply); set after a batch that held a message stored before
        self._index_first = 0 if ledger.tables.refuses_taken_keys_cheaply else -1

    def ingest(
        self,
        raws: Iterable[RawMessage],
        *,
        batch_size: int = 1000,
        workers: int = 0,
    ) -> IngestCounts:
        """Ingest in batches; ``workers`` > 0 parses in that many processes while this one stores."""
        with frozen_heap():
            return self._ingest(raws, batch_size, workers)

    def _ingest(self, raws: Iterable[RawMessage], batch_size: int, workers: int) -> IngestCounts:
        total = IngestCounts()
        batches = _chunks(raws, batch_size)
        if workers <= 0:
            for batch in batches:
                total.add(self._store_here(batch))
            return total
        pool = ParserPool(workers, self.ledger)
        try:
            started = pool.starting()
            # A few batches parse ahead in the processes while this one stores, in input order; until
            # the processes are up (a third of a second), this one parses too.
            window: deque[tuple[list[RawMessage], Callable[[], list[Prepared | Rejected]], datetime]] = deque()
            for batch in batches:
                if not window and not started():
                    total.add(self._store_here(batch))
                    continue
                now = self.now()
                window.append((batch, pool.submit([r.raw for r in batch], now, split=False), now))
                if len(window) > self.window * workers:
                    done, items, stamp = window.popleft()
                    total.add(self._store(done, items(), stamp, None).totals())
            while window:
                done, items, stamp = window.popleft()
                total.add(self._store(done, items(), stamp, None).totals())
        finally:
            pool.close()
        return total

    def _store_here(self, batch: list[RawMessage]) -> IngestCounts:
        """Parse ``batch`` in this process and store it."""
        now = self.now()
        prepared = [prepare(r.raw, now, self.encoder, r.parsed) for r in batch]
        return self._store(batch, prepared, now, None).totals()

    def ingest_batch(
        self, batch: Sequence[RawMessage], tracking: Tracking | None = None
    ) -> IngestCounts:
        """One batch in one transaction (with the source position, for Kafka)."""
        now = self.now()
        return self.store_prepared(batch, self.parse(batch, now)(), now, tracking)[0]

    def parse(self, batch: Sequence[RawMessage], now: datetime,
              parsers: ParserPool | None = None) -> Callable[[], list[Prepared | Rejected]]:
        """Start parsing ``batch`` (in ``parsers`` when given and the batch is worth it); call the
        result for the parsed items."""
        if parsers is not None and len(batch) >= parsers.min_batch:
            return parsers.submit([item.raw for item in batch], now)
        return lambda: [prepare(item.raw, now, self.encoder) for item in batch]

    def store_prepared(
        self, batch: Sequence[RawMessage], items: Sequence[Prepared | Rejected], now: datetime,
        tracking: Tracking | None,
    ) -> tuple[IngestCounts, list[tuple[RawMessage, str]]]:
        """Judge parsed items and append them in one transaction (with the source position)."""
        decided = self._store(batch, items, now, tracking)
        return decided.totals(), decided.rejected

    def _store(
        self,
        batch: Sequence[RawMessage],
        items: Sequence[Prepared | Rejected],
        now: datetime,
        tracking: Tracking | None,
    ) -> _Batch:
        # Judged first without reading the message index when the last batches held nothing stored
        # before: the index's unique key refuses a message stored before, and the batch is judged again
        # with the index read. A feed of new messages saves a lookup per message; after a batch with a
        # message stored before, the next ones read the index first until enough of them were all new.
        optimistic = self._index_first == 0
        for attempt in range(1, self.max_attempts + 1):
            decided = self._decide(batch, items, now, read_index=not optimistic)
            try:
                self.ledger.append_stored(
                    decided.stored,
                    admissions=decided.admissions,
                    quarantine=decided.quarantine,
                    counts=decided.count_rows(now.isoformat()),
                    tracking=tracking,
                )
            except Exception as exc:
                kind = refusal(exc)
                if kind is None:
                    raise
                if optimistic:  # perhaps a message stored before: judge again, reading the index
                    optimistic = False
                    self._index_first = self.index_first_after_seen
                    continue
                if kind == "conflict":
                    if tracking is not None and self._already_tracked(tracking):
                        raise
                    log.info("batch conflicted with another writer (attempt %d); judging again", attempt)
                    self._versions.clear()
                    time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 7)))  # back off, de-synchronise
                    continue
                items = self._without_refused(batch, items, now, exc)
                continue
            self._versions.update(decided.versions)
            self.committed.add(decided.totals())
            if self._index_first >= 0 and not optimistic:
                self._index_first = self.index_first_after_seen if decided.seen_before else self._index_first - 1
            return decided
        raise RuntimeError(f"batch still conflicting after {self.max_attempts} attempts")

    def _without_refused(
        self, batch: Sequence[RawMessage], items: Sequence[Prepared | Rejected], now: datetime, exc: Exception
    ) -> list[Prepared | Rejected]:
        """The batch with the messages the store refuses turned into quarantined ones, so one bad
        message never holds back the others. Raises ``exc`` when no single message is to blame."""
        refused = self._refused(batch, items, [i for i, p in enumerate(items) if isinstance(p, Prepared)], now)
        if not refused:
            raise exc
        out = list(items)
        for i, reason in refused.items():
            p = items[i]
            log.warning("the store refused message %s of source %s (%s); quarantined", p.message_id, p.source, reason)
            out[i] = Rejected(f"the store refused this message ({reason}): correct it and send it again; "
                              "the rest of its batch was stored", p.source, p.message_id)
        return out

    def _refused(
        self, batch: Sequence[RawMessage], items: Sequence[Prepared | Rejected], indices: list[int], now: datetime
    ) -> dict[int, str]:
        """Which of ``items[indices]`` the store refuses, and why: halve the batch until one message is
        left (a probe writes and rolls back), about 2 log2(n) probes for one bad message."""
        if not indices:
            return {}
        decided = self._decide([batch[i] for i in indices], [items[i] for i in indices], now)
        try:
            self.ledger.probe_stored(decided.stored, admissions=decided.admissions, quarantine=decided.quarantine,
                                     counts=decided.count_rows(now.isoformat()))
            return {}
        except Exception as exc:
            kind = refusal(exc)
            if kind is None:
                raise
            if kind == "conflict":
                return {}  # another writer: judged again by the caller, not this message's fault
            if len(indices) == 1:
                return {indices[0]: storable(f"{type(exc.__cause__ or exc).__name__}: {exc}".strip())}
        half = len(indices) // 2
        return {**self._refused(batch, items, indices[:half], now), **self._refused(batch, items, indices[half:], now)}

    def _already_tracked(self, tracking: Tracking) -> bool:
        current = self.ledger.recorder.max_tracking_id(tracking.application_name)  # type: ignore[attr-defined]
        return current is not None and current >= tracking.notification_id

    def _decide(
        self, batch: Sequence[RawMessage], items: Sequence[Prepared | Rejected], now: datetime,
        read_index: bool = True,
    ) -> _Batch:
        """Judge a batch: with ``read_index``, against the stored messages with its keys; without, as if
        none were stored (amendments' targets are read all the same)."""
        valid = [p for p in items if isinstance(p, Prepared)
                 and (not self.allowed_source or p.source == self.allowed_source)]
        targets = [p.target_key for p in valid if p.target_key]
        known = self.ledger.tables.lookup_messages([p.key for p in valid] + targets if read_index else targets)
        self._load_versions({patient_hex(p.source, p.patient_id) for p in valid})
        out = _Batch()
        out.seen_before = read_index and any(p.key in known for p in valid)
        in_batch: dict[str, IndexedMessage] = {}
        received = now.isoformat()
        for item, p in zip(batch, items, strict=True):
            if item.refused is not None:
                p = item.refused
            if isinstance(p, Prepared) and self.allowed_source and p.source != self.allowed_source:
                p = Rejected(f"unauthorised: source {p.source} may not send on this feed, which belongs to "
                             f"{self.allowed_source}; send it under the registry's own credentials and topic",
                             p.source, p.message_id)
            if isinstance(p, Rejected):
                self._quarantine(out, item, p, received)
                continue
            try:
                admitted = self._judge(p, known, in_batch, now)
            except ContractViolation as exc:
                self._quarantine(out, item, Rejected(exc.reason, p.source, p.message_id), received)
                continue
            if admitted is None:
                out.count(p.source, "duplicates")
                continue
            in_batch[p.key] = self._admit(out, admitted, now)
            out.count(p.source, "accepted")
        return out

    def _judge(
        self,
        p: Prepared,
        known: dict[str, IndexedMessage],
        in_batch: dict[str, IndexedMessage],
        now: datetime,
    ) -> Prepared | None:
        """The message to admit (amendments encoded now), None for a duplicate, or raise."""
        prior = in_batch.get(p.key) or known.get(p.key)
        if prior is not None:
            if prior.content_hash == p.content_hash:
                return None
            raise ContractViolation(
                f"message_id {p.message_id} conflict: source {p.source} already sent it with "
                "different content (the first is kept); send new facts under a new message_id, "
                "or a correction that targets it"
            )
        if p.message is None:
            return p
        m = p.message
        target_id = m.data["target_message_id"]
        target = in_batch.get(m.target_key or "") or known.get(m.target_key or "")
        if target is None:
            raise ContractViolation(
                f"data.target_message_id: unknown target {target_id} for source {m.source}; "
                "send the original message first, or check the id"
            )
        if target.patient_id != m.patient_id:
            raise ContractViolation(
                f"data.target_message_id: {target_id} belongs to patient {target.patient_id}, "
                f"not {m.patient_id}; amend it under its own patient_id"
            )
        if target.type in AMENDMENT_TYPES:
            raise ContractViolation(
                f"data.target_message_id: {target_id} is a {target.type}; target the original message"
            )
        data = {**m.data, "target_type": target.type}
        if m.type == "correction":
            data["data"] = validate_data(target.type, m.data["data"], prefix="data.data.")
        stored = self.encoder.recorded(replace(m, data=data), now)
        return p._replace(topic=stored.topic, state=stored.state, message=None)

    def _admit(self, out: _Batch, p: Prepared, now: datetime) -> IndexedMessage:
        oid = patient_hex(p.source, p.patient_id)
        version = out.versions.get(oid) or self._versions.get(oid, 0)
        if version == 0:
            version = 1
            registered = Patient.Registered(  # type: ignore[call-arg]
                originator_id=patient_uuid(p.source, p.patient_id),
                originator_version=1,
                timestamp=now,
                originator_topic=PATIENT_TOPIC,
                source=p.source,
                patient_id=p.patient_id,
            )
            out.stored.append(self.ledger.mapper.to_stored_event(registered))
        version += 1
        out.versions[oid] = version
        out.stored.append(StoredEvent(oid, version, p.topic, p.state))
        out.admissions.append((p.key, p.source, p.message_id, p.patient_id, p.type, p.content_hash, oid, version))
        return IndexedMessage(p.key, p.patient_id, p.type, p.content_hash)

    @staticmethod
    def _quarantine(out: _Batch, item: RawMessage, r: Rejected, received: str) -> None:
        # The raw bytes keep the message exactly; its id and reason go into text columns, which must
        # take whatever the message held (a NUL, a lone surrogate).
        source = r.source and storable(r.source)
        out.quarantine.append((received, source, r.message_id and storable(r.message_id),
                               json.dumps(item.position), storable(r.reason), item.raw))
        out.rejected.append((item, r.reason))
        out.count(source, "quarantined")

    def _load_versions(self, oids: set[str]) -> None:
        missing = [oid for oid in oids if oid not in self._versions]
        if missing:
            found = self.ledger.tables.patient_versions(missing)
            for oid in missing:
                self._versions[oid] = found.get(oid, 0)


def _chunks(items: Iterable[RawMessage], size: int) -> Iterator[list[RawMessage]]:
    batch: list[RawMessage] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
