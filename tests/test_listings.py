"""The DSMB's numbers as printed, listings and time to event (issue 27): half-up rounding, p-values and
intervals; deaths, serious adverse events, discontinuations and Kaplan-Meier on the imported pilot against
independent derivations from its SDTM files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.ledger import Ledger
from events.store import Store
from projections.facts import patient_facts
from projections.runner import Projector
from projections.signals import SignalsModel
from safety.formatting import estimate, half_up, interval, p_value, percent
from safety.listings import deaths, discontinuations, record_of, serious_events
from safety.survival import kaplan_meier, times_to_first
from tests.test_ae_tables import PILOT, import_pilot, sas


def test_numbers_print_as_a_study_report_prints_them():
    assert half_up(6.25, 1) == "6.3" and f"{6.25:.1f}" == "6.2"  # Python rounds half to even
    assert percent(6, 96) == "6.3" and percent(1, 3) == "33.3" and percent(0, 0) == "–"
    assert half_up(2.675, 2) == "2.68"  # the decimal written, not the binary float's 2.67499...
    assert p_value(0.0004) == "<0.001" and p_value(0.001) == "0.001" and p_value(0.0125) == "0.013"
    assert p_value(None) == "–"
    assert interval(0.31, None) == "(0.31–NE)" and interval(None, None) == "(NE)"
    assert estimate(None, 0.1, 0.2) == "NE" and estimate(0.5, 0.305, 0.885) == "0.50 (0.31–0.89)"


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_percent_is_half_up_of_the_exact_ratio(n: int, total: int):
    tenths = (2000 * n + total) // (2 * total)
    assert percent(n, total) == f"{tenths // 10}.{tenths % 10}"


@pytest.fixture
def pilot_records(sqlite_url: str, tmp_path: Path) -> list:
    import_pilot(sqlite_url, tmp_path)
    ledger = Ledger(Store.parse(sqlite_url))
    projector = Projector(ledger, SignalsModel())
    projector.catch_up()
    facts = patient_facts(projector.view.db)
    return [record_of(source, pid, [(m, t, at, json.loads(d)) for m, t, at, d in rows])
            for (source, pid), rows in sorted(facts.items())]


def test_deaths_serious_events_and_discontinuations_equal_the_sdtm(pilot_records: list):
    dm, ae, ds = sas(PILOT / "dm.xpt.gz"), sas(PILOT / "ae.xpt.gz"), sas(PILOT / "ds.xpt.gz")
    treated = set(dm[dm.RFXSTDTC.fillna("") != ""].USUBJID)
    exposed = [r for r in pilot_records if r.exposed]
    assert {r.patient_id for r in exposed} == treated
    fatal = ae[(ae.AEOUT == "FATAL") | (ae.AESDTH == "Y")]
    died = set(ds[ds.DSDECOD == "DEATH"].USUBJID) | set(fatal.USUBJID)
    assert {d["patient_id"] for d in deaths(exposed)} == died & treated
    criteria = [c for c in ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE") if c in ae]
    serious = ae[ae.USUBJID.isin(treated) & ((ae.AESER == "Y") | (ae[criteria] == "Y").any(axis=1)
                                             | (ae.AEOUT == "FATAL"))]
    listed = serious_events(exposed)
    assert len(listed) == len(serious) and all(row["criteria"] for row in listed)
    stopped = ds[(ds.DSCAT == "DISPOSITION EVENT") & (ds.DSDECOD == "ADVERSE EVENT") & ds.USUBJID.isin(treated)]
    assert {row["patient_id"] for row in discontinuations(exposed)} == set(stopped.USUBJID)


def test_kaplan_meier_to_discontinuation_counts_what_the_sdtm_says(pilot_records: list):
    """Events are the subjects discontinued for an adverse event; everyone else is censored; lifelines'
    estimate at the last event equals the product-limit written out here."""
    exposed = [r for r in pilot_records if r.exposed]
    horizon = max(r.last_contact or r.first_dose for r in exposed if r.first_dose)
    groups = times_to_first(exposed, horizon)
    curves = kaplan_meier(groups)
    ds = sas(PILOT / "ds.xpt.gz")
    stopped = set(ds[(ds.DSCAT == "DISPOSITION EVENT") & (ds.DSDECOD == "ADVERSE EVENT")].USUBJID)
    arm_of = {r.patient_id: r.arm for r in exposed}
    for arm, rows in groups.items():
        assert curves[arm]["N"] == len(rows) == sum(1 for a in arm_of.values() if a == arm)
        assert curves[arm]["events"] == sum(1 for p in stopped if arm_of.get(p) == arm)
        survival, at_risk = 1.0, len(rows)
        for day in sorted({t for t, _ in rows}):
            events = sum(1 for t, e in rows if t == day and e)
            survival *= 1 - events / at_risk
            at_risk -= sum(1 for t, _ in rows if t == day)
        assert curves[arm]["steps"][-1]["survival"] == pytest.approx(survival)
    assert all(isinstance(r.first_dose, date) for r in exposed)
