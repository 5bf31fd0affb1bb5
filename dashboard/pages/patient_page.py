"""Patient: one patient's timeline, labs, liver panel, signals and history."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    render_signal,
    stopped_banner,
)
from projections.board import BoardData
from safety.mas import CRITERIA_ITEMS, FERRITIN_ABOVE

CRITERIA_THRESHOLDS = {analyte: threshold for _, analyte, _, threshold, _ in CRITERIA_ITEMS}
CRITERIA_THRESHOLDS["FERRITIN"] = FERRITIN_ABOVE


def patient_page(data: BoardData) -> None:
    st.title("Patient")
    stopped_banner(data, "incidence", "signals")
    patients = data.patients()
    if not patients:
        st.info("No patients yet.")
        return
    chosen = st.session_state.get("patient", patients[0])
    index = patients.index(chosen) if chosen in patients else 0
    source, patient_id = st.selectbox("Patient", patients, index=index, format_func=lambda p: f"{p[1]} ({p[0]})")
    st.session_state["patient"] = (source, patient_id)
    events = data.patient_events(source, patient_id)
    signals = data.signals(source=source, patient=patient_id)

    st.subheader("Timeline")
    clinical = events[~events["type"].isin(["lab_result", "retraction", "correction"])].copy()
    if not clinical.empty:
        clinical["lane"] = clinical["type"].map(lambda t: t.replace("_", " "))
        marks = clinical[~clinical["type"].isin(["intervention", "treatment"])]
        interventions = clinical[clinical["type"] == "intervention"]
        layers = [alt.Chart(marks).mark_point(filled=True, size=120).encode(
                      x=alt.X("occurred_at:T", title=None), y=alt.Y("lane:N", title=None), color="lane:N",
                      shape=alt.Shape("retracted:N"), tooltip=["type", "summary", "occurred_at", "retracted"]),
                  alt.Chart(interventions).mark_rule(strokeWidth=2, strokeDash=[4, 2]).encode(
                      x="occurred_at:T", tooltip=["summary", "occurred_at"])]
        bands = treatment_bands(clinical)
        if not bands.empty:
            layers.insert(0, alt.Chart(bands).mark_rect(opacity=0.35, height=14).encode(
                x="start:T", x2="end:T", y=alt.Y("lane:N", title=None), color=alt.Color("lane:N", legend=None),
                tooltip=["lane", "start", "end"]))
        st.altair_chart(alt.layer(*layers).properties(height=260), use_container_width=True)
        st.caption("Bands: treatments from start to stop; dashed lines: interventions; marks: events.")

    st.subheader("Lab trajectories")
    labs = data.patient_labs(source, patient_id)
    retracted = set(events.loc[events["retracted"], "message_id"]) if not events.empty else set()
    labs = labs[~labs["message_id"].isin(retracted)]
    fired: dict[str, list[str]] = {}
    for s in signals:
        for e in s["evidence"]:
            if "analyte" in e:
                fired.setdefault(e["analyte"], []).append(e["current_at"])
    analytes = list(dict.fromkeys(labs["analyte"]))
    columns = st.columns(3)
    for i, analyte in enumerate(analytes):
        series = labs[labs["analyte"] == analyte]
        unit = series["unit"].iloc[0]
        layers = [alt.Chart(series).mark_line(point=True).encode(
            x=alt.X("occurred_at:T", title=None), y=alt.Y("value:Q", title=unit),
            tooltip=["occurred_at", "value", "raw_value", "raw_unit"])]
        ref = series.dropna(subset=["reference_low", "reference_high"])
        if not ref.empty:
            layers.insert(0, alt.Chart(ref).mark_area(opacity=0.15).encode(
                x="occurred_at:T", y="reference_low:Q", y2="reference_high:Q"))
        if analyte in CRITERIA_THRESHOLDS:
            layers.append(alt.Chart(pd.DataFrame({"y": [CRITERIA_THRESHOLDS[analyte]]})).mark_rule(
                strokeDash=[4, 4], color="red").encode(y="y:Q"))
        if analyte in fired:
            points = series[series["occurred_at"].map(lambda t: t.isoformat()).isin(fired[analyte])]
            layers.append(alt.Chart(points).mark_point(size=200, color="red", shape="diamond").encode(
                x="occurred_at:T", y="value:Q"))
        with columns[i % 3]:
            notes = [n for n, shown in (("red dashes: 2016 criteria threshold", analyte in CRITERIA_THRESHOLDS),
                                        ("diamonds: a rule fired", analyte in fired)) if shown]
            st.caption(f"{analyte} ({unit})" + (" — " + "; ".join(notes) if notes else ""))
            st.altair_chart(alt.layer(*layers).properties(height=180), use_container_width=True)

    panel = data.liver_panel(source, patient_id)
    if not panel.empty:
        st.subheader("Liver panel (×ULN)")
        lines = alt.Chart(panel).mark_line(point=True).encode(
            x=alt.X("at:T", title=None), y=alt.Y("xuln:Q", title="× upper limit of normal"), color="test:N",
            tooltip=["at", "test", "value", "unit", "uln", "uln_source", "xuln"])
        rules = alt.Chart(pd.DataFrame({"y": [2.0, 3.0], "what": ["bilirubin 2×", "ALT/AST 3×"]})).mark_rule(
            strokeDash=[4, 4], color="red").encode(y="y:Q", tooltip=["what"])
        st.altair_chart(alt.layer(lines, rules).properties(height=220), use_container_width=True)
        st.caption("Each result against its own reference range (or a documented default); red dashes: the Hy's "
                   "law thresholds.")

    st.subheader("Signals")
    for s in signals:
        render_signal(s, st.session_state["user"])
    if not signals:
        st.caption("No signals for this patient.")
    st.subheader("History")
    st.dataframe(events[["occurred_at", "type", "message_id", "summary", "recorded_at", "retracted", "corrected"]],
                 hide_index=True)


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
