"""Retractions and corrections, as the contract defines them: the target stops counting
(retraction) or counts with its corrected data (correction) from then on; both stay in the history.
One place for these rules, used by every read model."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from safety.vocabulary import AMENDMENT_TYPES

K = TypeVar("K", bound=Hashable)


class Amendments(Generic[K]):
    """Collects the amendments of a set of facts, keyed as the caller keys its facts."""

    def __init__(self) -> None:
        self.retracted: set[K] = set()
        self.corrected: dict[K, dict[str, Any]] = {}

    def note(self, type_: str, target: K, corrected: dict[str, Any] | None = None) -> None:
        if type_ == "retraction":
            self.retracted.add(target)
        elif type_ == "correction" and corrected is not None:
            self.corrected[target] = corrected

    @staticmethod
    def is_amendment(type_: str) -> bool:
        return type_ in AMENDMENT_TYPES

    def counts(self, type_: str, key: K) -> bool:
        """Whether a fact counts: not an amendment itself, and not retracted."""
        return type_ not in AMENDMENT_TYPES and key not in self.retracted

    def data(self, key: K, original: dict[str, Any]) -> dict[str, Any]:
        return self.corrected.get(key, original)
