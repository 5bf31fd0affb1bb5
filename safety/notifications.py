"""What a notification says and how it is signed, and when a failed one is tried again. Pure; no I/O.

A notification names one signal at one level (a new signal at ``warning`` or ``alert``, or an open
signal's rise to one): its id, kind, level, source, pseudonymous patient id, when it occurred, a
one-line summary and a link to the board, and no other personal data. Its id is derived from the signal
and the level, so every channel, every retry and every process sends it under the same idempotency key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

#: the levels that notify, lowest first
NOTIFYING_LEVELS = ("warning", "alert")
SIGNATURE_HEADER = "X-Safety-Monitor-Signature"
#: seconds before the n-th retry of a failed delivery (n = 1, 2, ...): 30 s doubling, at most an hour
RETRY_FIRST, RETRY_MAX = 30.0, 3600.0


def notification_id(signal_id: str, level: str) -> str:
    return "n-" + hashlib.sha256(f"{signal_id}\x1f{level}".encode()).hexdigest()[:24]


def retry_after(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return float(min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, attempts - 1)))


def rises(previous: str | None, current: str) -> bool:
    """Whether a signal now at ``current`` (before at ``previous``, None when new) is due a notification."""
    if current not in NOTIFYING_LEVELS:
        return False
    order = {"watch": 0, "warning": 1, "alert": 2}
    return previous is None or order.get(current, 0) > order.get(previous, 0)


@dataclass(frozen=True)
class Notification:
    """One signal at one level, as every channel tells it."""

    id: str
    signal_id: str
    kind: str
    level: str
    source: str
    patient_id: str
    occurred_at: str
    summary: str
    link: str

    @property
    def subject(self) -> str:
        whom = f"patient {self.patient_id} ({self.source})" if self.patient_id else "the registry (no one patient)"
        return f"[safety monitor] {self.level.upper()}: {self.kind} for {whom}"

    def text(self) -> str:
        whom = f"Patient (pseudonymous): {self.patient_id}" if self.patient_id else "Registry-wide: no one patient"
        return (f"{self.summary}\n\nSignal {self.signal_id}\nKind: {self.kind}\nLevel: {self.level}\n"
                f"Source: {self.source}\n{whom}\nOccurred: {self.occurred_at}\n"
                f"Board: {self.link}\n\nNotification {self.id}. This message carries no other personal data.\n")

    def body(self) -> bytes:
        """The webhook's JSON body (the bytes that are signed)."""
        return json.dumps({"notification_id": self.id, "signal": {
            "id": self.signal_id, "kind": self.kind, "level": self.level, "source": self.source,
            "patient_id": self.patient_id, "occurred_at": self.occurred_at}, "summary": self.summary,
            "link": self.link}, sort_keys=True).encode()


def summary_of(kind: str, level: str, evidence: list[dict[str, Any]]) -> str:
    """One line: what fired, from the signal's evidence (analytes and their change, or the event's term)."""
    parts = []
    for e in evidence[:4]:
        if "analyte" in e and e.get("previous") is not None:
            verb = "rose" if e["current"] > e["previous"] else "fell"
            unit = e.get("unit", "")
            parts.append(f"{e['analyte']} {verb} from {e['previous']:g} to {e['current']:g} {unit}".strip())
        elif e.get("term"):
            parts.append(str(e["term"]))
        elif e.get("rule"):
            parts.append(str(e["rule"]))
    what = "; ".join(parts) or "see the board"
    return f"{kind.replace('_', ' ')} at level {level}: {what}"


def link_to(board_url: str | None, signal_id: str) -> str:
    base = (board_url or "http://localhost:8501").rstrip("/")
    return f"{base}/?signal={signal_id}"


def signature(secret: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of the raw body with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int
    security: str  #: "none", "starttls" or "tls"
    user: str | None
    password: str | None


def smtp_settings(url: str) -> SMTPSettings:
    """``smtp://HOST:PORT``, ``smtp+starttls://USER:PASSWORD@HOST:PORT`` or ``smtps://USER:PASSWORD@HOST:PORT``."""
    parts = urlsplit(url)
    security = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}.get(parts.scheme)
    if security is None or not parts.hostname:
        raise ValueError(f"SAFETY_MONITOR_SMTP_URL {url!r}: use smtp://HOST:PORT, smtp+starttls://USER:PASSWORD@HOST:PORT"
                         " or smtps://USER:PASSWORD@HOST:PORT")
    port = parts.port or {"none": 25, "starttls": 587, "tls": 465}[security]
    return SMTPSettings(parts.hostname, port, security, unquote(parts.username) if parts.username else None,
                        unquote(parts.password) if parts.password else None)
