"""Registry-feed contract v1, the models: the data of each message type, the envelope, the field types
and rules across fields that the pydantic models (``events.contract``) and the fast path
(``events.contract_fast``) share, and the JSON Schema printed from them."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from safety import vocabulary as vocab


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


def timestamp_input(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date or date-time string, got {type(value).__name__}")
    return parse_timestamp(value)


Timestamp = Annotated[
    datetime,
    BeforeValidator(timestamp_input),
    WithJsonSchema({"type": "string", "description": "ISO 8601 date or date-time; UTC when no offset"}),
]


def finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(finite)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_identifier(value: str) -> str:
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
