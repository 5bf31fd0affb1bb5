"""A patient's history: every accepted message in clinical-time order, amendments marked."""

from __future__ import annotations

from typing import Any

from events.domain import Patient
from events.ledger import Ledger


def patient_history(ledger: Ledger, source: str, patient_id: str) -> list[dict[str, Any]]:
    """Rows with the message, when it happened, when the ledger recorded it, and its amendments."""
    recorded = [e for e in ledger.patient_events(source, patient_id) if isinstance(e, Patient.Recorded)]
    retracted = {e.data["target_message_id"] for e in recorded if isinstance(e, Patient.Retraction)}
    corrected = {e.data["target_message_id"] for e in recorded if isinstance(e, Patient.Correction)}
    rows = [
        {
            "message_id": e.message_id,
            "type": e.type,
            "occurred_at": e.occurred_at.isoformat(),
            "reported_at": e.reported_at.isoformat() if e.reported_at else None,
            "recorded_at": e.timestamp.isoformat(),
            "retracted": e.message_id in retracted,
            "corrected": e.message_id in corrected,
            "data": e.data,
            "version": e.originator_version,
        }
        for e in recorded
    ]
    rows.sort(key=lambda r: (r["occurred_at"], r["version"]))
    return rows
