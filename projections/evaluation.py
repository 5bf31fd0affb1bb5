"""Evaluating patients from the signals read model's facts, a chunk at a time: in this process, or for a
large backlog (a rebuild, new rules) in worker processes on the machine's other cores, which read their
chunk's facts over connections of their own and hand back what the parent writes (issue 28).

The rules are pure (``safety.mas``, ``safety.liver``) and each patient is evaluated on their own, so the
result does not depend on where it was computed; the parent alone writes, in its one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any

from projections.db import ReadDB, loads, no_cycle_collection
from projections.exposure import EXPOSURE_TYPES, build_subjects, columns_of
from projections.facts import history_from
from projections.forked import in_order
from projections.liver import patient_view, rules_key, stored_row
from safety.liver import LiverConfig, evaluate_liver
from safety.mas import Config, Signal, evaluate

Key = tuple[str, str]  #: (source, patient token)
#: one patient's signals, liver view row and (when asked for) detection share
Evaluated = tuple[Key, list[Signal], tuple[Any, ...], Any]
Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

#: evaluate in worker processes from this many patients (a rebuild or a rules change; never the live path)
PARALLEL_FROM = 4000
CHUNK = 500


def read_facts(fetch: Fetch, db: ReadDB, keys: Sequence[Key]) -> dict[Key, list[tuple[str, str, str, str]]]:
    """Each patient's facts as ``history_from`` takes them, in the order they were recorded."""
    where, params = db.patients_in(keys)
    rows: dict[Key, list[tuple[str, str, str, str]]] = defaultdict(list)
    sl = db.sealer
    for source, pid, mid, typ, at, data in fetch(db.sql("SELECT source, patient_id, message_id, type, occurred_at,"
                                                        " data FROM {t}signal_facts WHERE " + where +
                                                        " ORDER BY notification_id"), params):
        rows[(source, pid)].append((sl.untoken(mid), typ, at, sl.unseal(data) or ""))
    return rows


def evaluate_chunk(fetch: Fetch, db: ReadDB, keys: Sequence[Key], config: Config, liver: LiverConfig,
                   shares_of: set[Key] | None) -> list[Evaluated]:
    """These patients' signals, liver view rows and the detection shares of ``shares_of`` (None: all)."""
    rows = read_facts(fetch, db, keys)
    liver_key, sl = rules_key(liver), db.sealer
    out: list[Evaluated] = []
    for key in keys:
        facts = rows.get(key, [])
        history = history_from(key[0], sl.untoken(key[1]), facts)
        signals = evaluate(history, config) + evaluate_liver(history, liver)
        view = stored_row(*key, liver_key, patient_view(history, liver), db)
        share = exposure_share(key, facts) if shares_of is None or key in shares_of else None
        out.append((key, signals, view, share))
    return out


def exposure_share(key: Key, facts: Sequence[tuple[str, str, str, str]]) -> Any:
    """A patient's subject as the exposure read model builds it (``projections.exposure.build_subjects``)
    from the signals model's facts, and its last clinical day: what its detection share is derived from."""
    rows = [(0, key[0], key[1], mid, typ, at, "", *columns_of(typ, loads(data)))
            for mid, typ, at, data in facts if typ in EXPOSURE_TYPES]
    if not rows:
        return None, None
    subjects, last_day = build_subjects(rows, None)
    return (subjects[0], last_day) if subjects else (None, None)


#: what a worker process evaluates with: set in the parent before the workers are forked
_CONTEXT: list[Any] = []


def _work(job: tuple[list[Key], set[Key] | None]) -> list[Evaluated]:
    db, config, liver = _CONTEXT
    with no_cycle_collection():
        return evaluate_chunk(db.query, db, job[0], config, liver, job[1])


def in_workers(db: ReadDB, config: Config, liver: LiverConfig, jobs: Sequence[tuple[list[Key], set[Key] | None]],
               processes: int) -> Iterator[list[Evaluated]]:
    """Each job's evaluation, in order, computed by ``processes`` forked workers (they read facts already
    committed: the caller's own uncommitted writes are not theirs to see)."""
    _CONTEXT[:] = [db, config, liver]
    try:
        with closing(in_order(_work, jobs, processes)) as results:
            yield from results
    finally:
        _CONTEXT.clear()
