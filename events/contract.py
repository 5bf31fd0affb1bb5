"""Registry-feed contract v1: the pydantic models, parsing and the reasons bad input gets.

One JSON object per fact (``shared/contract/registry-feed-v1.md``). ``parse_message`` turns raw
bytes into a validated, normalised :class:`Message` or raises :class:`ContractViolation` whose
``reason`` names the field and the fix. Checks that need the ledger (duplicates, conflicts,
unknown retraction targets) live in :mod:`events.ingest`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from safety import vocabulary as vocab


class ContractViolation(ValueError):
    """A message that breaks the contract; ``reason`` says which field and how to fix it."""

    def __init__(self, reason: str, *, source: str | None = None, message_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.message_id = message_id


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 date or date-time; a value without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"unparseable date {value!r}: use ISO 8601 such as 2024-03-01 or 2024-03-01T08:30:00Z"
        ) from None
    vocab.date_in_range(parsed.date(), "date")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _timestamp_input(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date or date-time string, got {type(value).__name__}")
    return parse_timestamp(value)


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp_input),
    WithJsonSchema({"type": "string", "description": "ISO 8601 date or date-time; UTC when no offset"}),
]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _identifier(value: str) -> str:
    """Identifiers are matched, joined and shown in tables: no C0 control character or DEL."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X}, which an identifier may not "
            "hold: remove it (free-text fields may hold tabs and line breaks)"
        )
    return value


#: no C0 control character or DEL; checked by pydantic's own (Rust) regex, the reason written by describe()
IDENTIFIER_PATTERN = r"^[^\x00-\x1f\x7f]*$"
#: message ids (and the ids that point at them), study names
Id128 = Annotated[str, Field(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)]
#: patient ids
Id64 = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)]
#: codes: analyte, LOINC, MedDRA
Code32 = Annotated[str, Field(max_length=32, pattern=IDENTIFIER_PATTERN)]
Code16 = Annotated[str, Field(max_length=16, pattern=IDENTIFIER_PATTERN)]


# --- rules across fields: one function each, run by the models here and by the fast path --------
# Each takes the fields the message sent (explicit nulls included) and raises ValueError with the reason.


def _diagnosed(sent: dict[str, Any]) -> None:
    if sent.get("diagnosis") is None and sent.get("condition") is None:
        raise ValueError("missing field diagnosis: send diagnosis (ILAR category) or, for a patient of "
                         "another disease, condition")


def _graded(sent: dict[str, Any]) -> None:
    if sent.get("severity") is None and sent.get("ctcae_grade") is None:
        raise ValueError("missing field severity: send severity (mild/moderate/severe) or ctcae_grade (1-5)")


def _named(sent: dict[str, Any]) -> None:
    if sent.get("analyte") is None and sent.get("loinc") is None and sent.get("test_code") is None:
        raise ValueError("missing field analyte: send analyte (contract code) or loinc, or test_code for a "
                         "test outside the analyte table")
    if sent.get("value") is None and sent.get("result_text") is None:
        raise ValueError("missing field value: send value (a number), or result_text for a test outside "
                         "the analyte table")


def _plausible(sent: dict[str, Any]) -> None:
    low, high = vocab.TEMPERATURE_RANGE_C
    temperature = sent.get("temperature_c")
    if temperature is not None and not low <= temperature <= high:
        raise ValueError(f"impossible temperature_c {temperature}: must be between {low:g} and {high:g} C")
    if not set(sent) - {"origin"}:
        raise ValueError("empty finding: send at least one of temperature_c, fever, ...")


#: the rule across fields of each type that has one
CROSS_FIELD_RULES: dict[str, Any] = {"enrolment": _diagnosed, "adverse_event": _graded, "lab_result": _named,
                                     "clinical_finding": _plausible}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- data of each type (contract table "Types and their data") ----------------------------------


class Origin(_Strict):
    """Where a message came from when the monitor made it from another standard (an SDTM transfer):
    the record it stands for, the transfer that sent (or changed, or removed) it, and any date as the
    source had it before imputation."""

    standard: Literal["SDTM"]
    study: Id128
    domain: Annotated[str, Field(min_length=2, max_length=8, pattern=r"^[A-Z][A-Z0-9]+$")]
    record: Id128
    transfer: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")]
    #: field -> the partial ISO 8601 date sent (``2014-01``); the message's own field holds the imputed date
    as_sent: dict[str, Annotated[str, Field(max_length=32, pattern=IDENTIFIER_PATTERN)]] | None = None
    #: a digest of the record's content as mapped, which the next transfer compares with
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None


class _Data(_Strict):
    origin: Origin | None = None

    @model_validator(mode="after")
    def _across_fields(self) -> _Data:
        rule = CROSS_FIELD_RULES.get(TYPE_OF.get(type(self), ""))
        if rule is not None:
            rule({name: getattr(self, name) for name in self.model_fields_set})
        return self


class EnrolmentData(_Data):
    sex: Literal[vocab.SEXES]  # type: ignore[valid-type]
    #: the ILAR category of a JIA patient; another study's patient sends ``condition`` instead
    diagnosis: Literal[vocab.ILAR_CATEGORIES] | None = None  # type: ignore[valid-type]
    condition: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    birth_date: Timestamp | None = None
    age_years: Annotated[float, Field(ge=0, le=130)] | None = None
    mas_history: bool | None = None
    weight_kg: Annotated[float, Field(gt=0, le=250)] | None = None
    study: Id128 | None = None
    arm: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    arm_code: Code32 | None = None
    actual_arm: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    actual_arm_code: Code32 | None = None
    first_exposure_on: Timestamp | None = None
    last_exposure_on: Timestamp | None = None


class InterventionData(_Data):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    dose: Annotated[str, Field(max_length=128)] | None = None
    route: Annotated[str, Field(max_length=64)] | None = None


class TreatmentData(_Data):
    drug: Annotated[str, Field(min_length=1, max_length=128)]
    action: Literal[vocab.TREATMENT_ACTIONS]  # type: ignore[valid-type]
    drug_class: Literal[vocab.DRUG_CLASSES] | None = None  # type: ignore[valid-type]
    dose: Annotated[str, Field(max_length=128)] | None = None
    route: Annotated[str, Field(max_length=64)] | None = None


class AdverseEventData(_Data):
    term: Annotated[str, Field(min_length=1, max_length=256)]
    severity: Literal[vocab.SEVERITIES] | None = None  # type: ignore[valid-type]
    ctcae_grade: Annotated[int, Field(ge=1, le=5)] | None = None
    serious: bool
    seriousness: list[Literal[vocab.SERIOUSNESS_CRITERIA]] | None = None  # type: ignore[valid-type]
    meddra_pt: Annotated[str, Field(max_length=256)] | None = None
    meddra_code: Code16 | None = None
    outcome: Annotated[str, Field(max_length=128)] | None = None
    relatedness: Literal[vocab.RELATEDNESS] | None = None  # type: ignore[valid-type]
    resolved_at: Timestamp | None = None
    verbatim_term: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    system_organ_class: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    #: what was done with the study drug (SDTM AEACN: DRUG WITHDRAWN, DOSE REDUCED, ...)
    action_taken: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    #: qualifiers the source keeps beside the record (SDTM SUPPAE: QNAM -> QVAL)
    supplemental: dict[Code32, Annotated[str, Field(max_length=256)]] | None = None


class HospitalisationData(_Data):
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    discharged_on: Timestamp | None = None
    adverse_event_message_id: Id128 | None = None


class LabResultData(_Data):
    analyte: Code32 | None = None
    loinc: Code16 | None = None
    #: the sender's own code of a test outside the analyte table (SDTM LBTESTCD), kept as sent
    test_code: Code32 | None = None
    test_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    value: Finite | None = None
    #: a result that is not a number (``NEGATIVE``, ``1+``), for a test outside the analyte table
    result_text: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    unit: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    reference_low: Finite | None = None
    reference_high: Finite | None = None


class ClinicalFindingData(_Data):
    temperature_c: Finite | None = None
    fever: bool | None = None
    cns_involvement: bool | None = None
    haemorrhage: bool | None = None
    active_arthritis: bool | None = None
    hepatomegaly: bool | None = None
    splenomegaly: bool | None = None


class VisitAssessmentData(_Data):
    active_joints: Annotated[int, Field(ge=0, le=71)]
    physician_global: Annotated[float, Field(ge=0, le=10)]
    patient_global: Annotated[float, Field(ge=0, le=10)]
    tender_joints: Annotated[int, Field(ge=0, le=75)] | None = None
    limited_joints: Annotated[int, Field(ge=0, le=75)] | None = None
    vas_wellbeing: Annotated[float, Field(ge=0, le=100)] | None = None
    vas_pain: Annotated[float, Field(ge=0, le=100)] | None = None
    chaq: Annotated[float, Field(ge=0, le=3)] | None = None


class WithdrawalData(_Data):
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    #: the patient died (person-time ends here as for any withdrawal)
    death: bool | None = None
    #: the source's coded disposition (SDTM DSDECOD: ADVERSE EVENT, LOST TO FOLLOW-UP, DEATH, ...)
    disposition: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class ContactData(_Data):
    """The subject was seen or contacted on this day (contract 1.2): a visit, a call, or a completion of
    the study. Observation runs at least to the last contact; a subject whose source sends contacts is
    followed to the last one, not to the data cut."""

    kind: Literal[vocab.CONTACT_KINDS]  # type: ignore[valid-type]
    label: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class RetractionData(_Data):
    target_message_id: Id128
    reason: Annotated[str, Field(min_length=1, max_length=256)]


class CorrectionData(_Data):
    target_message_id: Id128
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    #: the full corrected ``data`` of the target; validated against the target's type at ingest
    data: dict[str, Any]


DATA_MODELS: dict[str, type[_Data]] = {
    "enrolment": EnrolmentData,
    "intervention": InterventionData,
    "treatment": TreatmentData,
    "adverse_event": AdverseEventData,
    "hospitalisation": HospitalisationData,
    "lab_result": LabResultData,
    "clinical_finding": ClinicalFindingData,
    "visit_assessment": VisitAssessmentData,
    "withdrawal": WithdrawalData,
    "contact": ContactData,
    "retraction": RetractionData,
    "correction": CorrectionData,
}
assert tuple(DATA_MODELS) == vocab.MESSAGE_TYPES
TYPE_OF: dict[type[BaseModel], str] = {model: name for name, model in DATA_MODELS.items()}


# --- the envelope ------------------------------------------------------------------------------


class Envelope(_Strict):
    schema_version: int
    message_id: Id128
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    patient_id: Id64
    type: str
    occurred_at: Timestamp
    reported_at: Timestamp | None = None
    data: dict[str, Any]


def _typed_envelope(type_name: str, data_model: type[_Strict]) -> type[BaseModel]:
    """The envelope with ``type`` fixed and ``data`` typed: used for the published JSON Schema."""
    annotations: dict[str, Any] = {"type": Literal.__getitem__(type_name), "data": data_model}
    name = "".join(part.title() for part in type_name.split("_")) + "Message"
    return cast(type[BaseModel], type(name, (Envelope,), {"__annotations__": annotations, "__module__": __name__}))


def json_schema() -> dict[str, Any]:
    """JSON Schema of contract v1: one envelope, ``data`` chosen by ``type``."""
    variants = tuple(_typed_envelope(name, model) for name, model in DATA_MODELS.items())
    union: Any = Union.__getitem__(variants)
    adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, Annotated[union, Field(discriminator="type")]))
    out = adapter.json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "Registry feed contract v1"
    out["description"] = (
        "One JSON object per fact. Messages larger than 64 KiB, non-finite numbers, dates more than "
        "a day in the future and lab units outside the analyte table are rejected; see "
        "docs/registry-feed.md."
    )
    return out


# --- the validated message -------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message that passed the contract, normalised (UTC times, canonical lab units)."""

    message_id: str
    source: str
    patient_id: str
    type: str
    occurred_at: datetime
    reported_at: datetime | None
    data: dict[str, Any]
    content_hash: str
    raw: bytes = field(repr=False, default=b"")

    @property
    def key(self) -> str:
        """The idempotency key: unique per source (``source`` cannot contain ``/``)."""
        return f"{self.source}/{self.message_id}"

    @property
    def target_key(self) -> str | None:
        target = self.data.get("target_message_id")
        return None if target is None else f"{self.source}/{target}"


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}: send a finite number")


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: with a key twice, which value is meant is ambiguous."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


# One decoder for all messages: json.loads with any option builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _loads(raw: bytes) -> Any:
    """Strict UTF-8 (a byte-order mark is tolerated) JSON without NaN or Infinity, each key once."""
    return _DECODER.decode(raw.decode("utf-8-sig"))


def _refuse_nul(obj: dict[str, Any], raw: bytes) -> None:
    """No string anywhere (ids, text, keys, nested) may hold NUL: PostgreSQL cannot store it."""
    # Strict JSON has no raw control character inside a string: a NUL can only come from an escape.
    if b"\\u0000" in raw:
        where = _nul_at(obj, "")
        if where is not None:
            raise ContractViolation(
                f"{storable(where)}: contains the NUL character (\\u0000), which no store can keep: remove it"
            )


def _nul_at(value: Any, path: str, bad: Callable[[str], bool] = lambda s: "\x00" in s) -> str | None:
    """The path of the first string (value or key) holding a NUL character (or what ``bad`` finds), or None."""
    if isinstance(value, str):
        return path if bad(value) else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and bad(key):
            return here
        found = _nul_at(item, here, bad)
        if found is not None:
            return found
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_lone_surrogates(obj: dict[str, Any], raw: bytes) -> None:
    """No string may hold a lone surrogate: it is not Unicode text. The models refuse it in their text
    fields; this is for what they take as free-form (a correction's data)."""
    if b"\\ud" in raw or b"\\uD" in raw:  # only an escape can carry one: UTF-8 cannot
        where = _nul_at(obj, "", _lone_surrogate)
        if where is not None:
            raise ContractViolation(f"{storable(where)}: contains a lone surrogate (a \\uD800-\\uDFFF escape without "
                                    "its pair), which is not Unicode text: send the character it stands for")


def storable(text: str) -> str:
    """Text any store can keep: NUL and lone surrogates written as their JSON escapes (``\\u0000``).

    The contract refuses both; this is for what reaches a table anyway (a quarantined message's id,
    events stored before the contract refused NUL)."""
    if text.isascii() and "\x00" not in text:
        return text
    text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# What json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(obj: Any) -> str:
    """Hash of the message content, independent of key order and white space."""
    return hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()[:32]


_FIXES = {
    "missing": "missing field {loc}: add it",
    "extra_forbidden": "unknown field {loc}: remove it or correct its spelling",
}


def describe(error: Any, prefix: str = "") -> str:
    """One pydantic error as a sentence naming the field and the fix."""
    loc = ".".join(str(p) for p in error["loc"])
    loc = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "message"
    kind = error["type"]
    if kind in _FIXES:
        return _FIXES[kind].format(loc=loc)
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == IDENTIFIER_PATTERN:
        try:
            _identifier(str(error["input"]))
        except ValueError as exc:
            return f"{loc}: {exc}"
    if kind == "literal_error":
        return f"{loc}: {error['input']!r} is not allowed; use {error['ctx']['expected']}"
    if kind == "value_error":
        msg = str(error["msg"]).removeprefix("Value error, ")
        return msg if msg.split(" ")[0] in {"missing", "impossible", "empty"} else f"{loc}: {msg}"
    return f"{loc}: {error['msg']} (got {error['input']!r})"


def _violation(exc: ValidationError, prefix: str = "") -> str:
    reasons = [describe(e, prefix) for e in exc.errors(include_url=False)]
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return "; ".join(reasons[:3]) + more


def validate_data(type_name: str, data: dict[str, Any], prefix: str = "data.") -> dict[str, Any]:
    """Validate ``data`` of a type and normalise it (lab values to canonical units)."""
    model = DATA_MODELS[type_name]
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        raise ContractViolation(_violation(exc, prefix)) from None
    out = validated.model_dump(exclude_none=True, mode="json")
    if type_name == "lab_result":
        out = _normalise_lab(out, prefix)
    return out


_KEPT = ("origin", "test_code", "test_name")


def _normalise_lab(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    code, loinc = data.get("analyte"), data.get("loinc")
    if code is None and loinc is None:
        if data["test_code"] not in vocab.ANALYTES or "value" not in data:
            return _other_test(data)  # a text result of a contract analyte ("<3") is kept as sent too
        code = data["test_code"]  # a sender's code that is the contract's is that analyte
    try:
        analyte = vocab.resolve_analyte(code, loinc)
        if "value" not in data:
            raise vocab.VocabularyError("data.value", f"missing field value: a result of {analyte.code} is a number")
        if "unit" not in data:
            raise vocab.VocabularyError("data.unit", f"missing field unit: use one of {', '.join(analyte.units)}")
        m = vocab.to_canonical(analyte, float(data["value"]), data["unit"])
    except vocab.VocabularyError as exc:
        raise ContractViolation(str(exc).replace("data.", prefix, 1)) from None
    out: dict[str, Any] = {
        "analyte": m.analyte,
        "value": m.value,
        "unit": m.unit,
        "raw_value": m.raw_value,
        "raw_unit": m.raw_unit,
    }
    if "loinc" in data:
        out["loinc"] = data["loinc"]
    factor = analyte.factor(vocab.normalise_unit(data["unit"])) or 1.0
    for bound in ("reference_low", "reference_high"):
        if bound in data:
            out[bound] = round(data[bound] * factor, 6)
    out.update((k, data[k]) for k in _KEPT if k in data)
    return out


def _other_test(data: dict[str, Any]) -> dict[str, Any]:
    """A test outside the analyte table: kept with its own code, value and unit as sent (no conversion,
    so no rule reads it as one of the contract's analytes)."""
    out = {k: v for k, v in data.items() if k != "test_code"}
    out["analyte"] = data["test_code"]
    out["standardised"] = False
    return out


_FAST: list[Any] = []  # the fast path, built on first use (it imports this module)


def _fast_path() -> Any:
    if not _FAST:
        if os.environ.get("SAFETY_MONITOR_CONTRACT", "fast") == "reference":
            _FAST.append(None)
        else:
            from events.contract_fast import FastContract

            _FAST.append(FastContract())
    return _FAST[0]


def parse_message(raw: bytes, *, now: datetime | None = None) -> Message:
    """Validate one raw message against contract v1 and normalise it: what the fast path
    (``events.contract_fast``, generated from these models) accepts, else the reference path, which
    accepts or gives the reason. ``SAFETY_MONITOR_CONTRACT=reference`` turns the fast path off."""
    now = now or datetime.now(UTC)
    fast = _fast_path()
    accepted = fast.parse(raw, now) if fast is not None else None
    return accepted if accepted is not None else parse_reference(raw, now=now)


def parse_reference(raw: bytes, *, now: datetime | None = None) -> Message:
    """Validate one raw message against contract v1 with the pydantic models and normalise it."""
    if len(raw) > vocab.MAX_MESSAGE_BYTES:
        raise ContractViolation(
            f"message is {len(raw)} bytes, larger than 64 KiB: split it or shorten its text fields"
        )
    try:
        obj = _loads(raw)
    except UnicodeDecodeError:
        raise ContractViolation("message is not UTF-8: send UTF-8 encoded JSON") from None
    except _DuplicateKey as exc:
        raise ContractViolation(
            f"field {storable(exc.key)!r} appears twice in one object, which makes the message ambiguous: "
            "send each field once"
        ) from None
    except ValueError as exc:
        raise ContractViolation(f"message is not JSON ({exc}): send one JSON object per line") from None
    if not isinstance(obj, dict):
        raise ContractViolation(f"message is a JSON {type(obj).__name__}, not an object: send one object")
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    message_id = obj.get("message_id") if isinstance(obj.get("message_id"), str) else None
    try:
        return _parse_object(obj, raw, now or datetime.now(UTC))
    except ContractViolation as exc:
        exc.source, exc.message_id = source, message_id
        raise


def _parse_object(obj: dict[str, Any], raw: bytes, now: datetime) -> Message:
    _refuse_nul(obj, raw)
    version = obj.get("schema_version")
    if "schema_version" in obj and version != vocab.SCHEMA_VERSION:
        raise ContractViolation(
            f"schema_version {version!r} is not supported: this feed takes schema_version 1"
        )
    try:
        env = Envelope.model_validate(obj)
    except ValidationError as exc:
        raise ContractViolation(_violation(exc)) from None
    if env.type not in DATA_MODELS:
        raise ContractViolation(
            f"type: unknown type {env.type!r}; use one of {', '.join(vocab.MESSAGE_TYPES)}"
        )
    occurred_at = env.occurred_at
    if occurred_at > now + timedelta(days=1):
        raise ContractViolation(
            f"occurred_at {obj['occurred_at']} is more than a day in the future: check the date and its offset"
        )
    data = validate_data(env.type, env.data)
    _refuse_lone_surrogates(obj, raw)
    return Message(
        message_id=env.message_id,
        source=env.source,
        patient_id=env.patient_id,
        type=env.type,
        occurred_at=occurred_at,
        reported_at=env.reported_at,
        data=data,
        content_hash=content_hash(obj),
        raw=raw,
    )
