"""Arms and drugs: treatment-emergent adverse-event tables, comparisons and the drill-down."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.auth import User
from dashboard.state import record_download
from dashboard.widgets import (
    KEPT_SECONDS,
    as_of_input,
    cached_ae_table,
    cut_time,
    data_context,
    data_cut_input,
    keep,
    restore,
    stopped_banner,
)
from projections.board import BoardData
from projections.exposure import Settings as TableSettings
from projections.report import ae_rows
from safety.formatting import percent


def _cell_text(c: dict[str, Any], n: int) -> str:
    """``12/86 (14.0%) [15]``: subjects with the event of the group's N, their share, and the events."""
    return f"{c['subjects']}/{n} ({percent(c['subjects'], n)}%) [{c['events']}]" if n else "–"


def forest_plot(comparisons: list[dict[str, Any]], measure: str, title: str,
                log: bool) -> alt.LayerChart | alt.FacetChart:
    """Each group against the control on each row: the estimate and its 95% interval. Every row keeps its
    line; one that cannot be estimated (no event in either group) says so instead of vanishing."""
    frame = pd.DataFrame([{"row": c["row"], "group": c["group"], "estimate": c[measure],
                           "low": c[f"{measure}_ci95"][0], "high": c[f"{measure}_ci95"][1]} for c in comparisons])
    usable = frame.dropna(subset=["estimate", "low", "high"])
    if log:
        usable = usable[(usable["estimate"] > 0) & (usable["low"] > 0)]
    missing = frame[~frame.index.isin(usable.index)].assign(note="not estimable")
    rows = list(dict.fromkeys(frame["row"]))
    scale = alt.Scale(type="log") if log else alt.Scale()
    y = alt.Y("row:N", sort=rows, title=None, scale=alt.Scale(domain=rows), axis=alt.Axis(labelLimit=320))
    base = alt.Chart(usable).encode(y=y, yOffset="group:N", color=alt.Color("group:N", title="group against the "
                                                                                   "control"))
    rules = base.mark_rule(strokeWidth=2).encode(x=alt.X("low:Q", scale=scale, title=title), x2="high:Q")
    points = base.mark_point(filled=True, size=90).encode(x="estimate:Q",
                                                          tooltip=["row", "group", "estimate", "low", "high"])
    null = alt.Chart(pd.DataFrame({"x": [1.0 if log else 0.0]})).mark_rule(strokeDash=[4, 4], color="grey").encode(
        x="x:Q")
    notes = alt.Chart(missing).mark_text(align="left", dx=4, color="grey").encode(
        y=y, yOffset="group:N", x=alt.value(4), text="note:N")
    return alt.layer(rules, points, null, notes).properties(height=max(220, 44 * len(rows)))


#: the page's settings, kept when the user opens a patient and comes back
SETTINGS = ("arms_by", "arms_basis", "arms_lag", "arms_min", "arms_as_of", "arms_control", "arms_forest_socs",
            "arms_drill_group", "arms_drill_soc", "arms_drill_row", "arms_drill_term")


#: the tables the page shows first, every control at its default (lag none, no minimum, actual arm)
FIRST_TABLES = TableSettings("arm", None, None, 0.0, None, "actual")


@st.cache_data(ttl=KEPT_SECONDS, max_entries=32, show_spinner="Listing the patients and events…")
def cached_ae_cases(url: str, settings: TableSettings, group: str, as_of: datetime | None,
                    row: tuple[tuple[str, str | None], ...], revision: tuple[int, ...]) -> pd.DataFrame:
    """A cell's drill-down at this revision of the read model (``row``: its overview row, or its system
    organ class and term). Listing a group's every event took 0.25-0.5 s of each visit at 15,000 patients."""
    from dashboard.state import board_data

    return board_data().ae_cases(settings, group, as_of, **dict(row))


def warm(data: BoardData) -> None:
    """Compute the tables and the drill-down the page shows first, for every session (``dashboard.warm``):
    the first group and the first overview row, as its selectors start."""
    revision = data.exposure_revision()
    answer = cached_ae_table(data.store.url, FIRST_TABLES, None, revision)
    if answer["groups"]:
        cached_ae_cases(data.store.url, FIRST_TABLES, answer["groups"][0]["name"], None,
                        (("row", answer["overview"][0]["row"]),), revision)


def arms_page(data: BoardData) -> None:
    st.title("Arms and drugs: treatment-emergent adverse events")
    incomplete = stopped_banner(data, "exposure")
    restore(*SETTINGS)
    c1, c2, c3, c4 = st.columns(4)
    by = c1.radio("Group by", ("arm", "drug", "drug_class"), horizontal=True, key="arms_by",
                  format_func=lambda b: b.replace("_", " "))
    lag_text = c2.text_input("Lag after the last exposure (days)", "", key="arms_lag",
                             placeholder="none by arm, 30 by drug")
    min_percent = c3.number_input("Minimum % in a group", 0.0, 100.0, 0.0, step=1.0, key="arms_min")
    with c4:
        as_of = as_of_input("As of (knowledge time)", "arms_as_of")
    cut = data_cut_input(data, "arms")
    lag = int(lag_text) if lag_text.strip().isdigit() else None
    if lag_text.strip() and lag is None:
        st.error("Lag: a whole number of days")
    cut_at = cut_time(cut)
    data_context(data, cut, as_of)
    arm_basis = st.radio("Arm", ("actual", "planned"), horizontal=True, key="arms_basis",
                         help="actual: the arm of the treatment started (SDTM ACTARM, the safety convention); "
                              "planned: the randomised arm (SDTM ARM)") if by == "arm" else "actual"
    settings = TableSettings(by, None, lag, float(min_percent), cut_at, arm_basis)
    revision = data.exposure_revision()  # read once: the tables and the drill-down are of the same revision
    answer = cached_ae_table(data.store.url, settings, as_of, revision)
    groups = [g["name"] for g in answer["groups"]]
    if not groups:
        st.info("No subject was exposed: the tables need arms with first exposures, or treatment starts.")
        return
    control = st.selectbox("Control group", ["(none)", *groups],
                           index=1 + groups.index(answer["control"]) if answer["control"] in groups else 0,
                           key="arms_control")
    if (None if control == "(none)" else control) != answer["control"]:
        settings = TableSettings(by, None if control == "(none)" else control, lag, float(min_percent), cut_at,
                                 arm_basis)
        answer = cached_ae_table(data.store.url, settings, as_of, revision)
    basis = {"arm": "each subject's actual arm (the arm of the treatment started; SDTM ACTARM)"
             if arm_basis == "actual" else "each subject's planned arm (the randomised arm; SDTM ARM)",
             "drug": "each drug a subject started", "drug_class": "each drug class a subject started (placebo "
             "its own class; a drug sent without a class is its own)"}[by]
    st.caption(f"Fingerprint **{answer['fingerprint']}** · groups: {basis} · N: subjects exposed in the group · "
               f"treatment-emergent: {answer['treatment_emergent']} · observation ends {answer['observation_end']}"
               " · each cell: n/N (%) [events]")
    st.dataframe(pd.DataFrame(answer["groups"]).rename(columns={"name": by.replace("_", " "), "subjects": "N"}),
                 hide_index=True)
    if answer["left_out"]:
        with st.expander(f"{len(answer['left_out'])} subjects of the store take no part, with the reason"):
            st.dataframe(pd.DataFrame(answer["left_out"]), hide_index=True)
    sizes = {g["name"]: g["subjects"] for g in answer["groups"]}
    st.subheader("Overview")
    st.dataframe(pd.DataFrame([{"row": o["row"], **{g: _cell_text(o["by_group"][g], sizes[g]) for g in groups}}
                               for o in answer["overview"]]), hide_index=True, width="stretch")
    st.caption(" · ".join(o["meaning"] for o in answer["overview"]))
    st.subheader("By system organ class and preferred term")
    table = pd.DataFrame(ae_rows(answer))
    st.dataframe(table[table.index >= len(answer["overview"])], hide_index=True, width="stretch")
    if answer["comparisons"]:
        st.subheader(f"Against {answer['control']}")
        levels = ("overview", "soc") if st.checkbox("Each system organ class too", key="arms_forest_socs") \
            else ("overview",)
        overview = [c for c in answer["comparisons"] if c["level"] in levels]
        st.altair_chart(forest_plot(overview, "risk_difference", "risk difference (Miettinen-Nurminen 95% CI)",
                                    log=False), width="stretch")
        st.altair_chart(forest_plot(overview, "eair_ratio", "EAIR ratio (exact conditional 95% CI, log scale)",
                                    log=True), width="stretch")
        st.caption(" · ".join(f"{k}: {v}" for k, v in answer["methods"].items()))
    st.subheader("Patients and events")
    d1, d2, d3 = st.columns(3)
    group = d1.selectbox("Group", groups, key="arms_drill_group")
    socs = [s["soc"] for s in answer["socs"]]
    soc = d2.selectbox("System organ class", ["(an overview row)", *socs], key="arms_drill_soc")
    cell: tuple[tuple[str, str | None], ...]
    if soc == "(an overview row)":
        cell = (("row", d3.selectbox("Row", [o["row"] for o in answer["overview"]], key="arms_drill_row")),)
    else:
        terms = [t["term"] for s in answer["socs"] if s["soc"] == soc for t in s["terms"]]
        term = d3.selectbox("Term", ["(every term)", *terms], key="arms_drill_term")
        cell = (("soc", soc), ("term", None if term == "(every term)" else term))
    cases = cached_ae_cases(data.store.url, settings, group, as_of, cell, revision)
    keep(*SETTINGS)
    st.caption(f"{cases['patient_id'].nunique()} subjects, {len(cases)} events")
    picked = st.dataframe(cases.drop(columns=["source", "message_id"]), hide_index=True, on_select="rerun",
                          selection_mode="single-row", key="arms_cases")
    rows = (picked.get("selection", {}) if isinstance(picked, dict) else getattr(picked, "selection", {})) or {}
    if rows.get("rows"):
        chosen = cases.iloc[rows["rows"][0]]
        st.session_state["patient"] = (chosen["source"], chosen["patient_id"])
        st.switch_page(st.session_state["pages"]["patient"])
    if incomplete:
        return
    user: User = st.session_state["user"]
    st.download_button("Download JSON", json.dumps(answer, indent=2, ensure_ascii=False),
                       f"ae-table-{answer['fingerprint']}.json", "application/json", on_click=record_download,
                       args=(user, f"adverse-event tables {answer['fingerprint']}"))
