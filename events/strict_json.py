"""Strict JSON for the feed: each key once, no NaN or Infinity, no NUL or lone surrogate in any string,
and the canonical content hash. The contract (``events.contract``) turns what these find into its reasons."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}: send a finite number")


class DuplicateKey(ValueError):
    """An object has this key twice: which value is meant is ambiguous."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


# One decoder for all messages: json.loads with any option builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def loads(raw: bytes) -> Any:
    """Strict UTF-8 (a byte-order mark is tolerated) JSON without NaN or Infinity, each key once."""
    return _DECODER.decode(raw.decode("utf-8-sig"))


def nul_path(obj: Any, raw: bytes) -> str | None:
    """The path of the first string (value or key) of ``obj``, parsed from ``raw``, holding NUL, or None."""
    # Strict JSON has no raw control character inside a string: a NUL can only come from an escape.
    return _path_of(obj, "", lambda s: "\x00" in s) if b"\\u0000" in raw else None


def lone_surrogate_path(obj: Any, raw: bytes) -> str | None:
    """The path of the first string holding a lone surrogate (not Unicode text), or None."""
    if b"\\ud" in raw or b"\\uD" in raw:  # only an escape can carry one: UTF-8 cannot
        return _path_of(obj, "", _lone_surrogate)
    return None


def _path_of(value: Any, path: str, bad: Callable[[str], bool]) -> str | None:
    if isinstance(value, str):
        return path if bad(value) else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and bad(key):
            return here
        found = _path_of(item, here, bad)
        if found is not None:
            return found
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
