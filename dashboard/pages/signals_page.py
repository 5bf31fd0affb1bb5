"""Signals: the live list of safety signals, each with its evidence and the workflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from dashboard.auth import User
from dashboard.widgets import (
    KINDS,
    LEVEL_COLOUR,
    confirm_pending,
    data_context,
    refresh_seconds,
    render_signal,
    stopped_banner,
)
from events.domain import SIGNAL_STATUSES
from projections.board import BoardData

#: cards drawn at first, and added by each "Show more": the most urgent come first, and the browser draws
#: every card before the page shows (50 cards took a third of the time from signing in to the page)
CARDS_PER_PAGE = 20


def signals_page(data: BoardData, user: User) -> None:
    st.title("Signals")
    data_context(data, takes_cut=False)
    stopped_banner(data, "signals")
    st.caption("Open signals first, by level and time. Trend thresholds are expert heuristics "
               "(no validated cut-offs exist); the 2016 criteria and scores are as published.")
    kinds = st.multiselect("Kind", KINDS, key="filter_kind")  # a row of its own: its chips are long
    c2, c3, c4 = st.columns(3)
    levels = c2.multiselect("Level", list(LEVEL_COLOUR), key="filter_level")
    statuses = c3.multiselect("Status", SIGNAL_STATUSES, default=["open", "acknowledged", "under_review"],
                              key="filter_status")
    sources = c4.multiselect("Source", data.sources(), key="filter_source")
    shown = st.session_state.setdefault("signals_shown", CARDS_PER_PAGE)

    confirm_pending(user)

    @st.fragment(run_every=refresh_seconds())
    def live() -> None:
        pinned: dict[str, int] = st.session_state.get("pinned", {})
        every = data.signals()
        rows = [s for s in every if s["id"] not in pinned
                and (not kinds or s["kind"] in kinds) and (not levels or s["level"] in levels)
                and (not statuses or s["status"] in statuses) and (not sources or s["source"] in sources)]
        # a card acted on this session stays where it was, so the next one never moves under the pointer
        for s in sorted((s for s in every if s["id"] in pinned), key=lambda s: pinned[s["id"]]):
            rows.insert(min(pinned[s["id"]], len(rows)), s)
        counted = f"{len(rows)} signals" + (f" (showing the first {shown})" if len(rows) > shown else "")
        st.caption(f"{counted} · updated {datetime.now(UTC).strftime('%H:%M:%S')} UTC")
        notified: dict[str, list[dict[str, Any]]] = {}
        for d in data.deliveries():
            notified.setdefault(d["signal_id"], []).append(d)
        for i, s in enumerate(rows[:shown]):
            render_signal(s, user, notified.get(s["id"]), position=i)
        if len(rows) > shown and st.button(f"Show {CARDS_PER_PAGE} more", key="more_signals"):
            st.session_state["signals_shown"] = shown + CARDS_PER_PAGE
            st.rerun()

    live()
