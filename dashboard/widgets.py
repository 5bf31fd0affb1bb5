"""What several pages of the board show alike: a signal card, the stopped-read-model banner, time
inputs and formats, and the cached adverse-event tables."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from dashboard.auth import User
from dashboard.state import act
from projections.board import BoardData
from projections.exposure import Settings as TableSettings

LEVEL_COLOUR = {"alert": "red", "warning": "orange", "watch": "violet"}


KINDS = ("mas_trend", "mas_criteria_2016", "ms_score", "ferritin_esr_ratio", "death", "serious_adverse_event",
         "data_query", "transaminase_elevation", "hys_law")


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


def render_signal(s: dict[str, Any], user: User, deliveries: list[dict[str, Any]] | None = None) -> None:
    with st.container(border=True):
        colour = LEVEL_COLOUR.get(s["level"], "gray")
        head = (f":{colour}-background[**{s['level'].upper()}**] · {s['kind']} · "
                f"**{s['patient_id']}** ({s['source']}) · {s['status'].replace('_', ' ')}")
        if s["priority"] == "high":
            head += " · :red[high priority]"
        st.markdown(head)
        st.caption(f"occurred {when(s['occurred_at'])} · first raised {when(s['raised_at'])} · id {s['id']}")
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


@st.cache_data(ttl=30, max_entries=32, show_spinner="Computing the adverse-event tables…")
def cached_ae_table(url: str, settings: TableSettings, as_of: datetime | None, position: int) -> dict[str, Any]:
    """The tables for these controls at this ledger position (a new event gives a new position)."""
    from dashboard.state import board_data

    return board_data().ae_table(settings, as_of)
