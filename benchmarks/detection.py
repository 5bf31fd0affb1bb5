"""Benchmark section: signal detection (issue 26), disproportionality of every pair and surveillance of 50
planned pairs, beside the same-run baseline of loading the exposure read model's subjects."""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from benchmarks.suite import timed
from projections.exposure import ExposureModel
from projections.runner import Projector
from projections.signals import SignalsModel
from projections.view import View


def detection_section(suite: Any) -> str:
    """Disproportionality of every pair and surveillance of 50 planned pairs, computed from the exposure
    read model, beside the same-run baseline of loading its subjects alone."""
    from projections.detection import disproportionality
    from projections.exposure import forget_loaded, load_subjects
    from safety.disproportionality import fit_prior
    from safety.maxsprt import critical_value
    from safety.screening import drug_event_pairs, screen

    rows = ["| store | work | median | baseline: load the subjects only | target |", "|---|---|---:|---:|---:|"]
    for kind in suite.kinds:
        ledger = suite.ledger(kind)
        Projector(ledger, ExposureModel()).catch_up()
        db = View(ledger.store, ExposureModel()).db
        def cold(fn: Any) -> Any:  # as a fresh process answers: the subjects loaded anew each time
            return lambda: (forget_loaded(), fn())[1]

        load = statistics.median([timed(cold(partial(load_subjects, db, None, None)))[0] for _ in range(suite.runs)])
        loaded = load_subjects(db, None, None)
        counts = drug_event_pairs(loaded.subjects, loaded.horizon)
        answer = disproportionality(db)
        tables = [(p["a"], p["expected"]) for p in answer["pairs"]]
        a, e = zip(*tables, strict=True)
        fit = statistics.median([timed(partial(fit_prior, a, e))[0] for _ in range(suite.runs)])
        screening = statistics.median([timed(partial(screen, counts, answer_rules()))[0]
                                       for _ in range(suite.runs)])
        whole = statistics.median([timed(cold(partial(disproportionality, db)))[0] for _ in range(suite.runs)])
        drugs = sorted({p["drug"] for p in answer["pairs"]})
        terms = sorted({p["term"] for p in answer["pairs"]})
        plan = "".join(
            f'[[pair]]\nname = "p{i}"\ndrug = "{drugs[i % len(drugs)]}"\nterms = ["{terms[i % len(terms)]}"]\n'
            f'background_per_100py = 5.0\nstart = "2000-01-01"\nupper_limit = 20\nmin_events = 3\n'
            f"alpha = 0.05\n" for i in range(50))
        critical_value.cache_clear()  # each run computes its critical values afresh
        watch = statistics.median([timed(cold(partial(surveil_fresh, db, plan)))[0] for _ in range(suite.runs)])
        live = incremental(ledger, plan, db, answer["pairs"], suite.runs)
        signals_db = View(ledger.store, SignalsModel(surveillance_plan=plan)).db
        watch_live = statistics.median([timed(cold(partial(surveil_fresh, db, plan, signals_db)))[0]
                                        for _ in range(suite.runs)])
        rows += [f"| {kind} | disproportionality, whole command ({answer['N']:,} pairs of {len(tables)} drug-term "
                 f"cells, MGPS fit included) | {whole:.2f} s | {load:.2f} s | 2 s |",
                 f"| {kind} | of which: pairs and measures (screen) | {screening:.2f} s | | |",
                 f"| {kind} | of which: MGPS prior fit | {fit:.2f} s | | |",
                 f"| {kind} | surveillance of 50 pairs (critical values included) | {watch:.2f} s | {load:.2f} s "
                 "| 1 s |",
                 f"| {kind} | surveillance of the live plan's 50 pairs, from the signals read model's shares "
                 f"(critical values included) | {watch_live:.2f} s | {load:.2f} s | 1 s |",
                 f"| {kind} | live signals read model: rebuild with screening and the 50-pair plan | "
                 f"{live['rebuild']:.2f} s | {live['rebuild_plain']:.2f} s (rebuild without detection) | |",
                 f"| {kind} | live, per new lab result (no share changes) | {live['lab'] * 1000:.2f} ms | "
                 f"{live['rebuild']:.2f} s (the rebuild) | |",
                 f"| {kind} | live, per new adverse event (one share changes: screen every pair, surveil its "
                 f"planned pairs) | {live['event'] * 1000:.1f} ms | {live['rebuild']:.2f} s (the rebuild) | |"]
    return "\n".join(rows) + (
        f"\n\n{suite.patients:,} patients, {len(suite.lines):,} messages. The commands compute their answers when "
        "asked, from the exposure read model's subjects (loading them is the baseline, measured in the same run). "
        "The live rows are the signals read model, which keeps each patient's share of both and raises the "
        "registry-wide signals: its rebuild beside the same rebuild without detection, and the median cost of "
        "one new event (appended, then caught up) beside a rebuild from scratch, all in the same run.\n")


def incremental(ledger: Any, plan: str, exposure_db: Any, pairs: list[dict[str, Any]], runs: int) -> dict[str, float]:
    """The live signals read model with the plan: a rebuild (beside one without detection), and the median
    cost of a new lab result and of a new adverse event of a screened pair."""
    import json
    import uuid
    from unittest.mock import patch

    from events.admission import RawMessage
    from events.ingest import Ingestor
    from projections.detection import pair_cases
    from projections.live_detection import LiveDetection

    projector = Projector(ledger, SignalsModel(surveillance_plan=plan))
    rebuild = statistics.median([timed(projector.rebuild)[0] for _ in range(runs)])
    # the baseline: the same rebuild with detection's work left out (no share derived, its two entry points
    # made no-ops)
    with patch.object(LiveDetection, "update", lambda *_: None), patch.object(LiveDetection, "signals",
                                                                               lambda *_: None), \
            patch("projections.evaluation.exposure_share", lambda *_: (None, None)):
        rebuild_plain = statistics.median([timed(projector.rebuild)[0] for _ in range(runs)])
    projector.rebuild()
    projector = Projector(ledger, SignalsModel(surveillance_plan=plan))
    projector.catch_up()
    busiest = max(pairs, key=lambda p: p["a"])
    cases = pair_cases(exposure_db, busiest["drug"], busiest["term"])
    ingestor = Ingestor(ledger)
    labs, events = [], []
    for i in range(30):
        case = cases[i % len(cases)]
        base = {"schema_version": 1, "source": case["source"], "patient_id": case["patient_id"]}
        lab = {**base, "message_id": f"inc-{uuid.uuid4().hex}", "type": "lab_result", "occurred_at": case["onset"],
               "data": {"analyte": "PLT", "value": 300, "unit": "10^9/L"}}
        ingestor.ingest_batch([RawMessage(json.dumps(lab).encode(), {})])
        labs.append(timed(projector.catch_up)[0])
        event = {**base, "message_id": f"inc-{uuid.uuid4().hex}", "type": "adverse_event", "occurred_at": case["onset"],
                 "data": {"term": case["term"], "severity": "mild", "serious": False}}
        ingestor.ingest_batch([RawMessage(json.dumps(event).encode(), {})])
        events.append(timed(projector.catch_up)[0])
    return {"rebuild": rebuild, "rebuild_plain": rebuild_plain, "lab": statistics.median(labs),
            "event": statistics.median(events)}


def surveil_fresh(db: Any, plan: str, live: Any = None) -> Any:
    from projections.detection import surveillance
    from safety.maxsprt import critical_value

    critical_value.cache_clear()
    return surveillance(db, plan, live=live)


def answer_rules() -> Any:
    from projections.detection import detection_rules

    return detection_rules()
