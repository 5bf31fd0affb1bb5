"""Signal detection kept up to date inside the signals read model (issue 26): each patient's share of the
drug-event pairs and of each planned pair's exposure, the registry's totals, and the registry-wide
``disproportionality`` and ``sequential`` signals they raise.

A share depends on the patient's own facts only (``safety.screening.subject_pairs``,
``safety.surveillance.pair_exposure``), so a new fact re-derives one patient's share, adds the difference
to the totals, and re-screens only when a share changed: a lab result costs one comparison, an adverse
event one screen of the totals. The signals equal those of a rebuild by construction.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from projections.db import asked
from safety.detection_signals import disproportionality_signal, sequential_signal
from safety.exposure import Subject, periods
from safety.mas import Signal
from safety.screening import DetectionRules, screen, subject_pairs
from safety.surveillance import PairExposure, PlannedPair, load_plan, pair_exposure, surveil_exposure

Key = tuple[str, str]  # (source, patient token)

TABLES = ("detection_pairs", "detection_totals", "detection_patients", "detection_spans", "detection_onsets",
          "detection_state")


class LiveDetection:
    """The detection part of the signals read model, under one screening rule set and one plan."""

    def __init__(self, rules: DetectionRules, plan_text: str | None = None):
        self.rules = rules
        self.plan_digest, self.plan = load_plan(plan_text) if plan_text else ("", [])
        #: what the stored shares were derived under; other settings make every share stale
        self.settings = json.dumps({"rules": [rules.level, rules.lag_days], "plan": self.plan_digest})
        self._pairs_changed = False
        self._plan_changed: set[str] = set()

    def create_statements(self, db: Any) -> list[str]:
        return [db.sql(s) for s in (
            "CREATE TABLE IF NOT EXISTS {t}detection_pairs (source TEXT NOT NULL, patient_id TEXT NOT NULL,"
            " drug TEXT NOT NULL, term TEXT NOT NULL, n INTEGER NOT NULL, last_onset TEXT NOT NULL,"
            " PRIMARY KEY (source, patient_id, drug, term))",
            "CREATE INDEX IF NOT EXISTS detection_pairs_pair ON {t}detection_pairs (drug, term)",
            "CREATE TABLE IF NOT EXISTS {t}detection_totals (drug TEXT NOT NULL, term TEXT NOT NULL,"
            " a INTEGER NOT NULL, PRIMARY KEY (drug, term))",
            "CREATE TABLE IF NOT EXISTS {t}detection_patients (source TEXT NOT NULL, patient_id TEXT NOT NULL,"
            " last_day TEXT NOT NULL, PRIMARY KEY (source, patient_id))",
            "CREATE TABLE IF NOT EXISTS {t}detection_spans (pair TEXT NOT NULL, source TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, first TEXT NOT NULL, last TEXT)",
            "CREATE INDEX IF NOT EXISTS detection_spans_pair ON {t}detection_spans (pair)",
            "CREATE INDEX IF NOT EXISTS detection_spans_patient ON {t}detection_spans (source, patient_id)",
            "CREATE TABLE IF NOT EXISTS {t}detection_onsets (pair TEXT NOT NULL, source TEXT NOT NULL,"
            " patient_id TEXT NOT NULL, day TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS detection_onsets_pair ON {t}detection_onsets (pair)",
            "CREATE INDEX IF NOT EXISTS detection_onsets_patient ON {t}detection_onsets (source, patient_id)",
            "CREATE TABLE IF NOT EXISTS {t}detection_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )]

    @staticmethod
    def _settings_key(writer: str | None) -> str:
        return "settings" if writer is None else f"settings/{writer}"

    def ask_settings(self, cursor: Any, db: Any, writer: str | None = None) -> Callable[[], list[tuple[Any, ...]]]:
        """The settings noted for ``writer``, asked now and read by ``stale`` (``projections.db.asked``)."""
        return asked(cursor, db.sql("SELECT key, value FROM {t}detection_state WHERE key IN ('settings', {p})"),
                     (self._settings_key(writer),))

    def stale(self, cursor: Any, db: Any, writer: str | None = None,
              patients: Callable[[], Sequence[Key]] | None = None,
              noted: Callable[[], list[tuple[Any, ...]]] | None = None) -> bool:
        """True when the shares were derived under other settings (a new plan or live level or lag, or
        none: a read model from before detection): the caller then derives the share of every patient
        again, or of every one of ``patients`` for one segment's ``writer``, whose shares are forgotten
        here. The new settings are noted, for the segment alone: the workers of the other segments note
        theirs, so no two transactions touch one patient's rows (a global note and mark deadlocked them)."""
        key = self._settings_key(writer)
        settings = dict((noted or self.ask_settings(cursor, db, writer))())
        if settings.get(key, settings.get("settings")) == self.settings:  # a segment goes on from a single process
            return False
        cursor.execute(db.sql("DELETE FROM {t}detection_state WHERE key = {p}"), (key,))
        cursor.execute(db.sql("INSERT INTO {t}detection_state VALUES ({p}, {p})"), (key, self.settings))
        self._pairs_changed = True
        self._plan_changed = {p.name for p in self.plan} | {"*"}  # "*": pairs no longer planned go too
        for table in ("detection_spans", "detection_onsets"):
            if patients is None:
                cursor.execute(db.sql(f"DELETE FROM {{t}}{table}"))
            else:
                cursor.executemany(db.sql(f"DELETE FROM {{t}}{table} WHERE source = {{p}} AND patient_id = {{p}}"),
                                   list(patients()))
        return True

    def update(self, cursor: Any, db: Any, shares: Mapping[Key, tuple[Subject | None, date | None]]) -> None:
        """Derive the shares of these patients again (``None``: no exposure facts left) and note which
        totals changed."""
        if not shares:
            return
        sl = db.sealer
        where, params = db.patients_in(list(shares))
        cursor.execute(db.sql("SELECT source, patient_id, drug, term, n, last_onset FROM {t}detection_pairs WHERE "
                              + where), params)
        old = {(s, pid, drug, term): (n, last) for s, pid, drug, term, n, last in db.fetch(cursor)}
        new: dict[tuple[str, str, str, str], tuple[int, str]] = {}
        days: list[tuple[str, str, str]] = []
        for (source, pid), (subject, last_day) in shares.items():
            if subject is None or last_day is None:
                continue
            days.append((source, pid, last_day.isoformat()))
            for (drug, term), (n, last) in subject_pairs(subject, date.max, self.rules.lag_days,
                                                         self.rules.level).items():
                new[(source, pid, sl.token(drug), sl.token(term))] = (n, last.isoformat())
        if old != new:
            self._pairs_changed = True
            delta: Counter[tuple[str, str]] = Counter()
            for key, (n, _) in new.items():
                delta[key[2:]] += n
            for key, (n, _) in old.items():
                delta[key[2:]] -= n
            cursor.execute(db.sql("DELETE FROM {t}detection_pairs WHERE " + where), params)
            db.insert(cursor, "detection_pairs", [(*k, n, last) for k, (n, last) in new.items()])
            cursor.executemany(db.sql("INSERT INTO {t}detection_totals AS totals VALUES ({p},{p},{p})"
                                      " ON CONFLICT (drug, term) DO UPDATE SET a = totals.a + excluded.a"),
                               [(*k, d) for k, d in delta.items() if d])
            cursor.execute(db.sql("DELETE FROM {t}detection_totals WHERE a = 0"))
        cursor.execute(db.sql("DELETE FROM {t}detection_patients WHERE " + where), params)
        db.insert(cursor, "detection_patients", days)
        if self.plan:
            self._update_plan(cursor, db, shares, where, params)

    def _update_plan(self, cursor: Any, db: Any, shares: Mapping[Key, tuple[Subject | None, date | None]],
                     where: str, params: list[Any]) -> None:
        p = db.placeholder
        old: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
        cursor.execute(db.sql("SELECT pair, source, patient_id, first, last FROM {t}detection_spans WHERE " + where),
                       params)
        for pair, *rest in db.fetch(cursor):
            old[pair].add(("span", *rest))
        cursor.execute(db.sql("SELECT pair, source, patient_id, day FROM {t}detection_onsets WHERE " + where), params)
        counted: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
        for pair, *rest in db.fetch(cursor):
            counted[pair][tuple(rest)] += 1
        spans: list[tuple[str, str, str, str, str | None]] = []
        onsets: list[tuple[str, str, str, str]] = []
        for (source, pid), (subject, _) in shares.items():
            if subject is None:
                continue
            courses: dict[str, list[Any]] = defaultdict(list)
            for period in periods(subject.treatments):
                courses[period.drug.casefold()].append(period)
            for pair in self.plan:
                if pair.drug.casefold() not in courses:
                    continue
                share = pair_exposure(subject, courses[pair.drug.casefold()], pair)
                spans += [(pair.name, source, pid, first.isoformat(), last.isoformat() if last else None)
                          for first, last in share.spans]
                onsets += [(pair.name, source, pid, day.isoformat()) for day in share.onsets]
        new: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
        for name, *rest in spans:
            new[name].add(("span", *rest))
        now_counted: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
        for name, *fields in onsets:
            now_counted[name][tuple(fields)] += 1
        changed = {name for name in set(old) | set(new) | set(counted) | set(now_counted)
                   if old.get(name, set()) != new.get(name, set()) or counted.get(name) != now_counted.get(name)}
        if not changed:
            return
        self._plan_changed |= changed
        for table in ("detection_spans", "detection_onsets"):
            cursor.execute(db.sql(f"DELETE FROM {{t}}{table} WHERE " + where), params)
        cursor.executemany(db.sql(f"INSERT INTO {{t}}detection_spans VALUES ({','.join([p] * 5)})"), spans)
        cursor.executemany(db.sql(f"INSERT INTO {{t}}detection_onsets VALUES ({','.join([p] * 4)})"), onsets)

    @property
    def pending(self) -> bool:
        """Whether the next ``signals`` call has anything to evaluate."""
        return bool(self._pairs_changed or self._plan_changed)

    def signals(self, cursor: Any, db: Any) -> tuple[list[Signal], set[str]] | None:
        """The registry-wide signals of what changed since the last call, and the ids of every signal the
        evaluation covered (an open one among them that is not raised again goes); None if nothing changed."""
        if not self._pairs_changed and not self._plan_changed:
            return None
        out: list[Signal] = []
        covered: set[str] = set()
        if self._pairs_changed:
            out += self._screened(cursor, db)
            covered.add("disproportionality")
        if self._plan_changed:
            results = self._surveilled(cursor, db, [p for p in self.plan if p.name in self._plan_changed])
            out += [s for s in (sequential_signal(r, self.plan_digest) for r in results) if s is not None]
            covered |= ({"sequential"} if "*" in self._plan_changed
                        else {f"sequential/{r['name']}" for r in results})
        self._pairs_changed, self._plan_changed = False, set()
        return out, covered

    def _screened(self, cursor: Any, db: Any) -> list[Signal]:
        sl, rules = db.sealer, self.rules
        cursor.execute(db.sql("SELECT drug, term, a FROM {t}detection_totals"))
        counts = Counter({(sl.untoken(drug), sl.untoken(term)): a for drug, term, a in db.fetch(cursor)})
        t = rules.thresholds[rules.method]
        answer = screen(counts, rules, min_count=int(t["min_count"]), fit=rules.method == "ebgm")
        out = []
        for pair in answer["pairs"]:
            if not pair["signal"][rules.method]:
                continue
            cursor.execute(db.sql("SELECT MAX(last_onset) FROM {t}detection_pairs WHERE drug = {p} AND term = {p}"),
                           (sl.token(pair["drug"]), sl.token(pair["term"])))
            latest = date.fromisoformat(db.fetch(cursor)[0][0])
            out.append(disproportionality_signal(pair, rules.method, t, rules.level, rules.lag_days, rules.version,
                                                 latest))
        return out

    def _surveilled(self, cursor: Any, db: Any, pairs: Iterable[PlannedPair]) -> list[dict[str, Any]]:
        found = stored_shares(cursor, db, [p.name for p in pairs])
        if found is None:
            return []
        horizon, shares = found
        return [surveil_exposure([shares[pair.name]], horizon, pair) for pair in pairs]


def stored_shares(cursor: Any, db: Any, names: Iterable[str]) -> tuple[date, dict[str, PairExposure]] | None:
    """The registry's end of observation and each named plan pair's shares, added up (None: no patient)."""
    cursor.execute(db.sql("SELECT MAX(last_day) FROM {t}detection_patients"))
    found = db.fetch(cursor)[0][0]
    if found is None:
        return None
    out = {}
    for name in names:
        cursor.execute(db.sql("SELECT first, last FROM {t}detection_spans WHERE pair = {p}"), (name,))
        spans = [(date.fromisoformat(f), date.fromisoformat(last) if last else None) for f, last in db.fetch(cursor)]
        cursor.execute(db.sql("SELECT day FROM {t}detection_onsets WHERE pair = {p}"), (name,))
        out[name] = PairExposure(spans, [date.fromisoformat(d) for (d,) in db.fetch(cursor)])
    return date.fromisoformat(found), out


def covers(covered: set[str], kind: str, details: dict[str, Any] | None) -> bool:
    """Whether a stored registry-wide signal was among those an evaluation covered."""
    if kind in covered:
        return True
    return kind == "sequential" and f"sequential/{(details or {}).get('name')}" in covered


__all__ = ["TABLES", "LiveDetection", "covers", "stored_shares"]
