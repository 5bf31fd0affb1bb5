"""The signal workflow's commands: acknowledge, review, close; each recorded with its user."""

from __future__ import annotations

from eventsourcing.application import AggregateNotFoundError

from events.domain import AuditEntry, SignalReview
from events.ledger import Ledger


def act_on_signal(
    ledger: Ledger, signal_id: str, action: str, by: str, note: str = "", reason: str | None = None
) -> str:
    """Record the action in the ledger; returns the signal's new status. ValueError if not allowed."""
    if not by.strip():
        raise ValueError("--by: name the person who acts")
    try:
        review: SignalReview = ledger.repository.get(SignalReview.create_id(signal_id))
    except AggregateNotFoundError:
        review = SignalReview(signal_id=signal_id)
    review.act(action, by=by, note=note, reason=reason)
    ledger.save(review)
    return review.status


def record_audit(ledger: Ledger, by: str, action: str, detail: str = "") -> None:
    """Record a human action (sign-in, download, user change) as an immutable ledger event."""
    ledger.save(AuditEntry(by=by, action=action, detail=detail))
