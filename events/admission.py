"""What a raw message becomes before it is judged against the ledger: parsed, validated and
serialised, or rejected with the contract's reason. Needs no database, so it runs in parser processes
(``events.parsers``) as well as in the ingesting one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from events.contract import ContractViolation, Message, parse_message
from events.encoding import StateEncoder
from safety.vocabulary import AMENDMENT_TYPES


class RawMessage(NamedTuple):
    """Bytes as received, and where they came from (file and line, or topic/partition/offset).
    A tuple: one is made per message on the hot path, and a frozen dataclass is slow to build.

    ``refused`` is set by an inbound adapter that could not make a message of what it read (an SDTM
    record without USUBJID): the bytes go to the quarantine with that reason, never to the ledger."""

    raw: bytes
    position: dict[str, Any]
    refused: Rejected | None = None
    #: the adapter's own parse of ``raw`` (``parse_message(raw)``), so that ingest does not parse it again
    parsed: Message | None = None


class Prepared(NamedTuple):
    """A valid message, ready to store: its keys and its event's serialised state.

    Amendments keep the message itself: they are judged and encoded once their target is known.
    A tuple, because batches of them cross from the parser processes (cheap to pickle).
    """

    key: str
    source: str
    message_id: str
    patient_id: str
    type: str
    content_hash: str
    target_key: str | None
    topic: str
    state: bytes
    message: Message | None


class Rejected(NamedTuple):
    """A message that broke the contract (a picklable stand-in for ContractViolation)."""

    reason: str
    source: str | None
    message_id: str | None


def prepare(raw: bytes, now: datetime, encoder: StateEncoder, parsed: Message | None = None) -> Prepared | Rejected:
    """Parse, validate and serialise one message: the part of ingest that needs no database."""
    try:
        m = parsed or parse_message(raw, now=now)
    except ContractViolation as exc:
        return Rejected(exc.reason, exc.source, exc.message_id)
    if m.type in AMENDMENT_TYPES:
        return Prepared(m.key, m.source, m.message_id, m.patient_id, m.type, m.content_hash,
                        m.target_key, "", b"", m)
    stored = encoder.recorded(m, now)
    return Prepared(m.key, m.source, m.message_id, m.patient_id, m.type, m.content_hash,
                    None, stored.topic, stored.state, None)
