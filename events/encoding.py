"""Accepted messages to stored events, without the detour through event objects on the hot path.

eventsourcing's mapper builds the domain event, copies its ``__dict__`` and encodes it with a Python
hook per datetime: about a third of the CPU of ingest. :class:`StateEncoder` writes the very same
bytes straight from the validated message (a test holds them byte-equal to the mapper's), then
applies the mapper's own compressor and cipher. With any other transcoder or mapper configured it
defers to the mapper, so it can never write something the ledger cannot read back.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from events.contract import Message
from events.contract_fast import written_alike
from events.domain import EVENT_CLASS, Patient, patient_uuid

#: the topic of each contract type's event class
EVENT_TOPIC = {type_name: get_topic(cls) for type_name, cls in EVENT_CLASS.items()}
_DATETIME = "datetime_iso"  # eventsourcing's DatetimeAsISO transcoding name
# The settings of JSONTranscoder.encoder, minus its per-object hook (we pre-encode datetimes).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# The same bytes, five times faster, for every value but some floats (``written_alike``).
_FAST_JSON = msgspec.json.Encoder()


def event_for(m: Message, now: datetime, version: int = 0) -> Patient.Recorded:
    """The domain event of an accepted message (what the encoder's bytes decode to)."""
    return EVENT_CLASS[m.type](  # type: ignore[call-arg]  # fields come from the event dataclass
        originator_id=patient_uuid(m.source, m.patient_id),
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


def _mirrors(mapper: Mapper[UUID]) -> bool:
    """Whether the mapper serialises exactly as this module does (the library's defaults)."""
    transcoder = mapper.transcoder
    if type(mapper) is not Mapper or type(transcoder) is not JSONTranscoder:
        return False
    datetimes = transcoder.types.get(datetime)
    return datetimes is not None and datetimes.name == _DATETIME and all(
        getattr(cls, "class_version", 1) == 1 for cls in EVENT_CLASS.values())


def _datetime(value: datetime) -> dict[str, str]:
    return {"_type_": _DATETIME, "_data_": value.isoformat()}


class StateEncoder:
    """Serialises accepted messages as their patient's stored events."""

    def __init__(self, mapper: Mapper[UUID]):
        self.mapper = mapper
        self.mirrors = _mirrors(mapper)
        self._now: tuple[datetime, dict[str, str]] | None = None  # a batch shares one timestamp

    def recorded(self, m: Message, now: datetime, version: int = 0) -> StoredEvent:
        if not self.mirrors:
            return self.mapper.to_stored_event(event_for(m, now, version))
        stamp = self._now  # one read: threads may share this encoder
        if stamp is None or stamp[0] is not now:
            stamp = self._now = (now, _datetime(now))
        # Keys in the event's field order, as vars(event) would list them.
        state: dict[str, Any] = {
            "timestamp": stamp[1],
            "source": m.source,
            "patient_id": m.patient_id,
            "message_id": m.message_id,
            "occurred_at": _datetime(m.occurred_at),
            "reported_at": None if m.reported_at is None else _datetime(m.reported_at),
            "data": m.data,
            "content_hash": m.content_hash,
        }
        stored = _FAST_JSON.encode(state) if written_alike(m.data) else _JSON.encode(state).encode("utf8")
        if self.mapper.compressor:
            stored = self.mapper.compressor.compress(stored)
        if self.mapper.cipher:
            stored = self.mapper.cipher.encrypt(stored)
        return StoredEvent(patient_uuid(m.source, m.patient_id), version, EVENT_TOPIC[m.type], stored)


_TYPE_MARK = b'"_type_"'
_decode_json = msgspec.json.Decoder().decode
#: the contract type of each recorded fact's topic
TYPE_OF_TOPIC = {topic: type_name for type_name, topic in EVENT_TOPIC.items()}


class _Stamp(msgspec.Struct, forbid_unknown_fields=True, rename={"kind": "_type_", "text": "_data_"}):
    kind: str
    text: str


class _Recorded(msgspec.Struct):
    timestamp: _Stamp
    source: str
    patient_id: str
    message_id: str
    occurred_at: _Stamp
    data: msgspec.Raw
    reported_at: _Stamp | None = None


_decode_recorded = msgspec.json.Decoder(_Recorded).decode


class RecordedText(NamedTuple):
    """A recorded fact as its stored state holds it: its times as the ISO text stored, its data as the JSON
    text stored (what ``json.dumps`` writes of it, compact). What a read model that keeps the fact as text
    needs, without making the event's datetimes and data only to write them back as text."""

    type: str
    source: str
    patient_id: str
    message_id: str
    occurred_at: str
    recorded_at: str
    data: str


class StateDecoder:
    """Stored events back to domain events for the read side, without the mapper's Python hook on every
    object: the state is decoded in C and only the event's own datetimes are converted. A state with any
    other transcoded value (a ``_type_`` object in a message's data, which the mapper would turn into a
    Python object), or not valid strict JSON, or under another mapper, goes to the mapper: the events are
    equal either way (a test holds them equal)."""

    def __init__(self, mapper: Mapper[UUID]):
        self.mapper = mapper
        self.mirrors = _mirrors(mapper)

    def _plain(self, stored: Any) -> bytes:
        """The stored state as the encoder wrote it, before the mapper compressed and encrypted it."""
        state: bytes = stored.state
        if self.mapper.cipher:
            state = self.mapper.cipher.decrypt(state)
        if self.mapper.compressor:
            state = self.mapper.compressor.decompress(state)
        return state

    def event(self, stored: Any) -> Any:
        if not self.mirrors:
            return self.mapper.to_domain_event(stored)
        state = self._plain(stored)
        try:
            d = _decode_json(state)
        except msgspec.DecodeError:
            return self.mapper.to_domain_event(stored)
        converted = 0
        for key in ("timestamp", "occurred_at", "reported_at"):
            value = d.get(key)
            if type(value) is dict and value.get("_type_") == _DATETIME and len(value) == 2:
                d[key] = datetime.fromisoformat(value["_data_"])
                converted += 1
        if state.count(_TYPE_MARK) != converted:
            return self.mapper.to_domain_event(stored)
        oid = stored.originator_id
        d["originator_id"] = oid if isinstance(oid, UUID) else UUID(oid)
        d["originator_version"] = stored.originator_version
        event = object.__new__(resolve_topic(stored.topic))
        object.__setattr__(event, "__dict__", d)
        return event

    def recorded_text(self, stored: Any) -> RecordedText | None:
        """A recorded fact's fields as stored text (issue 28: a rebuild writes a million facts as text); None
        where only ``event`` can tell (another event, another mapper, a transcoded value in the data, JSON
        only Python's parser takes). The data's text is the stored slice: the encoder wrote it as
        ``json.dumps`` writes the data, so it is what writing the decoded data again gives (a test holds
        them equal)."""
        type_name = TYPE_OF_TOPIC.get(stored.topic)
        if type_name is None or not self.mirrors:
            return None
        state = self._plain(stored)
        try:
            r = _decode_recorded(state)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        stamps = (r.timestamp, r.occurred_at) if r.reported_at is None else (r.timestamp, r.occurred_at, r.reported_at)
        if state.count(_TYPE_MARK) != len(stamps) or any(stamp.kind != _DATETIME for stamp in stamps):
            return None
        return RecordedText(type_name, r.source, r.patient_id, r.message_id, r.occurred_at.text, r.timestamp.text,
                            bytes(r.data).decode())
