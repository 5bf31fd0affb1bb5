"""The board's pages. Each reads read models through ``BoardData`` and renders them."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.auth import ROLES, User
from dashboard.state import act, record_download, user_store
from events.domain import SIGNAL_STATUSES
from projections.board import BoardData
from projections.exposure import Settings as TableSettings
from projections.report import ae_rows, dsmb_html, incidence_csv
from safety.incidence import CATEGORIES, Settings
from safety.mas import CRITERIA_ITEMS, FERRITIN_ABOVE

LEVEL_COLOUR = {"alert": "red", "warning": "orange", "watch": "violet"}
KINDS = ("mas_trend", "mas_criteria_2016", "ms_score", "ferritin_esr_ratio", "death", "serious_adverse_event",
         "data_query", "transaminase_elevation", "hys_law")


def refresh_seconds() -> float | None:
    """Seconds between live refreshes (``SAFETY_MONITOR_BOARD_REFRESH``; 0 turns it off)."""
    seconds = float(os.environ.get("SAFETY_MONITOR_BOARD_REFRESH", "5"))
    return seconds or None


def _when(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%d %b %Y %H:%M")


def evidence_sentence(e: dict[str, Any]) -> str:
    if "analyte" not in e:
        return f"{e.get('rule', '')}: {e.get('term', '')}"
    verb = "rose" if e["current"] > e["previous"] else "fell"
    change = f" {abs(e['change_pct']):.0f}%" if e.get("change_pct") is not None else ""
    return (f"{e['analyte']} {verb}{change} from {e['previous']:g} to {e['current']:g} {e['unit']} "
            f"({_when(e['previous_at'])} → {_when(e['current_at'])})"
            + ("" if e.get("core", True) else " · supportive"))


def criteria_sentence(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    verdict = {True: "met", False: "not met", None: "not evaluable"}[c["met"]]
    reasons = "; ".join(c.get("reasons", []))
    return f"2016 classification criteria: **{verdict}**" + (f" — {reasons}" if reasons else "")


def stopped_banner(data: BoardData, *models: str) -> bool:
    """Say, above a page, that a read model it reads has stopped (its answer misses events); True if so."""
    stops = data.stops(*models)
    for stop in stops:
        st.error(f"This page is incomplete: {stop.sentence()}. It shows what was projected before that event. "
                 "Feed health has the details; an administrator fixes the cause and runs "
                 "`safety-monitor project` or `rebuild`.")
    return bool(stops)


# --- Signals -------------------------------------------------------------------------------------


def signals_page(data: BoardData, user: User) -> None:
    st.title("Signals")
    stopped_banner(data, "signals")
    st.caption("Open signals first, by level and time. Trend thresholds are expert heuristics "
               "(no validated cut-offs exist); the 2016 criteria and scores are as published.")
    c1, c2, c3, c4 = st.columns(4)
    kinds = c1.multiselect("Kind", KINDS, key="filter_kind")
    levels = c2.multiselect("Level", list(LEVEL_COLOUR), key="filter_level")
    statuses = c3.multiselect("Status", SIGNAL_STATUSES, default=["open", "acknowledged", "under_review"],
                              key="filter_status")
    sources = c4.multiselect("Source", data.sources(), key="filter_source")
    shown = st.session_state.setdefault("signals_shown", 50)

    @st.fragment(run_every=refresh_seconds())
    def live() -> None:
        rows = [s for s in data.signals()
                if (not kinds or s["kind"] in kinds) and (not levels or s["level"] in levels)
                and (not statuses or s["status"] in statuses) and (not sources or s["source"] in sources)]
        st.caption(f"{len(rows)} signals (showing the first {min(shown, len(rows))}) · updated "
                   f"{datetime.now(UTC).strftime('%H:%M:%S')} UTC")
        notified: dict[str, list[dict[str, Any]]] = {}
        for d in data.deliveries():
            notified.setdefault(d["signal_id"], []).append(d)
        for s in rows[:shown]:
            render_signal(s, user, notified.get(s["id"]))
        if len(rows) > shown and st.button("Show 50 more", key="more_signals"):
            st.session_state["signals_shown"] = shown + 50
            st.rerun()

    live()


def delivery_sentence(rows: list[dict[str, Any]]) -> str:
    """How a signal's notifications went: ``mail sent 03:12 · webhook failing (3 attempts: ...)``."""
    parts = []
    for r in rows:
        if r["status"] == "sent":
            parts.append(f"{r['level']} by {r['channel']} sent {_when(r['sent_at'])}")
        elif r["status"] == "pending":
            parts.append(f"{r['level']} by {r['channel']} " + (f"failing ({r['attempts']} attempts: {r['last_error']})"
                                                               if r["attempts"] else "waiting"))
        else:
            parts.append(f"{r['level']} by {r['channel']} not sent: {r['last_error']}")
    return " · ".join(parts)


def render_signal(s: dict[str, Any], user: User, deliveries: list[dict[str, Any]] | None = None) -> None:
    with st.container(border=True):
        colour = LEVEL_COLOUR.get(s["level"], "gray")
        head = (f":{colour}-background[**{s['level'].upper()}**] · {s['kind']} · "
                f"**{s['patient_id']}** ({s['source']}) · {s['status'].replace('_', ' ')}")
        if s["priority"] == "high":
            head += " · :red[high priority]"
        st.markdown(head)
        st.caption(f"occurred {_when(s['occurred_at'])} · first raised {_when(s['raised_at'])} · id {s['id']}")
        for e in s["evidence"]:
            st.markdown(f"- {evidence_sentence(e)}")
        if s["kind"] != "serious_adverse_event" and s.get("criteria_2016"):
            st.markdown(criteria_sentence(s["criteria_2016"]))
            if s["criteria_2016"].get("note"):
                st.caption("Note: " + s["criteria_2016"]["note"])
        if s["kind"] == "data_query" and s.get("details"):
            st.warning("Data query for the sender: " + str(s["details"].get("query", "")))
        if s["context"]:
            st.caption("Context: " + "; ".join(s["context"]))
        if deliveries:
            st.caption("Notified: " + delivery_sentence(deliveries))
        cols = st.columns([1, 3])
        if cols[0].button("Open patient", key=f"open-{s['kind']}-{s['patient_id']}-{s['id']}"):
            st.session_state["patient"] = (s["source"], s["patient_id"])
            st.switch_page(st.session_state["pages"]["patient"])
        if user.role == "safety_physician" and s["status"] != "closed":
            with cols[1].expander("Act on this signal"):
                note = st.text_input("Note", key=f"note-{s['id']}")
                reason = st.selectbox("Reason (to close)", ("confirmed MAS", "not MAS", "duplicate", "other"),
                                      key=f"reason-{s['id']}")
                b1, b2, b3 = st.columns(3)
                for column, action, label in ((b1, "ack", "Acknowledge"), (b2, "review", "Start review"),
                                              (b3, "close", "Close")):
                    if column.button(label, key=f"{action}-{s['id']}"):
                        try:
                            status = act(s["id"], action, user, note, reason if action == "close" else None)
                        except ValueError as exc:
                            st.error(str(exc))
                        else:
                            st.success(f"{label}d by {user.name}: now {status.replace('_', ' ')}")


# --- Liver (eDISH) -------------------------------------------------------------------------------


def liver_page(data: BoardData) -> None:
    st.title("Liver safety (eDISH)")
    stopped_banner(data, "signals")
    c1, c2 = st.columns(2)
    by = c1.radio("Group by", ("arm", "drug"), horizontal=True, key="edish_by")
    after = c2.checkbox("After the first exposure only", key="edish_after")
    answer = data.edish(by, after)
    t = answer["thresholds"]
    st.caption(f"Peak ALT or AST against peak total bilirubin, as multiples of the upper limit of normal; lines at "
               f"{t['transaminase_xuln']:g}×ULN and {t['bilirubin_xuln']:g}×ULN (FDA 2009 DILI guidance; "
               f"{answer['rules_version']}). Potential Hy's law also needs the bilirubin within "
               f"{t['window_days']} days of the transaminase rise and ALP below {t['cholestatic_alp_xuln']:g}×ULN. "
               "Click a patient to open them.")
    frame = pd.DataFrame(answer["patients"])
    if frame.empty:
        st.info("No patient has a liver test with a reference range.")
        return
    frame["peak_transaminase_xuln"] = frame[["peak_alt_xuln", "peak_ast_xuln"]].max(axis=1)
    frame = frame.dropna(subset=["peak_transaminase_xuln", "peak_bili_xuln"])
    pick = alt.selection_point(fields=["source", "patient_id"], name="patient")
    scale = alt.Scale(type="log")
    points = alt.Chart(frame).mark_point(filled=True, size=70).encode(
        x=alt.X("peak_transaminase_xuln:Q", scale=scale, title="peak ALT or AST (×ULN)"),
        y=alt.Y("peak_bili_xuln:Q", scale=scale, title="peak total bilirubin (×ULN)"),
        color=alt.Color("group:N", title=by), shape=alt.Shape("potential_hys_law:N", title="potential Hy's law"),
        tooltip=["patient_id", "group", "peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln", "peak_alp_xuln",
                 "quadrant", "reason"]).add_params(pick)
    lines = [alt.Chart(pd.DataFrame({"x": [t["transaminase_xuln"]]})).mark_rule(strokeDash=[4, 4], color="red")
             .encode(x="x:Q"),
             alt.Chart(pd.DataFrame({"y": [t["bilirubin_xuln"]]})).mark_rule(strokeDash=[4, 4], color="red")
             .encode(y="y:Q")]
    event = st.altair_chart(alt.layer(points, *lines).properties(height=420), use_container_width=True,
                            on_select="rerun", key="edish_chart")
    chosen = (event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})) or {}
    picked = chosen.get("patient") or []
    if picked:
        st.session_state["patient"] = (picked[0]["source"], picked[0]["patient_id"])
        st.switch_page(st.session_state["pages"]["patient"])
    counts = frame.groupby(["group", "quadrant"]).size().unstack(fill_value=0)
    st.subheader("Patients by quadrant")
    st.dataframe(counts)
    shifts = data.lab_shifts(by)
    if shifts["rows"]:
        st.subheader(f"Laboratory shifts ({shifts['version']})")
        st.caption(f"Patients by baseline grade and worst post-baseline grade; baseline: {shifts['baseline']}.")
        table = pd.DataFrame(shifts["rows"])
        test = st.selectbox("Test", list(dict.fromkeys(table["term"])), key="shift_test")
        chosen = table[table["term"] == test]
        st.dataframe(chosen.pivot_table(index=["group", "baseline_grade"], columns="worst_grade", values="patients",
                                        aggfunc="sum", fill_value=0), use_container_width=True)
    flagged = frame[(frame["quadrant"] == "hys_law_range") | frame["potential_hys_law"]]
    if not flagged.empty:
        st.subheader("In the Hy's law range")
        st.dataframe(flagged[["patient_id", "group", "peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln",
                              "peak_alp_xuln", "potential_hys_law", "reason"]], hide_index=True)


# --- Arms and drugs (DSMB) -----------------------------------------------------------------------


@st.cache_data(ttl=30, max_entries=32, show_spinner="Computing the adverse-event tables…")
def cached_ae_table(url: str, settings: TableSettings, as_of: datetime | None, position: int) -> dict[str, Any]:
    """The tables for these controls at this ledger position (a new event gives a new position)."""
    from dashboard.state import board_data

    return board_data().ae_table(settings, as_of)


def _cell_text(c: dict[str, Any]) -> str:
    return f"{c['subjects']} ({c['percent']:.1f}%) [{c['events']}]" if c["percent"] is not None else "–"


def forest_plot(comparisons: list[dict[str, Any]], measure: str, title: str,
                log: bool) -> alt.LayerChart | alt.FacetChart:
    """Each group against the control on each row: the estimate and its 95% interval."""
    frame = pd.DataFrame([{"row": c["row"], "group": c["group"], "estimate": c[measure],
                           "low": c[f"{measure}_ci95"][0], "high": c[f"{measure}_ci95"][1]} for c in comparisons])
    frame = frame.dropna(subset=["estimate", "low", "high"])
    if log:
        frame = frame[(frame["estimate"] > 0) & (frame["low"] > 0)]
    scale = alt.Scale(type="log") if log else alt.Scale()
    base = alt.Chart(frame).encode(y=alt.Y("row:N", sort=None, title=None), yOffset="group:N",
                                   color=alt.Color("group:N", title="against the control"))
    rules = base.mark_rule().encode(x=alt.X("low:Q", scale=scale, title=title), x2="high:Q")
    points = base.mark_point(filled=True, size=60).encode(x="estimate:Q",
                                                          tooltip=["row", "group", "estimate", "low", "high"])
    null = alt.Chart(pd.DataFrame({"x": [1.0 if log else 0.0]})).mark_rule(strokeDash=[4, 4], color="grey").encode(
        x="x:Q")
    return alt.layer(rules, points, null).properties(height=max(160, 26 * frame["row"].nunique()))


def arms_page(data: BoardData) -> None:
    st.title("Arms and drugs: treatment-emergent adverse events")
    incomplete = stopped_banner(data, "exposure")
    c1, c2, c3, c4 = st.columns(4)
    by = c1.radio("Group by", ("arm", "drug", "drug_class"), horizontal=True, key="arms_by",
                  format_func=lambda b: b.replace("_", " "))
    lag_text = c2.text_input("Lag after the last exposure (days)", "", key="arms_lag",
                             placeholder="none by arm, 30 by drug")
    min_percent = c3.number_input("Minimum % in a group", 0.0, 100.0, 0.0, step=1.0, key="arms_min")
    with c4:
        as_of = _as_of_input("As of (knowledge time)", "arms_as_of")
    cut: date | None = st.date_input("Clinical data cut", value=None, key="arms_cut")
    lag = int(lag_text) if lag_text.strip().isdigit() else None
    if lag_text.strip() and lag is None:
        st.error("Lag: a whole number of days")
    cut_at = datetime.combine(cut + timedelta(days=1), time(), tzinfo=UTC) if cut else None
    settings = TableSettings(by, None, lag, float(min_percent), cut_at)
    answer = cached_ae_table(data.store.url, settings, as_of, data.exposure_position())
    groups = [g["name"] for g in answer["groups"]]
    if not groups:
        st.info("No subject was exposed: the tables need arms with first exposures, or treatment starts.")
        return
    control = st.selectbox("Control group", ["(none)", *groups],
                           index=1 + groups.index(answer["control"]) if answer["control"] in groups else 0,
                           key="arms_control")
    if (None if control == "(none)" else control) != answer["control"]:
        settings = TableSettings(by, None if control == "(none)" else control, lag, float(min_percent), cut_at)
        answer = cached_ae_table(data.store.url, settings, as_of, data.exposure_position())
    st.caption(f"Fingerprint **{answer['fingerprint']}** · treatment-emergent: {answer['treatment_emergent']} · "
               f"observation ends {answer['observation_end']} · as of {answer['as_of'] or 'latest'} · "
               "each cell: subjects n (%) [events]")
    st.dataframe(pd.DataFrame(answer["groups"]).rename(columns={"name": by.replace("_", " "), "subjects": "N"}),
                 hide_index=True)
    st.subheader("Overview")
    st.dataframe(pd.DataFrame([{"row": o["row"], **{g: _cell_text(o["by_group"][g]) for g in groups}}
                               for o in answer["overview"]]), hide_index=True)
    st.caption(" · ".join(o["meaning"] for o in answer["overview"]))
    st.subheader("By system organ class and preferred term")
    table = pd.DataFrame(ae_rows(answer))
    st.dataframe(table[table.index >= len(answer["overview"])], hide_index=True, use_container_width=True)
    if answer["comparisons"]:
        st.subheader(f"Against {answer['control']}")
        levels = ("overview", "soc") if st.checkbox("Each system organ class too", key="arms_forest_socs") \
            else ("overview",)
        overview = [c for c in answer["comparisons"] if c["level"] in levels]
        f1, f2 = st.columns(2)
        f1.altair_chart(forest_plot(overview, "risk_difference", "risk difference (MN 95% CI)", log=False),
                        use_container_width=True)
        f2.altair_chart(forest_plot(overview, "eair_ratio", "EAIR ratio (exact 95% CI, log scale)", log=True),
                        use_container_width=True)
        st.caption(" · ".join(f"{k}: {v}" for k, v in answer["methods"].items()))
    st.subheader("Patients and events")
    d1, d2, d3 = st.columns(3)
    group = d1.selectbox("Group", groups, key="arms_drill_group")
    socs = [s["soc"] for s in answer["socs"]]
    soc = d2.selectbox("System organ class", ["(an overview row)", *socs], key="arms_drill_soc")
    if soc == "(an overview row)":
        row = d3.selectbox("Row", [o["row"] for o in answer["overview"]], key="arms_drill_row")
        cases = data.ae_cases(settings, group, as_of, row=row)
    else:
        terms = [t["term"] for s in answer["socs"] if s["soc"] == soc for t in s["terms"]]
        term = d3.selectbox("Term", ["(every term)", *terms], key="arms_drill_term")
        cases = data.ae_cases(settings, group, as_of, soc=soc, term=None if term == "(every term)" else term)
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


# --- Expedited reports ----------------------------------------------------------------------------


def expedited_page(data: BoardData, user: User) -> None:
    from dashboard.state import reference_safety_information, submit

    st.title("Expedited reports")
    stopped_banner(data, "expedited")
    rsi, given = reference_safety_information()
    st.caption("SUSARs (serious, related, unexpected): report within 7 calendar days of first knowledge when "
               "fatal or life-threatening, 15 otherwise (ICH E2A; EU 536/2014 art. 42; 21 CFR 312.32). The clock "
               "starts at the reported time of the message that made the event a case.")
    if not given:
        st.warning("No reference safety information (SAFETY_MONITOR_RSI): every serious related event is taken as "
                   "unexpected.")
    cases = data.expedited(rsi)
    if not cases:
        st.info("No SUSAR case.")
        return
    for c in cases:
        left = c["days_left"]
        with st.container(border=True):
            clock = (f":red[**OVERDUE** by {-left:.1f} days]" if c["status"] == "overdue" else
                     f"{left:.1f} days left" if c["status"] == "open" else
                     f":red[**submitted {c['days_late']} days late**]" if c["status"] == "submitted_late" else
                     c["status"])
            st.markdown(f"**{c['term']}** · {c['patient_id']} ({c['source']}) · {c['clock_days']}-day clock · "
                        f"due {_when(c['due_at'])} · {clock}")
            st.caption(f"case {c['case']} · aware {_when(c['aware_at'])}"
                       + (f" · submitted {c['submitted']}" if c["submitted"] else "")
                       + (f" · closed: {c['closed_reason']}" if c["closed_reason"] else ""))
            if user.role == "safety_physician" and c["status"] != "closed":
                with st.expander("Record the submission"):
                    on = st.date_input("Submitted on", key=f"on-{c['case']}")
                    authority = st.text_input("Authority", key=f"authority-{c['case']}", placeholder="EMA, MHRA, FDA")
                    if st.button("Record", key=f"submit-{c['case']}"):
                        try:
                            submit(c["case"], user, on.isoformat() if on else "", authority, c["aware_at"])
                        except ValueError as exc:
                            st.error(str(exc))
                        else:
                            st.success(f"Recorded as submitted to {authority} by {user.name}")


# --- Incidence (DSMB) --------------------------------------------------------------------------


def _as_of_input(label: str, key: str) -> datetime | None:
    text = st.text_input(label, key=key, placeholder="e.g. 2026-03-01T12:00 (UTC if no offset)")
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        st.error(f"{label}: not an ISO 8601 time")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@st.cache_data(ttl=30, max_entries=32, show_spinner="Computing incidence…")
def cached_incidence(url: str, anchor: str, pre: int, post: int, cut_at: datetime | None,
                     as_of: datetime | None, position: int) -> dict[str, Any]:
    """The answer for these controls at this ledger position (a new event gives a new position)."""
    from dashboard.state import board_data

    return board_data().incidence(Settings(anchor, pre, post, cut_at), as_of)


def incidence_page(data: BoardData) -> None:
    st.title("Incidence before and after the intervention")
    incomplete = stopped_banner(data, "incidence", "efficacy")
    c1, c2, c3, c4, c5 = st.columns(5)
    anchor = c1.text_input("Anchor intervention", "MSC infusion")
    pre = c2.number_input("Months before", 1, 120, 3)
    post = c3.number_input("Months from", 1, 120, 12)
    with c4:
        as_of = _as_of_input("As of (knowledge time)", "as_of")
    cut: date | None = c5.date_input("Clinical data cut", value=None)
    cut_at = datetime.combine(cut + timedelta(days=1), time(), tzinfo=UTC) if cut else None
    answer = cached_incidence(data.store.url, anchor, int(pre), int(post), cut_at, as_of, data.position())
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
    st.dataframe(cohort, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in
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
    ae = cached_ae_table(data.store.url, TableSettings(data_cut=cut_at), as_of, data.exposure_position())
    d2.download_button("Download DSMB report (HTML)", dsmb_html(answer, data.efficacy(anchor), ae=ae),
                       f"dsmb-{answer['fingerprint']}.html",
                       "text/html", on_click=record_download, args=(user, f"DSMB report {answer['fingerprint']}"))


# --- Efficacy ------------------------------------------------------------------------------------

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


# --- Patient -------------------------------------------------------------------------------------

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


# --- Feed health, audit, users ------------------------------------------------------------------


def feed_page(data: BoardData) -> None:
    st.title("Feed health")
    counts = data.feed_counts()
    st.subheader("Messages per source")
    st.dataframe(counts, hide_index=True)
    if not counts.empty:
        long = counts.melt(id_vars=["source"], value_vars=["accepted", "duplicates", "quarantined"],
                           var_name="outcome", value_name="messages")
        st.altair_chart(alt.Chart(long).mark_bar().encode(x="messages:Q", y="source:N", color="outcome:N"),
                        use_container_width=True)
    volume = data.volume()
    if not volume.empty:
        st.subheader("Volume per source over time")
        st.altair_chart(alt.Chart(volume).mark_bar().encode(x="day:T", y="messages:Q", color="source:N"),
                        use_container_width=True)
    transfers = data.transfers()
    if not transfers.empty:
        st.subheader("SDTM transfers")
        st.caption("What each transfer changed: records new, corrected (a changed value or date) and retracted "
                   "(absent from the transfer). docs/sdtm-mapping.md")
        st.dataframe(transfers, hide_index=True)
    st.subheader("Read models")
    models = data.read_models()
    st.dataframe(models, hide_index=True)
    for stop in data.stops():
        st.error(f"{stop.sentence()} (since {stop.stopped_at}); the other read models go on. Fix the cause, then "
                 "`safety-monitor project` tries again, or `safety-monitor rebuild` replays it.")
    st.subheader("Kafka partitions")
    for fault in data.feed_faults():
        if fault["open"]:
            st.error(f"The consumer stopped at topic {fault['topic']} partition {fault['partition']} offset "
                     f"{fault['offset']} ({fault['noted_at']}): it cannot decode that record batch "
                     f"({fault['cause']}). {fault['fix']}. Nothing after it is stored until then; a restarted "
                     "consumer resumes there.")
    offsets = data.partition_offsets()
    if offsets.empty:
        st.caption("No Kafka feed consumed into this store.")
    else:
        st.dataframe(offsets, hide_index=True)
        st.caption("Lag against the broker: `safety-monitor status --bootstrap HOST:PORT`.")
    st.subheader("Notifications")
    deliveries = data.deliveries()
    waiting = [d for d in deliveries if d["status"] != "sent"]
    if not deliveries:
        st.caption("No notification sent yet (`safety-monitor notify --follow` sends warnings and alerts by mail "
                   "and webhook).")
    else:
        st.caption(f"{len(deliveries) - len(waiting)} delivered, {len(waiting)} not (yet): failed ones are retried "
                   "with back-off.")
    for d in waiting:
        if d["attempts"]:
            st.error(f"{d['channel']} for signal {d['signal_id']} ({d['level']}): {d['attempts']} failed attempts, "
                     f"last: {d['last_error']}; next try after {_when(d['next_attempt_at'])}.")
    if waiting:
        st.dataframe(pd.DataFrame(waiting), hide_index=True)
    st.subheader("Quarantine")
    quarantine = data.quarantine()
    st.dataframe(quarantine, hide_index=True)
    if not quarantine.empty:
        item = st.selectbox("Show the raw message of", quarantine["id"].tolist())
        st.code(data.quarantined_raw(int(item)), language="json")


def audit_page(data: BoardData) -> None:
    st.title("Audit")
    st.subheader("Signal workflow: who did what")
    st.dataframe(pd.DataFrame(data.actions()), hide_index=True)
    st.subheader("Sign-ins, downloads and user changes")
    st.dataframe(pd.DataFrame(data.audit()), hide_index=True)
    st.subheader("Event history")
    patients = data.patients()
    if patients:
        source, patient_id = st.selectbox("Patient", patients, key="audit_patient",
                                          format_func=lambda p: f"{p[1]} ({p[0]})")
        as_of = _as_of_input("As of (what the ledger had recorded then)", "audit_as_of")
        st.dataframe(data.patient_events(source, patient_id, as_of), hide_index=True)


def users_page() -> None:
    from dashboard.state import ledger
    from events.workflow import record_audit

    st.title("Users")
    users = user_store()
    st.dataframe(pd.DataFrame([{"name": u.name, "role": u.role} for u in users.list()]), hide_index=True)
    with st.form("add-user"):
        name = st.text_input("Name")
        role = st.selectbox("Role", ROLES)
        password = st.text_input("Password (8 characters or more)", type="password")
        if st.form_submit_button("Add or update user"):
            try:
                users.add(name, role, password)
            except ValueError as exc:
                st.error(str(exc))
            else:
                admin: User = st.session_state["user"]
                record_audit(ledger(), admin.name, "user change", f"{name} as {role}")
                st.success(f"{name} saved as {role}")
