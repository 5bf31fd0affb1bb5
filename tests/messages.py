"""Builders of contract-v1 messages for tests."""

from __future__ import annotations

import json
from typing import Any

from events.admission import RawMessage


def message(message_id: str = "m1", *, type: str = "lab_result", patient_id: str = "P1",
            source: str = "reg-a", occurred_at: str = "2024-03-01T08:00:00Z",
            data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    default_data = {
        "lab_result": {"analyte": "PLT", "value": 250, "unit": "10^9/L"},
        "adverse_event": {"term": "Pneumonia", "severity": "severe", "serious": True},
        "enrolment": {"sex": "F", "diagnosis": "systemic"},
        "intervention": {"name": "MSC infusion"},
    }
    m = {
        "schema_version": 1, "message_id": message_id, "source": source, "patient_id": patient_id,
        "type": type, "occurred_at": occurred_at,
        "data": data if data is not None else default_data.get(type, {}),
    }
    m.update(extra)
    return m


def raw(m: dict[str, Any] | str | bytes, line: int = 1) -> RawMessage:
    if isinstance(m, dict):
        body = json.dumps(m).encode()
    elif isinstance(m, str):
        body = m.encode()
    else:
        body = m
    return RawMessage(body, {"file": "test.ndjson", "line": line})


def ndjson(*messages: dict[str, Any] | str) -> str:
    return "".join((json.dumps(m) if isinstance(m, dict) else m) + "\n" for m in messages)
