"""Replaying a study message by message in clinical-time order, as a registry would have sent it, so the
board shows its signals arise live (the demo's ``--replay``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any


def in_clinical_order(messages: list[Any]) -> list[Any]:
    """The study as it happened: by occurred_at (stable, so same-day messages keep the file's order)."""
    from events.contract_models import parse_timestamp
    from safety.vocabulary import AMENDMENT_TYPES

    def when(m: Any) -> tuple[datetime, int]:
        obj = json.loads(m.raw)
        # an amendment is told after what it amends, even when it is dated the same instant
        return parse_timestamp(obj["occurred_at"]), int(obj["type"] in AMENDMENT_TYPES)

    return sorted(messages, key=when)


def replay_messages(ledger: Any, messages: list[Any], delay: float,
                    after_each: Callable[[int], None] | None = None) -> None:
    """Append one message at a time, as a registry would send them, so the board shows signals live."""
    from events.ingest import Ingestor

    ingestor = Ingestor(ledger)
    for i, m in enumerate(messages):
        ingestor.ingest([m])
        if after_each:
            after_each(i)
        time.sleep(delay)
