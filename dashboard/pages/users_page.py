"""Users: the board's local users and roles."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.auth import ROLES, User
from dashboard.state import user_store


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
