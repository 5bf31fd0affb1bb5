"""The safety board (Streamlit): sign-in, then the pages the user's role may see.

Run by ``safety-monitor dashboard`` / ``demo`` with ``SAFETY_MONITOR_STORE`` naming the store.
Every page reads read models only (``projections.board``); acting on a signal goes through the
write side's workflow command and is recorded with the signed-in user.
"""

from __future__ import annotations

import time

import streamlit as st

from dashboard import pages
from dashboard.auth import PAGES_BY_ROLE, SESSION_SECONDS, User
from dashboard.state import board_data, limiter, record_sign_in, user_store, warm_up
from dashboard.widgets import chart_code_preload

st.set_page_config(page_title="Safety monitor", page_icon=":material/health_and_safety:", layout="wide")


def sign_in() -> None:
    st.title("Safety monitor")
    st.caption("Sign in to see patient safety data.")
    with st.form("sign-in"):
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in")
    chart_code_preload()
    if not submitted:
        return
    if limiter().locked(name):
        st.error("Too many failed sign-ins for this user: wait five minutes.")
        return
    user = user_store().verify(name, password)
    if user is None:
        limiter().failed(name)
        st.error("Unknown user or wrong password.")
        return
    limiter().succeeded(name)
    st.session_state["user"] = user
    st.session_state["signed_in_at"] = time.time()
    record_sign_in(user)
    st.rerun()


def current_user() -> User | None:
    user = st.session_state.get("user")
    if user is None:
        return None
    if time.time() - st.session_state.get("signed_in_at", 0) > SESSION_SECONDS:
        st.session_state.clear()
        st.warning("Your session expired: sign in again.")
        return None
    return user if isinstance(user, User) else None


warm_up()  # the kept answers, computed while the first visitor signs in
signed_in = current_user()
if signed_in is None:
    # the sign-in is a page of its own: with no st.navigation in a run, Streamlit would take the modules
    # of dashboard/pages/ for pages of the old multipage layout and show none of them
    st.navigation([st.Page(sign_in, title="Sign in", url_path="sign-in", default=True)], position="hidden").run()
    st.stop()
    raise SystemExit  # st.stop() ends the script run; this line is for type checkers
user: User = signed_in

data = board_data()
with st.sidebar:
    st.write(f"Signed in as **{user.name}** ({user.role.replace('_', ' ')})")
    st.caption(f"store: {data.store.display()}")
    if st.button("Sign out"):
        st.session_state.clear()
        st.rerun()

allowed = PAGES_BY_ROLE[user.role]
available = {
    "signals": st.Page(lambda: pages.signals_page(data, user), title="Signals", icon=":material/notifications:",
                       url_path="signals"),
    "expedited": st.Page(lambda: pages.expedited_page(data, user), title="Expedited reports",
                         icon=":material/timer:", url_path="expedited"),
    "liver": st.Page(lambda: pages.liver_page(data), title="Liver (eDISH)", icon=":material/scatter_plot:",
                     url_path="liver"),
    "arms": st.Page(lambda: pages.arms_page(data), title="Arms and drugs", icon=":material/groups:",
                    url_path="arms"),
    "detection": st.Page(lambda: pages.detection_page(data), title="Signal detection", icon=":material/radar:",
                         url_path="detection"),
    "incidence": st.Page(lambda: pages.incidence_page(data), title="Incidence", icon=":material/bar_chart:",
                         url_path="incidence"),
    "efficacy": st.Page(lambda: pages.efficacy_page(data), title="Efficacy", icon=":material/monitoring:",
                        url_path="efficacy"),
    "patient": st.Page(lambda: pages.patient_page(data), title="Patient", icon=":material/person:", url_path="patient"),
    "feed": st.Page(lambda: pages.feed_page(data), title="Feed health", icon=":material/input:", url_path="feed"),
    "audit": st.Page(lambda: pages.audit_page(data), title="Audit", icon=":material/history:", url_path="audit"),
    "users": st.Page(lambda: pages.users_page(), title="Users", icon=":material/group:", url_path="users"),
}
st.session_state["pages"] = {name: available[name] for name in allowed}
st.navigation([available[name] for name in allowed]).run()
