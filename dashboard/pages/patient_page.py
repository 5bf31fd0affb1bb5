"""Patient: one patient's timeline, labs, liver panel, signals and history."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    confirm_pending,
    data_context,
    render_signal,
    stopped_banner,
)
from projections.board import BoardData
from safety.mas import CRITERIA_ITEMS, FERRITIN_ABOVE

CRITERIA_THRESHOLDS = {analyte: threshold for _, analyte, _, threshold, _ in CRITERIA_ITEMS}
CRITERIA_THRESHOLDS["FERRITIN"] = FERRITIN_ABOVE


#: the panels shown first, in clinical order: the MAS picture (the 2016 criteria's labs and the trend
#: rules'), then the liver tests; every other test follows, alphabetically
MAS_PANEL = ("WBC", "PLT", "NEUT", "HGB", "ESR", "CRP", "FERRITIN", "TG", "FIBRINOGEN", "LDH")
LIVER_PANEL = ("ALT", "AST", "BILI", "ALP")
DATE_AXIS = alt.Axis(format="%d %b %Y", labelAngle=-30, title=None)


def header_line(summary: dict[str, Any], patient_id: str, source: str) -> str:
    """``**MSC-06** (umcu) · male · 9 years at enrolment · systemic JIA · arm ... · on tocilizumab since ...``."""
    sex = {"F": "female", "M": "male"}.get(str(summary["sex"]), summary["sex"] or "sex not recorded")
    if summary["age_now"] is not None:
        age = f"{summary['age_now']} years old"
    elif summary["age_at_enrolment"] is not None:
        age = f"{summary['age_at_enrolment']:g} years at enrolment"
    else:
        age = "age not recorded"
    arm = summary["arm"] or "no arm recorded"
    if summary["actual_arm"] and summary["actual_arm"] != summary["arm"]:
        arm += f" (actual: {summary['actual_arm']})"
    drugs = "; ".join(f"{d['drug']} {d['dose']}".strip() + f" since {d['since']}" for d in summary["current_drugs"])
    return (f"**{patient_id}** ({source}) · {sex} · {age} · {summary['diagnosis'] or 'diagnosis not recorded'}"
            f" · arm: {arm} · current drugs: {drugs or 'none recorded'}")


def patient_page(data: BoardData) -> None:
    st.title("Patient")
    data_context(data, takes_cut=False)
    stopped_banner(data, "incidence", "signals")
    patients = data.patients()
    if not patients:
        st.info("No patients yet.")
        return
    chosen = st.session_state.get("patient", patients[0])
    index = patients.index(chosen) if chosen in patients else 0
    source, patient_id = st.selectbox("Patient", patients, index=index, format_func=lambda p: f"{p[1]} ({p[0]})")
    st.session_state["patient"] = (source, patient_id)
    st.markdown(header_line(data.patient_summary(source, patient_id), patient_id, source))
    events = data.patient_events(source, patient_id)
    signals = data.signals(source=source, patient=patient_id)
    labs = data.patient_labs(source, patient_id)
    retracted = set(events.loc[events["retracted"], "message_id"]) if not events.empty else set()
    labs = labs[~labs["message_id"].isin(retracted)]
    times = [t for t in (*events["occurred_at"], *labs["occurred_at"]) if t is not None]
    span = alt.Scale(domain=[min(times).isoformat(), max(times).isoformat()]) if times else alt.Scale()

    st.subheader("Timeline")
    clinical = events[~events["type"].isin(["lab_result", "retraction", "correction"])].copy()
    if not clinical.empty:
        clinical["lane"] = clinical["type"].map(lambda t: t.replace("_", " "))
        clinical["state"] = clinical["retracted"].map(lambda r: "retracted" if r else "current")
        marks = clinical[~clinical["type"].isin(["intervention", "treatment"])]
        interventions = clinical[clinical["type"] == "intervention"]
        layers = [alt.Chart(marks).mark_point(filled=True, size=120).encode(
                      x=alt.X("occurred_at:T", axis=DATE_AXIS, scale=span), y=alt.Y("lane:N", title=None),
                      color=alt.Color("lane:N", title="event"), shape=alt.Shape("state:N", title="record"),
                      tooltip=["type", "summary", alt.Tooltip("occurred_at:T", format="%d %b %Y"), "state"]),
                  alt.Chart(interventions).mark_rule(strokeWidth=2, strokeDash=[4, 2]).encode(
                      x="occurred_at:T", tooltip=["summary", alt.Tooltip("occurred_at:T", format="%d %b %Y")])]
        bands = treatment_bands(clinical)
        if not bands.empty:
            layers.insert(0, alt.Chart(bands).mark_rect(opacity=0.35, height=14).encode(
                x=alt.X("start:T", axis=DATE_AXIS, scale=span), x2="end:T", y=alt.Y("lane:N", title=None),
                color=alt.Color("lane:N", legend=None),
                tooltip=["lane", alt.Tooltip("start:T", format="%d %b %Y"), alt.Tooltip("end:T", format="%d %b %Y")]))
        st.altair_chart(alt.layer(*layers).properties(height=260), width="stretch")
        st.caption("Bands: treatments from start to stop; dashed lines: interventions; marks: events. Every chart "
                   "on this page shares this time axis.")

    fired: dict[str, list[str]] = {}
    for s in signals:
        for e in s["evidence"]:
            if "analyte" in e:
                fired.setdefault(e["analyte"], []).append(e["current_at"])
    present = list(dict.fromkeys(labs["analyte"]))
    groups = (("MAS panel", [a for a in MAS_PANEL if a in present]),
              ("Liver panel", [a for a in LIVER_PANEL if a in present]),
              ("Other tests", sorted(a for a in present if a not in MAS_PANEL and a not in LIVER_PANEL)))
    for title, analytes in groups:
        if not analytes:
            continue
        st.subheader(title)
        if title == "Liver panel":
            liver_chart(data, source, patient_id, span)
        with st.expander("each test", expanded=title != "Other tests"):
            columns = st.columns(3)
            for i, analyte in enumerate(analytes):
                with columns[i % 3]:
                    lab_chart(labs[labs["analyte"] == analyte], analyte, fired.get(analyte, []), span)

    st.subheader("Signals")
    for s in signals:
        render_signal(s, st.session_state["user"])
    confirm_pending(st.session_state["user"])
    if not signals:
        st.caption("No signals for this patient.")
    st.subheader("History")
    st.dataframe(events[["occurred_at", "type", "message_id", "summary", "recorded_at", "retracted", "corrected"]],
                 hide_index=True)


def lab_chart(series: pd.DataFrame, analyte: str, fired: list[str], span: alt.Scale) -> None:
    """One test over the shared time axis, with its reference range, the 2016 criteria's threshold and
    the results a rule fired on."""
    unit = str(series["unit"].iloc[0] or "")
    layers = [alt.Chart(series).mark_line(point=True).encode(
        x=alt.X("occurred_at:T", axis=DATE_AXIS, scale=span),
        y=alt.Y("value:Q", title=unit or "value (no unit sent)"),
        tooltip=[alt.Tooltip("occurred_at:T", format="%d %b %Y %H:%M"), "value", "raw_value", "raw_unit"])]
    ref = series.dropna(subset=["reference_low", "reference_high"])
    if not ref.empty:
        layers.insert(0, alt.Chart(ref).mark_area(opacity=0.15).encode(
            x="occurred_at:T", y="reference_low:Q", y2="reference_high:Q"))
    if analyte in CRITERIA_THRESHOLDS:
        layers.append(alt.Chart(pd.DataFrame({"y": [CRITERIA_THRESHOLDS[analyte]]})).mark_rule(
            strokeDash=[4, 4], color="red").encode(y="y:Q"))
    if fired:
        points = series[series["occurred_at"].map(lambda t: t.isoformat()).isin(fired)]
        layers.append(alt.Chart(points).mark_point(size=200, color="red", shape="diamond").encode(
            x="occurred_at:T", y="value:Q"))
    notes = [n for n, shown in (("red dashes: 2016 criteria threshold", analyte in CRITERIA_THRESHOLDS),
                                ("diamonds: a rule fired", bool(fired))) if shown]
    st.caption(f"{analyte}" + (f" ({unit})" if unit else "") + (" — " + "; ".join(notes) if notes else ""))
    st.altair_chart(alt.layer(*layers).properties(height=180), width="stretch")


def liver_chart(data: BoardData, source: str, patient_id: str, span: alt.Scale) -> None:
    panel = data.liver_panel(source, patient_id)
    if panel.empty:
        return
    lines = alt.Chart(panel).mark_line(point=True).encode(
        x=alt.X("at:T", axis=DATE_AXIS, scale=span), y=alt.Y("xuln:Q", title="× upper limit of normal"),
        color=alt.Color("test:N", title="test"),
        tooltip=[alt.Tooltip("at:T", format="%d %b %Y"), "test", "value", "unit", "uln", "uln_source", "xuln"])
    rules = alt.Chart(pd.DataFrame({"y": [2.0, 3.0], "what": ["bilirubin 2×", "ALT/AST 3×"]})).mark_rule(
        strokeDash=[4, 4], color="red").encode(y="y:Q", tooltip=["what"])
    st.altair_chart(alt.layer(lines, rules).properties(height=220), width="stretch")
    st.caption("Each result against its own reference range (or a documented default); red dashes: the Hy's "
               "law thresholds.")


def treatment_bands(clinical: pd.DataFrame) -> pd.DataFrame:
    """Each drug's periods from start (or change) to stop; a stop with no known start begins the band
    at the first event shown; a drug never stopped runs to the last."""
    first, last = clinical["occurred_at"].min(), clinical["occurred_at"].max()
    bands = []
    treatments = clinical[(clinical["type"] == "treatment") & ~clinical["retracted"]].sort_values("occurred_at")
    for drug, rows in treatments.groupby("name"):
        opened = None
        for _, row in rows.iterrows():
            if row["action"] in ("start", "change"):
                opened = opened if opened is not None else row["occurred_at"]
            elif row["action"] == "stop":
                bands.append({"lane": f"on {drug}", "start": opened if opened is not None else first,
                              "end": row["occurred_at"]})
                opened = None
        if opened is not None:
            bands.append({"lane": f"on {drug}", "start": opened, "end": last})
    return pd.DataFrame(bands, columns=["lane", "start", "end"])
