"""The fast contract path (msgspec, generated from the pydantic models) against the reference path.

What the fast path accepts, the reference accepts with the very same message (data in the same key
order, the same content hash); what it does not accept goes to the reference, so ``parse_message``
and ``parse_reference`` agree on accept and refuse and on every reason. Messages are generated valid
and broken in the ways the two libraries differ: types, bounds, patterns, a newline at the end of an
identifier, nulls against absent fields, duplicate keys (also spaced and escaped), escapes, floats at
every scale, times in every ISO form, unknown fields, nested origins."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.contract import ContractViolation, parse_message, parse_reference
from events.contract_fast import FastContract
from safety import vocabulary as vocab

NOW = datetime(2026, 12, 1, tzinfo=UTC)
FAST = FastContract()

ODD_TEXT = st.sampled_from(["", "a\n", "a\t", "\x7f", "\u2028", "😀" * 3, "😀" * 32, "😀" * 33, "a" * 33, "a" * 129,
                            "a" * 257, "A1", "ab", "PLT", "value", "unit", '"q"', "\\", "\ud800", "\x00", "é"])


def mostly(valid: Any, odd: Any) -> Any:
    """Valid values five times in six: a message with every field odd says little."""
    return st.one_of(valid, valid, valid, valid, valid, odd)


TEXT = mostly(st.sampled_from(["x", "MSC infusion", "Pneumonia", "étude", "a b", "P1"]),
              st.one_of(st.text(max_size=12), ODD_TEXT))
ODD_NUMBER = st.one_of(st.floats(allow_nan=False), st.sampled_from(
    [-0.0, 1e-5, 1e-4, 9.99e15, 1e16, 1e300, 130.0001, 250, 10 ** 30, 3.5, -1]))
NUMBER = mostly(st.one_of(st.integers(0, 80), st.floats(0, 100)), ODD_NUMBER)
GRADE = mostly(st.integers(1, 5), st.sampled_from([0, 6, 3.0, True]))
TIME = mostly(st.sampled_from(["2024-03-01", "2024-03-01T08:00:00Z", "2024-03-01T08:00:00.123456+02:00",
                               "2024-03-01T08:00", "2024-03-01T08:00:00-11:00"]),
              st.sampled_from(["2024-02-30", "yesterday", "2031-01-01", "20240301", "", "2024-03-01T25:00"]))
BOOL = mostly(st.booleans(), st.sampled_from([0, 1, "true"]))
ANYTHING = st.one_of(st.none(), BOOL, NUMBER, TEXT, TIME, st.lists(TEXT, max_size=2),
                     st.dictionaries(TEXT, TEXT, max_size=2))


def one_of(values: Any) -> Any:
    return mostly(st.sampled_from(values), st.sampled_from([v.upper() for v in values] + ["none"]))


#: per type: its fields, with values mostly valid (hypothesis also reaches the odd ones in each)
FIELDS: dict[str, dict[str, Any]] = {
    "enrolment": {"sex": one_of(vocab.SEXES), "diagnosis": one_of(vocab.ILAR_CATEGORIES), "condition": TEXT,
                  "birth_date": TIME, "age_years": NUMBER, "mas_history": BOOL, "weight_kg": NUMBER, "study": TEXT,
                  "arm": TEXT, "arm_code": TEXT, "actual_arm": TEXT, "first_exposure_on": TIME,
                  "last_exposure_on": TIME},
    "intervention": {"name": TEXT, "dose": TEXT, "route": TEXT},
    "treatment": {"drug": TEXT, "action": one_of(vocab.TREATMENT_ACTIONS), "drug_class": one_of(vocab.DRUG_CLASSES),
                  "dose": TEXT},
    "adverse_event": {"term": TEXT, "severity": one_of(vocab.SEVERITIES), "ctcae_grade": GRADE, "serious": BOOL,
                      "seriousness": st.lists(one_of(vocab.SERIOUSNESS_CRITERIA), max_size=2),
                      "meddra_pt": TEXT, "meddra_code": TEXT, "outcome": TEXT, "relatedness": one_of(vocab.RELATEDNESS),
                      "resolved_at": TIME, "verbatim_term": TEXT, "system_organ_class": TEXT, "action_taken": TEXT,
                      "supplemental": st.dictionaries(TEXT, TEXT, max_size=2)},
    "hospitalisation": {"reason": TEXT, "discharged_on": TIME, "adverse_event_message_id": TEXT},
    "lab_result": {"analyte": st.sampled_from([*sorted(vocab.ANALYTES), "GLU", "plt"]),
                   "loinc": st.sampled_from([*sorted(vocab.LOINC_TO_ANALYTE), "0-0"]),
                   "test_code": st.sampled_from(["CREAT", "PLT", "URINE", "a\n"]), "test_name": TEXT,
                   "value": NUMBER, "result_text": TEXT,
                   "unit": st.sampled_from(sorted({u for a in vocab.ANALYTES.values() for u in a.units}
                                                  | {"furlong", " mm/h", "\u03bcg/L"})),
                   "reference_low": NUMBER, "reference_high": NUMBER},
    "clinical_finding": {"temperature_c": st.one_of(st.floats(29, 46), NUMBER), "fever": BOOL,
                         "cns_involvement": BOOL, "haemorrhage": BOOL, "hepatomegaly": BOOL},
    "visit_assessment": {"active_joints": st.one_of(st.integers(0, 72), NUMBER),
                         "physician_global": st.one_of(st.floats(0, 11), NUMBER),
                         "patient_global": st.floats(0, 10), "tender_joints": NUMBER, "chaq": NUMBER,
                         "vas_pain": NUMBER},
    "withdrawal": {"reason": TEXT, "death": BOOL, "disposition": TEXT},
    "retraction": {"target_message_id": TEXT, "reason": TEXT},
    "correction": {"target_message_id": TEXT, "reason": TEXT, "data": st.dictionaries(TEXT, ANYTHING, max_size=2)},
}
#: the fields a valid message of a type needs (one of each tuple)
NEEDED = {"enrolment": [("sex",), ("diagnosis", "condition")], "intervention": [("name",)],
          "treatment": [("drug",), ("action",)],
          "adverse_event": [("term",), ("serious",), ("severity", "ctcae_grade")],
          "hospitalisation": [("reason",)], "lab_result": [("analyte", "loinc"), ("value",), ("unit",)],
          "clinical_finding": [("fever",)], "visit_assessment": [("active_joints",), ("physician_global",),
                                                                 ("patient_global",)],
          "withdrawal": [("reason",)], "retraction": [("target_message_id",), ("reason",)],
          "correction": [("target_message_id",), ("reason",), ("data",)]}
ORIGIN = st.fixed_dictionaries({"standard": st.just("SDTM"), "study": st.just("CDISCPILOT01"),
                                "domain": st.sampled_from(["AE", "LB", "x", "LBX9"]), "record": TEXT,
                                "transfer": st.sampled_from(["T1", "T1", "T 1", "T1\n"])},
                               optional={"as_sent": st.dictionaries(TEXT, TIME, max_size=1),
                                         "digest": st.sampled_from(["0" * 32, "g" * 32])})


@st.composite
def messages(draw: Any) -> bytes:
    type_ = draw(st.sampled_from([*vocab.MESSAGE_TYPES, "unknown"]))
    fields = FIELDS.get(type_, {})
    names = {draw(st.sampled_from(choice)) for choice in NEEDED.get(type_, [])}
    names |= set(draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=3))) if fields else set()
    # hypothesis draws 0 (the simplest) often: the odd branches hang on other numbers
    if draw(st.integers(0, 7)) == 5 and names:  # one needed field missing
        names.discard(draw(st.sampled_from(sorted(names))))
    data: dict[str, Any] = {}
    for name in sorted(names, key=list(fields).index):
        twist = draw(st.integers(0, 19))
        data[name] = None if twist == 5 else draw(ANYTHING) if twist == 6 else draw(fields[name])
    if type_ == "lab_result" and draw(st.integers(0, 3)) != 3:  # a coherent result, as registries send them
        analyte = vocab.ANALYTES[draw(st.sampled_from(sorted(vocab.ANALYTES)))]
        data.update(analyte=analyte.code, unit=draw(st.sampled_from(analyte.units)),
                    value=draw(st.one_of(st.floats(0, 150), st.integers(0, 150), st.sampled_from([1e-5, 7.32, 0]))))
        data.pop("loinc", None)
    if draw(st.integers(0, 9)) == 5:
        data["origin"] = draw(ORIGIN)
    if draw(st.integers(0, 14)) == 5:
        data[draw(st.sampled_from(["flag", "Value", "valu"]))] = 1
    envelope: dict[str, Any] = {
        "schema_version": draw(st.sampled_from([1] * 8 + [2, 1.0, True, "1"])),
        "message_id": draw(st.one_of(st.just("m-1"), st.just("m-1"), TEXT)),
        "source": draw(st.sampled_from(["reg-a"] * 6 + ["reg a", "reg-a\n", "", "x" * 65])),
        "patient_id": draw(st.one_of(st.just("P1"), st.just("P1"), TEXT)),
        "type": type_, "occurred_at": draw(TIME), "data": data}
    if draw(st.booleans()):
        envelope["reported_at"] = draw(st.one_of(TIME, st.none()))
    if draw(st.integers(0, 9)) == 5:
        envelope.pop(draw(st.sampled_from(sorted(envelope))))
    raw = json.dumps(envelope, ensure_ascii=draw(st.booleans()),
                     separators=draw(st.sampled_from([(",", ":"), (",", ":"), (", ", ": "), (",", " :")])))
    trick = draw(st.integers(0, 9))
    if trick == 5 and '"data":{' in raw:  # a key twice, in data
        raw = raw.replace('"data":{', '"data":{"unit":"mm/h",', 1)
    elif trick == 6:  # a key twice in the envelope, compact or spaced or escaped
        raw = raw[:-1] + draw(st.sampled_from([',"source":"reg-b"}', ', "source" : "reg-b"}',
                                               ',"\\u0073ource":"reg-b"}', ',"source":"reg-a"}']))
    elif trick == 7:  # a byte-order mark, white space around
        raw = "\ufeff" + raw if draw(st.booleans()) else f" {raw}\n"
    return raw.encode("utf-8", "surrogatepass")


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        m = parse(raw, now=NOW)
    except ContractViolation as exc:
        return "refused", exc.reason
    return "accepted", (m, json.dumps(m.data, ensure_ascii=False))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_what_the_fast_path_accepts_the_reference_accepts_with_the_same_message(raw: bytes):
    fast = FAST.parse(raw, NOW)
    reference = outcome(parse_reference, raw)
    if fast is not None:
        assert reference[0] == "accepted", (raw, reference[1])
        assert fast == reference[1][0]
        assert json.dumps(fast.data, ensure_ascii=False) == reference[1][1]  # the same key order: the same bytes
    assert outcome(parse_message, raw) == reference  # accept and refuse alike, and every reason


@pytest.mark.parametrize("type_", vocab.MESSAGE_TYPES)
def test_the_fast_path_takes_ordinary_messages_of_every_type(type_: str):
    from tests.messages import message
    from tests.test_contract import VALID

    m = message(type=type_, data=VALID[type_])
    raw = json.dumps(m).encode()
    fast = FAST.parse(raw, NOW)
    assert fast is not None and fast == parse_reference(raw, now=NOW)


def test_a_duplicate_key_is_never_taken_by_the_fast_path():
    base = b'{"schema_version":1,"message_id":"m","source":"s","patient_id":"p","type":"lab_result",' \
           b'"occurred_at":"2024-01-01","data":{"analyte":"PLT","value":5,"unit":"10^9/L"%s}}'
    assert FAST.parse(base % b"", NOW) is not None
    for twice in (b',"unit":"10^9/L"', b', "unit" :"10^9/L"', b',"\\u0075nit":"10^9/L"', b',"value":5'):
        assert FAST.parse(base % twice, NOW) is None
        with pytest.raises(ContractViolation, match="appears twice"):
            parse_message(base % twice, now=NOW)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(min_value=1e-4, max_value=1e16, exclude_max=True),
                 st.floats(min_value=-1e16, max_value=-1e-4, exclude_min=True), st.just(0.0), st.just(-0.0)),
       st.text(st.characters(exclude_categories=("Cs",))))
def test_msgspec_writes_floats_in_the_hashed_range_and_any_text_as_pythons_json_does(x: float, text: str):
    """The fast path's content hash is the reference's only if both write the same canonical JSON."""
    import msgspec

    from events.contract_fast import _content_hash
    from events.strict_json import content_hash

    obj = {"b": x, "a": [text, {"z": True, "y": None, "x": 7}]}
    assert msgspec.json.encode(obj, order="sorted").decode() == json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _content_hash(json.dumps(obj).encode()) == content_hash(obj)


def test_a_duplicate_key_in_a_free_form_object_is_never_taken_by_the_fast_path():
    base = (b'{"schema_version":1,"message_id":"m","source":"s","patient_id":"p","type":"adverse_event",'
            b'"occurred_at":"2024-01-01","data":{"term":"Rash","severity":"mild","serious":false,'
            b'"supplemental":{"AETRTEM":"Y"%s}}}')
    assert FAST.parse(base % b',"AESOSP":"x"', NOW) is not None
    assert FAST.parse(base % b',"AETRTEM":"N"', NOW) is None
    with pytest.raises(ContractViolation, match="appears twice"):
        parse_message(base % b',"AETRTEM":"N"', now=NOW)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ODD_NUMBER
    | st.text(st.characters(exclude_categories=("Cs",))) | ODD_TEXT.filter(lambda t: t != "\ud800"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=1000, deadline=None)
@given(JSON_VALUES)
def test_where_written_alike_says_so_msgspec_writes_the_bytes_of_the_json_module(value: Any):
    """The event encoder's fast writer (events/encoding.py) relies on this."""
    import msgspec

    from events.contract_fast import written_alike

    stdlib = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if written_alike(value):
        assert msgspec.json.encode(value) == stdlib
    else:
        assert any(isinstance(x, float) for x in _leaves(value))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]
