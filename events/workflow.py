"""The signal workflow's commands: acknowledge, review, close; each recorded with its user."""

from __future__ import annotations

from datetime import UTC, date, datetime

from eventsourcing.application import AggregateNotFoundError

from events.domain import AuditEntry, ExpeditedSubmission, SignalReview
from events.ledger import Ledger
from safety.expedited import check_submission
from safety.signal_reasons import check_close


def act_on_signal(
    ledger: Ledger, signal_id: str, action: str, by: str, note: str = "", reason: str | None = None,
    kind: str | None = None,
) -> str:
    """Record the action in the ledger; returns the signal's new status. ValueError, in plain words, if
    not allowed: closing needs a reason that fits the signal's ``kind`` and a note."""
    if not by.strip():
        raise ValueError("Name the person who acts (--by).")
    if action == "close" and kind is not None:
        check_close(kind, reason, note)
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


def submit_expedited(ledger: Ledger, case: str, by: str, submitted_on: str, authority: str,
                     aware_at: datetime | None = None, today: date | None = None) -> None:
    """Record that a case was reported to an authority (ValueError naming the field if not usable: a
    date in the future, or before ``aware_at``, when the case became known)."""
    if not by.strip():
        raise ValueError("Name the person who submitted the report (--by).")
    if not authority.strip():
        raise ValueError("Name the authority the report went to, for example EMA, MHRA or FDA (--authority).")
    try:
        on = date.fromisoformat(submitted_on)
    except ValueError:
        raise ValueError(f"--on {submitted_on!r}: the date of submission as YYYY-MM-DD") from None
    if aware_at is not None:
        check_submission(on, aware_at, today or datetime.now(UTC).date())
    ledger.save(ExpeditedSubmission(case=case, by=by, submitted_on=submitted_on, authority=authority))
    record_audit(ledger, by, "expedited report", f"{case} submitted to {authority} on {submitted_on}")
