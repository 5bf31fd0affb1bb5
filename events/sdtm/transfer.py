"""One SDTM transfer as differences from what earlier transfers of the same source put in the ledger.

A sponsor sends a full snapshot every few weeks. Compared with the records the ledger holds for the
source (``Known``, from the transfers read model), each record of a domain present in the transfer is
new (a message), unchanged (nothing is sent), or changed: a ``correction`` of its message, or, when its
date changed (a correction cannot move a message in time), a ``retraction`` and a new message. A
record of a present domain that the transfer no longer holds is retracted ("absent from transfer X");
a domain absent from the transfer retracts nothing. The same transfer imported again sends nothing.

Every message an import sends has an id of its own even when a transfer's content or label repeats:
an amendment's id carries the record's revision (how many messages the record has had), so retracting,
restoring and retracting again are three steps, never a duplicate dropped (issue 23). A record whose
update is refused keeps its earlier version current. A plan that would retract more than a fifth of a
domain's current records is the caller's to refuse (``Plan.mass_retractions``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from events.admission import RawMessage, Rejected
from events.contract import ContractViolation, parse_message
from events.sdtm.mapping import CONTEXT, IDENTITY, Mapped, Refusal, context_from, identity_base, map_domain
from events.sdtm.readers import Dataset

AMENDMENT_SEPARATOR = "@"
REVISION_SEPARATOR = "~"
#: a transfer may retract at most this share of a domain's current records without --allow-mass-retraction
MASS_RETRACTION_SHARE = 0.2


class Known(NamedTuple):
    """What the ledger holds of one record: its current message and the digest of its mapped content
    (``origin.digest``)."""

    record: str
    study: str
    domain: str
    patient_id: str
    message_id: str
    occurred_at: str
    digest: str
    retracted: bool


def occurred_text(when: datetime) -> str:
    return when.isoformat()


@dataclass(frozen=True)
class TransferState:
    """What earlier transfers of a source put in the ledger (the transfers read model's answer)."""

    known: dict[str, Known] = field(default_factory=dict)
    first_exposure: dict[tuple[str, str], date] = field(default_factory=dict)
    condition: dict[str, str] = field(default_factory=dict)
    #: record id -> how many messages the record has had (its first is revision 1)
    revisions: dict[str, int] = field(default_factory=dict)
    #: transfer label -> the digest of the content it was first applied with
    applied: dict[str, str] = field(default_factory=dict)

    def subjects(self) -> set[tuple[str, str]]:
        return {(k.study, k.patient_id) for k in self.known.values() if k.domain == "DM" and not k.retracted}

    def current(self) -> Counter[str]:
        """Each domain's records that are current (not retracted)."""
        return Counter(k.domain for k in self.known.values() if not k.retracted)


@dataclass(frozen=True)
class MassRetraction:
    domain: str
    retracting: int
    current: int

    def sentence(self) -> str:
        share = self.retracting / self.current
        return (f"{self.domain}: the transfer would retract {self.retracting} of its {self.current} current records "
                f"({share:.0%})")


class _Ids:
    """Message ids of amendments: ``RECORD@TRANSFER~REVISION``, the revision counting every message the
    record has had, so no two are ever the same whatever the labels."""

    def __init__(self, transfer: str, revisions: dict[str, int]):
        self.transfer, self.revisions = transfer, dict(revisions)

    def next(self, record: str) -> str:
        revision = self.revisions.get(record, 1) + 1
        self.revisions[record] = revision
        return f"{record}{AMENDMENT_SEPARATOR}{self.transfer}{REVISION_SEPARATOR}{revision}"


@dataclass
class DomainCounts:
    records: int = 0
    new: int = 0
    corrected: int = 0
    retracted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    #: records whose update was quarantined: their earlier version stays current
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Plan:
    """The messages a transfer sends, in order (originals before the amendments that target them), and
    what they do, per domain."""

    transfer: str
    messages: list[RawMessage] = field(default_factory=list)
    domains: dict[str, DomainCounts] = field(default_factory=lambda: defaultdict(DomainCounts))
    unmapped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for counts in self.domains.values():
            totals.update({k: v for k, v in counts.as_dict().items() if k != "records"})
        domains = {d: c.as_dict() for d, c in sorted(self.domains.items())}
        domains.update({d: {**DomainCounts(records=n).as_dict()} for d, n in sorted(self.unmapped.items())})
        return {"transfer": self.transfer, **{k: totals[k] for k in
                ("new", "corrected", "retracted", "unchanged", "quarantined", "kept")}, "domains": domains}

    def mass_retractions(self, current: Counter[str], share: float = MASS_RETRACTION_SHARE) -> list[MassRetraction]:
        """The domains this plan would retract more than ``share`` of (or all) of their current records."""
        return [MassRetraction(d, c.retracted, current[d]) for d, c in sorted(self.domains.items())
                if c.retracted and current[d] and (c.retracted > share * current[d] or c.retracted >= current[d])]


def plan_transfer(datasets: Iterable[Dataset], source: str, transfer: str, state: TransferState,
                  now: datetime) -> Plan:
    """Compare a transfer with the ledger's records of ``source`` and plan the messages to send."""
    plan = Plan(transfer)
    known = state.known
    ids = _Ids(transfer, state.revisions)
    by_domain = {d.domain: d for d in datasets}
    rows = {name: list(d.rows()) for name, d in by_domain.items() if name in (*IDENTITY, *CONTEXT)}
    ctx = context_from(rows, source, transfer, state.first_exposure, state.condition, state.subjects(),
                       {r for r, k in known.items() if not k.retracted})
    amendments: list[RawMessage] = []
    for name, dataset in by_domain.items():
        if name not in IDENTITY:
            if name not in CONTEXT:
                plan.unmapped[name] = sum(1 for _ in dataset.rows())
            continue
        counts = plan.domains[name]
        counts.records = len(rows[name])
        present: set[str] = set()
        held: set[str] = set()  # identities with a refused record: their earlier versions stay
        for item in map_domain(name, rows[name], dataset.path.name, ctx):
            position = {**item.position.as_dict(), "transfer": transfer}
            if isinstance(item, Refusal):
                counts.quarantined += 1
                if item.record is not None:
                    held.add(identity_base(item.record))
                    if _current(known.get(item.record)):
                        present.add(item.record)
                        counts.kept += 1
                raw = json.dumps({"domain": name, "record": item.row}, default=str, ensure_ascii=False).encode()
                plan.messages.append(RawMessage(raw, position, refused=Rejected(
                    f"{name} row {item.position.row}: {item.reason}", source, None)))
                continue
            present.add(item.record)
            prior = known.get(item.record)
            if not _plan_record(item, prior, transfer, now, position, counts, plan.messages, amendments, ids):
                held.add(identity_base(item.record))
                counts.kept += _current(prior)
        for record in sorted(set(known) - present):
            k = known[record]
            if k.domain != name or k.retracted:
                continue
            if identity_base(record) in held:
                counts.kept += 1
                continue
            counts.retracted += 1
            amendments.append(_retraction(k, source, transfer, now, f"absent from transfer {transfer}",
                                          {"domain": name, "transfer": transfer}, ids))
    plan.messages += amendments
    return plan


def _current(k: Known | None) -> bool:
    return k is not None and not k.retracted


def _plan_record(item: Mapped, prior: Known | None, transfer: str, now: datetime, position: dict[str, Any],
                 counts: DomainCounts, originals: list[RawMessage], amendments: list[RawMessage], ids: _Ids) -> bool:
    """Plan one mapped record; False when the contract refuses it (it is quarantined, and an earlier
    version of it stays current)."""
    m = item.message
    if prior is not None and not prior.retracted and prior.digest == m["data"]["origin"]["digest"]:
        counts.unchanged += 1  # the same mapped content: nothing to validate or send
        return True
    raw = json.dumps(m, ensure_ascii=False).encode()
    try:
        parsed = parse_message(raw, now=now)
    except ContractViolation:
        counts.quarantined += 1  # ingest quarantines it with the contract's reason and this position
        originals.append(RawMessage(raw, position))
        return False
    if prior is None or prior.retracted:
        if prior is not None:  # back after a retraction: its earlier ids are taken
            m = {**m, "message_id": ids.next(item.record)}
            raw = json.dumps(m, ensure_ascii=False).encode()
        counts.new += 1
        originals.append(RawMessage(raw, position, parsed=parsed if prior is None else None))
        return True
    counts.corrected += 1
    if prior.occurred_at != occurred_text(parsed.occurred_at) or prior.patient_id != parsed.patient_id:
        # A correction cannot move a message in time: retract it, and send the record again.
        amendments.append(_retraction(prior, m["source"], transfer, now, f"date changed in transfer {transfer}",
                                      position, ids))
        amendments.append(RawMessage(json.dumps({**m, "message_id": ids.next(item.record)},
                                                ensure_ascii=False).encode(), position))
        return True
    correction = {
        "schema_version": 1, "message_id": ids.next(item.record), "source": m["source"],
        "patient_id": prior.patient_id, "type": "correction", "occurred_at": m["occurred_at"],
        "data": {"target_message_id": prior.message_id, "reason": f"changed in transfer {transfer}",
                 "data": m["data"], "origin": m["data"]["origin"]},
    }
    amendments.append(RawMessage(json.dumps(correction, ensure_ascii=False).encode(), position))
    return True


def _retraction(k: Known, source: str, transfer: str, now: datetime, reason: str,
                position: dict[str, Any], ids: _Ids) -> RawMessage:
    m = {"schema_version": 1, "message_id": ids.next(k.record),
         "source": source, "patient_id": k.patient_id, "type": "retraction",
         "occurred_at": now.isoformat(),
         "data": {"target_message_id": k.message_id, "reason": reason,
                  "origin": {"standard": "SDTM", "study": k.study, "domain": k.domain, "record": k.record,
                             "transfer": transfer}}}
    return RawMessage(json.dumps(m, ensure_ascii=False).encode(), position)
