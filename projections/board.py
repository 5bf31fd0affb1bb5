"""Read-only access to every read model, as the board needs it (one object per store)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from events.recorders import FEED_FAULTS_QUERY, feed_faults_from
from events.store import Store
from projections.audit import AuditModel, audit_log
from projections.db import ReadDB, loads
from projections.delivery import Deliveries
from projections.dsmb import Report, ReportOptions, ReportSources, build_report, render_html
from projections.dsmb.content import rules_in_force
from projections.efficacy import EfficacyModel, efficacy
from projections.expedited import ExpeditedModel, clocked, known_cases
from projections.exposure import ExposureModel, ae_cases, ae_tables
from projections.exposure import Settings as TableSettings
from projections.facts import parse_time
from projections.feed import dead_letters_waiting, feed_counts, quarantine
from projections.incidence import COLUMNS as INCIDENCE_COLUMNS
from projections.incidence import IncidenceModel, incidence, open_row
from projections.liver import edish_view, lab_shifts, liver_panel
from projections.runner import read_model_dbs, read_model_states
from projections.signal_queries import query_signals, signal_actions
from projections.signals import SignalsModel, load_config
from projections.transfers import TransfersModel, transfer_changes
from projections.view import Stop, revision_in, stop_in
from safety.expedited import Case
from safety.incidence import Settings
from safety.liver import load_liver_config


def lab_result_text(d: dict[str, Any]) -> str:
    """A result as read: ``89 10^9/L``, or the text of a result that is not a number."""
    shown = f"{d['value']:g}" if "value" in d else str(d.get("result_text", ""))
    return f"{shown} {d.get('unit', '')}".strip()


#: the source of the demo study's messages (scripts/build_seed_study.py): its visits are reconstructed
DEMO_SOURCE = "umcu-msc-jia"


class BoardData:
    def __init__(self, store: Store):
        self.store = store
        self.ledger_db = ReadDB(store)
        # Plain connections per query: the board's process keeps this object for its whole life, so it
        # must hold no pool of its own (a View's is dropped here once its tables exist).
        self.dbs = read_model_dbs(store, (IncidenceModel(), SignalsModel(), AuditModel(), EfficacyModel(),
                                          TransfersModel(), ExpeditedModel(), ExposureModel()))
        self.incidence_db = self.dbs["incidence"]
        self.signals_db = self.dbs["signals"]
        self.audit_db = self.dbs["audit"]
        self.efficacy_db = self.dbs["efficacy"]
        self.liver = load_liver_config()
        self.mas_version = load_config().version  # read once: every page states it
        self.delivery = Deliveries(store)  # its table made once, not on every live refresh

    def clinical_range(self) -> tuple[date, date] | None:
        """The first and last clinical day of the store's events (a data-cut picker spans them)."""
        rows = self.signals_db.query("SELECT MIN(first), MAX(last) FROM {t}signal_span")
        if not rows or rows[0][0] is None:  # projected before the span was kept
            rows = self.signals_db.query("SELECT MIN(occurred_at), MAX(occurred_at) FROM {t}signal_facts")
        if not rows or rows[0][0] is None:
            return None
        return parse_time(str(rows[0][0]).replace("Z", "+00:00")).date(), parse_time(
            str(rows[0][1]).replace("Z", "+00:00")).date()

    def holds_demo_study(self) -> bool:
        """Whether the store holds the demo study, whose visit assessments are reconstructed."""
        return DEMO_SOURCE in self.sources()

    def rules_versions(self) -> list[str]:
        """The rules in force: MAS trend rules and liver rules (their files' ``version``)."""
        return [self.mas_version, self.liver.version]

    def interventions(self) -> list[str]:
        """The names of the interventions the store holds (an anchor is chosen among them)."""
        rows = self.incidence_db.query("SELECT DISTINCT name FROM {t}incidence_facts WHERE type = {p}"
                                       " AND name IS NOT NULL", ["intervention"])
        return sorted({str(self.incidence_db.sealer.unseal(r[0])) for r in rows})  # sealed names differ by nonce

    def stops(self, *names: str) -> list[Stop]:
        """The read models (of ``names``, or all) that stopped on an event they could not apply."""
        return [stop for name, db in self.dbs.items() if (not names or name in names)
                and (stop := stop_in(db, name)) is not None]

    def ledger_position(self) -> int:
        table = "stored_events" if self.store.kind == "sqlite" else '{t}"ledger_events"'
        column = "rowid" if self.store.kind == "sqlite" else "notification_id"
        return int(self.ledger_db.query(f"SELECT MAX({column}) FROM {table}")[0][0] or 0)

    def read_models(self) -> pd.DataFrame:
        """Each read model's position, how far behind the ledger, and where and why it stopped."""
        states = read_model_states(self.dbs, self.ledger_position())
        rows = [(s["name"], s["position"], s["behind"], "stopped" if s["stopped"] else "running",
                 s["stopped"] and s["stopped"]["notification_id"], s["stopped"] and s["stopped"]["reason"])
                for s in states]
        return pd.DataFrame(rows, columns=["read model", "position", "behind", "state", "stopped at event", "reason"])

    def segments(self) -> pd.DataFrame:
        """On a partitioned PostgreSQL store, each segment's worker and how far each read model is behind in
        it (empty otherwise)."""
        from projections.partitions import status

        rows = status(self.ledger_db, list(self.dbs), "Ledger", self.ledger_position())
        return pd.DataFrame([{"segment": r["segment"], "worker": r["owner"] or "(unclaimed)",
                              "lease until": r["lease_until"], **{f"{m} behind": n for m, n in r["behind"].items()}}
                             for r in rows])

    def efficacy(self, anchor: str = "MSC infusion", at_week: int = 8, cut_off_set: str = "ACR 2021") -> dict[str, Any]:
        return efficacy(self.efficacy_db, anchor=anchor, at_week=at_week, cut_off_set=cut_off_set)

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        return audit_log(self.audit_db, limit)

    def signals(self, **filters: Any) -> list[dict[str, Any]]:
        """The signals, each with its last action (who, when, the note and reason) or None."""
        rows = query_signals(self.signals_db, **filters)
        last = {a["signal_id"]: a for a in signal_actions(self.signals_db, filters.get("signal_id"))}
        for r in rows:
            r["last_action"] = last.get(r["id"])
        return rows

    def actions(self, signal_id: str | None = None) -> list[dict[str, Any]]:
        """The workflow's audit trail, each action naming its signal's patient and kind."""
        named = {s["id"]: s for s in query_signals(self.signals_db, signal_id=signal_id)}
        out = []
        for a in signal_actions(self.signals_db, signal_id):
            s = named.get(a["signal_id"], {})
            out.append({"at": a["at"], "by_user": a["by_user"], "action": a["action"], "status": a["status"],
                        "patient": f"{s.get('patient_id', '?')} ({s.get('source', '?')})", "kind": s.get("kind"),
                        "signal_id": a["signal_id"], "reason": a["reason"], "note": a["note"]})
        return out

    def incidence(self, settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
        return incidence(self.incidence_db, settings, as_of)

    def ae_table(self, settings: TableSettings, as_of: datetime | None = None) -> dict[str, Any]:
        """Treatment-emergent adverse events by arm, drug or drug class (``projections.exposure``)."""
        return ae_tables(self.dbs["exposure"], settings, as_of)

    def ae_cases(self, settings: TableSettings, group: str, as_of: datetime | None = None,
                 **row: str | None) -> pd.DataFrame:
        """The drill-down of one cell: the group's subjects and their emergent events of that row."""
        rows = ae_cases(self.dbs["exposure"], settings, group, as_of=as_of, **row)
        return pd.DataFrame(rows, columns=["source", "patient_id", "message_id", "onset", "soc", "term",
                                           "verbatim_term", "serious", "severe", "related",
                                           "leading_to_discontinuation", "fatal", "days_on_exposure"])

    def disproportionality(self, level: str = "pt", lag_days: int = 30, min_count: int = 1,
                           data_cut: datetime | None = None) -> dict[str, Any]:
        from projections.detection import disproportionality

        return disproportionality(self.dbs["exposure"], level=level, lag_days=lag_days, min_count=min_count,
                                  data_cut=data_cut)

    def pair_cases(self, drug: str, term: str, level: str = "pt", lag_days: int = 30,
                   data_cut: datetime | None = None) -> pd.DataFrame:
        from projections.detection import pair_cases

        return pd.DataFrame(pair_cases(self.dbs["exposure"], drug, term, level=level, lag_days=lag_days,
                                       data_cut=data_cut))

    def surveillance(self, plan_text: str, data_cut: datetime | None = None) -> dict[str, Any]:
        from projections.detection import surveillance

        return surveillance(self.dbs["exposure"], plan_text, data_cut=data_cut)

    def exposure_revision(self) -> tuple[int, ...]:
        """The exposure read model's revision (``projections.view.revision_in``)."""
        return revision_in(self.dbs["exposure"], "exposure")

    def dsmb_report(self, options: ReportOptions) -> tuple[Report, str]:
        """The DSMB report for these options, and its HTML (``projections.dsmb``)."""
        from projections.detection import detection_rules

        rules = rules_in_force(self.mas_version, self.liver.version, detection_rules().version)
        src = ReportSources(self.incidence_db, self.dbs["exposure"], self.signals_db, self.efficacy_db,
                            self.dbs["transfers"], self.liver, rules)
        report = build_report(src, options, datetime.now(UTC))
        return report, render_html(report)

    def edish(self, by: str = "arm", after_first_exposure: bool = True, arm_basis: str = "actual") -> dict[str, Any]:
        """Each patient's liver peaks as ULN multiples, quadrant and potential Hy's law (``projections.liver``)."""
        return edish_view(self.signals_db, self.liver, by=by, after_first_exposure=after_first_exposure,
                          arm_basis=arm_basis)

    def lab_shifts(self, by: str = "arm", arm_basis: str = "actual") -> dict[str, Any]:
        return lab_shifts(self.signals_db, by=by, arm_basis=arm_basis)

    def liver_panel(self, source: str, patient_id: str) -> pd.DataFrame:
        rows = liver_panel(self.signals_db, self.liver, source, patient_id)
        return pd.DataFrame(rows, columns=["at", "test", "xuln", "value", "unit", "uln", "uln_source"])

    def expedited(self, rsi: dict[str, frozenset[str]], as_of: datetime | None = None,
                  known: Sequence[Case] | None = None) -> list[dict[str, Any]]:
        """The SUSAR cases with their clock read now (``projections.expedited``); ``known``: the cases as the
        board kept them (``expedited_known``) while the read model has not changed."""
        cases = known if known is not None else self.expedited_known(rsi, as_of)
        return clocked(cases, as_of or datetime.now(UTC))

    def expedited_known(self, rsi: dict[str, frozenset[str]], as_of: datetime | None = None) -> list[Case]:
        return known_cases(self.dbs["expedited"], rsi, as_of)

    def expedited_revision(self) -> tuple[int, ...]:
        """The expedited read model's revision: its cases change only when this moves."""
        return revision_in(self.dbs["expedited"], "expedited")

    def signals_revision(self) -> tuple[int, ...]:
        """The signals read model's revision: its liver views change only when it moves."""
        return revision_in(self.signals_db, "signals")

    def deliveries(self) -> list[dict[str, Any]]:
        """Every notification delivery (per signal, level and channel) with its status and last error."""
        return self.delivery.rows()

    def transfers(self) -> pd.DataFrame:
        """Per SDTM transfer and domain: the records it added, corrected and retracted."""
        rows = transfer_changes(self.dbs["transfers"])
        frame = pd.DataFrame(rows, columns=["source", "study", "transfer", "domain", "change", "records",
                                            "first_recorded_at", "last_recorded_at"])
        if frame.empty:
            return frame
        wide = frame.pivot_table(index=["source", "study", "transfer", "domain"], columns="change", values="records",
                                 aggfunc="sum", fill_value=0).reset_index()
        for change in ("new", "corrected", "retracted"):
            if change not in wide:
                wide[change] = 0
        when = frame.groupby(["source", "study", "transfer"])["first_recorded_at"].min().rename("recorded_at")
        wide = wide.join(when, on=["source", "study", "transfer"]).sort_values(["recorded_at", "transfer", "domain"])
        return wide[["source", "study", "transfer", "recorded_at", "domain", "new", "corrected", "retracted"]]

    def feed_counts(self) -> pd.DataFrame:
        return feed_counts(self.ledger_db)

    def quarantine(self, limit: int = 500) -> pd.DataFrame:
        return quarantine(self.ledger_db, limit)

    def volume(self) -> pd.DataFrame:
        """Messages recorded per source and day (from the signals read model, which sees most types)."""
        rows = self.signals_db.query("SELECT source, substr(recorded_at, 1, 10) AS day, COUNT(*) FROM"
                                     " {t}signal_facts GROUP BY source, substr(recorded_at, 1, 10) ORDER BY 2")
        return pd.DataFrame(rows, columns=["source", "day", "messages"])

    def _kafka_positions(self) -> list[tuple[str, int]]:
        table = "tracking" if self.store.kind == "sqlite" else '{t}"ledger_tracking"'
        return [(name, int(offset)) for name, offset in self.ledger_db.query(
            f"SELECT application_name, notification_id FROM {table} WHERE application_name LIKE {{p}}", ["kafka:%"])]

    def feed_faults(self) -> list[dict[str, Any]]:
        """Record batches a consumer stopped at (it could not decode them), newest first, with ``open``."""
        if not self.ledger_db.table_exists("ledger_feed_faults"):
            return []
        rows = self.ledger_db.query(FEED_FAULTS_QUERY.replace("{s}", "{t}"))
        return feed_faults_from(rows, dict(self._kafka_positions()))

    def partition_offsets(self) -> pd.DataFrame:
        """The Kafka offset stored in the ledger for each topic partition consumed."""
        rows = self._kafka_positions()
        waiting = self.dead_letters_waiting()
        out = []
        for name, offset in rows:
            _, topic, topic_id, partition = name.split(":", 3)
            out.append((topic, int(partition), offset, topic_id, waiting.get(topic, 0)))
        return pd.DataFrame(out, columns=["topic", "partition", "stored offset", "topic id",
                                          "dead letters waiting (topic)"])

    def dead_letters_waiting(self) -> dict[str, int]:
        return dead_letters_waiting(self.ledger_db)

    def quarantined_raw(self, item_id: int) -> str:
        rows = self.ledger_db.query("SELECT raw FROM {t}ledger_quarantine WHERE id = {p}", [item_id])
        raw = self.ledger_db.sealer.unseal_bytes(bytes(rows[0][0])) if rows else b""
        return raw.decode("utf-8", errors="replace")

    def incidence_revision(self) -> tuple[int, ...]:
        """The incidence read model's revision (``projections.view.revision_in``)."""
        return revision_in(self.incidence_db, "incidence")

    def sources(self) -> list[str]:
        return [r[0] for r in self.ledger_db.query("SELECT source FROM {t}ledger_feed_counts ORDER BY source")]

    def patients(self) -> list[tuple[str, str]]:
        rows = self.signals_db.query("SELECT DISTINCT source, patient_id FROM {t}signal_facts")
        rows += self.incidence_db.query("SELECT DISTINCT source, patient_id FROM {t}incidence_facts")
        untoken = self.signals_db.sealer.untoken
        return sorted({(s, untoken(p)) for s, p in rows})

    def patient_events(self, source: str, patient_id: str, as_of: datetime | None = None) -> pd.DataFrame:
        """Every fact of the patient (labs and findings too), with amendment marks."""
        cols = ["notification_id", "message_id", "type", "occurred_at", "recorded_at", "summary", "target",
                "name", "action"]
        rows: list[tuple[Any, ...]] = []
        sql = ("SELECT " + ", ".join(INCIDENCE_COLUMNS) + " FROM {t}incidence_facts"
               " WHERE source = {p} AND patient_id = {p} ORDER BY notification_id")
        for r in self.incidence_db.query(sql, [source, self.incidence_db.sealer.token(patient_id)]):
            d = open_row(self.incidence_db, r)
            summary = " ".join(str(x) for x in (d["name"], d["action"], d["term"], d["severity"]) if x)
            if d["serious"]:
                summary += " (serious)"
            rows.append((d["notification_id"], d["message_id"], d["type"], d["occurred_at"], d["recorded_at"],
                         summary, d["target"], d["name"], d["action"]))
        sql = ("SELECT notification_id, message_id, type, occurred_at, recorded_at, data FROM {t}signal_facts"
               " WHERE source = {p} AND patient_id = {p} AND type IN ('lab_result', 'clinical_finding')")
        sl = self.signals_db.sealer
        for nid, mid, typ, at, rec, data in self.signals_db.query(sql, [source, sl.token(patient_id)]):
            mid, d = sl.untoken(mid), json.loads(sl.unseal(data) or "{}")
            summary = (f"{d['analyte']} {lab_result_text(d)}" if typ == "lab_result"
                       else ", ".join(f"{k}={v}" for k, v in d.items()))
            rows.append((nid, mid, typ, at, rec, summary, None, None, None))
        frame = pd.DataFrame(rows, columns=cols)
        if frame.empty:
            return frame.assign(retracted=[], corrected=[])
        for column in ("occurred_at", "recorded_at"):
            frame[column] = [parse_time(t) for t in frame[column]]
        if as_of is not None:
            frame = frame[frame["recorded_at"] <= as_of]
        retracted = set(frame.loc[frame["type"] == "retraction", "target"])
        corrected = set(frame.loc[frame["type"] == "correction", "target"])
        frame["retracted"] = frame["message_id"].isin(retracted)
        frame["corrected"] = frame["message_id"].isin(corrected)
        return frame.sort_values(["occurred_at", "notification_id"]).reset_index(drop=True)

    def patient_summary(self, source: str, patient_id: str) -> dict[str, Any]:
        """Who the patient is, for the page's header: sex, age (at enrolment, and now from the birth date),
        diagnosis, planned and actual arm, and the drugs started and not stopped (amendments applied)."""
        from safety.amendments import Amendments

        sl = self.signals_db.sealer
        sql = ("SELECT message_id, type, occurred_at, data FROM {t}signal_facts WHERE source = {p}"
               " AND patient_id = {p} ORDER BY notification_id")
        rows = [(sl.untoken(m), t, parse_time(str(at).replace("Z", "+00:00")), loads(sl.unseal(d) or "{}"))
                for m, t, at, d in self.signals_db.query(sql, [source, sl.token(patient_id)])]
        amended: Amendments[str] = Amendments()
        for _m, t, _at, d in rows:
            if amended.is_amendment(t):
                amended.note(t, d["target_message_id"], d.get("data"))
        enrolment: dict[str, Any] = {}
        drugs: dict[str, tuple[str, datetime]] = {}
        for m, t, at, d in sorted(rows, key=lambda r: r[2]):
            if not amended.counts(t, m):
                continue
            d = amended.data(m, d)
            if t == "enrolment":
                enrolment = {**d, "enrolled_on": at.date().isoformat()}
            elif t == "treatment" and d.get("action") in ("start", "change"):
                drugs[d["drug"]] = (str(d.get("dose") or ""), at)
            elif t == "treatment" and d.get("action") == "stop":
                drugs.pop(d["drug"], None)
        birth = enrolment.get("birth_date")
        age_now = None
        if birth:
            born = datetime.fromisoformat(str(birth).replace("Z", "+00:00")).date()
            today = date.today()
            age_now = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        return {
            "sex": enrolment.get("sex"), "age_at_enrolment": enrolment.get("age_years"), "age_now": age_now,
            "diagnosis": ", ".join(str(enrolment[k]) for k in ("condition", "diagnosis") if enrolment.get(k)) or None,
            "arm": enrolment.get("arm"), "actual_arm": enrolment.get("actual_arm"),
            "study": enrolment.get("study"), "enrolled_on": enrolment.get("enrolled_on"),
            "current_drugs": [{"drug": k, "dose": v[0], "since": v[1].date().isoformat()} for k, v in
                              sorted(drugs.items(), key=lambda kv: kv[1][1])],
        }

    def patient_labs(self, source: str, patient_id: str) -> pd.DataFrame:
        sql = ("SELECT message_id, occurred_at, data FROM {t}signal_facts WHERE source = {p}"
               " AND patient_id = {p} AND type = 'lab_result' ORDER BY occurred_at")
        rows = []
        sl = self.signals_db.sealer
        for mid, at, data in self.signals_db.query(sql, [source, sl.token(patient_id)]):
            mid, d = sl.untoken(mid), json.loads(sl.unseal(data) or "{}")
            if "value" not in d:  # a text result of a test outside the analyte table: in the timeline only
                continue
            rows.append((mid, parse_time(at), d["analyte"], d["value"], d.get("unit", ""), d.get("raw_value"),
                         d.get("raw_unit"), d.get("reference_low"), d.get("reference_high")))
        return pd.DataFrame(rows, columns=["message_id", "occurred_at", "analyte", "value", "unit", "raw_value",
                                           "raw_unit", "reference_low", "reference_high"])
