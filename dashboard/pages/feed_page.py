"""Feed health: sources, transfers, read models, Kafka partitions, notifications, quarantine."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.widgets import (
    data_context,
    when,
)
from projections.board import BoardData


def feed_page(data: BoardData) -> None:
    st.title("Feed health")
    data_context(data, takes_cut=False)
    counts = data.feed_counts()
    st.subheader("Messages per source")
    st.dataframe(counts, hide_index=True)
    if not counts.empty:
        long = counts.melt(id_vars=["source"], value_vars=["accepted", "duplicates", "quarantined"],
                           var_name="outcome", value_name="messages")
        st.altair_chart(alt.Chart(long).mark_bar().encode(x="messages:Q", y="source:N", color="outcome:N"),
                        width="stretch")
    volume = data.volume()
    if not volume.empty:
        st.subheader("Volume per source over time")
        st.altair_chart(alt.Chart(volume).mark_bar().encode(x="day:T", y="messages:Q", color="source:N"),
                        width="stretch")
    transfers = data.transfers()
    if not transfers.empty:
        st.subheader("SDTM transfers")
        st.caption("What each transfer changed: records new, corrected (a changed value or date) and retracted "
                   "(absent from the transfer). docs/sdtm-mapping.md")
        st.dataframe(transfers, hide_index=True)
    st.subheader("Read models")
    models = data.read_models()
    st.dataframe(models, hide_index=True)
    segments = data.segments()
    if not segments.empty:
        st.caption(f"Projected in {len(segments)} segments by worker processes (`safety-monitor project --workers "
                   "N`): each segment's worker, its lease, and how far each read model is behind in it.")
        st.dataframe(segments, hide_index=True)
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
                     f"last: {d['last_error']}; next try after {when(d['next_attempt_at'])}.")
    if waiting:
        st.dataframe(pd.DataFrame(waiting), hide_index=True)
    st.subheader("Quarantine")
    quarantine = data.quarantine()
    st.dataframe(quarantine, hide_index=True)
    if not quarantine.empty:
        item = st.selectbox("Show the raw message of", quarantine["id"].tolist())
        st.code(data.quarantined_raw(int(item)), language="json")
