"""Liver (eDISH): peak transaminases against peak bilirubin, Hy's law, CTCAE shifts."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    KEPT_SECONDS,
    data_context,
    stopped_banner,
)
from projections.board import BoardData


@st.cache_data(ttl=KEPT_SECONDS, max_entries=16, show_spinner="Reading the liver views…")
def cached_edish(url: str, by: str, on_treatment: bool, basis: str, revision: tuple[int, ...]) -> dict[str, Any]:
    """The eDISH answer at this revision of the signals read model, whose liver views it counts (issue 28:
    counting every patient's view took most of the page's server time)."""
    from dashboard.state import board_data

    return board_data().edish(by, on_treatment, basis)


@st.cache_data(ttl=KEPT_SECONDS, max_entries=16, show_spinner="Reading the liver views…")
def cached_shifts(url: str, by: str, basis: str, revision: tuple[int, ...]) -> dict[str, Any]:
    """The shift tables at this revision of the signals read model (they do not depend on the peaks'
    window, so the "every value" switch does not count them again)."""
    from dashboard.state import board_data

    return board_data().lab_shifts(by, basis)


#: what each eDISH point holds and its tooltip shows: the patient (source and id: what a click opens), the
#: group, the plotted peak, each test's peak, the quadrant and the Hy's law verdict with its reason
TOOLTIP = ("source", "patient_id", "group", "peak_transaminase_xuln", "peak_alt_xuln", "peak_ast_xuln",
           "peak_bili_xuln", "peak_alp_xuln", "quadrant", "potential_hys_law", "reason")

#: the page's controls at their defaults: by arm, the actual arm (peaks on treatment, not every value)
FIRST_BY, FIRST_BASIS = "arm", "actual"


def warm(data: BoardData) -> None:
    """Compute what the page shows first, for every session (``dashboard.warm``)."""
    revision = data.signals_revision()
    cached_edish(data.store.url, FIRST_BY, True, FIRST_BASIS, revision)
    cached_shifts(data.store.url, FIRST_BY, FIRST_BASIS, revision)


def liver_page(data: BoardData) -> None:
    st.title("Liver safety (eDISH)")
    data_context(data, takes_cut=False)
    stopped_banner(data, "signals")
    c1, c2, c3 = st.columns(3)
    by = c1.radio("Group by", (FIRST_BY, "drug"), horizontal=True, key="edish_by")
    basis = c2.radio("Arm", (FIRST_BASIS, "planned"), horizontal=True, key="edish_arm", disabled=by != "arm",
                     help="actual: the treatment started (SDTM ACTARM, the safety convention); planned: the "
                          "randomised arm (SDTM ARM)")
    every = c3.checkbox("Every value, screening included", key="edish_all",
                        help="by default the peaks are on treatment: from each patient's first exposure")
    revision = data.signals_revision()
    answer = cached_edish(data.store.url, by, not every, basis, revision)
    t = answer["thresholds"]
    st.caption(f"Peak ALT or AST against peak total bilirubin, as multiples of the upper limit of normal; lines at "
               f"{t['transaminase_xuln']:g}×ULN and {t['bilirubin_xuln']:g}×ULN (FDA 2009 DILI guidance; "
               f"{answer['rules_version']}). Potential Hy's law also needs the bilirubin within "
               f"{t['window_days']} days of the transaminase rise and ALP below {t['cholestatic_alp_xuln']:g}×ULN. "
               f"Peaks {'over every value, screening included' if every else 'on treatment'}"
               f"{f'; by {basis} arm' if by == 'arm' else ''}. Click a patient to open them.")
    frame = pd.DataFrame(answer["patients"])
    if frame.empty:
        st.info("No patient has a liver test with a reference range.")
        return
    frame["peak_transaminase_xuln"] = frame[["peak_alt_xuln", "peak_ast_xuln"]].max(axis=1)
    frame = frame.dropna(subset=["peak_transaminase_xuln", "peak_bili_xuln"])
    pick = alt.selection_point(fields=["source", "patient_id"], name="patient")
    scale = alt.Scale(type="log")
    # the tooltip is each point's datum as it is (issue 28): a tooltip of named fields is an expression the
    # browser interprets for every point (Streamlit's Vega runs without compiled expressions), 0.1-0.2 s of
    # a first visit at 15,000 patients. So the chart gets exactly the fields a physician reads in it, on an
    # index of text, which Streamlit leaves out of the datum (a numeric one it adds as "(index)")
    shown = frame[list(TOOLTIP)].set_axis(frame["source"] + " " + frame["patient_id"], axis=0)
    points = alt.Chart(shown).mark_point(filled=True, size=70, tooltip={"content": "data"}).encode(
        x=alt.X("peak_transaminase_xuln:Q", scale=scale, title="peak ALT or AST (×ULN)"),
        y=alt.Y("peak_bili_xuln:Q", scale=scale, title="peak total bilirubin (×ULN)"),
        color=alt.Color("group:N", title=by), shape=alt.Shape("potential_hys_law:N", title="potential Hy's law"),
    ).add_params(pick)
    lines = [alt.Chart(pd.DataFrame({"x": [t["transaminase_xuln"]]})).mark_rule(strokeDash=[4, 4], color="red")
             .encode(x="x:Q"),
             alt.Chart(pd.DataFrame({"y": [t["bilirubin_xuln"]]})).mark_rule(strokeDash=[4, 4], color="red")
             .encode(y="y:Q")]
    event = st.altair_chart(alt.layer(points, *lines).properties(height=420), width="stretch",
                            on_select="rerun", key="edish_chart")
    chosen = (event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})) or {}
    picked = chosen.get("patient") or []
    if picked:
        st.session_state["patient"] = (picked[0]["source"], picked[0]["patient_id"])
        st.switch_page(st.session_state["pages"]["patient"])
    counts = frame.groupby(["group", "quadrant"]).size().unstack(fill_value=0)
    st.subheader("Patients by quadrant")
    st.table(counts)  # a few cells: a plain table draws at once, a data grid takes its own set-up
    shifts = cached_shifts(data.store.url, by, basis, revision)
    if shifts["matrices"]:
        st.subheader(f"Laboratory shifts ({shifts['version']})")
        st.caption(f"Subjects by baseline grade (rows) and worst post-baseline grade (columns); baseline: "
                   f"{shifts['baseline']}; {shifts['scale']}. Each table sums to N.")
        test = st.selectbox("Test", list(dict.fromkeys(m["term"] for m in shifts["matrices"])), key="shift_test")
        grades = [str(g) for g in shifts["grades"]]
        for m in (m for m in shifts["matrices"] if m["term"] == test):
            st.markdown(f"**{m['group']}** (N = {m['N']})")
            st.table(pd.DataFrame(m["matrix"], index=[f"baseline {g}" for g in grades],
                                  columns=[f"worst {g}" for g in grades]))
    flagged = frame[(frame["quadrant"] == "hys_law_range") | frame["potential_hys_law"]]
    if not flagged.empty:
        st.subheader("In the Hy's law range")
        st.dataframe(flagged[["patient_id", "group", "peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln",
                              "peak_alp_xuln", "potential_hys_law", "reason"]], hide_index=True)
