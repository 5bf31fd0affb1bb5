"""SDTM follow-up domains to contract messages: DS (a withdrawal, or a completion as a contact), SV (each
visit done, a contact) and VS (temperature, a clinical finding). ``docs/sdtm-mapping.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from events.sdtm.fields import Bad, as_number, start_date

if TYPE_CHECKING:
    from events.sdtm.mapping import Context

#: a disposition that ends follow-up without a withdrawal: a contact of kind completion (contract 1.2)
COMPLETION = "COMPLETED"


def disposition(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    when = start_date(row, "DSSTDTC", None, as_sent, "occurred_at")
    if when is None:
        raise Bad("DSSTDTC: missing; the disposition needs its date")
    decod = str(row.get("DSDECOD") or "")
    if decod == COMPLETION:
        return "contact", when, {"kind": "completion", "label": str(row.get("DSTERM") or decod)[:128]}
    return "withdrawal", when, {"reason": str(row.get("DSTERM") or decod or "discontinued"),
                                "disposition": decod or None, "death": True if decod == "DEATH" else None}


def visit(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """A visit (SV): a contact on its start day, so follow-up runs to the last visit (contract 1.2)."""
    when = start_date(row, "SVSTDTC", None, as_sent, "occurred_at")
    if when is None:
        raise Bad("SVSTDTC: missing; a visit needs its date (a planned visit not yet done is left out)")
    label = str(row.get("VISIT") or row.get("VISITNUM") or "visit")[:128]
    return "contact", when, {"kind": "visit", "label": label}


def temperature(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    when = start_date(row, "VSDTC", None, as_sent, "occurred_at")
    if when is None:
        raise Bad("VSDTC: missing; the measurement needs its date")
    value = as_number(row.get("VSSTRESN"))
    unit = str(row.get("VSSTRESU") or "C")
    if value is None:
        raise Bad("VSSTRESN: empty; a temperature is a number")
    if unit.upper() in ("F", "[DEGF]"):
        value = round((value - 32) * 5 / 9, 2)
    elif unit.upper() not in ("C", "[DEGC]"):
        raise Bad(f"VSSTRESU: {unit!r} is not a temperature unit; send C or F")
    return "clinical_finding", when, {"temperature_c": value}
