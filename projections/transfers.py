"""The transfers read model: what SDTM transfers put in the ledger, record by record, and what each
transfer changed.

``sdtm_records`` holds each record's current message and the digest of its mapped content (so the next
transfer can be compared with it), ``sdtm_changes`` one row per message a transfer sent (new,
corrected, retracted), ``sdtm_subjects`` each subject's first exposure and ``sdtm_studies`` each study's
condition (so a transfer without DM or TS imputes and maps as the earlier ones did), ``sdtm_applied``
each transfer applied (from the audit entry every import records), so a label reused for other content
is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import AuditEntry, Patient
from events.sdtm.importer import TRANSFER_APPLIED
from events.sdtm.transfer import Known, TransferState, occurred_text
from projections.db import ReadDB
from projections.incidence import utc_text


class TransfersModel:
    name = "transfers"
    tables: tuple[str, ...] = ("sdtm_records", "sdtm_changes", "sdtm_subjects", "sdtm_studies", "sdtm_applied")
    topics = tuple(get_topic(cls) for cls in (
        Patient.Enrolment, Patient.Treatment, Patient.AdverseEvent, Patient.LabResult, Patient.ClinicalFinding,
        Patient.Withdrawal, Patient.Contact, Patient.Retraction, Patient.Correction, AuditEntry.Recorded,
    ))

    def create_statements(self, db: ReadDB) -> list[str]:
        return [db.sql(s) for s in (
            "CREATE TABLE IF NOT EXISTS {t}sdtm_records (source TEXT NOT NULL, record TEXT NOT NULL,"
            " study TEXT NOT NULL, domain TEXT NOT NULL, patient_id TEXT NOT NULL, message_id TEXT NOT NULL,"
            " occurred_at TEXT NOT NULL, digest TEXT NOT NULL, retracted INTEGER NOT NULL,"
            " PRIMARY KEY (source, record))",
            "CREATE TABLE IF NOT EXISTS {t}sdtm_changes (notification_id BIGINT PRIMARY KEY, source TEXT NOT NULL,"
            " study TEXT NOT NULL, transfer TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, change TEXT NOT NULL, recorded_at TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {t}sdtm_subjects (source TEXT NOT NULL, study TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, first_exposure_on TEXT, PRIMARY KEY (source, study, patient_id))",
            "CREATE TABLE IF NOT EXISTS {t}sdtm_studies (source TEXT NOT NULL, study TEXT NOT NULL,"
            " condition TEXT NOT NULL, PRIMARY KEY (source, study))",
            "CREATE INDEX IF NOT EXISTS sdtm_changes_record ON {t}sdtm_changes (source, record)",
            "CREATE TABLE IF NOT EXISTS {t}sdtm_applied (notification_id BIGINT PRIMARY KEY, source TEXT NOT NULL,"
            " transfer TEXT NOT NULL, digest TEXT NOT NULL, applied_at TEXT NOT NULL, by_user TEXT NOT NULL,"
            " summary TEXT NOT NULL)",
        )]

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        s = db.sealer
        records: list[tuple[Any, ...]] = []
        changes: list[tuple[Any, ...]] = []
        for nid, e in events:
            if isinstance(e, AuditEntry.Recorded) and e.action == TRANSFER_APPLIED:
                applied = json.loads(e.detail)
                cursor.execute(db.sql("INSERT INTO {t}sdtm_applied VALUES ({p},{p},{p},{p},{p},{p},{p})"),
                               (nid, applied["source"], applied["transfer"], applied["digest"], utc_text(e.timestamp),
                                e.by, json.dumps(applied)))
            if not isinstance(e, Patient.Recorded):
                continue
            origin = e.data.get("origin")
            if not origin or origin.get("standard") != "SDTM":
                continue
            record, pid = s.token(origin["record"]), s.token(e.patient_id)
            key = (e.source, record)
            if isinstance(e, (Patient.Retraction, Patient.Correction)):
                self._flush(cursor, db, records)  # an amendment may target a record of this page
                if isinstance(e, Patient.Retraction):
                    change = "retracted"
                    cursor.execute(db.sql("UPDATE {t}sdtm_records SET retracted = 1"
                                          " WHERE source = {p} AND record = {p}"), key)
                else:
                    change = "corrected"
                    fp = (e.data["data"].get("origin") or {}).get("digest") or ""
                    cursor.execute(db.sql("UPDATE {t}sdtm_records SET digest = {p}"
                                          " WHERE source = {p} AND record = {p}"), (fp, *key))
            else:
                change = "new"
                records.append((e.source, record, origin["study"], origin["domain"], pid, s.token(e.message_id),
                                occurred_text(e.occurred_at), origin.get("digest") or ""))
                if isinstance(e, Patient.Enrolment):
                    self._enrolment(cursor, db, e, origin, pid)
            changes.append((nid, e.source, origin["study"], origin["transfer"], origin["domain"], record, pid, change,
                            utc_text(e.timestamp)))
        self._flush(cursor, db, records)
        if changes:
            cursor.executemany(db.sql("INSERT INTO {t}sdtm_changes VALUES ({p},{p},{p},{p},{p},{p},{p},{p},{p})"),
                               changes)

    @staticmethod
    def _flush(cursor: Any, db: ReadDB, records: list[tuple[Any, ...]]) -> None:
        """Write the records collected so far (a record sent again after a retraction replaces its row)."""
        if records:
            cursor.executemany(db.sql(
                "INSERT INTO {t}sdtm_records VALUES ({p},{p},{p},{p},{p},{p},{p},{p},0)"
                " ON CONFLICT (source, record) DO UPDATE SET study = excluded.study, domain = excluded.domain,"
                " patient_id = excluded.patient_id, message_id = excluded.message_id,"
                " occurred_at = excluded.occurred_at, digest = excluded.digest, retracted = 0"), records)
            records.clear()

    @staticmethod
    def _enrolment(cursor: Any, db: ReadDB, e: Any, origin: dict[str, Any], pid: str) -> None:
        cursor.execute(db.sql("DELETE FROM {t}sdtm_subjects WHERE source = {p} AND study = {p} AND patient_id = {p}"),
                       (e.source, origin["study"], pid))
        cursor.execute(db.sql("INSERT INTO {t}sdtm_subjects VALUES ({p},{p},{p},{p})"),
                       (e.source, origin["study"], pid, e.data.get("first_exposure_on")))
        if e.data.get("condition"):
            cursor.execute(db.sql("DELETE FROM {t}sdtm_studies WHERE source = {p} AND study = {p}"),
                           (e.source, origin["study"]))
            cursor.execute(db.sql("INSERT INTO {t}sdtm_studies VALUES ({p},{p},{p})"),
                           (e.source, origin["study"], e.data["condition"]))


def known_records(db: ReadDB, source: str) -> dict[str, Known]:
    """Every record earlier transfers of ``source`` put in the ledger, by record id."""
    s = db.sealer
    rows = db.query("SELECT record, study, domain, patient_id, message_id, occurred_at, digest, retracted"
                    " FROM {t}sdtm_records WHERE source = {p}", [source])
    out = {}
    for record, study, domain, pid, mid, occurred, fp, retracted in rows:
        rid = s.untoken(record)
        out[rid] = Known(rid, study, domain, s.untoken(pid), s.untoken(mid), occurred, fp, bool(retracted))
    return out


def transfer_state(db: ReadDB, source: str) -> TransferState:
    """What earlier transfers of ``source`` put in the ledger, for planning the next one."""
    s = db.sealer
    revisions = {s.untoken(record): n for record, n in db.query(
        "SELECT record, COUNT(*) FROM {t}sdtm_changes WHERE source = {p} GROUP BY record", [source])}
    applied: dict[str, str] = {}
    for transfer, digest in db.query("SELECT transfer, digest FROM {t}sdtm_applied WHERE source = {p}"
                                     " ORDER BY notification_id", [source]):
        applied.setdefault(transfer, digest)
    return TransferState(known_records(db, source), first_exposures(db, source), conditions(db, source),
                         revisions, applied)


def first_exposures(db: ReadDB, source: str) -> dict[tuple[str, str], date]:
    s = db.sealer
    rows = db.query("SELECT study, patient_id, first_exposure_on FROM {t}sdtm_subjects WHERE source = {p}"
                    " AND first_exposure_on IS NOT NULL", [source])
    return {(study, s.untoken(pid)): date.fromisoformat(str(day)[:10]) for study, pid, day in rows}


def conditions(db: ReadDB, source: str) -> dict[str, str]:
    return dict(db.query("SELECT study, condition FROM {t}sdtm_studies WHERE source = {p}", [source]))


def transfer_changes(db: ReadDB, since: str | None = None) -> list[dict[str, Any]]:
    """Per transfer and domain: how many records it added, corrected and retracted, and when (recorded
    after ``since``, an ISO 8601 UTC time, when given), in the order they were recorded."""
    sql = ("SELECT source, study, transfer, domain, change, COUNT(*), MIN(recorded_at), MAX(recorded_at)"
           " FROM {t}sdtm_changes")
    params: list[Any] = []
    if since is not None:
        sql += " WHERE recorded_at > {p}"
        params.append(since)
    sql += " GROUP BY source, study, transfer, domain, change ORDER BY MIN(recorded_at), transfer, domain, change"
    names = ("source", "study", "transfer", "domain", "change", "records", "first_recorded_at", "last_recorded_at")
    return [dict(zip(names, r, strict=True)) for r in db.query(sql, params)]

