"""Expedited reports: SUSAR cases against their 7- or 15-day clock."""

from __future__ import annotations

import streamlit as st

from dashboard.auth import User
from dashboard.widgets import (
    KEPT_SECONDS,
    data_context,
    stopped_banner,
    when,
)
from projections.board import BoardData
from safety.expedited import Case


@st.cache_data(ttl=KEPT_SECONDS, max_entries=16, show_spinner="Reading the SUSAR cases…")
def cached_cases(url: str, rsi: dict[str, frozenset[str]], revision: tuple[int, ...]) -> list[Case]:
    """The cases at this revision of the expedited read model (their clock is read on every visit)."""
    from dashboard.state import board_data

    return board_data().expedited_known(rsi)


def warm(data: BoardData) -> None:
    """Compute the cases the page shows, for every session (``dashboard.warm``)."""
    from dashboard.state import reference_safety_information

    cached_cases(data.store.url, reference_safety_information()[0], data.expedited_revision())


def expedited_page(data: BoardData, user: User) -> None:
    from dashboard.state import reference_safety_information, submit

    st.title("Expedited reports")
    data_context(data, takes_cut=False)
    stopped_banner(data, "expedited")
    rsi, given = reference_safety_information()
    st.caption("SUSARs (serious, related, unexpected): report within 7 calendar days of first knowledge when "
               "fatal or life-threatening, 15 otherwise (ICH E2A; EU 536/2014 art. 42; 21 CFR 312.32). The clock "
               "starts at the reported time of the message that made the event a case.")
    if not given:
        st.warning("No reference safety information (SAFETY_MONITOR_RSI): every serious related event is taken as "
                   "unexpected.")
    cases = data.expedited(rsi, known=cached_cases(data.store.url, rsi, data.expedited_revision()))
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
                        f"due {when(c['due_at'])} · {clock}")
            st.caption(f"onset {when(c['onset'])} · causality: {c['relatedness'] or 'not assessed'} · "
                       f"{c['clock_reason']} · aware {when(c['aware_at'])} · case {c['case']}"
                       + (f" · submitted {c['submitted']}" if c["submitted"] else "")
                       + (f" · closed: {c['closed_reason']}" if c["closed_reason"] else ""))
            if st.button("Open patient", key=f"patient-{c['case']}"):
                st.session_state["patient"] = (c["source"], c["patient_id"])
                st.switch_page(st.session_state["pages"]["patient"])
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
