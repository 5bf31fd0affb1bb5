"""Encryption at rest: what would identify a patient or reveal clinical data is sealed in every table.

Off unless a key is configured: ``SAFETY_MONITOR_CIPHER_KEY`` (base64 of 16, 24 or 32 random bytes)
or ``SAFETY_MONITOR_CIPHER_KEY_FILE`` (a file holding that base64 text). From the one key, HKDF
derives three: eventsourcing's AES-GCM cipher seals every stored event's state; deterministic
AES-SIV *tokens* stand for ids that SQL must still match (message keys, patient ids, message ids);
randomised AES-GCM seals payloads (quarantined bytes and reasons, read-model data and evidence).
"""

from __future__ import annotations

import base64
import binascii
import os
from functools import lru_cache
from pathlib import Path

KEY_ENV = "SAFETY_MONITOR_CIPHER_KEY"
KEY_FILE_ENV = "SAFETY_MONITOR_CIPHER_KEY_FILE"


class CipherKeyError(ValueError):
    """The configured key cannot be used; the message says why and how to make one."""


def configured_key() -> bytes | None:
    text = os.environ.get(KEY_ENV)
    if not text and os.environ.get(KEY_FILE_ENV):
        text = Path(os.environ[KEY_FILE_ENV]).read_text().strip()
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CipherKeyError(f"{KEY_ENV}: not base64; make one with: python -c \"import base64, os; "
                        "print(base64.b64encode(os.urandom(32)).decode())\"") from None
    if len(key) not in (16, 24, 32):
        raise CipherKeyError(f"{KEY_ENV}: {len(key)} bytes; use 16, 24 or 32 random bytes, base64-encoded")
    return key


def _derive(key: bytes, purpose: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"safety-monitor/" + purpose).derive(key)


class Sealer:
    """Tokens (deterministic, for matching) and seals (randomised, for payloads); identity when off."""

    def __init__(self, key: bytes | None):
        self.enabled = key is not None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

            self._siv = AESSIV(_derive(key, b"tokens", 64))
            self._gcm = AESGCM(_derive(key, b"payloads", 32))
            self.events_key = base64.b64encode(_derive(key, b"events", 32)).decode()

    def token(self, value: str) -> str:
        if not self.enabled:
            return value
        return "t:" + base64.urlsafe_b64encode(self._siv.encrypt(value.encode(), None)).decode()

    def untoken(self, value: str) -> str:
        if not self.enabled or not value.startswith("t:"):
            return value
        return self._siv.decrypt(base64.urlsafe_b64decode(value[2:]), None).decode()

    def seal_bytes(self, value: bytes) -> bytes:
        if not self.enabled:
            return value
        nonce = os.urandom(12)
        return b"s:" + nonce + self._gcm.encrypt(nonce, value, None)

    def unseal_bytes(self, value: bytes) -> bytes:
        if not self.enabled or not value.startswith(b"s:"):
            return value
        return self._gcm.decrypt(value[2:14], value[14:], None)

    def seal(self, value: str | None) -> str | None:
        if value is None or not self.enabled:
            return value
        return "s:" + base64.b64encode(self.seal_bytes(value.encode())[2:]).decode()

    def unseal(self, value: str | None) -> str | None:
        if value is None or not self.enabled or not value.startswith("s:"):
            return value
        return self.unseal_bytes(b"s:" + base64.b64decode(value[2:])).decode()

    def eventsourcing_env(self) -> dict[str, str]:
        """Settings that make eventsourcing encrypt every stored event's state."""
        if not self.enabled:
            return {}
        return {"CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher", "CIPHER_KEY": self.events_key}


@lru_cache(maxsize=4)
def _sealer_for(key: bytes | None) -> Sealer:
    return Sealer(key)


def sealer() -> Sealer:
    """The sealer for the configured key (or the identity sealer when none is configured)."""
    return _sealer_for(configured_key())
