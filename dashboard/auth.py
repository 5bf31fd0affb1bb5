"""Local users of the board: a JSON file of names, roles and Argon2 password hashes.

Hospitals that have an identity provider use Streamlit's OIDC sign-in instead (``st.login``; see
docs/board.md). Roles: ``safety_physician`` (everything, may act on signals), ``dsmb``
(incidence and reports, signals read-only), ``admin`` (users, feed health, audit).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from events.store import Store

ROLES = ("safety_physician", "dsmb", "admin")
USERS_ENV = "SAFETY_MONITOR_USERS"
PAGES_BY_ROLE = {
    "safety_physician": ("signals", "expedited", "detection", "liver", "arms", "incidence", "efficacy", "patient",
                         "feed", "audit"),
    "dsmb": ("signals", "expedited", "liver", "arms", "incidence", "efficacy", "patient"),
    "admin": ("feed", "audit", "users"),
}
SESSION_SECONDS = 8 * 3600
MAX_FAILURES = 5
LOCKOUT_SECONDS = 300

_hasher = PasswordHasher()


def users_path(store: Store) -> Path:
    """``$SAFETY_MONITOR_USERS``, else ``users.json`` next to an SQLite ledger, else ./safety-monitor-data."""
    if os.environ.get(USERS_ENV):
        return Path(os.environ[USERS_ENV])
    if store.kind == "sqlite" and store.path is not None:
        return store.path.with_name("users.json")
    return Path("safety-monitor-data") / "users.json"


@dataclass(frozen=True)
class User:
    name: str
    role: str


class UserStore:
    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        users: dict[str, dict[str, str]] = json.loads(self.path.read_text())
        return users

    def add(self, name: str, role: str, password: str) -> None:
        if role not in ROLES:
            raise ValueError(f"--role {role!r}: use one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise ValueError("the password needs at least 8 characters")
        if not name.strip():
            raise ValueError("the user needs a name")
        users = self._load()
        users[name] = {"role": role, "hash": _hasher.hash(password)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(users, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def list(self) -> list[User]:
        return [User(name, u["role"]) for name, u in sorted(self._load().items())]

    def verify(self, name: str, password: str) -> User | None:
        record = self._load().get(name)
        if record is None:
            _hasher.hash(password)  # same work as a real check: no timing hint that the name is unknown
            return None
        try:
            _hasher.verify(record["hash"], password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name, record["role"])


class SignInLimiter:
    """At most MAX_FAILURES failed sign-ins per name in LOCKOUT_SECONDS (shared by all sessions)."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked(self, name: str, now: float | None = None) -> bool:
        now = now or time.time()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_SECONDS]
            self._failures[name] = recent
            return len(recent) >= MAX_FAILURES

    def failed(self, name: str, now: float | None = None) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(now or time.time())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
