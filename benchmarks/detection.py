"""Benchmark section: signal detection (issue 26), disproportionality of every pair and surveillance of 50
planned pairs, beside the same-run baseline of loading the exposure read model's subjects."""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from benchmarks.suite import timed
from projections.exposure import ExposureModel
from projections.runner import Projector, View


def detection_section(suite: Any) -> str:
    """Disproportionality of every pair and surveillance of 50 planned pairs, computed from the exposure
    read model, beside the same-run baseline of loading its subjects alone."""
    from projections.detection import disproportionality
    from projections.exposure import load_subjects
    from safety.disproportionality import fit_prior
    from safety.maxsprt import critical_value
    from safety.screening import drug_event_pairs, screen

    rows = ["| store | work | median | baseline: load the subjects only | target |", "|---|---|---:|---:|---:|"]
    for kind in suite.kinds:
        ledger = suite.ledger(kind)
        Projector(ledger, ExposureModel()).catch_up()
        db = View(ledger.store, ExposureModel()).db
        load = statistics.median([timed(partial(load_subjects, db, None, None))[0] for _ in range(suite.runs)])
        loaded = load_subjects(db, None, None)
        counts = drug_event_pairs(loaded.subjects, loaded.horizon)
        answer = disproportionality(db)
        tables = [(p["a"], p["expected"]) for p in answer["pairs"]]
        a, e = zip(*tables, strict=True)
        fit = statistics.median([timed(partial(fit_prior, a, e))[0] for _ in range(suite.runs)])
        screening = statistics.median([timed(partial(screen, counts, answer_rules()))[0]
                                       for _ in range(suite.runs)])
        whole = statistics.median([timed(partial(disproportionality, db))[0] for _ in range(suite.runs)])
        drugs = sorted({p["drug"] for p in answer["pairs"]})
        terms = sorted({p["term"] for p in answer["pairs"]})
        plan = "".join(
            f'[[pair]]\nname = "p{i}"\ndrug = "{drugs[i % len(drugs)]}"\nterms = ["{terms[i % len(terms)]}"]\n'
            f'background_per_100py = 5.0\nstart = "2000-01-01"\nupper_limit = 20\nmin_events = 3\n'
            f"alpha = 0.05\n" for i in range(50))
        critical_value.cache_clear()  # each run computes its critical values afresh
        watch = statistics.median([timed(partial(surveil_fresh, db, plan))[0] for _ in range(suite.runs)])
        rows += [f"| {kind} | disproportionality, whole command ({answer['N']:,} pairs of {len(tables)} drug-term "
                 f"cells, MGPS fit included) | {whole:.2f} s | {load:.2f} s | 2 s |",
                 f"| {kind} | of which: pairs and measures (screen) | {screening:.2f} s | | |",
                 f"| {kind} | of which: MGPS prior fit | {fit:.2f} s | | |",
                 f"| {kind} | surveillance of 50 pairs (critical values included) | {watch:.2f} s | {load:.2f} s "
                 "| 1 s |"]
    return "\n".join(rows) + (
        f"\n\n{suite.patients:,} patients, {len(suite.lines):,} messages. Both answers are computed when asked, from "
        "the exposure read model's subjects (loading them is the baseline, measured in the same run); no "
        "incremental read model of their own yet.\n")


def surveil_fresh(db: Any, plan: str) -> Any:
    from projections.detection import surveillance
    from safety.maxsprt import critical_value

    critical_value.cache_clear()
    return surveillance(db, plan)


def answer_rules() -> Any:
    from projections.detection import detection_rules

    return detection_rules()
