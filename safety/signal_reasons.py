"""Why a signal may be closed, by the kind of signal it is. Pure; no I/O.

Closing a signal is a clinical decision: it needs a reason that fits what the signal is about (a
serious adverse event is not "confirmed MAS") and a note; no reason is preselected (issue 24). Every
list ends with a reason for a signal raised twice and one for data the sender corrected.
"""

from __future__ import annotations

#: each signal kind's family (the contract's and the rules' names for kinds)
KIND_FAMILY: dict[str, str] = {
    "mas_trend": "MAS", "mas_criteria_2016": "MAS", "ms_score": "MAS", "ferritin_esr_ratio": "MAS",
    "serious_adverse_event": "serious event", "death": "serious event",
    "transaminase_elevation": "liver", "hys_law": "liver", "bilirubin_elevation": "liver",
    "expedited_case": "expedited case",
    "disproportionality": "disproportionality", "sequential": "sequential",
    "data_query": "data query",
}
_COMMON = ("duplicate of another signal", "data error, corrected at the source")
CLOSE_REASONS: dict[str, tuple[str, ...]] = {
    "MAS": ("confirmed MAS", "not MAS", *_COMMON),
    "serious event": ("assessed and reported as required", "assessed: not related to study treatment", *_COMMON),
    "liver": ("drug-induced liver injury confirmed and managed", "another cause explains the liver tests", *_COMMON),
    "expedited case": ("reported to the authorities", "not a SUSAR on assessment", *_COMMON),
    "disproportionality": ("referred for signal assessment", "refuted on case review", "known and labelled",
                           *_COMMON),
    "sequential": ("referred for signal assessment", "refuted on case review", "surveillance ended", *_COMMON),
    "data query": ("the sender confirmed the record as sent", "the sender corrected the record", *_COMMON),
}
#: reasons of earlier versions, kept valid for the signals closed with them
EARLIER_REASONS = ("confirmed MAS", "not MAS", "duplicate", "other")
ALL_CLOSE_REASONS: tuple[str, ...] = tuple(dict.fromkeys(
    [r for reasons in CLOSE_REASONS.values() for r in reasons] + list(EARLIER_REASONS)))


def family(kind: str) -> str:
    return KIND_FAMILY.get(kind, "MAS" if kind.startswith("mas") else kind.replace("_", " "))


def close_reasons(kind: str) -> tuple[str, ...]:
    """The reasons a signal of ``kind`` may be closed with."""
    return CLOSE_REASONS.get(family(kind), _COMMON)


def check_close(kind: str, reason: str | None, note: str) -> None:
    """ValueError, in plain words, when a close lacks a fitting reason or a note."""
    reasons = close_reasons(kind)
    if reason not in reasons:
        raise ValueError(f"Closing a {family(kind)} signal needs one of these reasons: {'; '.join(reasons)}.")
    if not note.strip():
        raise ValueError("Closing needs a note: say what was found or decided.")
