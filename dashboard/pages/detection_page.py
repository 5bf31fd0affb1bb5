"""Signal detection: disproportionality of every drug-event pair, and the sequential surveillance of the
plan's pairs (SAFETY_MONITOR_SURVEILLANCE), each pair's LLR path against its critical value."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import KEPT_SECONDS, cut_time, data_context, data_cut_input, keep, restore, stopped_banner
from projections.board import BoardData

SETTINGS = ("detect_level", "detect_lag", "detect_min", "detect_method", "detect_drug", "detect_term")
MEASURE_AXIS = {"ic": ("ic025", "IC025 (log2; signal above 0)"), "ror": ("log_ror_low", "ln ROR, lower 95% bound"),
                "prr": ("prr", "PRR"), "ebgm": ("eb05", "EB05")}


@st.cache_data(ttl=KEPT_SECONDS, max_entries=16, show_spinner="Screening every drug-event pair…")
def cached_screen(url: str, level: str, lag: int, min_count: int, cut: Any,
                  revision: tuple[int, ...]) -> dict[str, Any]:
    from dashboard.state import board_data

    return board_data().disproportionality(level, lag, min_count, cut_time(cut))


#: the screen's controls at their defaults: preferred terms, 30 days after a course, pairs of 3 or more events
FIRST_LEVEL, FIRST_LAG, FIRST_MIN_COUNT = "pt", 30, 3


def warm(data: BoardData) -> None:
    """Compute the screen the page shows first, for every session (``dashboard.warm``)."""
    cached_screen(data.store.url, FIRST_LEVEL, FIRST_LAG, FIRST_MIN_COUNT, None, data.exposure_revision())


def detection_page(data: BoardData) -> None:
    st.title("Signal detection")
    stopped_banner(data, "exposure")
    restore(*SETTINGS)
    c1, c2, c3, c4 = st.columns(4)
    level = c1.radio("Level", (FIRST_LEVEL, "soc"), horizontal=True, key="detect_level",
                     format_func=lambda v: {"pt": "preferred term", "soc": "system organ class"}[v])
    lag = int(c2.number_input("Lag after a course (days)", 0, 3650, FIRST_LAG, key="detect_lag"))
    min_count = int(c3.number_input("Pairs with at least (events)", 1, 1000, FIRST_MIN_COUNT, key="detect_min"))
    method = c4.selectbox("Measure plotted and filtered", ("ic", "ror", "prr", "ebgm"), key="detect_method",
                          format_func=str.upper)
    cut = data_cut_input(data, "detection")
    data_context(data, cut)
    answer = cached_screen(data.store.url, level, lag, min_count, cut, data.exposure_revision())
    keep(*SETTINGS)
    st.caption(f"Unit: {answer['unit']}. N = {answer['N']} pairs · fingerprint **{answer['fingerprint']}** · "
               f"rules {answer['rules']['version']} (signals raised by {answer['rules']['method'].upper()})")
    if not answer["pairs"]:
        st.info(f"No drug-event pair with {min_count} or more events: screening needs treatment courses and "
                "adverse events in their windows.")
        surveillance_section(data, cut)
        return
    frame = pd.DataFrame([{**{k: p[k] for k in ("drug", "term", "a", "expected", "prr", "ror", "ic", "ic025",
                                                 "ebgm", "eb05")},
                           "log_ror_low": math.log(p["ror_ci95"][0]) if p["ror_ci95"] else None,
                           "signal": ", ".join(m.upper() for m, on in p["signal"].items() if on)}
                          for p in answer["pairs"]])
    f1, f2, f3 = st.columns(3)
    drugs = f1.multiselect("Drug", sorted(frame["drug"].unique()), key="detect_drug")
    term = f2.text_input("Term contains", key="detect_term")
    only = f3.checkbox(f"Signals of {method.upper()} only", key="detect_only")
    shown = frame[(frame["drug"].isin(drugs) if drugs else True) & frame["term"].str.contains(term.casefold())]
    if only:
        shown = shown[shown["signal"].str.contains(method.upper())]
    prior = answer["prior"]
    if prior:
        st.caption("MGPS prior (DuMouchel 1999, fitted over the pairs with a ≥ 1): "
                   + ", ".join(f"{k} {v:.4g}" for k, v in prior.items()))
    column, title = MEASURE_AXIS[method]
    left, right = st.columns([3, 2])
    picked = left.dataframe(shown, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                            key="detect_table", column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                                               ("expected", "prr", "ror", "ic", "ic025", "ebgm",
                                                                "eb05", "log_ror_low")})
    plot = shown.dropna(subset=[column])
    right.altair_chart(alt.Chart(plot).mark_circle(size=60).encode(
        x=alt.X("a:Q", scale=alt.Scale(type="log"), title="events of the pair (a, log scale)"),
        y=alt.Y(f"{column}:Q", title=title), color=alt.Color("drug:N", title="drug"),
        tooltip=["drug", "term", "a", "expected", column, "signal"]).properties(height=380), width="stretch")
    rows = (picked.get("selection", {}) if isinstance(picked, dict) else getattr(picked, "selection", {})) or {}
    if rows.get("rows"):
        chosen = shown.iloc[rows["rows"][0]]
        cases = data.pair_cases(chosen["drug"], chosen["term"], level, lag, cut_time(cut))
        st.subheader(f"{chosen['drug']} · {chosen['term']}: {cases['patient_id'].nunique() if not cases.empty else 0} "
                     f"patients, {len(cases)} events")
        pick = st.dataframe(cases.drop(columns=["message_id"], errors="ignore"), hide_index=True,
                            on_select="rerun", selection_mode="single-row", key="detect_cases")
        chosen_rows = (pick.get("selection", {}) if isinstance(pick, dict) else getattr(pick, "selection", {})) or {}
        if chosen_rows.get("rows"):
            case = cases.iloc[chosen_rows["rows"][0]]
            st.session_state["patient"] = (case["source"], case["patient_id"])
            st.switch_page(st.session_state["pages"]["patient"])
    surveillance_section(data, cut)


def surveillance_section(data: BoardData, cut: Any) -> None:
    st.subheader("Sequential surveillance (Poisson MaxSPRT)")
    plan = os.environ.get("SAFETY_MONITOR_SURVEILLANCE")
    if not plan:
        st.caption("No surveillance plan: set SAFETY_MONITOR_SURVEILLANCE to a plan file (docs/signal-detection.md).")
        return
    try:
        answer = data.surveillance(Path(plan).read_text(encoding="utf-8"), cut_time(cut))
    except (OSError, ValueError) as exc:
        st.error(f"The surveillance plan {plan} cannot be used: {exc}")
        return
    st.caption(f"Plan {answer['plan'][:12]} · fingerprint {answer['fingerprint']} · observation ends "
               f"{answer['observation_end']}")
    for p in answer["pairs"]:
        with st.container(border=True):
            status = {"signalled": f":red[**signalled** on {p['signalled_on']}]",
                      "ended": f"ended on {p['ended_on']} without a signal"}.get(p["status"], "monitoring")
            st.markdown(f"**{p['name']}** · {p['drug']} · {', '.join(p['terms'])} · {status} · observed "
                        f"{p['observed']}, expected {p['expected']:.2f}, LLR {p['llr']:.3f} (CV "
                        f"{p['critical_value']:.4f})")
            path = pd.DataFrame(p["path"])
            if path.empty:
                st.caption("No event of the pair yet.")
                continue
            path["day"] = pd.to_datetime(path["day"])
            line = alt.Chart(path).mark_line(point=True).encode(
                x=alt.X("day:T", axis=alt.Axis(format="%d %b %Y"), title=None),
                y=alt.Y("llr:Q", title="log-likelihood ratio"),
                tooltip=["day:T", "observed", alt.Tooltip("expected:Q", format=".2f"),
                         alt.Tooltip("llr:Q", format=".3f")])
            cv = alt.Chart(pd.DataFrame({"cv": [p["critical_value"]]})).mark_rule(
                color="red", strokeDash=[4, 4]).encode(y="cv:Q")
            st.altair_chart(alt.layer(line, cv).properties(height=200), width="stretch")
