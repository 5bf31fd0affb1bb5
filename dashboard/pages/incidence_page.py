"""Incidence before and after the intervention (the DSMB's Table 2)."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.auth import User
from dashboard.state import record_download
from dashboard.widgets import (
    KEPT_SECONDS,
    anchor_input,
    as_of_input,
    cut_time,
    data_context,
    data_cut_input,
    stopped_banner,
)
from projections.board import BoardData
from projections.report import incidence_csv
from safety.incidence import CATEGORIES, Settings


@st.cache_data(ttl=KEPT_SECONDS, max_entries=32, show_spinner="Computing incidence…")
def cached_incidence(url: str, anchor: str, pre: int, post: int, cut_at: datetime | None,
                     as_of: datetime | None, revision: tuple[int, ...]) -> dict[str, Any]:
    """The answer for these controls at this revision of the read model (a new event gives a new one)."""
    from dashboard.state import board_data

    return board_data().incidence(Settings(anchor, pre, post, cut_at), as_of)


#: the windows the page shows first: 3 months before the anchor, 12 from it
FIRST_PRE, FIRST_POST = 3, 12


def warm(data: BoardData) -> None:
    """Compute the comparison the page shows first (the first anchor, default windows), for every session
    (``dashboard.warm``)."""
    anchors = data.interventions()
    if anchors:
        cached_incidence(data.store.url, anchors[0], FIRST_PRE, FIRST_POST, None, None, data.incidence_revision())


def incidence_page(data: BoardData) -> None:
    st.title("Incidence before and after the intervention")
    incomplete = stopped_banner(data, "incidence", "efficacy")
    c1, c2, c3, c4, c5 = st.columns(5)
    anchor = anchor_input(data, c1, "incidence")
    pre = c2.number_input("Months before", 1, 120, FIRST_PRE)
    post = c3.number_input("Months from", 1, 120, FIRST_POST)
    with c4:
        as_of = as_of_input("As of (knowledge time)", "as_of")
    with c5:
        cut = data_cut_input(data, "incidence")
    cut_at = cut_time(cut)
    data_context(data, cut, as_of)
    if anchor is None:
        st.info("No intervention is recorded in this store: incidence before and after needs one (an anchor).")
        return
    answer = cached_incidence(data.store.url, anchor, int(pre), int(post), cut_at, as_of, data.incidence_revision())
    st.caption(f"Fingerprint **{answer['fingerprint']}** · {answer['patients']} patients with an anchor · "
               f"data cut {answer['data_cut'] or 'none'} · as of {answer['as_of'] or 'latest'}")
    if answer["patients"] == 0:
        st.info(f"No patient has an intervention named '{anchor}'.")
        return
    rows = []
    for c in CATEGORIES:
        b = answer["categories"][c]
        for side in ("pre", "post"):
            s = b[side]
            rows.append({"category": c, "window": side, "events": s["events"],
                         "person-months": round(s["person_months"], 1),
                         "monthly incidence": s["monthly_incidence"],
                         "per person-month": s["incidence_per_person_month"],
                         "95% CI low": s["ci95_low"], "95% CI high": s["ci95_high"],
                         "rate ratio (post/pre)": b["rate_ratio"] if side == "pre" else None,
                         "p exact conditional": b["p_exact_conditional"] if side == "pre" else None,
                         "p Fisher (person-months)": b["p_fisher_person_months"] if side == "pre" else None})
    cohort = pd.DataFrame(rows)
    st.subheader("Cohort comparison")
    # the comparison (ratio, p-values) first after the counts, so no column is off-screen on a laptop
    order = ["category", "window", "events", "person-months", "monthly incidence", "rate ratio (post/pre)",
             "p exact conditional", "p Fisher (person-months)", "per person-month", "95% CI low", "95% CI high"]
    st.dataframe(cohort, hide_index=True, width="stretch", column_order=order, column_config={
        c: st.column_config.NumberColumn(format="%.3f", width="small") for c in
        ("monthly incidence", "per person-month", "95% CI low", "95% CI high", "rate ratio (post/pre)",
         "p exact conditional", "p Fisher (person-months)")})
    st.caption(" · ".join(f"{k}: {v}" for k, v in answer["methods"].items()))
    chart = alt.Chart(cohort).encode(x=alt.X("window:N", sort=["pre", "post"], title=None),
                                     color=alt.Color("window:N", legend=None))
    bars = chart.mark_bar().encode(y=alt.Y("per person-month:Q", title="events per person-month"))
    whiskers = chart.mark_errorbar().encode(y="95% CI low:Q", y2="95% CI high:Q")
    st.altair_chart((bars + whiskers).properties(width=160, height=220).facet(column="category:N"))

    st.subheader("Per patient (Table 2)")
    table = pd.DataFrame([
        {"patient": r["patient_id"], "anchor": r["anchor_date"],
         **{f"{c} {side}": r[c][side]["monthly_incidence"] for c in ("serious", "moderate_severe")
            for side in ("pre", "post")}}
        for r in answer["per_patient"]])
    st.dataframe(table, hide_index=True, column_config={
        col: st.column_config.NumberColumn(format="%.2f") for col in table.columns[2:]})
    st.subheader("Episodes (months from the anchor)")
    chosen = st.multiselect("Patients", [r["patient_id"] for r in answer["per_patient"]], key="episode_patients",
                            placeholder="the first 100 patients; choose to narrow")
    patients = set(chosen) or {r["patient_id"] for r in answer["per_patient"][:100]}
    episodes = pd.DataFrame([e for e in answer["episodes"] if e["patient_id"] in patients])
    for column in ("serious", "moderate_severe", "treatments"):
        episodes[column] = episodes[column].map(lambda items: "; ".join(items) or "–")
    st.dataframe(episodes.drop(columns=["source"]), hide_index=True)
    if incomplete:
        st.caption("Downloads are withheld while a read model this answer needs has stopped: a DSMB file "
                   "must not miss events silently.")
        return
    user: User = st.session_state["user"]
    d1, d2 = st.columns(2)
    d1.download_button("Download CSV", incidence_csv(answer), f"incidence-{answer['fingerprint']}.csv",
                       "text/csv", on_click=record_download, args=(user, f"incidence CSV {answer['fingerprint']}"))
    with d2.popover("DSMB report"):
        dsmb_report_controls(data, user, anchor, int(pre), int(post), cut_at, as_of)


def dsmb_report_controls(data: BoardData, user: User, anchor: str, pre: int, post: int, cut_at: datetime | None,
                         as_of: datetime | None) -> None:
    """Prepare the DSMB report for a session, arm basis and format, then download it (issue 27)."""
    from projections.dsmb import ReportOptions, write_pdf

    session = st.radio("Session", ("closed", "open"), horizontal=True, key="dsmb_session",
                       help="open: pooled, no arm and no comparison; closed: by arm, for the board alone")
    basis = st.radio("Arm", ("actual", "planned"), horizontal=True, key="dsmb_arm", disabled=session == "open")
    form = st.radio("Format", ("HTML", "PDF"), horizontal=True, key="dsmb_format")
    if st.button("Prepare the report", key="dsmb_prepare"):
        with st.spinner("Writing the report…"):
            report, text = data.dsmb_report(ReportOptions(session, basis, anchor=anchor, pre_months=pre,
                                                          post_months=post, as_of=as_of, data_cut=cut_at))
            if form == "PDF":
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "report.pdf"
                    write_pdf(text, path)
                    body = path.read_bytes()
            else:
                body = text.encode()
        st.session_state["dsmb_file"] = (report.fingerprint, report.banner, form, body)
    prepared = st.session_state.get("dsmb_file")
    if prepared:
        fingerprint, banner, form, body = prepared
        suffix, mime = ("pdf", "application/pdf") if form == "PDF" else ("html", "text/html")
        st.download_button(f"Download ({banner}, {form})", body, f"dsmb-{fingerprint}.{suffix}", mime,
                           on_click=record_download, args=(user, f"DSMB report ({banner}) {fingerprint}"),
                           key="dsmb_download")
