"""What several pages of the board show alike: a signal card, the stopped-read-model banner, time
inputs and formats, and the cached adverse-event tables."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.auth import User
from dashboard.state import act
from events.domain import ACTIONS as WORKFLOW
from events.domain import ALLOWED_FROM
from projections.board import BoardData
from projections.exposure import Settings as TableSettings

LEVEL_COLOUR = {"alert": "red", "warning": "orange", "watch": "violet"}


KINDS = ("mas_trend", "mas_criteria_2016", "ms_score", "ferritin_esr_ratio", "death", "serious_adverse_event",
         "data_query", "transaminase_elevation", "hys_law", "bilirubin_elevation", "disproportionality",
         "sequential")


def refresh_seconds() -> float | None:
    """Seconds between live refreshes (``SAFETY_MONITOR_BOARD_REFRESH``; 0 turns it off)."""
    seconds = float(os.environ.get("SAFETY_MONITOR_BOARD_REFRESH", "5"))
    return seconds or None


def when(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%d %b %Y %H:%M")


def evidence_sentence(e: dict[str, Any]) -> str:
    if "analyte" not in e:
        return f"{e.get('rule', '')}: {e.get('term', '')}"
    verb = "rose" if e["current"] > e["previous"] else "fell"
    change = f" {abs(e['change_pct']):.0f}%" if e.get("change_pct") is not None else ""
    return (f"{e['analyte']} {verb}{change} from {e['previous']:g} to {e['current']:g} {e['unit']} "
            f"({when(e['previous_at'])} → {when(e['current_at'])})"
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


def delivery_sentence(rows: list[dict[str, Any]]) -> str:
    """How a signal's notifications went: ``mail sent 03:12 · webhook failing (3 attempts: ...)``."""
    parts = []
    for r in rows:
        if r["status"] == "sent":
            parts.append(f"{r['level']} by {r['channel']} sent {when(r['sent_at'])}")
        elif r["status"] == "pending":
            parts.append(f"{r['level']} by {r['channel']} " + (f"failing ({r['attempts']} attempts: {r['last_error']})"
                                                               if r["attempts"] else "waiting"))
        else:
            parts.append(f"{r['level']} by {r['channel']} not sent: {r['last_error']}")
    return " · ".join(parts)


#: the workflow's actions as the board names them: (button, what is done, the status it leads to)
ACTIONS = {"ack": ("Acknowledge", "acknowledged", "acknowledged"),
           "review": ("Start review", "review started", "under review"),
           "close": ("Close", "closed", "closed")}


def action_sentence(a: dict[str, Any]) -> str:
    """``closed by physician on 06 Dec 2026 02:31 (confirmed MAS): "treated with anakinra"``."""
    done = ACTIONS.get(a["action"], (a["action"], a["action"], a["status"]))[1]
    text = f"{done.capitalize()} by {a['by_user']} on {when(a['at'])}"
    if a.get("reason"):
        text += f" ({a['reason']})"
    return text + (f': "{a["note"]}"' if a.get("note") else "")


def render_signal(s: dict[str, Any], user: User, deliveries: list[dict[str, Any]] | None = None,
                  position: int | None = None) -> None:
    """One signal's card. Its action buttons only open a confirmation naming this signal (``confirm``),
    so no click can act on another signal that moved under the pointer (issue 24); a card acted on
    keeps its ``position`` in the list for the session (``pinned``), so the cards below do not move up."""
    fresh = _fresh_action(s)  # this session's action, not yet in the read model
    status = (fresh["status"] + " (recorded; the list catches up in a moment)" if fresh
              else s["status"].replace("_", " "))
    with st.container(border=True, key=f"signal-{s['id']}"):
        colour = LEVEL_COLOUR.get(s["level"], "gray")
        whom = (f"**{s['patient_id']}** ({s['source']}{', ' + s['arm'] if s.get('arm') else ''})"
                if s["patient_id"] else "**registry-wide**")
        head = f":{colour}-background[**{s['level'].upper()}**] · {s['kind']} · {whom} · {status}"
        reasons = (s.get("details") or {}).get("priority_reasons") or []
        if s["priority"] == "high":
            head += " · :red[high priority]"
        # one block of text per card: each element is drawn on its own in the browser, and a page of fifty
        # cards of a dozen elements each took most of the Signals page's time (issue 28)
        lines = [head]
        if reasons:
            lines.append(_small("High priority: " + "; ".join(reasons)))
        lines.append(_small(f"occurred {when(s['occurred_at'])} · first raised {when(s['raised_at'])} · id {s['id']}"))
        lines.append("\n".join(f"- {evidence_sentence(e)}" for e in s["evidence"]))
        if s.get("criteria_2016") and s["kind"] not in ("serious_adverse_event", "death", "data_query"):
            lines.append(criteria_sentence(s["criteria_2016"]))
            if s["criteria_2016"].get("note"):
                lines.append(_small("Note: " + s["criteria_2016"]["note"]))
        if s["context"]:
            lines.append(_small("Context: " + "; ".join(s["context"])))
        st.markdown("\n\n".join(line for line in lines if line))
        if s["kind"] == "data_query" and s.get("details"):
            st.warning("Data query for the sender: " + str(s["details"].get("query", "")))
        if deliveries:
            st.caption("Notified: " + delivery_sentence(deliveries))
        last = fresh or s["last_action"]
        if last:
            st.caption("Last action: " + action_sentence(last))
        row = st.container(horizontal=True)
        if not s["patient_id"]:  # a registry-wide signal: its pair is on the Signal detection page
            if row.button("Open signal detection", key=f"open-{s['id']}"):
                st.switch_page(st.session_state["pages"]["detection"])
        elif row.button("Open patient", key=f"open-{s['kind']}-{s['patient_id']}-{s['id']}"):
            st.session_state["patient"] = (s["source"], s["patient_id"])
            st.switch_page(st.session_state["pages"]["patient"])
        current = fresh["status_code"] if fresh else s["status"]
        if user.role == "safety_physician" and current != "closed":
            for action in ("ack", "review", "close"):
                allowed = current in ALLOWED_FROM[WORKFLOW[action]]  # the workflow's own transitions
                if allowed and row.button(f"{ACTIONS[action][0]}…", key=f"{action}-{s['id']}"):
                    st.session_state["confirm"] = {"signal": s, "action": action}
                    if position is not None:
                        st.session_state.setdefault("pinned", {})[s["id"]] = position
                    st.rerun()


def _small(text: str) -> str:
    """Caption-like text inside a markdown block (grey, small)."""
    return f":small[:gray[{text}]]"


def _fresh_action(s: dict[str, Any]) -> dict[str, Any] | None:
    """The action this session took on the signal, while the read model does not hold it yet."""
    acted = st.session_state.get("acted", {}).get(s["id"])
    recorded = s.get("last_action")
    if acted is None or (recorded and datetime.fromisoformat(recorded["at"]) >= datetime.fromisoformat(acted["at"])):
        return None
    return acted


def confirm_pending(user: User) -> None:
    """Open the confirmation of the action a card asked for, if any (called by the page, outside any
    fragment, so the dialog is not redrawn by the live refresh)."""
    pending = st.session_state.get("confirm")
    if pending:
        _confirm(pending["signal"], pending["action"], user)


def _forget_pending() -> None:
    st.session_state.pop("confirm", None)


@st.dialog("Confirm the action", width="large", on_dismiss=_forget_pending)
def _confirm(s: dict[str, Any], action: str, user: User) -> None:
    """The action, bound to this signal's id: it names the patient, kind and signal, asks for a reason
    that fits the kind (none preselected) and a note when closing, and acts only on its own button."""
    from safety.signal_reasons import close_reasons

    label = ACTIONS[action][0]
    whom = f"patient **{s['patient_id']}** ({s['source']})" if s["patient_id"] else "the **registry** (no one patient)"
    st.markdown(f"**{label}** signal `{s['id']}`: {s['kind']} ({s['level']}) for {whom}, "
                f"occurred {when(s['occurred_at'])}.")
    for e in s["evidence"][:3]:
        st.caption(evidence_sentence(e))
    reason = None
    if action == "close":
        reason = st.selectbox("Reason for closing", close_reasons(s["kind"]), index=None,
                              placeholder="choose the reason", key=f"confirm-reason-{s['id']}")
    note = st.text_area("Note" + (" (needed to close)" if action == "close" else ""),
                        key=f"confirm-note-{s['id']}")
    c1, c2 = st.columns(2)
    if c1.button(f"{label} this signal", type="primary", key=f"confirm-{action}-{s['id']}"):
        try:
            status = act(s["id"], action, user, note, reason, kind=s["kind"])
        except ValueError as exc:
            st.error(str(exc))
            return
        st.session_state.setdefault("acted", {})[s["id"]] = {
            "action": action, "status": status.replace("_", " "), "status_code": status, "by_user": user.name,
            "at": datetime.now(UTC).isoformat(), "note": note, "reason": reason}
        _forget_pending()
        st.rerun()
    if c2.button("Cancel", key=f"confirm-cancel-{s['id']}"):
        _forget_pending()
        st.rerun()


def as_of_input(label: str, key: str) -> datetime | None:
    text = st.text_input(label, key=key, placeholder="e.g. 2026-03-01T12:00 (UTC if no offset)")
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        st.error(f"{label}: not an ISO 8601 time")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


#: how long the board keeps an answer keyed by its read model's revision: a new event gives a new key, so
#: this only bounds how long an unused answer stays in memory (at 30 s, a physician coming back after a
#: pause waited for the whole answer again: 1-2 s on the Arms and drugs page at 15,000 patients)
KEPT_SECONDS = 3600


@st.cache_data(ttl=KEPT_SECONDS, max_entries=32, show_spinner="Computing the adverse-event tables…")
def cached_ae_table(url: str, settings: TableSettings, as_of: datetime | None,
                    revision: tuple[int, ...]) -> dict[str, Any]:
    """The tables for these controls at this revision of the read model (a new event gives a new one)."""
    from dashboard.state import board_data

    return board_data().ae_table(settings, as_of)


def data_cut_input(data: BoardData, page: str) -> date | None:
    """The clinical data cut, chosen among the store's clinical dates and kept across pages (a widget's
    own state ends with its page)."""
    span = data.clinical_range()
    chosen: date | None = st.session_state.get("chosen_data_cut")
    if span is None:
        return None
    if chosen is not None and not span[0] <= chosen <= span[1]:
        chosen = None
    picked = st.date_input("Clinical data cut", value=chosen, min_value=span[0], max_value=span[1],
                           key=f"data-cut-{page}", format="YYYY-MM-DD",
                           help=f"events that occurred on or before this day; the store's clinical dates run "
                                f"from {span[0].isoformat()} to {span[1].isoformat()}")
    picked = picked if isinstance(picked, date) else None
    st.session_state["chosen_data_cut"] = picked
    return picked


def cut_time(cut: date | None) -> datetime | None:
    """The end of the data cut's day (everything that occurred by then)."""
    return None if cut is None else datetime.combine(cut + timedelta(days=1), time(), tzinfo=UTC)


def data_context(data: BoardData, cut: date | None = None, as_of: datetime | None = None,
                 takes_cut: bool = True) -> None:
    """What every page's answer stands on: the data cut, the knowledge time and the rules in force."""
    knowledge = as_of or datetime.now(UTC)
    parts = [f"Data cut: {cut.isoformat() if cut else 'none (every clinical date)'}" if takes_cut
             else "Data cut: not applied on this page",
             f"knowledge time: {knowledge.astimezone(UTC).strftime('%d %b %Y %H:%M')} UTC"
             + (" (as of)" if as_of else " (now)"),
             "rules: " + ", ".join(data.rules_versions())]
    st.caption(" · ".join(parts))


def anchor_input(data: BoardData, where: Any, page: str) -> str | None:
    """The anchor intervention, chosen among the interventions the store holds (None when it has none);
    the choice is kept across pages."""
    names = data.interventions()
    if not names:
        return None
    chosen = st.session_state.get("chosen_anchor")
    index = names.index(chosen) if chosen in names else 0
    picked = where.selectbox("Anchor intervention", names, index=index, key=f"anchor-{page}",
                             help="windows are anchored at each patient's first intervention of this name")
    st.session_state["chosen_anchor"] = picked
    return str(picked)


def restore(*keys: str) -> None:
    """Give a page's widgets back the values they had when the user left the page (Streamlit drops a
    widget's state once a run does not draw it); ``keep`` saved them."""
    for key in keys:
        if key not in st.session_state and f"kept:{key}" in st.session_state:
            st.session_state[key] = st.session_state[f"kept:{key}"]


def keep(*keys: str) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[f"kept:{key}"] = st.session_state[key]


#: the container of ``chart_code_preload``: drawn off the page
PRELOAD_KEY = "chart-code-preload"


def chart_code_preload() -> None:
    """Draw, off the page, a small chart of the kind the board draws (points on log scales, shapes, a
    selection, a rule) from made-up numbers: the browser loads and compiles Streamlit's chart code while the
    user types their name and password, instead of when the first chart page is opened (issue 28: the eDISH
    chart of a session's first Liver visit drawn at 1.23-1.44 s, at 0.88-1.19 s with this, 15,000
    patients). No patient data: it is drawn before anyone has signed in."""
    with st.container(key=PRELOAD_KEY):
        st.html(f"<style>.st-key-{PRELOAD_KEY} {{position: absolute; left: -10000px; width: 600px;"
                " height: 300px; overflow: hidden}</style>")
        frame = pd.DataFrame({"x": [0.5, 1.0, 4.0], "y": [0.3, 1.0, 3.0], "group": ["a", "b", "a"],
                              "flag": [False, False, True]})
        log = alt.Scale(type="log")
        points = alt.Chart(frame).mark_point(filled=True, size=70).encode(
            x=alt.X("x:Q", scale=log), y=alt.Y("y:Q", scale=log), color="group:N", shape="flag:N",
            tooltip=["group", "x", "y"]).add_params(alt.selection_point(fields=["group"], name="preload"))
        rule = alt.Chart(pd.DataFrame({"x": [3.0]})).mark_rule(strokeDash=[4, 4], color="red").encode(x="x:Q")
        st.altair_chart(alt.layer(points, rule).properties(height=280), width="stretch", key=PRELOAD_KEY)
