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
    ae = ae.merge(treated[["USUBJID", "ACTARM", "ARM", "RFXSTDTC"]], on="USUBJID")
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
    assert both.TE.eq(both.TRTEMFL.eq("Y")).all()
    assert both.TE.sum() == 1126
    # the 26 partial onsets included, emergent or not: the imputation decides as ADaM did for each
    partial = both[both.AESTDTC.str.len() < 10]
    assert len(partial) == 26 and partial.TE.any() and not partial.TE.all()


def expected_tables(arm: str = "ACTARM") -> dict[str, Any]:
    """The overview and SOC/PT counts by arm (DM's ACTARM, or ARM for the planned arm), derived from the
    SDTM files with pandas."""
    ae = independent_teae().drop(columns=["ACTARM"]).rename(columns={arm: "ACTARM"}) if arm != "ACTARM" \
        else independent_teae()
    dm, ds = sas(PILOT / "dm.xpt.gz"), sas(PILOT / "ds.xpt.gz")
    if arm != "ACTARM":
        dm = dm.drop(columns=["ACTARM"]).rename(columns={arm: "ACTARM"})
    treated = dm[dm.RFXSTDTC.fillna("") != ""]
    te = ae[ae.TE]
    ds = ds.merge(treated[["USUBJID", "ACTARM", "RFXSTDTC"]], on="USUBJID")
    ds_ae = ds[(ds.DSCAT == "DISPOSITION EVENT") & (ds.DSDECOD == "ADVERSE EVENT") & (ds.DSSTDTC >= ds.RFXSTDTC)]
    flags_sent = [c for c in ("AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE") if c in te]
    criterion = (te[flags_sent] == "Y").any(axis=1)
    flags = {  # serious as ICH E2A defines it: flagged, or meeting any criterion (issue 23)
        "any": te, "serious": te[(te.AESER == "Y") | criterion | (te.AEOUT == "FATAL")],
        "severe": te[te.AESEV == "SEVERE"],
        # missing causality counts as related (issue 27: the usual convention, footnoted)
        "related": te[te.AEREL.isin(["POSSIBLE", "PROBABLE", "DEFINITE", "RELATED", "Y"])
                      | te.AEREL.fillna("").str.strip().eq("")],
        "fatal": te[(te.AEOUT == "FATAL") | (te.AESDTH == "Y")],
    }
    out: dict[str, Any] = {"N": treated.ACTARM.value_counts().to_dict(), "overview": {}, "soc": {}, "term": {}}
    for row, frame in flags.items():
        out["overview"][row] = {arm: (frame[frame.ACTARM.eq(arm)].USUBJID.nunique(), int(frame.ACTARM.eq(arm).sum()))
                                for arm in ARMS}
    stopped = pd.concat([te[te.AEACN == "DRUG WITHDRAWN"][["USUBJID", "ACTARM"]], ds_ae[["USUBJID", "ACTARM"]]])
    out["overview"]["leading_to_discontinuation"] = {
        arm: (stopped[stopped.ACTARM.eq(arm)].USUBJID.nunique(), int(stopped.ACTARM.eq(arm).sum())) for arm in ARMS}
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


def cells_of(answer: dict[str, Any]) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
    overview = {o["row"]: {arm: (c["subjects"], c["events"]) for arm, c in o["by_group"].items()}
                for o in answer["overview"]}
    got_soc, got_term = {}, {}
    for soc in answer["socs"]:
        for arm, c in soc["by_group"].items():
            if c["subjects"]:
                got_soc[(soc["soc"], arm)] = (c["subjects"], c["events"])
        for t in soc["terms"]:
            for arm, c in t["by_group"].items():
                if c["subjects"]:
                    got_term[(soc["soc"], t["term"], arm)] = (c["subjects"], c["events"])
    return overview, got_soc, got_term


def test_the_pilot_by_planned_arm_is_the_study_reports_86_84_84(store_url: str, tmp_path: Path):
    """Issue 27: twelve planned high-dose subjects stopped during titration and carry the low-dose ACTARM;
    by planned arm (DM.ARM, ADaM TRT01P) the groups are 86 / 84 / 84, as the study report's Table 14-5.01."""
    import_pilot(store_url, tmp_path)
    planned = ae_table_json(store_url, "--by", "arm", "--arm", "planned")
    assert planned["arm_basis"] == "planned"
    assert {g["name"]: g["subjects"] for g in planned["groups"]} == {
        "Placebo": 86, "Xanomeline High Dose": 84, "Xanomeline Low Dose": 84}
    expected = expected_tables("ARM")
    assert {g["name"]: g["subjects"] for g in planned["groups"]} == expected["N"]
    assert cells_of(planned) == (expected["overview"], expected["soc"], expected["term"])
    actual = ae_table_json(store_url, "--by", "arm", "--arm", "actual")
    assert actual["arm_basis"] == "actual" and actual["fingerprint"] != planned["fingerprint"]
    assert {g["name"]: g["subjects"] for g in actual["groups"]} == expected_tables()["N"]
    refused = CliRunner().invoke(app, ["ae-table", "--by", "drug", "--arm", "planned", "--store", store_url])
    assert refused.exit_code == 1 and "--arm" in refused.output


def test_the_pilot_by_arm_equals_the_independent_derivation(store_url: str, tmp_path: Path):
    import_pilot(store_url, tmp_path)
    answer = ae_table_json(store_url, "--by", "arm")
    assert answer["arm_basis"] == "actual"
    expected = expected_tables()
    assert {g["name"]: g["subjects"] for g in answer["groups"]} == expected["N"]
    assert answer["control"] == "Placebo"
    overview, got_soc, got_term = cells_of(answer)
    assert overview == expected["overview"]
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


# --- contract feeds: arms on enrolment, data cuts, fingerprints, stores ------------------------------------------


def arm_feed() -> list[dict[str, Any]]:
    """Two arms of a small trial sent as contract messages: arms on enrolment, exposure from treatment
    starts and stops, adverse events before, during and after exposure."""
    out: list[dict[str, Any]] = []
    for n, arm in enumerate(("Placebo", "Placebo", "Placebo", "Active", "Active", "Active")):
        pid = f"S{n}"
        out += [
            message(f"{pid}-e", type="enrolment", patient_id=pid, occurred_at="2024-01-01", reported_at="2024-01-02",
                    data={"sex": "F", "diagnosis": "systemic", "arm": arm}),
            message(f"{pid}-s", type="treatment", patient_id=pid, occurred_at="2024-01-10",
                    reported_at="2024-01-11T00:00:00Z", data={"drug": arm, "action": "start"}),
            message(f"{pid}-t", type="treatment", patient_id=pid, occurred_at="2024-04-09",
                    reported_at="2024-04-10T00:00:00Z", data={"drug": arm, "action": "stop"}),
            message(f"{pid}-pre", type="adverse_event", patient_id=pid, occurred_at="2024-01-05",
                    reported_at="2024-01-06T00:00:00Z",
                    data={"term": "Headache", "severity": "mild", "serious": False}),
        ]
        if arm == "Active" or n == 0:
            out.append(message(f"{pid}-ae", type="adverse_event", patient_id=pid, occurred_at="2024-02-01",
                               reported_at="2024-02-02T00:00:00Z",
                               data={"term": "Pneumonia", "meddra_pt": "Pneumonia",
                                     "system_organ_class": "Infections and infestations", "severity": "severe",
                                     "serious": True, "relatedness": "possible"}))
    out.append(message("S3-x", type="retraction", patient_id="S3", occurred_at="2024-02-01",
                       reported_at="2024-03-01T00:00:00Z",
                       data={"target_message_id": "S3-ae", "reason": "entered twice"}))
    return out


def project(url: str, messages: list[dict[str, Any]], pages: int = 1) -> Projector:
    ledger = Ledger(Store.parse(url))
    step = max(1, len(messages) // pages)
    for start in range(0, len(messages), step):
        Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(messages[start:start + step], start)])
        Projector(ledger, ExposureModel()).catch_up()
    projector = Projector(ledger, ExposureModel())
    projector.catch_up()
    return projector


def test_as_of_before_a_retraction_gives_the_earlier_table_and_another_fingerprint(store_url: str):
    import time
    from datetime import UTC, datetime

    feed = arm_feed()
    project(store_url, feed[:-1])
    time.sleep(0.01)
    known = datetime.now(UTC)  # knowledge time: what the ledger had recorded before the retraction
    time.sleep(0.01)
    db = project(store_url, feed[-1:]).view.db
    before = ae_tables(db, Settings(), as_of=known)
    after = ae_tables(db, Settings())

    def serious(answer: dict[str, Any]) -> dict[str, int]:
        row = next(o for o in answer["overview"] if o["row"] == "serious")
        return {g: c["subjects"] for g, c in row["by_group"].items()}

    assert serious(before) == {"Active": 3, "Placebo": 1}
    assert serious(after) == {"Active": 2, "Placebo": 1}
    assert before["fingerprint"] != after["fingerprint"]
    assert ae_tables(db, Settings(), as_of=known) == before  # the same answer again
    # the events before the first exposure are not treatment-emergent; no control named like placebo is
    # needed when it is named
    assert next(o for o in after["overview"] if o["row"] == "any")["by_group"]["Placebo"]["subjects"] == 1
    explicit = ae_tables(db, Settings(control="Placebo"))
    assert explicit["comparisons"] == after["comparisons"] and after["control"] == "Placebo"
    # a clinical data cut before the events leaves them out and ends observation there
    cut = ae_tables(db, Settings(data_cut=datetime(2024, 2, 1, tzinfo=UTC)))
    assert serious(cut) == {"Active": 0, "Placebo": 0} and cut["observation_end"] == "2024-01-31"
    assert {g["name"]: g["patient_years"] for g in cut["groups"]} == {
        "Active": pytest.approx(3 * 22 / 365.25, abs=1e-4), "Placebo": pytest.approx(3 * 22 / 365.25, abs=1e-4)}


def test_incremental_equals_rebuild_and_sqlite_equals_postgresql(sqlite_url: str, pg_url: str, tmp_path: Path):
    feed = arm_feed()
    answers = []
    for url, pages in ((sqlite_url, 1), (f"sqlite:///{tmp_path}/paged.db", len(feed)), (pg_url, 3)):
        projector = project(url, feed, pages)
        answers.append([ae_tables(projector.view.db, Settings(by=by)) for by in ("arm", "drug", "drug_class")])
        projector.rebuild()
        assert answers[-1] == [ae_tables(projector.view.db, Settings(by=by)) for by in ("arm", "drug", "drug_class")]
    assert answers[0] == answers[1] == answers[2]


def test_the_command_line_answers_in_json_csv_and_a_table(sqlite_url: str):
    project(sqlite_url, arm_feed())
    runner = CliRunner()
    answer = ae_table_json(sqlite_url, "--by", "drug", "--lag-days", "7", "--control", "Placebo")
    assert answer["by"] == "drug" and answer["lag_days"] == 7 and answer["control"] == "Placebo"
    assert {"by", "fingerprint", "groups", "overview", "socs", "comparisons"} <= set(answer)
    cell = answer["overview"][0]["by_group"]["Active"]
    assert set(cell) >= {"subjects", "percent", "events", "patient_years_at_risk", "eair_per_100py", "eair_ci95"}
    assert {o["row"] for o in answer["overview"]} == {"any", "serious", "severe", "related",
                                                       "leading_to_discontinuation", "fatal"}
    csv_out = runner.invoke(app, ["ae-table", "--format", "csv", "--store", sqlite_url])
    assert csv_out.exit_code == 0 and csv_out.stdout.splitlines()[0].startswith("level,soc,row,Active subjects")
    table = runner.invoke(app, ["ae-table", "--store", sqlite_url])
    assert table.exit_code == 0 and "PNEUMONIA" not in table.stdout and "Pneumonia" in table.stdout
    wrong = runner.invoke(app, ["ae-table", "--control", "Plaecbo", "--store", sqlite_url])
    assert wrong.exit_code == 1
    assert "--control 'Plaecbo' is not one of the groups by arm: Active, Placebo" in wrong.output


def test_the_arms_page_shows_the_pilot_tables_comparisons_and_drill_down(sqlite_url: str, tmp_path: Path,
                                                                          monkeypatch: Any):
    from streamlit.testing.v1 import AppTest

    import_pilot(sqlite_url, tmp_path)
    answer = ae_table_json(sqlite_url)
    monkeypatch.setenv("SAFETY_MONITOR_STORE", sqlite_url)
    script = ("import streamlit as st\nfrom dashboard import pages\nfrom dashboard.auth import User\n"
              "from dashboard.state import board_data\nst.session_state['user'] = User('dsmb', 'dsmb')\n"
              "st.session_state.setdefault('pages', {})\npages.arms_page(board_data())\n")
    at = AppTest.from_string(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    overview = next(d.value for d in at.dataframe if list(d.value.columns[:1]) == ["row"]
                    and "any" in set(d.value["row"]))
    placebo = answer["overview"][0]["by_group"]["Placebo"]
    n = next(g["subjects"] for g in answer["groups"] if g["name"] == "Placebo")
    assert overview.set_index("row").loc["any", "Placebo"] == (  # n/N as the header says (issue 24)
        f"{placebo['subjects']}/{n} ({placebo['percent']:.1f}%) [{placebo['events']}]")
    assert at.selectbox(key="arms_control").value == "Placebo"
    assert any("Against Placebo" in h.value for h in at.subheader)
    # drill down to one term of one arm: its subjects and events, as the table counts them
    at.selectbox(key="arms_drill_group").select("Xanomeline High Dose").run()
    at.selectbox(key="arms_drill_soc").select("SKIN AND SUBCUTANEOUS TISSUE DISORDERS").run()
    at.selectbox(key="arms_drill_term").select("PRURITUS").run()
    assert not at.exception, at.exception
    cases = at.dataframe[-1].value
    cell = next(t for s in answer["socs"] for t in s["terms"] if t["term"] == "PRURITUS")["by_group"][
        "Xanomeline High Dose"]
    assert cases["patient_id"].nunique() == cell["subjects"] and len(cases) == cell["events"]


def half_up_percent(n: int, total: int) -> str:
    """n/N as a percentage to one decimal, half up, in integers only (no float, no Decimal)."""
    tenths = (2000 * n + total) // (2 * total)
    return f"{tenths // 10}.{tenths % 10}"


def text_of_pdf(path: Path) -> str:
    import pypdf

    return "".join(page.extract_text() for page in pypdf.PdfReader(path).pages)


def test_the_dsmb_reports_open_closed_masked_html_and_pdf(sqlite_url: str, tmp_path: Path):
    """Issue 27, items 5, 8 and 9: the report follows the trial's design (no before/after section without an
    anchor), every section carries its footer, numbers round half up and p-values below 0.001 print so;
    the open session names no arm and compares nothing; the masked closed session names no arm and its key,
    written apart, maps each group; the PDF holds the HTML's numbers."""
    import re

    import_pilot(sqlite_url, tmp_path)
    answer = ae_table_json(sqlite_url)

    def report(name: str, *options: str) -> str:
        result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / name), "--store", sqlite_url, *options])
        assert result.exit_code == 0, result.output
        return (tmp_path / name).read_text(encoding="utf-8") if name.endswith(".html") else text_of_pdf(tmp_path / name)

    closed = report("closed.html")
    assert "Treatment-emergent adverse events" in closed and "Comparisons with Placebo" in closed
    assert "Cohort comparison" not in closed and "before and after" not in closed  # the trial has no anchor
    assert answer["fingerprint"] in closed
    sections = closed.count("<section ")
    assert sections >= 8 and closed.count('<p class="footer">Closed session — confidential · Data cut: ') == sections
    assert "Knowledge time: 20" in closed and "CTCAE v5.0" in closed
    for group in answer["groups"]:
        n = group["subjects"]
        for o in answer["overview"]:
            c = o["by_group"][group["name"]]
            assert f"{c['subjects']} ({half_up_percent(c['subjects'], n)}%) [{c['events']}]" in closed, o["row"]
    assert "&lt;0.001" in closed and not re.search(r"<td>0\.000</td>", closed)

    arms = [g["name"] for g in answer["groups"]]
    opened = report("open.html", "--session", "open")
    opened_pdf = report("open.pdf", "--session", "open")
    for text in (opened, opened_pdf):
        assert "Open session" in text and "Comparisons" not in text
        assert not [arm for arm in arms if arm.lower() in text.lower()]
    assert "All subjects (N = 254" in opened

    key = tmp_path / "key.json"
    masked = report("masked.html", "--mask-arms", "--mask-key", str(key))
    assert not [arm for arm in arms if arm.lower() in masked.lower()]
    groups = json.loads(key.read_text())["groups"]
    assert sorted(groups.values()) == sorted(arms) and all(label in masked for label in groups)
    refused = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "x.html"), "--mask-arms",
                                       "--store", sqlite_url])
    assert refused.exit_code == 1 and "--mask-key" in refused.output

    closed_pdf = report("closed.pdf")
    assert "Closed session — confidential" in closed_pdf and "page 1 of" in closed_pdf
    squeezed = re.sub(r"\s+", "", closed_pdf)
    cells = re.findall(r"\d+ \(\d+\.\d%\) \[\d+\]", closed)
    assert len(cells) > 100 and all(re.sub(r"\s+", "", c) in squeezed for c in cells)


def independent_follow_up() -> pd.DataFrame:
    """Each treated subject's window, from the SDTM files with pandas: from the first dose (RFXSTDTC) to the
    end of observation, the discontinuation's day (DS disposition events other than completion), else the
    last contact: the latest visit (SV), completion (DS), dose (EX) or adverse event onset."""
    dm, ds = sas(PILOT / "dm.xpt.gz"), sas(PILOT / "ds.xpt.gz")
    sv, ex, ae = sas(PILOT / "sv.xpt.gz"), sas(PILOT / "ex.xpt.gz"), independent_teae()
    treated = dm[dm.RFXSTDTC.fillna("") != ""].set_index("USUBJID")
    day = lambda s: s.fillna("").str[:10].map(lambda t: date.fromisoformat(t) if len(t) == 10 else None)  # noqa: E731
    disposition = ds[ds.DSCAT == "DISPOSITION EVENT"]
    stopped = disposition[~disposition.DSDECOD.isin(["COMPLETED", "SCREEN FAILURE"])]
    withdrawn = stopped.assign(d=day(stopped.DSSTDTC)).groupby("USUBJID").d.min()
    completed = disposition[disposition.DSDECOD == "COMPLETED"]
    contacts = pd.concat([
        sv.assign(d=day(sv.SVSTDTC))[["USUBJID", "d"]],
        completed.assign(d=day(completed.DSSTDTC))[["USUBJID", "d"]],
        ex.assign(d=day(ex.EXENDTC))[["USUBJID", "d"]], ex.assign(d=day(ex.EXSTDTC))[["USUBJID", "d"]],
        ae.assign(d=ae.onset)[["USUBJID", "d"]],
    ]).dropna().groupby("USUBJID").d.max()
    out = pd.DataFrame({"arm": treated.ACTARM, "start": day(treated.RFXSTDTC)})
    out["end"] = [withdrawn.get(s) or contacts.get(s) for s in out.index]
    first_te = ae[ae.TE].groupby("USUBJID").onset.min()
    out["first_event"] = [first_te.get(s) for s in out.index]
    return out


def test_events_and_time_at_risk_share_one_window_by_arm(sqlite_url: str, tmp_path: Path):
    """Issue 27, items 2 and 7: by arm without a lag, the TEAE numerator has no upper bound, so time at
    risk runs to each subject's end of observation (discontinuation, else last contact from SV, DS, EX and
    AE), never stopping at the last dose; EAIR numerators and patient-years equal an independent derivation."""
    folder = tmp_path / "pilot"
    folder.mkdir()
    for name in ("dm", "ae", "suppae", "ex", "ds", "sv", "ts"):
        shutil.copy(PILOT / f"{name}.xpt.gz", folder)
    result = CliRunner().invoke(app, ["import-sdtm", str(folder), "--source", "cdisc-pilot", "--transfer", "T1",
                                      "--store", sqlite_url])
    assert result.exit_code == 0, result.output
    answer = ae_table_json(sqlite_url, "--by", "arm")
    assert "end of each subject's observation" in answer["time_at_risk"]
    follow = independent_follow_up()
    for arm in ARMS:
        mine = follow[follow.arm == arm]
        events = mine[mine.first_event.notna() & (mine.first_event <= mine.end)]
        at_risk_days = sum(((min(e, end) if e is not None and e <= end else end) - start).days + 1
                           for start, end, e in zip(mine.start, mine.end, mine.first_event, strict=True))
        cell = next(o for o in answer["overview"] if o["row"] == "any")["by_group"][arm]
        assert cell["subjects"] == len(events), arm
        assert cell["patient_years_at_risk"] == pytest.approx(at_risk_days / 365.25, abs=1e-3), arm
        exposure_days = sum((end - start).days + 1 for start, end in zip(mine.start, mine.end, strict=True))
        group = next(g for g in answer["groups"] if g["name"] == arm)
        assert group["patient_years"] == pytest.approx(exposure_days / 365.25, abs=1e-3), arm
    # the old window stopped at the last dose: follow-up beyond it now counts for every arm
    last_dose = sas(PILOT / "dm.xpt.gz").set_index("USUBJID").RFXENDTC.str[:10]
    assert any(end > date.fromisoformat(last_dose[s]) for s, end in follow.end.items() if last_dose.get(s))


def test_the_dsmb_report_reads_every_patients_facts_once(sqlite_url: str, tmp_path: Path, monkeypatch: Any):
    """At registry size each read of every fact takes seconds: the records, eDISH, the shift tables and the
    outlier listing share one (a data cut makes each of them read the facts), and the report is unchanged."""
    from datetime import UTC, datetime

    from projections import facts, liver
    from projections.board import BoardData
    from projections.dsmb import content
    from projections.dsmb.content import ReportOptions
    from safety.cli.wiring import read_models

    import_pilot(sqlite_url, tmp_path)
    for model in read_models():
        Projector(Ledger(Store.parse(sqlite_url)), model).catch_up()
    options = ReportOptions(data_cut=datetime(2014, 1, 1, tzinfo=UTC))
    before, _ = BoardData(Store.parse(sqlite_url)).dsmb_report(options)
    reads: list[str] = []
    for module in (content, liver):
        monkeypatch.setattr(module, "patient_facts", lambda *a, _m=module.__name__, **k: (
            reads.append(_m), facts.patient_facts(*a, **k))[1])
    after, _ = BoardData(Store.parse(sqlite_url)).dsmb_report(options)
    assert reads == ["projections.dsmb.content"]
    assert after.fingerprint == before.fingerprint and len(after.sections) > 5
    assert [(s.key, s.fingerprint) for s in after.sections] == [(s.key, s.fingerprint) for s in before.sections]
