"""Efficacy: disease activity, ACR-Pedi and the repeat-infusion rule."""

from __future__ import annotations

from datetime import datetime

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    stopped_banner,
)
from projections.board import BoardData

STATE_BANDS = {"ACR 2021": {"jadas10": ((0, 2.7, "inactive"), (2.7, 6, "low"), (6, 17, "moderate"), (17, 40, "high")),
                            "cjadas10": ((0, 2.5, "inactive"), (2.5, 5, "low"), (5, 16, "moderate"), (16, 30, "high"))}}


def efficacy_page(data: BoardData) -> None:
    st.title("Efficacy")
    stopped_banner(data, "efficacy")
    st.caption("Reconstructed demo visits: the study's per-patient efficacy data are in its supplement only.")
    c1, c2, c3 = st.columns(3)
    anchor = c1.text_input("Anchor intervention", "MSC infusion", key="eff_anchor")
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
    st.subheader("JADAS-10 and cJADAS10 per patient (poly-course ACR 2021 bands shaded)")
    visits = pd.DataFrame([{"patient": p["patient_id"], "week": v["days_from_anchor"] / 7, "score": v[score],
                            "measure": score}
                           for p in eff["patients"] for v in p["visits"] for score in ("jadas10", "cjadas10")
                           if v[score] is not None])
    bands = pd.DataFrame([{"low": lo, "high": hi, "state": s} for lo, hi, s in STATE_BANDS["ACR 2021"]["jadas10"]])
    infusions = pd.DataFrame([{"patient": p["patient_id"], "week": (datetime.fromisoformat(i) -
                               datetime.fromisoformat(p["anchor_date"])).days / 7}
                              for p in eff["patients"] for i in p["infusions"]])
    chart = alt.layer(
        alt.Chart(bands).mark_rect(opacity=0.08).encode(y="low:Q", y2="high:Q",
                                                        color=alt.Color("state:N", legend=None)),
        alt.Chart(visits).mark_line(point=True).encode(x=alt.X("week:Q", title="weeks from the first infusion"),
                                                       y=alt.Y("score:Q"), strokeDash="measure:N", color="patient:N"),
        alt.Chart(infusions).mark_rule(strokeDash=[2, 2]).encode(x="week:Q", color="patient:N"),
    ).properties(height=320)
    st.altair_chart(chart, use_container_width=True)
    st.subheader("Repeat-infusion rule")
    decisions = [{"patient": p["patient_id"], "week": d["week"], "allowed": d["allowed"],
                  "why": "; ".join(d["reasons"])} for p in eff["patients"] for d in p["repeat_infusion"]]
    st.dataframe(pd.DataFrame(decisions), hide_index=True)
    deviations = [{"patient": p["patient_id"], **d} for p in eff["patients"] for d in p["deviations"]]
    st.caption("Protocol deviations: " + ("none" if not deviations else ""))
    if deviations:
        st.dataframe(pd.DataFrame(deviations), hide_index=True)
