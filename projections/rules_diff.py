"""Other rules tried on the live signals (``signals --rules FILE --diff``): every signal the signals read
model's facts would raise under them, computed aside, against the signals raised now. Nothing is written:
a rules change reaches the read model only through its configuration and a rebuild."""

from __future__ import annotations

import tomllib
from typing import Any

from projections.db import ReadDB
from projections.facts import history_from, parse_time, patient_facts
from projections.signal_queries import query_signals
from projections.signals import SignalsModel
from safety.detection_signals import REGISTRY
from safety.liver import LiverConfig, evaluate_liver
from safety.mas import Config, evaluate


def evaluate_all(db: ReadDB, config: Config, liver: LiverConfig) -> list[Any]:
    """Every signal the read model's facts raise under these rules, computed aside (nothing is written)."""
    out: list[Any] = []
    for (source, pid), facts in sorted(patient_facts(db).items()):
        history = history_from(source, pid, facts)
        out += evaluate(history, config) + evaluate_liver(history, liver)
    return out


def rules_from_text(text: str, live: SignalsModel) -> tuple[Config, LiverConfig]:
    """The rules of a TOML text (MAS rules, ``[rules]``, or liver rules, ``[hys_law]``), with the live ones
    for the other kind; ValueError naming the field when the text cannot be used."""
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML ({exc})") from None
    if "hys_law" in parsed:
        return live.config, LiverConfig.from_dict(parsed)
    if "rules" in parsed:
        return Config.from_dict(parsed), live.liver
    raise ValueError("neither MAS rules ([rules]) nor liver rules ([hys_law])")


def diff_rules(db: ReadDB, config: Config, liver: LiverConfig) -> dict[str, Any]:
    """What other rules would do to the live signals: the signals they add, remove, or raise at another
    level or time, by signal id (patient, kind and episode start), without touching the read model."""
    live = {s["id"]: s for s in query_signals(db) if s["source"] != REGISTRY}  # patients' signals only
    other = {s.id: s for s in evaluate_all(db, config, liver)}

    def row(sid: str) -> dict[str, Any]:
        s, o = live.get(sid), other.get(sid)
        if s is not None:
            who = (s["source"], s["patient_id"], s["kind"])
        else:
            assert o is not None
            who = (o.source, o.patient_id, o.kind)
        return {"id": sid, "source": who[0], "patient_id": who[1], "kind": who[2],
                "live": None if s is None else {"level": s["level"], "occurred_at": s["occurred_at"]},
                "other": None if o is None else {"level": o.level, "occurred_at": o.occurred_at.isoformat()}}

    added = [row(sid) for sid in sorted(set(other) - set(live))]
    removed = [row(sid) for sid in sorted(set(live) - set(other))]
    changed = [row(sid) for sid in sorted(set(live) & set(other))
               if live[sid]["level"] != other[sid].level
               or parse_time(live[sid]["occurred_at"]) != other[sid].occurred_at]
    return {"rules": {"mas": config.version, "liver": liver.version}, "added": added, "removed": removed,
            "changed": changed, "unchanged": len(set(live) & set(other)) - len(changed)}
