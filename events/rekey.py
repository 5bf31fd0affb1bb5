"""Key rotation: copy the ledger into a new store sealed with a new key (or with none).

Every stored event is decoded with the current key and stored again with the new one, with the same
patient streams, versions and recording times; the idempotency index, the quarantine, the per-source
counts and the note of which dead letters were sent come along. Read models are then rebuilt from
the copy. The old store and key can be destroyed once the copy is checked.
"""

from __future__ import annotations

from collections.abc import Callable

from eventsourcing.persistence import Tracking

from events.domain import Patient
from events.ledger import Ledger
from events.recorders import AdmissionRow, CountRow, QuarantineRow


def copy_ledger(old: Ledger, new: Ledger, page: int = 2000,
                on_page: Callable[[int], None] | None = None) -> int:
    """Copy every event (re-sealed by ``new``'s key), index row, quarantined message and count."""
    if new.position():
        raise ValueError(f"the target store {new.store.display()} is not empty: rekey copies into a new store")
    start, copied = 0, 0
    while True:
        notes = old.notifications(start, page)
        if not notes:
            break
        events = [old.decode(n) for n in notes]
        admissions: list[AdmissionRow] = [
            (f"{e.source}/{e.message_id}", e.source, e.message_id, e.patient_id, e.type, e.content_hash,
             e.originator_id.hex, e.originator_version)
            for e in events if isinstance(e, Patient.Recorded)
        ]
        new.append_stored([new.mapper.to_stored_event(e) for e in events], admissions=admissions)
        start = notes[-1].id
        copied += len(notes)
        if on_page:
            on_page(len(notes))
    quarantine: list[QuarantineRow] = [
        (q["received_at"], q["source"], q["message_id"], q["position"], q["reason"], bytes(q["raw"]))
        for q in old.tables.quarantined()
    ]
    counts: list[CountRow] = [
        (c["source"], c["accepted"], c["duplicates"], c["quarantined"], c["last_message_at"])
        for c in old.tables.feed_counts()
    ]
    new.append_stored([], quarantine=quarantine, counts=counts)
    _carry_dead_letters(old, new)
    for name, offset in old.tables.tracking_positions("kafka:").items():  # consumers resume where they were
        new.recorder.insert_tracking(Tracking(name, offset))  # type: ignore[attr-defined]
    return copied


def _carry_dead_letters(old: Ledger, new: Ledger) -> None:
    """Quarantine rows get new ids in the copy (in the same order): note as sent what was sent, so the
    consumer does not send those dead letters again."""
    sent = old.tables.dead_lettered()
    pairs = zip(old.tables.quarantined(), new.tables.quarantined(), strict=True)
    by_time: dict[str, list[int]] = {}
    for before, after in pairs:
        if before["id"] in sent:
            by_time.setdefault(sent[before["id"]], []).append(after["id"])
    for sent_at, ids in by_time.items():
        new.tables.mark_dead_lettered(ids, sent_at)
