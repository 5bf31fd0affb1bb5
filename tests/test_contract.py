"""Contract v1: every type is accepted in its valid form; every bad-input case gets a reason
that names the field and the fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from events.contract import ContractViolation, parse_message
from events.contract_models import json_schema
from safety.vocabulary import MESSAGE_TYPES
from tests.messages import message

NOW = datetime(2024, 6, 1, tzinfo=UTC)

VALID = {
    "enrolment": {"sex": "M", "diagnosis": "systemic", "age_years": 16.2, "mas_history": True},
    "intervention": {"name": "MSC infusion", "dose": "2e6/kg", "route": "iv"},
    "treatment": {"drug": "tocilizumab", "action": "stop", "drug_class": "biologic"},
    "adverse_event": {"term": "Pneumonia", "ctcae_grade": 3, "serious": True,
                      "seriousness": ["hospitalisation"], "relatedness": "unlikely"},
    "hospitalisation": {"reason": "pneumonia", "adverse_event_message_id": "ae-1"},
    "lab_result": {"loinc": "777-3", "value": 89, "unit": "10^3/uL", "reference_low": 150},
    "clinical_finding": {"fever": False, "temperature_c": 36.8, "cns_involvement": True},
    "visit_assessment": {"active_joints": 5, "physician_global": 6, "patient_global": 7.5},
    "withdrawal": {"reason": "moved abroad"},
    "contact": {"kind": "visit", "label": "WEEK 12"},
    "retraction": {"target_message_id": "x", "reason": "entered twice"},
    "correction": {"target_message_id": "x", "reason": "unit", "data": {"analyte": "PLT"}},
}


def parse(m: dict | str | bytes):
    raw = m if isinstance(m, bytes) else (m if isinstance(m, str) else json.dumps(m)).encode()
    return parse_message(raw, now=NOW)


def reason(m: dict | str | bytes) -> str:
    with pytest.raises(ContractViolation) as exc:
        parse(m)
    return exc.value.reason


@pytest.mark.parametrize("type_", MESSAGE_TYPES)
def test_every_type_is_accepted(type_):
    m = parse(message(type=type_, data=VALID[type_]))
    assert m.type == type_
    assert m.occurred_at == datetime(2024, 3, 1, 8, tzinfo=UTC)


def test_lab_result_is_normalised_with_the_raw_value_kept():
    m = parse(message(data={"loinc": "777-3", "value": 89, "unit": "10^3/uL", "reference_low": 150}))
    assert m.data == {"analyte": "PLT", "loinc": "777-3", "value": 89.0, "unit": "10^9/L",
                      "raw_value": 89.0, "raw_unit": "10^3/uL", "reference_low": 150.0}


def test_a_date_without_time_or_offset_is_utc_midnight():
    m = parse(message(occurred_at="2024-03-01"))
    assert m.occurred_at == datetime(2024, 3, 1, tzinfo=UTC)
    m = parse(message(occurred_at="2024-03-01T10:00:00+02:00"))
    assert m.occurred_at == datetime(2024, 3, 1, 8, tzinfo=UTC)


def test_content_hash_ignores_key_order_and_spacing():
    m = message()
    a = parse(json.dumps(m))
    b = parse(json.dumps(dict(reversed(list(m.items()))), indent=2))
    assert a.content_hash == b.content_hash


def _without(field: str) -> dict:
    m = message()
    del m[field]
    return m


BAD = [
    ("not json", "{oops", "not JSON"),
    ("not an object", "[1, 2]", "not an object"),
    ("a bare string", '"hello"', "not an object"),
    ("schema version", message(schema_version=2), "schema_version 2 is not supported"),
    ("missing patient_id", _without("patient_id"), "missing field patient_id"),
    ("missing message_id", _without("message_id"), "missing field message_id"),
    ("missing data", _without("data"), "missing field data"),
    ("mistyped serious", message(type="adverse_event", data={"term": "x", "severity": "mild",
                                                          "serious": "yes"}), "data.serious"),
    ("mistyped value", message(data={"analyte": "PLT", "value": "89", "unit": "10^9/L"}), "data.value"),
    ("unknown type", message(type="vital_sign"), "unknown type 'vital_sign'"),
    ("unknown analyte", message(data={"analyte": "GLU", "value": 5, "unit": "mmol/L"}),
     "unknown analyte GLU"),
    ("unknown unit", message(data={"analyte": "PLT", "value": 5, "unit": "mg/dL"}),
     "unknown unit mg/dL for PLT"),
    ("negative count", message(data={"analyte": "WBC", "value": -2, "unit": "10^9/L"}),
     "cannot be negative"),
    ("ESR over 200", message(data={"analyte": "ESR", "value": 250, "unit": "mm/h"}), "above 200"),
    ("temperature", message(type="clinical_finding", data={"temperature_c": 47}),
     "impossible temperature_c"),
    ("non-finite", '{"schema_version": 1, "value": Infinity}', "non-finite number Infinity"),
    ("bad date", message(occurred_at="2024-02-30"), "occurred_at: unparseable date"),
    ("future", message(occurred_at="2024-06-03T00:00:00Z"), "more than a day in the future"),
    ("unknown field", message(data={"analyte": "PLT", "value": 5, "unit": "10^9/L", "flag": "H"}),
     "unknown field data.flag"),
    ("bad source", message(source="reg a/b"), "source"),
    ("empty message_id", message(message_id=""), "message_id"),
    ("no severity", message(type="adverse_event", data={"term": "x", "serious": False}),
     "missing field severity"),
    ("too large", message(data={"analyte": "PLT", "value": 5, "unit": "10^9/L"}, pad="x" * 70000),
     "larger than 64 KiB"),
    ("enum", message(type="enrolment", data={"sex": "male", "diagnosis": "systemic"}),
     "data.sex: 'male' is not allowed"),
]


@pytest.mark.parametrize(("case", "msg", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_reason_naming_the_field(case, msg, words):
    assert words in reason(msg)


def test_a_violation_remembers_source_and_message_id_when_it_can():
    with pytest.raises(ContractViolation) as exc:
        parse(message(data={"analyte": "PLT", "value": 5, "unit": "mg/dL"}))
    assert (exc.value.source, exc.value.message_id) == ("reg-a", "m1")


def test_json_schema_covers_every_type():
    schema = json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(MESSAGE_TYPES)
    assert schema["title"] == "Registry feed contract v1"


def test_a_lone_surrogate_in_a_corrections_free_form_data_is_refused_not_a_crash():
    # found by the fast-path property test: the models took it as free-form data and hashing it raised
    raw = (b'{"schema_version":1,"message_id":"m","source":"reg-a","patient_id":"P1","type":"correction",'
           b'"occurred_at":"2024-03-01","data":{"target_message_id":"q","reason":"unit","data":{"x":"\\udc00"}}}')
    with pytest.raises(ContractViolation, match=r"^data\.data\.x: contains a lone surrogate"):
        parse_message(raw)
