"""The publisher: a registry's messages onto its Kafka topic, each validated against the contract first
and keyed by patient, so one patient's messages stay in order on one partition."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer

from events.admission import RawMessage
from events.contract import ContractViolation, parse_message
from events.kafka import COMPRESSION_TYPES, DEFAULT_TOPIC


@dataclass
class PublishCounts:
    sent: int = 0
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def publish(
    messages: Iterable[RawMessage],
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    client: dict[str, Any] | None = None,
    compression: str = "none",
) -> PublishCounts:
    """Validate, then send each message keyed ``source/patient_id`` with the idempotent producer,
    compressed with ``compression`` (one of ``COMPRESSION_TYPES``)."""
    if compression not in COMPRESSION_TYPES:
        raise ValueError(f"compression {compression!r}: use one of {', '.join(COMPRESSION_TYPES)}")
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
        batch_size=1 << 20, compression_type=None if compression == "none" else compression, **(client or {}),
    )
    out = PublishCounts()
    try:
        for item in messages:
            try:
                m = parse_message(item.raw)
            except ContractViolation as exc:
                out.invalid.append((item.position, exc.reason))
                continue
            producer.send(topic, key=f"{m.source}/{m.patient_id}".encode(), value=item.raw)
            out.sent += 1
        producer.flush(timeout=60)
    finally:
        producer.close()
    return out
