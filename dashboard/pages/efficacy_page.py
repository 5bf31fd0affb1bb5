"""Efficacy: disease activity, ACR-Pedi and the repeat-infusion rule."""

from __future__ import annotations

from datetime import datetime

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    anchor_input,
    data_context,
    stopped_banner,
)
from projections.board import BoardData
from safety.efficacy import CUT_OFF_SETS


def state_bands(cut_off_set: str, score: str = "jadas10", top: float = 40.0) -> pd.DataFrame:
    """The disease-activity bands of a cut-off set for the polyarticular course (``safety.efficacy``)."""
    c = CUT_OFF_SETS[cut_off_set][(score, "poly")]
    if c.moderate is None:  # Consolaro 2012: inactive and minimal disease activity only
        bands = [(0.0, c.inactive, "inactive"), (c.inactive, c.low, "minimal"), (c.low, top, "above minimal")]
    else:
        bands = [(0.0, c.inactive, "inactive"), (c.inactive, c.low, "low"), (c.low, c.moderate, "moderate"),
                 (c.moderate, top, "high")]
    return pd.DataFrame([{"low": lo, "high": hi, "state": s} for lo, hi, s in bands])


def efficacy_page(data: BoardData) -> None:
    st.title("Efficacy")
    stopped_banner(data, "efficacy")
    if data.holds_demo_study():
        st.caption("The demo study's visits are reconstructed: its per-patient efficacy data are in the paper's "
                   "supplement only (docs/demo-study.md).")
    c1, c2, c3 = st.columns(3)
    anchor = anchor_input(data, c1, "efficacy")
    data_context(data, takes_cut=False)
    if anchor is None:
        st.info("No intervention is recorded in this store: efficacy is measured from one (an anchor).")
        return
    at_week = int(c2.number_input("Compare baseline with week", 1, 104, 8))
    cut_offs = c3.selectbox("Cut-off set", ("ACR 2021", "Consolaro 2012"))
    eff = data.efficacy(anchor, at_week, cut_offs)
    st.caption(f"{len(eff['patients'])} patients with visit assessments and an intervention named '{anchor}'")
    if not eff["patients"]:
        st.info(f"No patient with visit assessments has an intervention named '{anchor}'.")
        return
    label = f"week {at_week}"
    rows = [{"variable": v, "n": c["n"], "baseline median": c["before_median"], f"{label} median": c["after_median"],
             "baseline range": f"{c['before_range'][0]:g}–{c['before_range'][1]:g}" if c["n"] else "",
             f"{label} range": f"{c['after_range'][0]:g}–{c['after_range'][1]:g}" if c["n"] else "",
             "p (Wilcoxon)": c["p_wilcoxon"]} for v, c in eff["comparison"][label].items()]
    st.subheader(f"Baseline against {label}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(next((c["method"] for c in eff["comparison"][label].values()), ""))
    st.subheader(f"JADAS-10 and cJADAS10 per patient (JADAS-10 bands of {cut_offs}, polyarticular course)")
    visits = pd.DataFrame([{"patient": p["patient_id"], "week": v["days_from_anchor"] / 7, "score": v[score],
                            "measure": score}
                           for p in eff["patients"] for v in p["visits"] for score in ("jadas10", "cjadas10")
                           if v[score] is not None])
    bands = state_bands(cut_offs)
    infusions = pd.DataFrame([{"patient": p["patient_id"], "week": (datetime.fromisoformat(i) -
                               datetime.fromisoformat(p["anchor_date"])).days / 7}
                              for p in eff["patients"] for i in p["infusions"]])
    chart = alt.layer(
        alt.Chart(bands).mark_rect(opacity=0.1).encode(
            y=alt.Y("low:Q", title="score (points; JADAS-10 0-40, cJADAS10 0-30)"), y2="high:Q",
            fill=alt.Fill("state:N", title=f"activity ({cut_offs})", sort=list(bands["state"]))),
        alt.Chart(visits).mark_line(point=True).encode(
            x=alt.X("week:Q", title=f"weeks from the first {anchor}"), y=alt.Y("score:Q"),
            strokeDash=alt.StrokeDash("measure:N", title="score"), color=alt.Color("patient:N", title="patient"),
            tooltip=["patient", "measure", "week", "score"]),
        alt.Chart(infusions).mark_rule(strokeDash=[2, 2]).encode(x="week:Q", color="patient:N"),
    ).properties(height=320).resolve_scale(color="independent")
    st.altair_chart(chart, width="stretch")
    st.caption(f"Dotted vertical lines: each {anchor}.")
    st.subheader("Repeat-infusion rule")
    decisions = [{"patient": p["patient_id"], "week": d["week"], "allowed": d["allowed"],
                  "why": "; ".join(d["reasons"])} for p in eff["patients"] for d in p["repeat_infusion"]]
    st.dataframe(pd.DataFrame(decisions), hide_index=True)
    deviations = [{"patient": p["patient_id"], **d} for p in eff["patients"] for d in p["deviations"]]
    st.caption("Protocol deviations: " + ("none" if not deviations else ""))
    if deviations:
        st.dataframe(pd.DataFrame(deviations), hide_index=True)
