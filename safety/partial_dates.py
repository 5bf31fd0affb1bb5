"""Partial ISO 8601 dates (``2014``, ``2014-01``), normal in SDTM, and the rule that imputes them.

The value as sent is kept beside the imputed one; the rule only decides what computation uses.
Start dates (onsets, exposure starts) take the earliest possible day, but not before the subject's
first exposure when the partial date could fall on or after it: an event reported as "January 2014"
in a subject first dosed on 20 January 2014 is imputed to 20 January, so that it is not declared
treatment-emergent or not by an imputation alone (the usual sponsor convention: pharmaverse admiral's
``derive_vars_dt(..., date_imputation = "first", min_dates = TRTSDT)`` considers only minimum dates that
fall in the range the partial date allows). End dates take the latest possible day. Pure; no I/O.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


class PartialDateError(ValueError):
    """Not an ISO 8601 date, full or partial."""


@dataclass(frozen=True)
class Imputed:
    """A date for computation, the value as sent, and whether the two differ in precision."""

    value: str  #: ISO 8601 (the full date-time as sent, or the imputed day)
    as_sent: str
    imputed: bool


def precision(text: str) -> tuple[int, int | None, int | None]:
    """Year, month and day of a date (month and day None when not sent); a time part is ignored."""
    match = _PARTIAL.match(text.split("T", 1)[0])
    if not match:
        raise PartialDateError(f"{text!r} is not an ISO 8601 date (YYYY, YYYY-MM, YYYY-MM-DD, with a time or not)")
    year, month, day = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        date(year, month or 1, day or 1)
    except ValueError as exc:
        raise PartialDateError(f"{text!r} is not a date: {exc}") from None
    if month is None and day is not None:
        raise PartialDateError(f"{text!r} has a day but no month")
    return year, month, day


def impute_start(text: str, first_exposure: date | None = None) -> Imputed:
    """The earliest possible day of a partial start date, not before ``first_exposure`` when the
    partial date's period contains it."""
    year, month, day = precision(text)
    if day is not None:
        return Imputed(text, text, False)
    earliest = date(year, month or 1, 1)
    latest = _last_day(year, month)
    chosen = first_exposure if first_exposure is not None and earliest <= first_exposure <= latest else earliest
    return Imputed(chosen.isoformat(), text, True)


def impute_end(text: str) -> Imputed:
    """The latest possible day of a partial end date."""
    year, month, day = precision(text)
    if day is not None:
        return Imputed(text, text, False)
    return Imputed(_last_day(year, month).isoformat(), text, True)


def _last_day(year: int, month: int | None) -> date:
    if month is None:
        return date(year, 12, 31)
    return date(year, month, calendar.monthrange(year, month)[1])
