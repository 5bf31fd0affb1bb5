"""Reading an SDTM record's fields: dates (partial ones imputed, as sent kept) and numbers, and the
error a record that cannot be mapped raises. Shared by the domain builders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from safety.partial_dates import Imputed, PartialDateError, impute_end, impute_start


class Bad(ValueError):
    """A record that cannot become a message: quarantined with this reason."""


def raw_date(row: dict[str, Any], name: str) -> str | None:
    v = row.get(name)
    return None if v is None else str(v)


def start_date(row: dict[str, Any], name: str, floor: date | None, as_sent: dict[str, str], field: str) -> str | None:
    """A start date, imputed (``field`` noted in ``as_sent`` when it was partial)."""
    return imputed_date(row, name, as_sent, field, lambda text: impute_start(text, floor))


def end_date(row: dict[str, Any], name: str, as_sent: dict[str, str], field: str) -> str | None:
    return imputed_date(row, name, as_sent, field, impute_end)


def imputed_date(row: dict[str, Any], name: str, as_sent: dict[str, str], field: str,
             rule: Callable[[str], Imputed]) -> str | None:
    text = raw_date(row, name)
    if text is None:
        return None
    try:
        imputed = rule(text)
    except PartialDateError as exc:
        raise Bad(f"{name}: {exc}; send an ISO 8601 date") from None
    if imputed.imputed:
        as_sent[field] = imputed.as_sent
    return imputed.value


def first_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(impute_start(text).value[:10])
    except (PartialDateError, ValueError):
        return None


def as_number(v: Any) -> float | int | None:
    if v is None or isinstance(v, (int, float)):
        return v
    try:
        f = float(str(v))
    except ValueError:
        return None
    return int(f) if f.is_integer() else f
