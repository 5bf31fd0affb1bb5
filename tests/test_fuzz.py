"""Fuzzing the contract and the ingest with generated and mutated messages (hypothesis).

No input may raise anything but a ContractViolation with a reason; every valid message is stored
exactly once; nothing is lost in between."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.admission import RawMessage
from events.contract import ContractViolation, parse_message
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from safety.vocabulary import ANALYTES, MESSAGE_TYPES
from tests.messages import message

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


#: identifiers as the contract takes them: no C0 control character or DEL
ID_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="".join(map(chr, [*range(32), 127]))),
                  min_size=1, max_size=20)


@st.composite
def valid_lab(draw: Any) -> dict[str, Any]:
    analyte = draw(st.sampled_from(sorted(ANALYTES)))
    unit = draw(st.sampled_from(ANALYTES[analyte].units))
    high = 200.0 if analyte == "ESR" else 1e6
    value = draw(st.floats(min_value=0, max_value=high, allow_nan=False, allow_infinity=False))
    return message(draw(ID_TEXT), patient_id=draw(st.sampled_from(["P1", "P2", "P3"])),
                   data={"analyte": analyte, "value": value, "unit": unit})


@st.composite
def mutated(draw: Any) -> bytes:
    base = draw(valid_lab() | st.sampled_from([message("x", type=t) for t in MESSAGE_TYPES]))
    choice = draw(st.integers(0, 5))
    if choice == 0:  # drop a field
        base.pop(draw(st.sampled_from(sorted(base))), None)
    elif choice == 1:  # replace a field by anything
        base[draw(st.sampled_from(sorted(base)))] = draw(JSONISH)
    elif choice == 2:  # replace a data field by anything
        data = base.get("data") if isinstance(base.get("data"), dict) else {}
        data[draw(st.text(max_size=12) | st.sampled_from(sorted(data) or ["value"]))] = draw(JSONISH)
    raw = json.dumps(base).encode()
    if choice == 3:  # cut it
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif choice == 4:  # flip bytes
        index = draw(st.integers(0, len(raw) - 1))
        raw = raw[:index] + bytes([draw(st.integers(0, 255))]) + raw[index + 1:]
    return raw


def judged(raw: bytes) -> None:
    try:
        parse_message(raw)
    except ContractViolation as exc:
        assert exc.reason and isinstance(exc.reason, str)


@settings(max_examples=6000, deadline=None)
@given(mutated())
def test_mutated_messages_are_judged_never_crash(raw: bytes):
    judged(raw)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300) | JSONISH.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_and_json_are_judged_never_crash(raw: bytes):
    judged(raw)


@settings(max_examples=1000, deadline=None)
@given(valid_lab())
def test_generated_valid_lab_results_pass_and_are_normalised(m: dict[str, Any]):
    parsed = parse_message(json.dumps(m).encode())
    assert parsed.data["unit"] == ANALYTES[parsed.data["analyte"]].unit
    assert parsed.data["raw_unit"] == m["data"]["unit"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(valid_lab() | mutated(), min_size=1, max_size=40))
def test_ingest_stores_every_valid_message_exactly_once(tmp_path_factory: Any, items: list[Any]):
    raws = [json.dumps(i).encode() if isinstance(i, dict) else i for i in items]
    store = Store.parse(f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz'))}/ledger.db")
    ledger = Ledger(store)
    first = Ingestor(ledger).ingest([RawMessage(r, {"line": n}) for n, r in enumerate(raws)], batch_size=7)
    again = Ingestor(ledger).ingest([RawMessage(r, {"line": n}) for n, r in enumerate(raws)], batch_size=7)
    assert first.total == len(raws) and again.total == len(raws)
    assert again.accepted == 0  # nothing stored twice
    assert len(ledger.tables.quarantined()) == first.quarantined + again.quarantined
    assert all(q["reason"] for q in ledger.tables.quarantined())
    assert ledger.tables.message_digest()[0] == first.accepted
