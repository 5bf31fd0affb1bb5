"""Seriousness as ICH E2A defines it. Pure; no I/O.

An adverse event is serious when it results in death, is life-threatening, requires or prolongs
hospitalisation, results in persistent disability, is a congenital anomaly, or is another important
medical event (ICH E2A, section II.B). The criteria decide, not only the sender's flag: the CDISC pilot
flags three events AESER = Y while 36 meet a criterion, among them three deaths sent AESER = N (issue
23). Where the flag and the criteria disagree, the event counts as serious and the disagreement is a
data query for the sender; the value as sent is kept in the ledger.
"""

from __future__ import annotations

from typing import Any

#: outcomes (SDTM AEOUT, or a registry's text) that mean the patient died of the event
FATAL_OUTCOMES = ("fatal", "death", "died")


def fatal(data: dict[str, Any]) -> bool:
    """The event ended in death: seriousness criterion death, a fatal outcome, or CTCAE grade 5."""
    outcome = str(data.get("outcome") or "").lower()
    return ("death" in (data.get("seriousness") or ()) or any(word in outcome for word in FATAL_OUTCOMES)
            or data.get("ctcae_grade") == 5)


def criteria(data: dict[str, Any]) -> list[str]:
    """The seriousness criteria the event meets (a fatal outcome counts as death)."""
    met = list(data.get("seriousness") or ())
    if fatal(data) and "death" not in met:
        met.insert(0, "death")
    return met


def serious(data: dict[str, Any]) -> bool:
    """Flagged serious, or meeting any ICH E2A criterion."""
    return bool(data.get("serious")) or bool(criteria(data))


def contradiction(data: dict[str, Any]) -> str | None:
    """What to ask the sender when the flag says not serious and a criterion says otherwise; else None."""
    met = criteria(data)
    if data.get("serious") is False and met:
        return (f"sent as not serious, but it meets {', '.join(met)}: serious by ICH E2A; please confirm the "
                "seriousness flag or correct the criteria")
    return None
