"""Treatment-emergent adverse-event tables by arm and by drug: the imported CDISC pilot against an
independent pandas derivation from its SDTM files (cross-checked with the ADaM ``TRTEMFL`` flag),
exposure windows and patient-years on generated registries, data cuts, fingerprints and stores."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.exposure import ExposureModel, Settings, ae_cases, ae_tables
from projections.runner import Projector
from safety.cli import app
from safety.exposure import Period, Span, Subject, TreatmentChange, emergent, memberships, periods, risk_spans
from tests.messages import message, raw

PILOT = Path(__file__).resolve().parent.parent / "events" / "sdtm" / "pilot"
ADAE = Path(__file__).resolve().parent / "data" / "cdiscpilot01" / "adae.xpt.gz"
ARMS = ("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")


# --- the rules ------------------------------------------------------------------------------------------------


def d(text: str) -> date:
    return date.fromisoformat(text)


def test_periods_open_on_start_close_on_stop_and_stay_open_without_one():
    ps = periods([TreatmentChange("mtx", "start", d("2024-01-01")), TreatmentChange("mtx", "stop", d("2024-03-01")),
                  TreatmentChange("eta", "start", d("2024-02-01")), TreatmentChange("mtx", "change", d("2024-05-01")),
                  TreatmentChange("eta", "stop", d("2023-12-01"))])  # a stop before any start: ignored
    assert ps == [Period("eta", d("2024-02-01"), None), Period("mtx", d("2024-01-01"), d("2024-03-01")),
                  Period("mtx", d("2024-05-01"), None)]


def test_treatment_emergence_has_no_upper_bound_without_a_lag_and_ends_at_last_plus_lag_with_one():
    p = [Period("x", d("2024-01-10"), d("2024-01-20"))]
    assert not emergent(d("2024-01-09"), p, None)
    assert emergent(d("2024-01-10"), p, None) and emergent(d("2030-01-01"), p, None)
    assert emergent(d("2024-01-25"), p, 5) and not emergent(d("2024-01-26"), p, 5)
    assert emergent(d("2030-01-01"), [Period("x", d("2024-01-10"), None)], 5)  # ongoing


def test_risk_windows_add_the_lag_merge_overlaps_and_stop_at_the_end_of_observation():
    ps = [Period("x", d("2024-01-01"), d("2024-01-10")), Period("x", d("2024-01-20"), d("2024-01-31"))]
    assert risk_spans(ps, 30, d("2024-12-31")) == [Span(d("2024-01-01"), d("2024-03-01"))]
    assert risk_spans(ps, 0, d("2024-12-31")) == [Span(d("2024-01-01"), d("2024-01-10")),
                                                  Span(d("2024-01-20"), d("2024-01-31"))]
    assert risk_spans(ps, 0, d("2024-01-05")) == [Span(d("2024-01-01"), d("2024-01-05"))]


def test_a_subject_on_two_drugs_in_turn_counts_time_and_events_in_each():
    s = Subject("r", "P1", treatments=[TreatmentChange("mtx", "start", d("2024-01-01"), "csDMARD"),
                                       TreatmentChange("mtx", "stop", d("2024-01-31"), "csDMARD"),
                                       TreatmentChange("eta", "start", d("2024-06-01"), "biologic")])
    from safety.ae_tables import adverse_event

    s.events = [adverse_event("a1", d("2024-02-15"), {"term": "Nausea", "severity": "mild"}),
                adverse_event("a2", d("2024-06-02"), {"term": "Rash", "severity": "mild"})]
    by_drug = {m.group: m for m in memberships(s, "drug", d("2024-06-30"), 30)}
    assert by_drug["mtx"].days == 31 + 30 and [e.message_id for e in by_drug["mtx"].events] == ["a1"]
    assert by_drug["eta"].days == 30 and [e.message_id for e in by_drug["eta"].events] == ["a2"]
    assert {m.group for m in memberships(s, "drug_class", d("2024-06-30"), 30)} == {"csDMARD", "biologic"}
    (arm,) = memberships(s, "arm", d("2024-06-30"), None)  # no arm: first start to the horizon (eta ongoing)
    assert arm.group == "(no arm)" and arm.days == 182 and len(arm.events) == 2


# --- the pilot, against an independent derivation -------------------------------------------------------------


def sas(path: Path) -> pd.DataFrame:
    """A gzipped XPORT file through pandas' own reader (the import uses pyreadstat)."""
    frame = pd.read_sas(io.BytesIO(gzip.decompress(path.read_bytes())), format="xport", encoding="cp1252")
    return frame.apply(lambda c: c.str.strip() if c.dtype == object else c)


def impute_onset(text: str, first: date) -> date:
    """The earliest day a partial onset allows, but the first exposure when the period contains it."""
    parts = [int(p) for p in text[:10].split("-")]
    if len(parts) == 3:
        return date(*parts)
    earliest = date(parts[0], parts[1] if len(parts) == 2 else 1, 1)
    latest = (date(parts[0] + (parts[1] == 12), parts[1] % 12 + 1, 1) - timedelta(days=1)) if len(parts) == 2 \
        else date(parts[0], 12, 31)
    return first if earliest <= first <= latest else earliest


def independent_teae() -> pd.DataFrame:
    """Each AE record of a treated subject with its arm (ACTARM) and treatment-emergent flag."""
    dm, ae = sas(PILOT / "dm.xpt.gz"), sas(PILOT / "ae.xpt.gz")
    treated = dm[dm.RFXSTDTC.fillna("") != ""]
    ae = ae.merge(treated[["USUBJID", "ACTARM", "RFXSTDTC"]], on="USUBJID")
    first = ae.RFXSTDTC.map(lambda t: date.fromisoformat(t[:10]))
    ae["onset"] = [impute_onset(t, f) for t, f in zip(ae.AESTDTC, first, strict=True)]
    ae["TE"] = ae.onset >= first
    ae["SOC"] = ae.AESOC.where(ae.AESOC.fillna("") != "", ae.AEBODSYS)
    ae["PT"] = ae.AEDECOD.where(ae.AEDECOD.fillna("") != "", ae.AETERM)
    return ae


def test_the_independent_flag_equals_the_adam_trtemfl_record_for_record():
    ae = independent_teae()
    adae = sas(ADAE)[["USUBJID", "AESEQ", "TRTEMFL", "ASTDT"]]
    both = ae.merge(adae, on=["USUBJID", "AESEQ"], validate="one_to_one")
    assert len(both) == len(ae) == 1191
    assert (both.TE == (both.TRTEMFL == "Y")).all()
    assert both.TE.sum() == 1126
    # the 26 partial onsets included, emergent or not: the imputation decides as ADaM did for each
    partial = both[both.AESTDTC.str.len() < 10]
    assert len(partial) == 26 and partial.TE.any() and not partial.TE.all()


def expected_tables() -> dict[str, Any]:
    """The overview and SOC/PT counts by arm, derived from the SDTM files with pandas."""
    ae = independent_teae()
    dm, ds = sas(PILOT / "dm.xpt.gz"), sas(PILOT / "ds.xpt.gz")
    treated = dm[dm.RFXSTDTC.fillna("") != ""]
    te = ae[ae.TE]
    ds = ds.merge(treated[["USUBJID", "ACTARM", "RFXSTDTC"]], on="USUBJID")
    ds_ae = ds[(ds.DSCAT == "DISPOSITION EVENT") & (ds.DSDECOD == "ADVERSE EVENT") & (ds.DSSTDTC >= ds.RFXSTDTC)]
    flags = {
        "any": te, "serious": te[te.AESER == "Y"], "severe": te[te.AESEV == "SEVERE"],
        "related": te[te.AEREL.isin(["POSSIBLE", "PROBABLE", "DEFINITE", "RELATED", "Y"])],
        "fatal": te[(te.AEOUT == "FATAL") | (te.AESDTH == "Y")],
    }
    out: dict[str, Any] = {"N": treated.ACTARM.value_counts().to_dict(), "overview": {}, "soc": {}, "term": {}}
    for row, frame in flags.items():
        out["overview"][row] = {arm: (frame[frame.ACTARM == arm].USUBJID.nunique(), int((frame.ACTARM == arm).sum()))
                                for arm in ARMS}
    stopped = pd.concat([te[te.AEACN == "DRUG WITHDRAWN"][["USUBJID", "ACTARM"]], ds_ae[["USUBJID", "ACTARM"]]])
    out["overview"]["leading_to_discontinuation"] = {
        arm: (stopped[stopped.ACTARM == arm].USUBJID.nunique(), int((stopped.ACTARM == arm).sum())) for arm in ARMS}
    for (arm, soc), g in te.groupby(["ACTARM", "SOC"]):
        out["soc"][(soc, arm)] = (g.USUBJID.nunique(), len(g))
    for (arm, soc, pt), g in te.groupby(["ACTARM", "SOC", "PT"]):
        out["term"][(soc, pt, arm)] = (g.USUBJID.nunique(), len(g))
    return out


def import_pilot(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "pilot"
    folder.mkdir(exist_ok=True)
    for name in ("dm", "ae", "suppae", "ex", "ds", "ts"):
        shutil.copy(PILOT / f"{name}.xpt.gz", folder)
    result = CliRunner().invoke(app, ["import-sdtm", str(folder), "--source", "cdisc-pilot", "--transfer", "T1",
                                      "--store", url])
    assert result.exit_code == 0, result.output


def ae_table_json(url: str, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["ae-table", "--format", "json", "--store", url, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_pilot_by_arm_equals_the_independent_derivation(store_url: str, tmp_path: Path):
    import_pilot(store_url, tmp_path)
    answer = ae_table_json(store_url, "--by", "arm")
    expected = expected_tables()
    assert {g["name"]: g["subjects"] for g in answer["groups"]} == expected["N"]
    assert answer["control"] == "Placebo"
    for o in answer["overview"]:
        got = {arm: (c["subjects"], c["events"]) for arm, c in o["by_group"].items()}
        assert got == expected["overview"][o["row"]], o["row"]
    got_soc, got_term = {}, {}
    for soc in answer["socs"]:
        for arm, c in soc["by_group"].items():
            if c["subjects"]:
                got_soc[(soc["soc"], arm)] = (c["subjects"], c["events"])
        for t in soc["terms"]:
            for arm, c in t["by_group"].items():
                if c["subjects"]:
                    got_term[(soc["soc"], t["term"], arm)] = (c["subjects"], c["events"])
    assert got_soc == expected["soc"]
    assert got_term == expected["term"]
    # sorted by frequency: the first SOC has the most subjects in all arms together
    totals = [sum(c["subjects"] for c in s["by_group"].values()) for s in answer["socs"]]
    assert totals == sorted(totals, reverse=True)
    # the percentages and the comparisons' shape
    placebo_any = answer["overview"][0]["by_group"]["Placebo"]
    assert placebo_any["percent"] == pytest.approx(100 * placebo_any["subjects"] / expected["N"]["Placebo"], abs=1e-3)
    assert {c["group"] for c in answer["comparisons"]} == {"Xanomeline High Dose", "Xanomeline Low Dose"}
    any_high = next(c for c in answer["comparisons"] if c["row"] == "any" and c["group"] == "Xanomeline High Dose")
    low, high = any_high["risk_difference_ci95"]
    assert low < any_high["risk_difference"] < high and any_high["eair_ratio_p"] < 0.05


def test_the_minimum_percentage_keeps_terms_reaching_it_in_some_group(sqlite_url: str, tmp_path: Path):
    import_pilot(sqlite_url, tmp_path)
    answer = ae_table_json(sqlite_url, "--min-percent", "10")
    terms = [(t, s["soc"]) for s in answer["socs"] for t in s["terms"]]
    assert terms and all(max(c["percent"] for c in t["by_group"].values()) >= 10 for t, _ in terms)
    everything = ae_table_json(sqlite_url)
    kept = {t["term"] for t, _ in terms}
    assert kept == {t["term"] for s in everything["socs"] for t in s["terms"]
                    if max(c["percent"] for c in t["by_group"].values()) >= 10}
    # the drill-down of one term lists exactly its subjects
    store = Store.parse(sqlite_url)
    projector = Projector(Ledger(store), ExposureModel())
    projector.catch_up()
    cases = ae_cases(projector.view.db, Settings(), "Placebo", term="APPLICATION SITE PRURITUS")
    cell = next(t for s in everything["socs"] for t in s["terms"] if t["term"] == "APPLICATION SITE PRURITUS")
    assert len({c["patient_id"] for c in cases}) == cell["by_group"]["Placebo"]["subjects"]
    assert len(cases) == cell["by_group"]["Placebo"]["events"]


# --- by drug on generated registries ------------------------------------------------------------------------


DRUGS = ("methotrexate", "etanercept", "tocilizumab")


@st.composite
def registry(draw: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Patients on one or more drugs in turn (periods of a drug never overlapping with their lag), with the
    days at risk each drug should count: every period plus the lag."""
    lag = 30
    messages: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    for n in range(draw(st.integers(1, 6))):
        pid = f"P{n}"
        messages.append(message(f"{pid}-e", type="enrolment", patient_id=pid, occurred_at="2020-01-01"))
        day = draw(st.integers(0, 60))
        for k in range(draw(st.integers(0, 4))):
            drug = draw(st.sampled_from(DRUGS))
            length = draw(st.integers(0, 400))
            start = date(2020, 1, 1) + timedelta(days=day)
            stop = start + timedelta(days=length)
            messages += [message(f"{pid}-s{k}", type="treatment", patient_id=pid, occurred_at=start.isoformat(),
                                 data={"drug": drug, "action": "start"}),
                         message(f"{pid}-t{k}", type="treatment", patient_id=pid, occurred_at=stop.isoformat(),
                                 data={"drug": drug, "action": "stop"})]
            expected[drug] = expected.get(drug, 0) + length + 1 + lag
            day += length + lag + 1 + draw(st.integers(0, 90))  # the next period starts after this one's lag
    return messages, expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(registry())
def test_patient_years_per_drug_are_the_exposure_periods_plus_lags(tmp_path_factory: Any, feed: Any):
    messages, expected = feed
    url = f"sqlite:///{tmp_path_factory.mktemp('reg')}/ledger.db"
    ledger = Ledger(Store.parse(url))
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(messages)])
    projector = Projector(ledger, ExposureModel())
    projector.catch_up()
    from datetime import UTC, datetime

    answer = ae_tables(projector.view.db, Settings(by="drug", data_cut=datetime(2040, 1, 1, tzinfo=UTC)))
    got = {g["name"]: g["patient_years"] for g in answer["groups"]}
    assert got == {drug: pytest.approx(days / 365.25, abs=1e-4) for drug, days in expected.items()}
