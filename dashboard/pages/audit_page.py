"""Audit: who did what, and the event history as the ledger knew it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.widgets import (
    as_of_input,
    data_context,
)
from projections.board import BoardData


def audit_page(data: BoardData) -> None:
    st.title("Audit")
    data_context(data, takes_cut=False)
    st.subheader("Signal workflow: who did what")
    st.dataframe(pd.DataFrame(data.actions()), hide_index=True)
    st.subheader("Sign-ins, downloads and user changes")
    st.dataframe(pd.DataFrame(data.audit()), hide_index=True)
    st.subheader("Event history")
    patients = data.patients()
    if patients:
        source, patient_id = st.selectbox("Patient", patients, key="audit_patient",
                                          format_func=lambda p: f"{p[1]} ({p[0]})")
        as_of = as_of_input("As of (what the ledger had recorded then)", "audit_as_of")
        st.dataframe(data.patient_events(source, patient_id, as_of), hide_index=True)
