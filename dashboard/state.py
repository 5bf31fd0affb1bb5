"""Shared, cached resources of the board: the read models, users, and the write side for actions.

Each cache is keyed by the store URL, so one process can serve (or test) several stores.
"""

from __future__ import annotations

import os
from datetime import datetime

import streamlit as st

from dashboard.auth import SignInLimiter, User, UserStore, users_path
from events.ledger import Ledger
from events.store import Store
from events.workflow import act_on_signal, record_audit, submit_expedited
from projections.board import BoardData


def store() -> Store:
    return Store.resolve()


@st.cache_resource
def _board_data(url: str) -> BoardData:
    return BoardData(Store.parse(url))


@st.cache_resource
def _ledger(url: str) -> Ledger:
    return Ledger(Store.parse(url))


@st.cache_resource
def _warm_up(url: str) -> bool:
    from dashboard import warm

    warm.start(_board_data(url))
    return True


def warm_up() -> None:
    """Compute the answers the board keeps for every session, once a process, in the background
    (``dashboard.warm``); ``SAFETY_MONITOR_BOARD_WARM=0`` leaves them to the first visitor."""
    if os.environ.get("SAFETY_MONITOR_BOARD_WARM", "1") != "0":
        _warm_up(store().url)


@st.cache_resource
def limiter() -> SignInLimiter:
    return SignInLimiter()


def board_data() -> BoardData:
    return _board_data(store().url)


def ledger() -> Ledger:
    return _ledger(store().url)


def user_store() -> UserStore:
    return UserStore(users_path(store()))


def act(signal_id: str, action: str, user: User, note: str, reason: str | None = None,
        kind: str | None = None) -> str:
    """A signal workflow command, attributed to the signed-in user (raises ValueError if refused: a
    close needs a reason fitting the signal's ``kind`` and a note)."""
    return act_on_signal(ledger(), signal_id, action, user.name, note, reason, kind=kind)


def record_sign_in(user: User) -> None:
    record_audit(ledger(), user.name, "sign-in", f"role {user.role}")


def record_download(user: User, what: str) -> None:
    record_audit(ledger(), user.name, "download", what)


def submit(case: str, user: User, on: str, authority: str, aware_at: str | None = None) -> None:
    """Record an expedited report's submission, by the signed-in user (ValueError if refused: a date in
    the future or before the case became known)."""
    submit_expedited(ledger(), case, user.name, on, authority,
                     aware_at=datetime.fromisoformat(aware_at) if aware_at else None)


def reference_safety_information() -> tuple[dict[str, frozenset[str]], bool]:
    """The RSI named by SAFETY_MONITOR_RSI (empty when unset), and whether one is in force."""
    from pathlib import Path

    from safety.expedited import load_rsi

    path = os.environ.get("SAFETY_MONITOR_RSI")
    return (load_rsi(Path(path).read_text(encoding="utf-8")), True) if path else ({}, False)
