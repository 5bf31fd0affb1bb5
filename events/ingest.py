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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from events.contract import ContractViolation, Message, parse_message, validate_data
from events.domain import EVENT_CLASS, Patient, patient_uuid
from events.ledger import Ledger
from events.recorders import AdmissionRow, CountRow, IndexedMessage, QuarantineRow
from safety.vocabulary import AMENDMENT_TYPES

log = logging.getLogger(__name__)

UNKNOWN_SOURCE = "(unknown)"
PATIENT_TOPIC = get_topic(Patient)


@dataclass(frozen=True)
class RawMessage:
    """Bytes as received, and where they came from (file and line, or topic/partition/offset)."""

    raw: bytes
    position: dict[str, Any]


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

    events: list[Patient.Event] = field(default_factory=list)
    admissions: list[AdmissionRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    per_source: dict[str, Counter[str]] = field(default_factory=dict)
    versions: dict[UUID, int] = field(default_factory=dict)

    def count(self, source: str | None, outcome: str) -> None:
        self.per_source.setdefault(source or UNKNOWN_SOURCE, Counter())[outcome] += 1

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

    def __init__(self, ledger: Ledger, *, now: Callable[[], datetime] | None = None):
        self.ledger = ledger
        self.now = now or (lambda: datetime.now(UTC))
        # Next free version per patient stream; valid while this process is the only writer,
        # corrected by re-reading after any conflict.
        self._versions: dict[UUID, int] = {}

    def ingest(
        self,
        raws: Iterable[RawMessage],
        *,
        batch_size: int = 1000,
        on_batch: Callable[[IngestCounts], None] | None = None,
    ) -> IngestCounts:
        total = IngestCounts()
        for batch in _chunks(raws, batch_size):
            counts = self.ingest_batch(batch)
            total.add(counts)
            if on_batch:
                on_batch(counts)
        return total

    def ingest_batch(
        self, batch: Sequence[RawMessage], tracking: Tracking | None = None
    ) -> IngestCounts:
        now = self.now()
        parsed = [self._parse(item, now) for item in batch]
        for attempt in range(1, self.max_attempts + 1):
            decided = self._decide(batch, parsed, now)
            try:
                self.ledger.append(
                    decided.events,
                    admissions=decided.admissions,
                    quarantine=decided.quarantine,
                    counts=decided.count_rows(now.isoformat()),
                    tracking=tracking,
                )
            except IntegrityError:
                if tracking is not None and self._already_tracked(tracking):
                    raise
                log.info("batch conflicted with another writer (attempt %d); judging again", attempt)
                self._versions.clear()
                time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 7)))  # back off, de-synchronise
                continue
            self._versions.update(decided.versions)
            return decided.totals()
        raise RuntimeError(f"batch still conflicting after {self.max_attempts} attempts")

    def _already_tracked(self, tracking: Tracking) -> bool:
        current = self.ledger.recorder.max_tracking_id(tracking.application_name)  # type: ignore[attr-defined]
        return current is not None and current >= tracking.notification_id

    @staticmethod
    def _parse(item: RawMessage, now: datetime) -> Message | ContractViolation:
        try:
            return parse_message(item.raw, now=now)
        except ContractViolation as exc:
            return exc

    def _decide(
        self, batch: Sequence[RawMessage], parsed: Sequence[Message | ContractViolation], now: datetime
    ) -> _Batch:
        valid = [m for m in parsed if isinstance(m, Message)]
        wanted = [m.key for m in valid] + [m.target_key for m in valid if m.target_key]
        known = self.ledger.tables.lookup_messages(wanted)
        self._load_versions({patient_uuid(m.source, m.patient_id) for m in valid})
        out = _Batch()
        in_batch: dict[str, IndexedMessage] = {}
        received = now.isoformat()
        for item, result in zip(batch, parsed, strict=True):
            if isinstance(result, ContractViolation):
                self._quarantine(out, item, result, received)
                continue
            try:
                message = self._judge(result, known, in_batch)
            except ContractViolation as exc:
                exc.source, exc.message_id = result.source, result.message_id
                self._quarantine(out, item, exc, received)
                continue
            if message is None:
                out.count(result.source, "duplicates")
                continue
            indexed = self._admit(out, message, now)
            in_batch[message.key] = indexed
            out.count(message.source, "accepted")
        return out

    def _judge(
        self, m: Message, known: dict[str, IndexedMessage], in_batch: dict[str, IndexedMessage]
    ) -> Message | None:
        """The message to admit (possibly normalised further), None for a duplicate, or raise."""
        prior = in_batch.get(m.key) or known.get(m.key)
        if prior is not None:
            if prior.content_hash == m.content_hash:
                return None
            raise ContractViolation(
                f"message_id {m.message_id} conflict: source {m.source} already sent it with "
                "different content (the first is kept); send new facts under a new message_id, "
                "or a correction that targets it"
            )
        if m.type not in AMENDMENT_TYPES:
            return m
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
        if m.type == "correction":
            corrected = validate_data(target.type, m.data["data"], prefix="data.data.")
            return replace(m, data={**m.data, "data": corrected, "target_type": target.type})
        return replace(m, data={**m.data, "target_type": target.type})

    def _admit(self, out: _Batch, m: Message, now: datetime) -> IndexedMessage:
        oid = patient_uuid(m.source, m.patient_id)
        version = out.versions.get(oid, self._versions.get(oid, 0))
        if version == 0:
            version = 1
            out.events.append(
                Patient.Registered(
                    originator_id=oid,
                    originator_version=1,
                    timestamp=now,
                    originator_topic=PATIENT_TOPIC,
                    source=m.source,
                    patient_id=m.patient_id,
                )
            )
        version += 1
        out.versions[oid] = version
        out.events.append(
            EVENT_CLASS[m.type](
                originator_id=oid,
                originator_version=version,
                timestamp=now,
                source=m.source,
                patient_id=m.patient_id,
                message_id=m.message_id,
                occurred_at=m.occurred_at,
                reported_at=m.reported_at,
                data=m.data,
                content_hash=m.content_hash,
            )
        )
        out.admissions.append(
            (m.key, m.source, m.message_id, m.patient_id, m.type, m.content_hash, oid.hex, version)
        )
        return IndexedMessage(m.key, m.patient_id, m.type, m.content_hash, oid)

    @staticmethod
    def _quarantine(out: _Batch, item: RawMessage, exc: ContractViolation, received: str) -> None:
        out.quarantine.append(
            (received, exc.source, exc.message_id, json.dumps(item.position), exc.reason, item.raw)
        )
        out.count(exc.source, "quarantined")

    def _load_versions(self, oids: set[UUID]) -> None:
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
