"""Importing one SDTM transfer: the write side's one function for it (read, plan, check, ingest, record).

A transfer is applied whole or refused whole (issue 23): its datasets are read to their end and planned
before anything is sent, so a damaged file, a label reused for other content, or a plan that retracts
more than a fifth of a domain's records (without ``allow_mass_retraction``) changes nothing stored. One
import runs at a time per store (``import_lock``); every applied transfer is recorded as an audit entry,
its own step in the history even when it repeats an earlier one, and the counts printed are those the
ledger stored.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from events.ingest import Ingestor
from events.ledger import Ledger
from events.sdtm.readers import Dataset
from events.sdtm.transfer import Plan, TransferState, plan_transfer
from events.store import Store
from events.workflow import record_audit

#: the audit action that records each applied transfer (the transfers read model follows it)
TRANSFER_APPLIED = "sdtm transfer applied"


class TransferRefused(ValueError):
    """A transfer that was not applied; the message says why and what to do. Nothing stored changed."""


class ImportInterrupted(Exception):
    """The store refused a batch part way (its cause); ``stored`` says what the ledger holds of the
    transfer. Running the same import again sends only the rest."""

    def __init__(self, stored: dict[str, int]):
        super().__init__(f"stored before the store refused: {stored}")
        self.stored = stored


def transfer_digest(datasets: list[Dataset]) -> str:
    """SHA-256 over each dataset's domain and file bytes, in domain order: the same files, the same digest."""
    digest = hashlib.sha256()
    for d in sorted(datasets, key=lambda d: d.domain):
        digest.update(d.domain.encode())
        with d.path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def import_lock(store: Store, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """One import at a time per store: a lock file beside an SQLite ledger, an advisory lock on
    PostgreSQL (held by its own connection, released if the process dies). ``waiting`` is called once
    when another import holds it, before this one waits its turn."""
    if store.kind == "sqlite":
        assert store.path is not None
        with open(store.sibling("import").with_suffix(".lock"), "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting()
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    import psycopg

    key = int.from_bytes(hashlib.sha256(f"sdtm-import/{store.schema}".encode()).digest()[:8], "big", signed=True)
    with psycopg.connect(host=store.host, port=store.port, user=store.user, password=store.password or None,
                         dbname=store.dbname, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            waiting()
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def check_plan(plan: Plan, state: TransferState, allow_mass_retraction: bool) -> None:
    """Refuse a plan that would retract too much of a domain unless the operator said so."""
    mass = plan.mass_retractions(state.current())
    if mass and not allow_mass_retraction:
        raise TransferRefused(
            f"transfer {plan.transfer} refused, nothing stored changed: " + "; ".join(m.sentence() for m in mass)
            + ". A damaged or partial transfer looks like this: check the files (import-sdtm --dry-run shows the "
            "plan), and pass --allow-mass-retraction only if the sponsor really withdrew these records")


def import_transfer(ledger: Ledger, datasets: list[Dataset], source: str, label: str | None,
                    state: Callable[[], TransferState], *, allow_mass_retraction: bool = False,
                    dry_run: bool = False, by: str | None = None,
                    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
                    waiting: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Plan the transfer against what the ledger holds of ``source`` (``state`` reads it, once the
    import lock is held) and, unless ``dry_run``, ingest its messages. Returns the summary: per domain
    new, corrected, retracted, unchanged, quarantined and kept, and what the ledger stored.
    Raises ``TransferRefused`` (nothing stored changed) or ``DatasetError`` (a file is not whole)."""
    track = progress or (lambda _label, _total: lambda _n: None)
    digest = transfer_digest(datasets)
    label = label or "T-" + digest[:12]
    with import_lock(ledger.store, waiting):
        current = state()
        if current.applied.get(label, digest) != digest:
            raise TransferRefused(f"--transfer {label}: that label was applied before with other content; give this "
                                  "transfer a label of its own")
        track(f"read and compare {len(datasets)} datasets", None)
        plan = plan_transfer(datasets, source, label, current, datetime.now(UTC))
        summary = plan.summary()
        if dry_run:
            return {**summary, "dry_run": True}
        check_plan(plan, current, allow_mass_retraction)
        advance = track(f"import transfer {label}", len(plan.messages))

        def tracked() -> Iterator[Any]:
            for item in plan.messages:
                advance(1)
                yield item

        ingestor = Ingestor(ledger)
        try:
            ingestor.ingest(tracked(), batch_size=2000)
        except Exception as exc:
            raise ImportInterrupted(ingestor.committed.as_dict()) from exc
        stored = ingestor.committed.as_dict()
        record_audit(ledger, by or _operator(), TRANSFER_APPLIED, json.dumps(
            {"source": source, "transfer": label, "digest": digest, "stored": stored,
             **{k: summary[k] for k in ("new", "corrected", "retracted", "unchanged", "quarantined", "kept")}}))
    return {**summary, "stored": stored, "unmapped": plan.unmapped}


def _operator() -> str:
    try:
        return f"{getpass.getuser()} (import-sdtm)"
    except (KeyError, OSError):
        return "import-sdtm"
