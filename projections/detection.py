"""Signal detection over the exposure read model: disproportionality of every drug-event pair, and the
sequential surveillance of a plan's pairs, each as known at a knowledge time and a clinical data cut,
with a fingerprint of everything the answer depends on (as the adverse-event tables have)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from projections.db import ReadDB
from projections.exposure import VERSION, load_subjects, no_cycle_collection
from projections.incidence import utc_text
from projections.live_detection import stored_shares
from safety.screening import DetectionRules, drug_event_pairs, screen
from safety.surveillance import PlannedPair, courses_by_drug, load_plan, surveil, surveil_exposure

UNIT = ("drug-event pairs: each adverse event counts once for each drug whose risk window (each course from "
        "its start through its stop plus the lag, clipped at the end of observation) holds its onset")


def detection_rules(text: str | None = None) -> DetectionRules:
    """The screening rules: the packaged ``detection_rules.toml`` unless given."""
    return DetectionRules.from_text(text if text is not None else
                                    (resources.files("safety") / "detection_rules.toml").read_text())


def _fingerprint(position: int, inputs: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps({"model": VERSION, **inputs}, sort_keys=True).encode()).hexdigest()[:16]
    return f"{position}-{digest}"


def _cut(data_cut: datetime | None) -> str | None:
    return (data_cut - timedelta(microseconds=1)).date().isoformat() if data_cut else None


def disproportionality(db: ReadDB, *, level: str = "pt", lag_days: int = 30, min_count: int = 1,
                       as_of: datetime | None = None, data_cut: datetime | None = None,
                       rules: DetectionRules | None = None) -> dict[str, Any]:
    """Every drug-event pair's table and measures (``safety.screening``)."""
    rules = rules or detection_rules()
    with no_cycle_collection():
        loaded = load_subjects(db, as_of, data_cut)
        answer = screen(drug_event_pairs(loaded.subjects, loaded.horizon, lag_days, level), rules, min_count)
    inputs = {"level": level, "lag_days": lag_days, "min_count": min_count, "rules": rules.version,
              "as_of": utc_text(as_of) if as_of else None, "data_cut": _cut(data_cut)}
    return {"unit": UNIT, "level": level, "lag_days": lag_days, "N": answer["N"],
            "fingerprint": _fingerprint(loaded.position, inputs), "as_of": as_of.isoformat() if as_of else None,
            "data_cut": _cut(data_cut), "rules": answer["rules"], "prior": answer["prior"], "pairs": answer["pairs"]}


def surveillance(db: ReadDB, plan_text: str, *, as_of: datetime | None = None,
                 data_cut: datetime | None = None, live: ReadDB | None = None) -> dict[str, Any]:
    """Each planned pair's MaxSPRT through the end of observation (``safety.surveillance``). With ``live``
    (the signals read model, projected under this same plan) and neither ``as_of`` nor ``data_cut``, from
    the shares it keeps instead of every subject: the same answer without loading the registry."""
    digest, pairs = load_plan(plan_text)
    answer: tuple[int, str | None, list[Any]] | None = None
    if live is not None and as_of is None and data_cut is None:
        answer = _surveilled_live(db, live, pairs)
    if answer is None:
        with no_cycle_collection():
            loaded = load_subjects(db, as_of, data_cut)
            courses = courses_by_drug(loaded.subjects)
            unknown = [p for p in pairs if p.drug.casefold() not in courses]
            if loaded.subjects and unknown:
                raise ValueError(f"pair {unknown[0].name}: no patient of the store started drug {unknown[0].drug!r};"
                                 " check its spelling against `safety-monitor ae-table --by drug`")
            answer = (loaded.position, loaded.horizon.isoformat() if loaded.subjects else None,
                      [surveil(courses, loaded.horizon, p) for p in pairs])
    position, observation_end, results = answer
    inputs = {"plan": digest, "as_of": utc_text(as_of) if as_of else None, "data_cut": _cut(data_cut)}
    return {"plan": digest, "fingerprint": _fingerprint(position, inputs), "observation_end": observation_end,
            "as_of": as_of.isoformat() if as_of else None, "data_cut": _cut(data_cut), "pairs": results}


def _surveilled_live(db: ReadDB, live: ReadDB, pairs: list[PlannedPair]) -> tuple[int, str | None, list[Any]] | None:
    """The answer from the live shares; None when a pair has none (an unknown drug is then named)."""
    with live.connect() as conn:
        found = stored_shares(conn.cursor(), live, [p.name for p in pairs])
    if found is None or any(not found[1][p.name].spans for p in pairs):
        return None
    horizon, shares = found
    position = db.query("SELECT MAX(notification_id) FROM {t}exposure_facts")[0][0] or 0
    return position, horizon.isoformat(), [surveil_exposure([shares[p.name]], horizon, p) for p in pairs]


def pair_cases(db: ReadDB, drug: str, term: str, *, level: str = "pt", lag_days: int = 30,
               as_of: datetime | None = None, data_cut: datetime | None = None) -> list[dict[str, Any]]:
    """The patients and events one pair counts (the board's drill-down)."""
    from safety.screening import pair_events

    loaded = load_subjects(db, as_of, data_cut)
    return pair_events(loaded.subjects, loaded.horizon, drug, term, lag_days, level)
