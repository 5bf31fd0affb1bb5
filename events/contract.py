"""Registry-feed contract v1: parsing and the reasons bad input gets (the models are ``events.contract_models``,
strict JSON ``events.strict_json``).

One JSON object per fact (``shared/contract/registry-feed-v1.md``). ``parse_message`` turns raw
bytes into a validated, normalised :class:`Message` or raises :class:`ContractViolation` whose
``reason`` names the field and the fix. Checks that need the ledger (duplicates, conflicts,
unknown retraction targets) live in :mod:`events.ingest`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import (
    ValidationError,
)

from events.contract_models import DATA_MODELS, IDENTIFIER_PATTERN, Envelope, checked_identifier
from events.strict_json import DuplicateKey, content_hash, loads, lone_surrogate_path, nul_path, storable
from safety import vocabulary as vocab


class ContractViolation(ValueError):
    """A message that breaks the contract; ``reason`` says which field and how to fix it."""

    def __init__(self, reason: str, *, source: str | None = None, message_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.message_id = message_id


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


def _refuse_nul(obj: dict[str, Any], raw: bytes) -> None:
    """No string anywhere (ids, text, keys, nested) may hold NUL: PostgreSQL cannot store it."""
    where = nul_path(obj, raw)
    if where is not None:
        raise ContractViolation(
            f"{storable(where)}: contains the NUL character (\\u0000), which no store can keep: remove it"
        )


def _refuse_lone_surrogates(obj: dict[str, Any], raw: bytes) -> None:
    """No string may hold a lone surrogate: it is not Unicode text. The models refuse it in their text
    fields; this is for what they take as free-form (a correction's data)."""
    where = lone_surrogate_path(obj, raw)
    if where is not None:
        raise ContractViolation(f"{storable(where)}: contains a lone surrogate (a \\uD800-\\uDFFF escape without "
                                "its pair), which is not Unicode text: send the character it stands for")


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
            checked_identifier(str(error["input"]))
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
        obj = loads(raw)
    except UnicodeDecodeError:
        raise ContractViolation("message is not UTF-8: send UTF-8 encoded JSON") from None
    except DuplicateKey as exc:
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
