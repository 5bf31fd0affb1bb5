"""Checking a rules file's values before any rule runs on them. Pure; no I/O.

A rules file (``mas_rules.toml``, ``liver_rules.toml``, or one given to ``signals --rules``) is a
clinician's configuration: a window of 1e308 days, a negative or NaN threshold, or a watch level above
the warning level must be refused with the field named, never silently used or met with a traceback
(issue 23, finding 11).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

#: the longest window a rule may look over
MAX_WINDOW_DAYS = 3660


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the field and the fix."""


def field(d: dict[str, Any], path: str) -> Any:
    """The value at ``a.b.c`` in ``d``, or a RulesError naming what is missing."""
    value: Any = d
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise RulesError(f"{path}: missing; compare with the packaged rules file")
        value = value[part]
    return value


def number(d: dict[str, Any], path: str, *, low: float | None = 0.0, high: float | None = None,
           low_inclusive: bool = False, integer: bool = False) -> float:
    """A finite number within (low, high]; ``low=None`` takes any finite number."""
    value = field(d, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise RulesError(f"{path}: {value!r} is not {'a whole number' if integer else 'a number'}")
    if not math.isfinite(value):
        raise RulesError(f"{path}: {value!r} must be a finite number")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise RulesError(f"{path}: {value!r} must be {'at least' if low_inclusive else 'above'} {low:g}")
    if high is not None and value > high:
        raise RulesError(f"{path}: {value!r} must be at most {high:g}")
    return float(value)


def window(d: dict[str, Any], path: str, unit: str) -> timedelta:
    """A positive window of at most MAX_WINDOW_DAYS, in ``unit`` (days, hours or weeks)."""
    per_day = {"days": 1, "hours": 24, "weeks": 1 / 7}[unit]
    value = number(d, path, high=MAX_WINDOW_DAYS * per_day)
    return timedelta(**{unit: value})


def text(d: dict[str, Any], path: str) -> str:
    value = field(d, path)
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"{path}: {value!r} must be non-empty text")
    return value


def ordered(lower: tuple[str, float], higher: tuple[str, float]) -> None:
    """``lower`` must be below ``higher`` (a watch level under its warning level)."""
    if not lower[1] < higher[1]:
        raise RulesError(f"{lower[0]} ({lower[1]:g}) must be below {higher[0]} ({higher[1]:g})")
