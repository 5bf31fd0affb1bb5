"""The ingest encoder writes exactly the bytes eventsourcing's mapper would, and with encryption at rest
on, its events decode to the same domain events."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Mapper, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contract import Message, parse_message
from events.encoding import StateDecoder, StateEncoder, event_for
from events.files import read_ndjson
from safety.cli import demo_feed_path
from safety.vocabulary import AMENDMENT_TYPES
from tests.messages import message
from tests.test_fuzz import valid_lab

NOW = datetime(2026, 11, 26, 14, 0, 0, 123456, tzinfo=UTC)


def mapper(**env: str) -> Mapper[Any]:
    return Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo", **env}).mapper


def demo_messages() -> list[Message]:
    return [parse_message(r.raw, now=NOW) for r in read_ndjson(str(demo_feed_path()))]


def assert_same_bytes(m: Message, plain: Mapper[Any], version: int = 3) -> None:
    expected = plain.to_stored_event(event_for(m, NOW, version))
    assert StateEncoder(plain).recorded(m, NOW, version) == expected


def test_every_demo_message_is_encoded_byte_for_byte_as_the_mapper_would():
    plain = mapper()
    assert StateEncoder(plain).mirrors
    messages = [m for m in demo_messages() if m.type not in AMENDMENT_TYPES]
    assert len({m.type for m in messages}) >= 8  # the demo covers most types
    for m in messages:
        assert_same_bytes(m, plain)


# what the contract takes: no NUL anywhere, no C0 control character or DEL in identifiers
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
               min_size=1, max_size=40)
ID_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",),
                                exclude_characters="".join(map(chr, [*range(32), 127]))), min_size=1, max_size=40)
OFFSETS = st.sampled_from(["Z", "+02:00", "-05:30", ""])


@st.composite
def varied(draw: Any) -> dict[str, Any]:
    """Valid messages with awkward text, numbers, offsets and optional fields."""
    kind = draw(st.sampled_from(["lab", "adverse_event", "treatment", "clinical_finding"]))
    if kind == "lab":
        m = draw(valid_lab())
    elif kind == "adverse_event":
        m = message("x", type="adverse_event", data={"term": draw(TEXT), "serious": draw(st.booleans()),
                                                     "ctcae_grade": draw(st.integers(1, 5))})
    elif kind == "treatment":
        m = message("x", type="treatment", data={"drug": draw(TEXT), "action": "stop", "dose": draw(TEXT)})
    else:
        m = message("x", type="clinical_finding",
                    data={"temperature_c": draw(st.floats(30, 44)), "fever": draw(st.booleans())})
    m["message_id"] = draw(ID_TEXT)
    m["patient_id"] = draw(ID_TEXT)
    m["occurred_at"] = f"2024-0{draw(st.integers(1, 9))}-1{draw(st.integers(0, 9))}T08:30:00{draw(OFFSETS)}"
    if draw(st.booleans()):
        m["reported_at"] = f"2024-10-01T09:00:00.{draw(st.integers(0, 999999)):06d}{draw(OFFSETS)}"
    return m


@settings(max_examples=300, deadline=None)
@given(varied())
def test_generated_messages_are_encoded_byte_for_byte_as_the_mapper_would(m: dict[str, Any]):
    message_ = parse_message(json.dumps(m, ensure_ascii=bool(len(m) % 2)).encode(), now=NOW)
    assert_same_bytes(message_, mapper())
    assert_decoded_alike(mapper().to_stored_event(event_for(message_, NOW, 1)), mapper())


def assert_decoded_alike(stored: Any, with_mapper: Mapper[Any]) -> None:
    """The read side's decoder gives the very event the mapper gives: class, every field, their types."""
    fast, slow = StateDecoder(with_mapper).event(stored), with_mapper.to_domain_event(stored)
    assert type(fast) is type(slow) and vars(fast) == vars(slow)
    assert {k: type(v) for k, v in vars(fast).items()} == {k: type(v) for k, v in vars(slow).items()}


def test_stored_events_decode_to_the_events_the_mapper_makes():
    """Issue 28: the projectors decode without the mapper's per-object hook; whatever the state holds (every
    demo message, the aggregate's creation, a data value shaped like a transcoded object, JSON that only
    Python's parser takes), the event is the mapper's."""
    from eventsourcing.persistence import StoredEvent

    from events.domain import Patient

    plain = mapper()
    for m in demo_messages():
        assert_decoded_alike(plain.to_stored_event(event_for(m, NOW, 4)), plain)
    created = Patient(source="reg-a", patient_id="P1")
    for event in created.collect_events():
        assert_decoded_alike(plain.to_stored_event(event), plain)
    odd = parse_message(json.dumps(message("x", type="treatment", data={"drug": "MTX", "action": "start"})).encode(),
                        now=NOW)
    shaped = event_for(odd, NOW, 2)
    shaped.data["note"] = {"_type_": "datetime_iso", "_data_": "2024-01-01T00:00:00+00:00"}
    stored = plain.to_stored_event(shaped)
    assert_decoded_alike(stored, plain)
    assert isinstance(plain.to_domain_event(stored).data["note"], datetime)  # the mapper's reading, kept
    nan = StoredEvent(stored.originator_id, 2, stored.topic, stored.state.replace(b'"MTX"', b"NaN"))
    assert_decoded_alike(nan, plain)
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = mapper(CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key,
                    COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor")
    for m in demo_messages()[:40]:
        assert_decoded_alike(StateEncoder(sealed).recorded(m, NOW, 2), sealed)


def test_with_encryption_at_rest_the_events_decode_to_the_same_domain_events():
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = mapper(CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key,
                    COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor")
    encoder = StateEncoder(sealed)
    assert encoder.mirrors
    for m in demo_messages()[:40]:
        stored = encoder.recorded(m, NOW, 2)
        assert m.patient_id.encode() not in stored.state
        assert sealed.to_domain_event(stored) == event_for(m, NOW, 2)


def test_a_mapper_it_does_not_mirror_is_left_to_do_the_encoding():
    class Other(JSONTranscoder):
        pass

    other = Mapper[Any](transcoder=Other())
    other.transcoder.register(UUIDAsHex())
    encoder = StateEncoder(other)
    assert not encoder.mirrors
    m = parse_message(json.dumps(message("x")).encode(), now=NOW)
    try:
        encoder.recorded(m, NOW)  # the mapper without a datetime transcoding cannot encode it
    except Exception as exc:
        assert "not serializable" in str(exc)
    else:
        raise AssertionError("the encoder wrote bytes its mapper could not have written")


def test_a_batch_shares_one_timestamp_but_not_a_stale_one():
    plain = mapper()
    encoder = StateEncoder(plain)
    m = demo_messages()[0]
    later = NOW + timedelta(seconds=1)
    assert encoder.recorded(m, NOW) == plain.to_stored_event(event_for(m, NOW))
    assert encoder.recorded(m, later) == plain.to_stored_event(event_for(m, later))
    other_zone = NOW.astimezone(timezone(timedelta(hours=1)))  # equal instant, different text
    assert encoder.recorded(m, other_zone) == plain.to_stored_event(event_for(m, other_zone))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_read_sides_json_reads_and_writes_what_the_standard_library_does(value: Any, ascii_only: bool):
    """Issue 28: facts are read back with msgspec; whatever ``json.dumps`` wrote (NaN and infinities
    included, which strict JSON refuses) reads as ``json.loads`` reads it."""
    from projections.db import dumps, loads

    text = json.dumps(value, ensure_ascii=ascii_only)
    assert repr(loads(text)) == repr(json.loads(text))
    assert repr(loads(text.encode())) == repr(json.loads(text))
    # and what the read models write is what json writes, compact
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_a_projectors_lean_page_holds_what_the_librarys_notifications_hold(store_url: str):
    """Issue 28: the projector reads its pages as plain tuples; every field equals eventsourcing's own
    notifications, page after page, whatever topics are asked for, up to a bound or not, on both stores."""
    from events.ingest import Ingestor
    from events.ledger import Ledger
    from events.store import Store
    from projections.incidence import IncidenceModel
    from projections.signals import SignalsModel

    ledger = Ledger(Store.parse(store_url))
    Ingestor(ledger).ingest(read_ndjson(str(demo_feed_path())))
    fields = ("id", "originator_id", "originator_version", "topic", "state")
    for topics in (SignalsModel.topics, IncidenceModel.topics):
        start, pages = 0, 0
        while lean := ledger.page(start, 7, topics):
            library = ledger.notifications(start, 7, topics=topics)
            assert [tuple(getattr(n, f) for f in fields) for n in lean] == \
                   [tuple(getattr(n, f) for f in fields) for n in library]
            assert vars(ledger.decode(lean[0])) == vars(ledger.decode(library[0]))
            assert all(type(n.state) is bytes for n in lean)
            bounded = ledger.page(start, 7, topics, stop=start + 5)
            assert [n.id for n in bounded] == [n.id for n in library if n.id <= start + 5]
            start, pages = lean[-1].id, pages + 1
        assert pages > 3


def assert_text_alike(stored: Any, with_mapper: Mapper[Any]) -> tuple[Any, Any]:
    """A recorded fact's stored text is what the event gives written back as text: its times' ISO text and
    its data as ``json.dumps`` writes it, compact (what the signals read model stores). Returns both."""
    text = StateDecoder(with_mapper).recorded_text(stored)
    event = with_mapper.to_domain_event(stored)
    assert text is not None
    assert text == (event.type, event.source, event.patient_id, event.message_id, event.occurred_at.isoformat(),
                    event.timestamp.isoformat(), json.dumps(event.data, separators=(",", ":"), ensure_ascii=False))
    return text, event


@settings(max_examples=300, deadline=None)
@given(varied(), st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])))
def test_a_facts_stored_text_is_its_event_written_back_as_text(m: dict[str, Any], now: datetime):
    """Issue 28: a bulk load reads recorded facts as their stored text; for awkward text, numbers, offsets
    and recording times, it equals the mapper's event written as text, and the UTC text made of it equals
    the event's."""
    from projections.incidence import utc_text, utc_text_of

    message_ = parse_message(json.dumps(m, ensure_ascii=bool(len(m) % 2)).encode(), now=NOW)
    stored = StateEncoder(mapper()).recorded(message_, now, 1)
    text, event = assert_text_alike(stored, mapper())
    assert utc_text_of(text.occurred_at) == utc_text(event.occurred_at)
    assert utc_text_of(text.recorded_at) == utc_text(event.timestamp)


def test_where_only_the_event_can_tell_there_is_no_stored_text():
    """The stored text is given only where it is certain: not for the aggregate's creation, a data value
    shaped like a transcoded object, JSON only Python's parser takes, or another mapper; under encryption
    at rest it is read as the events are."""
    from eventsourcing.persistence import StoredEvent

    from events.domain import Patient

    plain = mapper()
    decoder = StateDecoder(plain)
    for m in demo_messages():
        if m.type not in AMENDMENT_TYPES:
            assert_text_alike(plain.to_stored_event(event_for(m, NOW, 4)), plain)
    for event in Patient(source="reg-a", patient_id="P1").collect_events():
        assert decoder.recorded_text(plain.to_stored_event(event)) is None
    odd = parse_message(json.dumps(message("x", type="treatment", data={"drug": "MTX", "action": "start"})).encode(),
                        now=NOW)
    shaped = event_for(odd, NOW, 2)
    shaped.data["note"] = {"_type_": "datetime_iso", "_data_": "2024-01-01T00:00:00+00:00"}
    stored = plain.to_stored_event(shaped)
    assert decoder.recorded_text(stored) is None
    nan = StoredEvent(stored.originator_id, 2, stored.topic, stored.state.replace(b'"MTX"', b"NaN"))
    assert decoder.recorded_text(nan) is None
    other = Mapper[Any](transcoder=type("Other", (JSONTranscoder,), {})())
    assert StateDecoder(other).recorded_text(stored) is None
    key = base64.b64encode(os.urandom(32)).decode()
    sealed = mapper(CIPHER_TOPIC="eventsourcing.cryptography:AESCipher", CIPHER_KEY=key,
                    COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor")
    for m in demo_messages()[:40]:
        if m.type not in AMENDMENT_TYPES:
            assert_text_alike(StateEncoder(sealed).recorded(m, NOW, 2), sealed)
