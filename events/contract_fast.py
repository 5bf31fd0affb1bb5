"""The contract's hot path: msgspec decoders generated from the pydantic models of ``events.contract``.

The pydantic models stay the one definition of the contract: the JSON Schema is printed from them, and
every reason a bad message gets is theirs. From them this module builds msgspec structs with the same
fields, types and constraints, which decode and check a message straight from its bytes several times
faster. It only ever *accepts*: whatever it does not accept goes to the reference path, which accepts it
or gives the reason. So no reason changes, and the one thing that must hold is that what this path
accepts, the reference accepts with the very same result; ``tests/test_contract_fast.py`` checks that on
generated valid and invalid messages, and every other contract test runs through both paths.

What msgspec does not do the way the reference does, and how it is kept out:

- a key twice (msgspec keeps the last): the keys written (every ``":`` outside a string) must number
  the fields decoded, free-form objects' keys included (``supplemental``, ``origin.as_sent``, a
  correction's ``data``); a message with a key spaced from its colon or any ``\\u`` escape (a key could
  be spelt with one) goes to the reference path;
- NUL and lone surrogates: only ever sent as ``\\u`` escapes, so they never reach this path;
- Python's ``$`` matches before a final newline where pydantic's (Rust) regex does not: patterns end
  in ``\\Z``;
- times: parsed by the contract's own parser and written as pydantic writes them (UTC, ``Z``);
- absent and explicit null differ for the rules across fields (an explicit null counts as sent):
  optional fields default to ``UNSET``, not None.
"""

from __future__ import annotations

import hashlib
import math
import re
import types
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import msgspec
from msgspec import UNSET, UnsetType
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from events import contract, contract_models, strict_json
from safety import vocabulary as vocab

_DAY = timedelta(days=1)
_SPACED_KEY = re.compile(rb'"\s+:')
#: what Python still does with a field after msgspec checked it: parse a time, check a number finite,
#: count the keys of a free-form object (for duplicates), or a nested model
TIMESTAMP, FINITE, FLOAT, FREE_FORM = "timestamp", "finite", "float", "free-form"
#: floats msgspec writes as Python's json module does (tested): outside, the content hash is the reference's
_SAME_FLOAT_TEXT = (1e-4, 1e16)


#: annotated-types bounds and the msgspec.Meta argument (and attribute) of the same name
_BOUNDS: dict[type, str] = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le",
                            annotated_types.Lt: "lt", annotated_types.MinLen: "min_length",
                            annotated_types.MaxLen: "max_length"}


def _meta(metadata: list[Any]) -> tuple[dict[str, Any], str | None]:
    """msgspec constraints for pydantic's metadata, and what Python must still do."""
    constraints: dict[str, Any] = {}
    after: str | None = None
    for m in metadata:
        if isinstance(m, FieldInfo):
            sub, sub_after = _meta(m.metadata)
            constraints.update(sub)
            after = after or sub_after
        elif type(m) in _BOUNDS:
            constraints[_BOUNDS[type(m)]] = getattr(m, _BOUNDS[type(m)])
        elif getattr(m, "pattern", None) is not None:  # pydantic's general metadata
            pattern: str = m.pattern
            constraints["pattern"] = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
        elif isinstance(m, BeforeValidator) and m.func is contract_models.timestamp_input:
            after = TIMESTAMP
        elif isinstance(m, AfterValidator) and m.func is contract_models.finite:
            after = FINITE
        elif type(m).__name__ == "WithJsonSchema":
            continue
        else:
            raise TypeError(f"no msgspec translation for the constraint {m!r}: extend events/contract_fast.py")
    return constraints, after


class _Spec:
    """A generated struct, its fields in the model's order, what Python still does with some of them,
    and the model's rule across fields."""

    def __init__(self, struct: type[msgspec.Struct], post: dict[str, Any],
                 rule: Callable[[dict[str, Any]], None] | None):
        self.struct, self.post, self.rule = struct, post, rule
        self.fields: tuple[str, ...] = struct.__struct_fields__


class _Generator:
    def __init__(self) -> None:
        self.specs: dict[type[BaseModel], _Spec] = {}

    def translate(self, annotation: Any, metadata: list[Any]) -> tuple[Any, Any]:
        """A msgspec type for a pydantic annotation, and what Python must still do with its value."""
        origin = get_origin(annotation)
        if origin is Annotated:
            inner, *extra = get_args(annotation)
            return self.translate(inner, [*extra, *metadata])
        constraints, after_text = _meta(metadata)
        after: Any = after_text
        if annotation is datetime:
            if after != TIMESTAMP:
                raise TypeError("a datetime field without the contract's Timestamp parser")
            base: Any = str
            constraints = {}
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            base, after = self.spec(annotation).struct, annotation
        elif origin in (Union, types.UnionType):
            inner_args = [a for a in get_args(annotation) if a is not type(None)]
            if len(inner_args) != 1:
                raise TypeError(f"no msgspec translation for the union {annotation!r}")
            return self.translate(inner_args[0], metadata)
        elif origin is list:
            (item,) = get_args(annotation)
            base = list[self.translate(item, [])[0]]  # type: ignore[misc]
        elif origin is dict:
            key, value = get_args(annotation)
            base = dict[self.translate(key, [])[0], self.translate(value, [])[0]]  # type: ignore[misc]
            after = FREE_FORM
        elif origin is Literal or annotation in (str, int, float, bool) or annotation is Any:
            base = annotation
            if annotation is float and after is None:
                after = FLOAT
        else:
            raise TypeError(f"no msgspec translation for {annotation!r}: extend events/contract_fast.py")
        return (Annotated[base, msgspec.Meta(**constraints)] if constraints else base), after

    def spec(self, model: type[BaseModel], raw_fields: tuple[str, ...] = ()) -> _Spec:
        if model not in self.specs:
            fields: list[Any] = []
            post: dict[str, Any] = {}
            for name, info in model.model_fields.items():
                if name in raw_fields:
                    fields.append((name, msgspec.Raw))
                    continue
                typ, after = self.translate(info.annotation, list(info.metadata))
                if after is not None:
                    post[name] = after
                if info.is_required():
                    fields.append((name, typ))
                else:  # absent and an explicit null differ for the rules across fields
                    fields.append((name, typ | None | UnsetType, UNSET))
            struct = msgspec.defstruct(model.__name__ + "Fast", fields, forbid_unknown_fields=True, kw_only=True)
            rule = contract_models.CROSS_FIELD_RULES.get(contract_models.TYPE_OF.get(model, ""))
            self.specs[model] = _Spec(struct, post, rule)
        return self.specs[model]


class _Refer(Exception):
    """Not for this path: the reference path decides (and gives the reason if the message is bad)."""


class FastContract:
    """``parse`` accepts what the reference path would accept, with the same result, or returns None."""

    def __init__(self) -> None:
        generator = _Generator()
        self.specs = generator.specs
        self.envelope = generator.spec(contract_models.Envelope, raw_fields=("data",))
        self.envelope_decoder = msgspec.json.Decoder(self.envelope.struct)
        self.data = {name: generator.spec(model) for name, model in contract_models.DATA_MODELS.items()}
        self.data_decoders = {name: msgspec.json.Decoder(spec.struct) for name, spec in self.data.items()}

    def parse(self, raw: bytes, now: datetime) -> contract.Message | None:
        if len(raw) > vocab.MAX_MESSAGE_BYTES or b"\\u" in raw:
            return None  # too large; or an escape: NUL, a surrogate, a key spelt with escapes
        if _SPACED_KEY.search(raw):
            return None  # a key spaced from its colon: the count of keys below would miss it
        # Every key written, each a known field (msgspec refuses others): inside a string a quote is
        # always escaped, so '":' outside one ends a key and '\\":' never does.
        written = raw.count(b'":') - raw.count(b'\\":')
        try:
            env: Any = self.envelope_decoder.decode(raw)
            if env.schema_version != vocab.SCHEMA_VERSION or env.type not in self.data:
                return None
            occurred_at = contract_models.parse_timestamp(env.occurred_at)
            reported = env.reported_at
            reported_at = None if reported is None or reported is UNSET else contract_models.parse_timestamp(reported)
            if occurred_at > now + _DAY:
                return None
            # the fields the message sent, nested ones included, and whether a float is written otherwise
            # by msgspec than by Python's json module (per call: threads may share this object)
            counted = [7 if reported is UNSET else 8, 0]
            data = self._values(self.data[env.type], msgspec.to_builtins(self.data_decoders[env.type].decode(env.data)),
                                counted)
            if written != counted[0]:
                return None  # fewer fields than keys written: a key twice
            if env.type == "lab_result":
                data = contract._normalise_lab(data, "data.")
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, _Refer, contract.ContractViolation):
            return None
        return contract.Message(
            message_id=env.message_id, source=env.source, patient_id=env.patient_id, type=env.type,
            occurred_at=occurred_at, reported_at=reported_at, data=data,
            content_hash=_content_hash(raw) if not counted[1] else strict_json.content_hash(strict_json.loads(raw)),
            raw=raw)

    def _values(self, spec: _Spec, sent: dict[str, Any], counted: list[int]) -> dict[str, Any]:
        """The fields sent (``to_builtins`` of the checked struct: present ones only, in the model's order),
        as pydantic's ``model_dump(exclude_none=True, mode="json")`` gives them: times parsed and written
        as text, numbers checked finite, nested models likewise, the rule across fields run."""
        counted[0] += len(sent)
        for name, treat in spec.post.items():
            value = sent.get(name)
            if value is None:
                continue
            if treat is TIMESTAMP:
                sent[name] = _utc_text(contract_models.parse_timestamp(value))
            elif treat is FINITE or treat is FLOAT:
                if not math.isfinite(value):
                    raise _Refer
                if _written_otherwise(value):
                    counted[1] = 1
            elif treat is FREE_FORM:
                _walk(value, counted)
            else:  # a nested model
                sent[name] = self._values(self.specs[treat], value, counted)
        if spec.rule is not None:
            spec.rule(sent)  # a ValueError: the reference gives the reason
        return {k: v for k, v in sent.items() if v is not None} if None in sent.values() else sent


def _walk(value: Any, counted: list[int]) -> None:
    """Count the keys of a free-form object (nested ones too) and note a float written otherwise by
    msgspec: a key sent twice there shows as one key too few, as anywhere else."""
    if isinstance(value, dict):
        counted[0] += len(value)
        for item in value.values():
            _walk(item, counted)
    elif isinstance(value, list):
        for item in value:
            _walk(item, counted)
    elif isinstance(value, float) and _written_otherwise(value):
        counted[1] = 1


def written_alike(value: Any) -> bool:
    """Whether msgspec writes ``value`` (decoded JSON) byte for byte as Python's json module does
    (compact, ``ensure_ascii=False``): it does for all but some floats."""
    kind = type(value)
    if kind is float:
        return not _written_otherwise(value)
    if kind is not dict and kind is not list:
        return True
    for item in value.values() if kind is dict else value:
        kind = type(item)
        if kind is float:
            if _written_otherwise(item):
                return False
        elif (kind is dict or kind is list) and not written_alike(item):
            return False
    return True


def _written_otherwise(x: float) -> bool:
    """Whether msgspec may write this float otherwise than Python's json module does."""
    return bool(x) and not _SAME_FLOAT_TEXT[0] <= abs(x) < _SAME_FLOAT_TEXT[1]


def _content_hash(raw: bytes) -> str:
    """``strict_json.content_hash`` of the message, with msgspec writing the canonical JSON: the same bytes
    for the values this path accepts (sorted keys, no spaces, text unescaped, floats in
    ``_SAME_FLOAT_TEXT``; tests/test_contract_fast.py)."""
    return hashlib.sha256(msgspec.json.encode(msgspec.json.decode(raw), order="sorted")).hexdigest()[:32]


def _utc_text(when: datetime) -> str:
    """A time as pydantic writes it in JSON mode."""
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
