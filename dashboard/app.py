"""The safety board (Streamlit). Reads read models only; the store comes from SAFETY_MONITOR_STORE."""

from __future__ import annotations

import streamlit as st

from events.store import Store
from projections.db import ReadDB
from projections.feed import feed_counts, quarantine

st.set_page_config(page_title="Safety monitor", layout="wide")


@st.cache_resource
def read_db() -> ReadDB:
    return ReadDB(Store.resolve())


db = read_db()
st.title("Safety monitor")
st.caption(f"store: {db.store.display()}")
st.subheader("Feed health")
st.dataframe(feed_counts(db), hide_index=True)
st.subheader("Quarantine")
st.dataframe(quarantine(db), hide_index=True)
