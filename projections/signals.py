"""The signals read model: MAS warnings, classification criteria, scores and serious adverse events,
with the workflow status people gave them.

For every patient touched by new events, the whole history is evaluated again in clinical order
(``safety.mas.evaluate``), so a late-arriving earlier panel re-evaluates the later one. Touched
patients are noted in ``signal_dirty`` in the same transaction as the facts (a deferred backlog notes
one mark instead, ``signal_backlog``, with its first page: every patient with a fact from there on), and
cleared when their signals are written, so a crash between the two loses nothing.

Its queries are in ``projections.signal_queries``; other rules are tried aside in ``projections.rules_diff``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from eventsourcing.utils import get_topic

from events.domain import ACTION_NAME, STATUS_AFTER, Patient, SignalReview, patient_uuid
from events.encoding import RecordedText
from projections import evaluation, forked
from projections.db import ReadDB, asked, dumps
from projections.detection import detection_rules
from projections.evaluation import Evaluated
from projections.exposure import EXPOSURE_TYPES
from projections.incidence import utc_text, utc_text_of
from projections.live_detection import TABLES as DETECTION_TABLES
from projections.live_detection import LiveDetection, covers
from projections.liver import TABLE as LIVER_TABLE
from projections.liver import UPSERT as LIVER_UPSERT
from projections.liver import create_statement as liver_statement
from projections.liver import rules_key
from projections.partitions import segment_of
from safety.detection_signals import REGISTRY
from safety.liver import LiverConfig, load_liver_config
from safety.mas import Config, Signal
from safety.notifications import rises
from safety.screening import DetectionRules

SIGNAL_COLUMNS = ("id", "source", "patient_id", "kind", "level", "priority", "status", "occurred_at",
                  "raised_at", "updated_at", "evidence", "context", "criteria_2016", "details",
                  "rules_version")


def load_config(text: str | None = None) -> Config:
    """The MAS rules configuration: the packaged ``mas_rules.toml`` unless given."""
    raw = text if text is not None else (resources.files("safety") / "mas_rules.toml").read_text()
    return Config.from_dict(tomllib.loads(raw))


def with_priority(s: Any) -> dict[str, Any] | None:
    """A signal's details, with what makes it high priority (``priority_reasons``) when anything does."""
    if not s.priority_reasons:
        return s.details
    return {**(s.details or {}), "priority_reasons": list(s.priority_reasons)}


#: the facts by patient: what evaluation reads. A rebuild into an empty table on SQLite goes without it
#: and makes it at the end, once (``deferred_indexes``): kept while the facts arrive in ledger order, every
#: page rewrote a leaf of it per patient (three quarters of the time of writing the facts). With the time
#: each fact was recorded, it answers alone which patients have facts and their last (1.2 -> 0.16 s at
#: 15,000 patients; a store made before keeps its index of two columns, which answers the same)
FACTS_INDEX = ("CREATE INDEX IF NOT EXISTS signal_facts_patient ON {t}signal_facts"
               " (source, patient_id, recorded_at)")


#: a page as rows (``SignalsModel.rows``): facts, touched patients with the time of their last fact, workflow
#: actions, and the patients whose exposure facts it holds
FactRows = tuple[list[tuple[Any, ...]], dict[tuple[str, str], str], list[tuple[Any, ...]], list[tuple[str, str]]]


class SignalsModel:
    name = "signals"
    tables: tuple[str, ...] = ("signal_facts", "signal_dirty", "signal_backlog", "signals", "signal_actions",
                               "signal_raises", "signal_span", LIVER_TABLE, *DETECTION_TABLES)
    #: made at the end of a bulk load (``projections.view.View.deferred_indexes``), before the evaluation
    deferred_indexes = ("signal_facts_patient",)
    #: a bulk load may hand ``rows`` its facts as their stored text (``events.encoding.RecordedText``)
    takes_recorded_text = True
    topics = tuple(
        get_topic(cls) for cls in (
            Patient.Enrolment, Patient.Treatment, Patient.AdverseEvent, Patient.Hospitalisation,
            Patient.LabResult, Patient.ClinicalFinding, Patient.Withdrawal, Patient.Contact, Patient.Retraction,
            Patient.Correction,
            SignalReview.Acknowledged, SignalReview.ReviewStarted, SignalReview.Closed,
        )
    )

    def __init__(self, config: Config | None = None, liver: LiverConfig | None = None,
                 detection: DetectionRules | None = None, surveillance_plan: str | None = None):
        self.config = config or load_config()
        self.liver = liver or load_liver_config()
        #: registry-wide signals: disproportionality screening and the plan's sequential surveillance
        self.live = LiveDetection(detection or detection_rules(), surveillance_plan)
        #: during a rebuild, patients are evaluated once at the end instead of after every page
        self.defer = False
        #: (segment, count) when this instance projects one segment of a partitioned store: it evaluates
        #: the patients of that segment only (``projections.partitions``)
        self.partition: tuple[int, int] | None = None
        #: patients whose exposure facts changed since their share was derived (a lab result changes none);
        #: None until this process has derived the shares of the patients left dirty by an earlier one
        self._exposure_dirty: set[tuple[str, str]] | None = None
        self._liver_checked = False
        self._segment_patients: list[tuple[Any, ...]] | None = None  # ``_everyone``, within one finish
        #: whether the current evaluation may use worker processes (``finish``)
        self.parallel = False
        #: the facts index is made if missing once a process (``prepare``)
        self._index_checked = False

    def create_statements(self, db: ReadDB) -> list[str]:
        serial = "INTEGER" if db.kind == "sqlite" else "BIGSERIAL"
        integer = "INTEGER" if db.kind == "sqlite" else "BIGINT"
        return self.live.create_statements(db) + [liver_statement(db)] + [db.sql(s) for s in (
            # Each new signal at warning or alert, and each rise of one to such a level, once: the outbox
            # that notifications follow (committed with the signals it notes).
            f"CREATE TABLE IF NOT EXISTS {{t}}signal_raises (seq {serial} PRIMARY KEY, signal_id TEXT NOT NULL,"
            " level TEXT NOT NULL, raised_at TEXT NOT NULL, UNIQUE (signal_id, level))",
            # INTEGER on SQLite: the table's own row id, no index of its own to keep
            f"CREATE TABLE IF NOT EXISTS {{t}}signal_facts (notification_id {integer} PRIMARY KEY,"
            " source TEXT NOT NULL, patient_id TEXT NOT NULL, message_id TEXT NOT NULL,"
            " type TEXT NOT NULL, occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, data TEXT NOT NULL)",
            FACTS_INDEX,
            # the first and last clinical time of the facts, per writer (one row, or one per segment: workers
            # do not queue on one row), so the board's data-cut picker does not scan every fact
            "CREATE TABLE IF NOT EXISTS {t}signal_span (writer TEXT PRIMARY KEY, first TEXT NOT NULL,"
            " last TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {t}signal_dirty (source TEXT NOT NULL, patient_id TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL, PRIMARY KEY (source, patient_id))",
            # a deferred backlog's touched patients, as one mark per writer: every patient with a fact from
            # this notification on (``write_rows``, ``finish``)
            f"CREATE TABLE IF NOT EXISTS {{t}}signal_backlog (writer TEXT PRIMARY KEY, since {integer} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {t}signals (id TEXT PRIMARY KEY, source TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, kind TEXT NOT NULL, level TEXT NOT NULL, priority TEXT NOT NULL,"
            " status TEXT NOT NULL, occurred_at TEXT NOT NULL, raised_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, evidence TEXT NOT NULL, context TEXT NOT NULL,"
            " criteria_2016 TEXT, details TEXT, rules_version TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS signals_patient ON {t}signals (source, patient_id)",
            "CREATE TABLE IF NOT EXISTS {t}signal_actions (notification_id BIGINT PRIMARY KEY,"
            " signal_id TEXT NOT NULL, action TEXT NOT NULL, status TEXT NOT NULL, by_user TEXT NOT NULL,"
            " note TEXT NOT NULL, reason TEXT, at TEXT NOT NULL)",
        )]

    def rows(self, db: ReadDB, events: Sequence[tuple[int, Any]]) -> FactRows:
        """A page's facts, the patients it touched, and its workflow actions (``PageRows``: pure). A fact
        may come as its event or as its stored text (``RecordedText``, as a bulk load reads it)."""
        facts, dirty, actions, exposure = [], {}, [], []
        s = db.sealer
        for nid, e in events:
            if type(e) is RecordedText:
                fact = (nid, e.source, s.token(e.patient_id), s.token(e.message_id), e.type,
                        utc_text_of(e.occurred_at), utc_text_of(e.recorded_at), s.seal(e.data))
            elif isinstance(e, Patient.Recorded):
                fact = (nid, e.source, s.token(e.patient_id), s.token(e.message_id), e.type,
                        utc_text(e.occurred_at), utc_text(e.timestamp), s.seal(dumps(e.data)))
            else:
                if isinstance(e, SignalReview.Action):
                    actions.append((nid, e.signal_id, ACTION_NAME[type(e)], STATUS_AFTER[type(e)], e.by,
                                    s.seal(e.note), getattr(e, "reason", None), utc_text(e.timestamp)))
                continue
            facts.append(fact)
            dirty[(fact[1], fact[2])] = fact[6]
            if fact[4] in EXPOSURE_TYPES:
                exposure.append((fact[1], fact[2]))
        return facts, dirty, actions, exposure

    def write(self, cursor: Any, db: ReadDB, events: Sequence[tuple[int, Any]]) -> None:
        self.write_rows(cursor, db, self.rows(db, events))

    def write_rows(self, cursor: Any, db: ReadDB, rows: FactRows) -> None:
        facts, dirty, actions, exposure = rows
        if self._exposure_dirty is not None:
            self._exposure_dirty.update(exposure)
        p = db.placeholder
        if facts:
            db.insert(cursor, "signal_facts", facts)
            least, most = ("MIN", "MAX") if db.kind == "sqlite" else ("LEAST", "GREATEST")
            cursor.execute(db.sql("INSERT INTO {t}signal_span VALUES ({p},{p},{p}) ON CONFLICT (writer) DO UPDATE"
                                  f" SET first = {least}({{t}}signal_span.first, excluded.first),"
                                  f" last = {most}({{t}}signal_span.last, excluded.last)"),
                           (self._writer, min(f[5] for f in facts), max(f[5] for f in facts)))
            if self.defer:  # one mark for the backlog, kept from its first page: marking each page's patients
                # cost as much as writing the facts, and finish would find them all again anyway
                cursor.execute(db.sql("INSERT INTO {t}signal_backlog VALUES ({p},{p}) ON CONFLICT (writer)"
                                      " DO NOTHING"), (self._writer, facts[0][0]))
            else:
                upsert = ("INSERT INTO {t}signal_dirty VALUES ({p},{p},{p}) ON CONFLICT (source, patient_id)"
                          " DO UPDATE SET recorded_at = excluded.recorded_at")
                cursor.executemany(db.sql(upsert), [(s, pid, at) for (s, pid), at in dirty.items()])
        if actions:
            cursor.executemany(db.sql(f"INSERT INTO {{t}}signal_actions VALUES ({','.join([p] * 8)})"), actions)
            for _nid, signal_id, _action, status, _by, _note, _reason, at in actions:
                cursor.execute(db.sql("UPDATE {t}signals SET status = {p}, updated_at = {p} WHERE id = {p}"),
                               (status, at, signal_id))
        if not self.defer:
            self.finish(cursor, db, parallel=False)  # this page's facts are not committed yet

    @property
    def prepared(self) -> bool:
        """Whether ``prepare`` has nothing to do."""
        return self._index_checked

    def prepare(self, cursor: Any, db: ReadDB) -> None:
        """The facts index, if missing, once a process: committed before the evaluation, whose worker
        processes read the facts over connections of their own."""
        if not self._index_checked:
            if db.kind == "sqlite" or not self._facts_index_exists(cursor, db):  # made with the table there:
                cursor.execute(db.sql(FACTS_INDEX))  # even IF NOT EXISTS locks the table, waiting for writers
            self._index_checked = True

    @staticmethod
    def _facts_index_exists(cursor: Any, db: ReadDB) -> bool:
        cursor.execute("SELECT to_regclass(%s)", (f'"{db.store.schema}".signal_facts_patient',))
        return db.fetch(cursor)[0][0] is not None

    def finish(self, cursor: Any, db: ReadDB, parallel: bool = True) -> bool:
        """Evaluate every touched patient again and write their signals, then the registry-wide ones
        (``parallel``: a large backlog in worker processes, which see only committed facts). Whether it
        wrote any (``View.finish`` moves the revision then)."""
        checked = self._liver_checked
        try:
            return self._finish(cursor, db, parallel)
        except BaseException:  # its transaction is undone: what the liver check marked too, so check again
            self._liver_checked = checked
            raise

    def _finish(self, cursor: Any, db: ReadDB, parallel: bool) -> bool:
        self.parallel = parallel
        self._segment_patients = None
        self.prepare(cursor, db)
        noted = self.live.ask_settings(cursor, db, None if self.partition is None else self._writer)
        dirty, since = self._marked(cursor, db)  # on PostgreSQL the settings come back with the marks
        if since is not None:  # the backlog's patients are found below (at once when all are to be evaluated)
            cursor.execute(db.sql("DELETE FROM {t}signal_backlog WHERE writer = {p}"), (self._writer,))
        if self._stale(cursor, db, since, noted):  # every patient (of this segment) is evaluated again: listed from
            self._exposure_dirty = None  # the facts, not marked (the marks go at the end of this transaction)
            dirty = self._everyone(cursor, db)
        elif since is not None:
            dirty = self._with_backlog(cursor, db, dirty, since)
        if not dirty and not self.live.pending:
            self._exposure_dirty = set()  # none left by an earlier process either
            return False  # nothing to evaluate: nothing written (but a spent backlog mark's removal)
        shares = self._evaluate(cursor, db, dirty)
        if self.partition is None:
            cursor.execute(db.sql("DELETE FROM {t}signal_dirty"))
        else:
            cursor.executemany(db.sql("DELETE FROM {t}signal_dirty WHERE source = {p} AND patient_id = {p}"),
                               [(s, pid) for s, pid, _ in dirty])
        self._exposure_dirty = set()
        if shares and self.partition is not None and db.kind == "postgresql":
            # the registry's totals and its screen: one segment's worker at a time (the others wait here,
            # after their patients' evaluation), so each screen sees every total committed before it
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('safety-monitor/detection'))")
        keys = list(shares)
        for start in range(0, len(keys), 500):
            self.live.update(cursor, db, {k: shares[k] for k in keys[start:start + 500]})
        registry = self.live.signals(cursor, db)
        if registry is not None:
            raised, covered = registry
            cursor.execute(db.sql("SELECT id, status, raised_at, level, kind, details FROM {t}signals"
                                  " WHERE source = {p}"), (REGISTRY,))
            found = [r for r in db.fetch(cursor)
                     if covers(covered, r[4], json.loads(db.sealer.unseal(r[5]) or "null"))]
            at = max((row[2] for row in dirty), default=None) or utc_text(datetime.now(UTC))
            version = {"disproportionality": self.live.rules.version, "sequential": self.live.plan_digest[:16]}
            self._store(cursor, db, [(sig, "", at, version[sig.kind]) for sig in raised], found)
        return True

    @property
    def _writer(self) -> str:
        """The name this instance's rows go by where each writer keeps its own (all, or its segment)."""
        return "all" if self.partition is None else f"segment {self.partition[0]}"

    def _marked(self, cursor: Any, db: ReadDB) -> tuple[list[tuple[Any, ...]], int | None]:
        """The patients marked one by one (of this segment), each with the time their last fact was
        recorded, and this writer's backlog mark (``write_rows``) if it has one: one query on the live path,
        where there is rarely a mark."""
        cursor.execute(db.sql("SELECT source, patient_id, recorded_at FROM {t}signal_dirty UNION ALL"
                              " SELECT NULL, writer, CAST(since AS TEXT) FROM {t}signal_backlog"))
        rows = db.fetch(cursor)
        since = [int(row[2]) for row in rows if row[0] is None and row[1] == self._writer]
        return self._of_partition(db, [row for row in rows if row[0] is not None]), (since[0] if since else None)

    def _with_backlog(self, cursor: Any, db: ReadDB, marked: list[tuple[Any, ...]],
                      since: int) -> list[tuple[Any, ...]]:
        """The marked patients and those (of this segment) with facts from notification ``since`` on."""
        self._grouping(cursor, db)
        cursor.execute(db.sql("SELECT source, patient_id, MAX(recorded_at) FROM {t}signal_facts"
                              " WHERE notification_id >= {p} GROUP BY source, patient_id"), (since,))
        latest = {(source, pid): at for source, pid, at in marked}
        for source, pid, at in self._of_partition(db, db.fetch(cursor)):
            latest[(source, pid)] = max(at, latest.get((source, pid), at))
        return [(source, pid, at) for (source, pid), at in latest.items()]

    def _stale(self, cursor: Any, db: ReadDB, since: int | None, noted: Callable[[], list[tuple[Any, ...]]]) -> bool:
        """Whether every patient (of this segment) is to be evaluated again: the detection settings
        changed (``noted``: those stored, asked), or evaluated patients lack their liver view (``since``:
        the backlog mark)."""
        if self.partition is None:
            return self.live.stale(cursor, db, noted=noted) or self._liver_stale(cursor, db, since)
        return (self.live.stale(cursor, db, self._writer,
                                lambda: [(s, pid) for s, pid, _ in self._everyone(cursor, db)], noted)
                or self._liver_stale(cursor, db, since))

    def _everyone(self, cursor: Any, db: ReadDB) -> list[tuple[Any, ...]]:
        """Every patient of this segment, with the time their last fact was recorded (looked up once per
        ``finish``: forgetting their shares and evaluating them both need it)."""
        if self._segment_patients is None:
            self._grouping(cursor, db)
            cursor.execute(db.sql("SELECT source, patient_id, MAX(recorded_at) FROM {t}signal_facts"
                                  " GROUP BY source, patient_id"))
            self._segment_patients = self._of_partition(db, db.fetch(cursor))
        return self._segment_patients

    @staticmethod
    def _grouping(cursor: Any, db: ReadDB) -> None:
        """Memory for grouping up to every fact by patient, for the rest of this transaction: PostgreSQL
        sorted a million facts on disk with its default (0.9 s), and hashes them with this (0.25 s)."""
        if db.kind == "postgresql":
            cursor.execute("SET LOCAL work_mem = '64MB'")

    def _liver_stale(self, cursor: Any, db: ReadDB, since: int | None) -> bool:
        """Whether evaluated patients (of this segment) lack their liver view, or have one made under other
        liver rules (a store from before the views, or a rules change): asked once per process. Patients
        waiting in ``signal_dirty``, or with facts from the backlog mark ``since`` on, get theirs when they
        are evaluated."""
        if self._liver_checked:
            return False
        self._liver_checked = True
        backlog = ("" if since is None else " AND NOT EXISTS (SELECT 1 FROM {t}signal_facts g WHERE g.source ="
                   " f.source AND g.patient_id = f.patient_id AND g.notification_id >= {p})")
        cursor.execute(db.sql("SELECT source, patient_id FROM (SELECT DISTINCT source, patient_id FROM"
                              " {t}signal_facts) f WHERE NOT EXISTS (SELECT 1 FROM"
                              f" {{t}}{LIVER_TABLE} v WHERE v.source = f.source AND v.patient_id = f.patient_id"
                              " AND v.rules = {p}) AND NOT EXISTS (SELECT 1 FROM {t}signal_dirty d"
                              " WHERE d.source = f.source AND d.patient_id = f.patient_id)" + backlog
                              + (" LIMIT 1" if self.partition is None else "")),
                       (rules_key(self.liver), *([] if since is None else [since])))
        return bool(self._of_partition(db, db.fetch(cursor)))

    def _of_partition(self, db: ReadDB, dirty: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The dirty patients of this instance's segment (all of them when it projects every segment)."""
        if self.partition is None:
            return dirty
        k, count = self.partition
        return [row for row in dirty if segment_of(patient_uuid(row[0], db.sealer.untoken(row[1])), count) == k]

    def _evaluate(self, cursor: Any, db: ReadDB, dirty: Sequence[tuple[Any, ...]]) -> dict[tuple[str, str], Any]:
        """Evaluate and store these patients' signals and liver views, a chunk at a time (in worker processes
        for a large backlog read from committed facts: ``parallel``); their detection shares, where they
        changed."""
        # a segment's worker cannot know which of its dirty patients another process marked (a new plan
        # marks them all): it derives every evaluated patient's share
        all_shares = self._exposure_dirty is None or self.partition is not None
        chunks = [dirty[start:start + evaluation.CHUNK] for start in range(0, len(dirty), evaluation.CHUNK)]
        jobs = [([(s, pid) for s, pid, _ in chunk],
                 None if all_shares else {(s, pid) for s, pid, _ in chunk} & (self._exposure_dirty or set()))
                for chunk in chunks]
        processes = forked.workers() if self.parallel and self.partition is None else 0

        def stored(chunk: Sequence[tuple[Any, ...]]) -> Callable[[], list[tuple[Any, ...]]]:
            """The chunk's signals stored before, asked (``projections.db.asked``)."""
            where, params = db.patients_in([(s, pid) for s, pid, _ in chunk])
            return asked(cursor, db.sql("SELECT id, status, raised_at, level, kind, details FROM {t}signals WHERE "
                                        + where), params)

        results: Iterable[tuple[Callable[[], list[tuple[Any, ...]]] | None, list[Evaluated]]]
        if processes and len(dirty) >= evaluation.PARALLEL_FROM:
            results = ((None, ev) for ev in evaluation.in_workers(db, self.config, self.liver, jobs, processes))
        else:
            def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                cursor.execute(sql, params)
                return db.fetch(cursor)

            # the stored signals asked before the facts are read: on PostgreSQL both come back together
            results = ((stored(chunk), evaluation.evaluate_chunk(fetch, db, keys, self.config, self.liver, wanted))
                       for chunk, (keys, wanted) in zip(chunks, jobs, strict=True))
        shares: dict[tuple[str, str], Any] = {}
        for chunk, (asked_found, evaluated) in zip(chunks, results, strict=True):
            recorded = {(s, pid): at for s, pid, at in chunk}
            found = (asked_found or stored(chunk))()
            self._store(cursor, db, [(sig, key[1], recorded[key], self.config.version)
                                     for key, signals, _, _ in evaluated for sig in signals], found)
            cursor.executemany(db.sql(LIVER_UPSERT), [view for _, _, view, _ in evaluated])
            shares.update((key, share) for key, _, _, share in evaluated if share is not None)
        return shares

    def _store(self, cursor: Any, db: ReadDB, produced: Sequence[tuple[Signal, str, str, str]],
               found: Sequence[tuple[Any, ...]]) -> None:
        """Write signals (each with its patient token, the time its evidence was recorded and the rules'
        version) over those ``found`` stored before: an open one not raised again goes, a status people
        gave is kept, and each new signal or rise to warning or alert is noted for notifications."""
        p, sl = db.placeholder, db.sealer
        existing = {r[0]: (r[1], r[2]) for r in found}
        levels = {r[0]: r[3] for r in found}
        rows: list[tuple[Any, ...]] = []
        raised: list[tuple[str, str, str]] = []
        for sig, patient_token, recorded_at, version in produced:
            status, raised_at = existing.get(sig.id, ("open", recorded_at))
            if rises(levels.get(sig.id), sig.level):
                raised.append((sig.id, sig.level, recorded_at))
            rows.append((
                sig.id, sig.source, patient_token, sig.kind, sig.level, sig.priority, status,
                utc_text(sig.occurred_at), raised_at, recorded_at, sl.seal(json.dumps(sig.evidence)),
                sl.seal(json.dumps(sig.context)), sl.seal(json.dumps(sig.criteria_2016)),
                sl.seal(json.dumps(with_priority(sig), default=str)), version,
            ))
        keep = {row[0] for row in rows}
        gone = [sid for sid, (status, _) in existing.items() if sid not in keep and status == "open"]
        for sid in gone:  # no longer supported by the data and nobody acted on it
            cursor.execute(db.sql("DELETE FROM {t}signals WHERE id = {p}"), (sid,))
        if rows:
            ids = [row[0] for row in rows]
            cursor.execute(db.sql("SELECT signal_id, status FROM {t}signal_actions WHERE signal_id IN ("
                                  + ",".join([p] * len(ids)) + ") ORDER BY notification_id"), ids)
            acted = {sid: status for sid, status in db.fetch(cursor)}
            rows = [(*row[:6], acted.get(row[0], row[6]), *row[7:]) for row in rows]
            cols = ", ".join(SIGNAL_COLUMNS)
            # the status is the workflow's: set from its actions when the row is made, then only by them
            updates = ", ".join(f"{c} = excluded.{c}" for c in SIGNAL_COLUMNS[1:] if c not in ("raised_at", "status"))
            cursor.executemany(
                db.sql(f"INSERT INTO {{t}}signals ({cols}) VALUES ({','.join([p] * len(SIGNAL_COLUMNS))})"
                       f" ON CONFLICT (id) DO UPDATE SET {updates}"),
                rows,
            )
        if raised:
            cursor.executemany(db.sql("INSERT INTO {t}signal_raises (signal_id, level, raised_at) VALUES ({p},{p},{p})"
                                      " ON CONFLICT (signal_id, level) DO NOTHING"), raised)
