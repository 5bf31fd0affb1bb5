"""The write-side domain model: one event-sourced ``Patient`` per (source, patient_id).

Every accepted contract message becomes one immutable event in its patient's stream, named after
the contract type. Nothing is updated or deleted: a retraction or correction is one more event.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from safety.signal_reasons import ALL_CLOSE_REASONS

# A fixed namespace makes patient ids deterministic (the same patient from any process or replay).
PATIENT_NAMESPACE = UUID("6b3f6f0e-0d7e-4c55-9a8e-4f1d2c0b9a11")


@lru_cache(maxsize=65536)
def patient_uuid(source: str, patient_id: str) -> UUID:
    return uuid5(PATIENT_NAMESPACE, f"{source}/{patient_id}")


@lru_cache(maxsize=65536)
def patient_hex(source: str, patient_id: str) -> str:
    """The patient's stream id as the ledger's index stores it (a str: hashing a UUID runs Python code)."""
    return patient_uuid(source, patient_id).hex


class Patient(Aggregate):
    """A patient's history as its registry reported it, amendments included."""

    @staticmethod
    def create_id(source: str, patient_id: str) -> UUID:
        return patient_uuid(source, patient_id)

    class Registered(Aggregate.Created):
        """The first event of every patient stream, written with the patient's first message."""

        source: str
        patient_id: str

    def __init__(self, source: str, patient_id: str):
        self.source = source
        self.patient_id = patient_id
        self.messages: dict[str, str] = {}
        self.retracted: set[str] = set()
        self.corrected: dict[str, dict[str, Any]] = {}

    class Recorded(Aggregate.Event):
        """A contract message accepted into the patient's history."""

        source: str
        patient_id: str
        message_id: str
        occurred_at: datetime
        reported_at: datetime | None
        data: dict[str, Any]
        content_hash: str

        @property
        def type(self) -> str:
            return MESSAGE_TYPE_OF[type(self)]

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Patient)
            aggregate.messages[self.message_id] = self.type
            target = str(self.data.get("target_message_id"))
            if isinstance(self, Patient.Retraction):
                aggregate.retracted.add(target)
            elif isinstance(self, Patient.Correction):
                aggregate.corrected[target] = self.data["data"]

    class Enrolment(Recorded):
        pass

    class Intervention(Recorded):
        pass

    class Treatment(Recorded):
        pass

    class AdverseEvent(Recorded):
        pass

    class Hospitalisation(Recorded):
        pass

    class LabResult(Recorded):
        pass

    class ClinicalFinding(Recorded):
        pass

    class VisitAssessment(Recorded):
        pass

    class Withdrawal(Recorded):
        pass

    class Contact(Recorded):
        pass

    class Retraction(Recorded):
        pass

    class Correction(Recorded):
        pass


#: contract message type -> event class, and back
EVENT_CLASS: dict[str, type[Patient.Recorded]] = {
    "enrolment": Patient.Enrolment,
    "intervention": Patient.Intervention,
    "treatment": Patient.Treatment,
    "adverse_event": Patient.AdverseEvent,
    "hospitalisation": Patient.Hospitalisation,
    "lab_result": Patient.LabResult,
    "clinical_finding": Patient.ClinicalFinding,
    "visit_assessment": Patient.VisitAssessment,
    "withdrawal": Patient.Withdrawal,
    "contact": Patient.Contact,
    "retraction": Patient.Retraction,
    "correction": Patient.Correction,
}
MESSAGE_TYPE_OF: dict[type, str] = {cls: name for name, cls in EVENT_CLASS.items()}


SIGNAL_NAMESPACE = UUID("0d7c1e52-3b8a-4f0e-9d51-2a6c8f4b7e30")
SIGNAL_STATUSES = ("open", "acknowledged", "under_review", "closed")
CLOSE_REASONS = ALL_CLOSE_REASONS


class SignalReview(Aggregate):
    """What people did with one signal: who acknowledged, reviewed or closed it, when and why.

    Signals themselves are derived (a read model); the human actions on them are facts and live
    here, in the ledger, so the audit trail survives any rebuild.
    """

    @staticmethod
    def create_id(signal_id: str) -> UUID:
        return uuid5(SIGNAL_NAMESPACE, signal_id)

    class Opened(Aggregate.Created):
        signal_id: str

    def __init__(self, signal_id: str):
        self.signal_id = signal_id
        self.status = "open"

    class Action(Aggregate.Event):
        signal_id: str
        by: str
        note: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, SignalReview)
            aggregate.status = STATUS_AFTER[type(self)]

    class Acknowledged(Action):
        pass

    class ReviewStarted(Action):
        pass

    class Closed(Action):
        reason: str

    def act(self, action: str, by: str, note: str, reason: str | None = None) -> None:
        """Record an action if the signal's status allows it (raises ValueError if not)."""
        event_class = ACTIONS.get(action)
        if event_class is None:
            raise ValueError(f"Unknown action {action!r}: use ack, review or close.")
        allowed = ALLOWED_FROM[event_class]
        if self.status not in allowed:
            done = STATUS_AFTER[event_class].replace("_", " ")
            raise ValueError(f"This signal is {self.status.replace('_', ' ')} already, so it cannot be {done} now "
                             f"(only a signal that is {' or '.join(s.replace('_', ' ') for s in allowed)} can).")
        if event_class is SignalReview.Closed:
            if reason not in CLOSE_REASONS:
                raise ValueError(f"Closing needs a reason, one of: {'; '.join(CLOSE_REASONS)}.")
            self.trigger_event(event_class, signal_id=self.signal_id, by=by, note=note, reason=reason)
        else:
            self.trigger_event(event_class, signal_id=self.signal_id, by=by, note=note)


STATUS_AFTER: dict[type, str] = {
    SignalReview.Acknowledged: "acknowledged",
    SignalReview.ReviewStarted: "under_review",
    SignalReview.Closed: "closed",
}
ALLOWED_FROM: dict[type, tuple[str, ...]] = {
    SignalReview.Acknowledged: ("open",),
    SignalReview.ReviewStarted: ("open", "acknowledged"),
    SignalReview.Closed: ("open", "acknowledged", "under_review"),
}
ACTIONS: dict[str, type[SignalReview.Action]] = {
    "ack": SignalReview.Acknowledged,
    "review": SignalReview.ReviewStarted,
    "close": SignalReview.Closed,
}
ACTION_NAME: dict[type, str] = {cls: name for name, cls in ACTIONS.items()}


class AuditEntry(Aggregate):
    """One human action on the board that is not a signal action (sign-in, report download, users)."""

    class Recorded(Aggregate.Created):
        by: str
        action: str
        detail: str

    def __init__(self, by: str, action: str, detail: str):
        self.by = by
        self.action = action
        self.detail = detail


class ExpeditedSubmission(Aggregate):
    """One expedited report of a SUSAR case to an authority, as the safety physician recorded it: a fact
    of the ledger, so the clock's history survives any rebuild."""

    class Recorded(Aggregate.Created):
        case: str
        by: str
        submitted_on: str
        authority: str

    def __init__(self, case: str, by: str, submitted_on: str, authority: str):
        self.case = case
        self.by = by
        self.submitted_on = submitted_on
        self.authority = authority
