"""The MAS rules' configuration: the trend rules, windows, levels, context, scores and the population the
rules are for, read from ``mas_rules.toml`` with every value checked (``safety.rules_file``). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from safety import rules_file
from safety.rules_file import RulesError, number, ordered, text, window


@dataclass(frozen=True)
class Rule:
    name: str
    analyte: str
    direction: str  # "rise" or "fall"
    relative: float
    absolute: float
    core: bool
    source: str
    requires_crp_high: bool = False


@dataclass(frozen=True)
class Config:
    version: str
    rules: tuple[Rule, ...]
    look_back: timedelta = timedelta(days=14)
    together: timedelta = timedelta(hours=72)
    episode: timedelta = timedelta(days=14)
    crp_high_mg_l: float = 20.0
    watch_at: int = 2
    warning_at: int = 3
    biologic_stopped: timedelta = timedelta(weeks=12)
    tocilizumab_blunting: timedelta = timedelta(weeks=12)
    fever_cutoff_c: float = 38.0
    criteria_window: timedelta = timedelta(hours=72)
    ms_score_cutoff: float = -2.1
    ferritin_esr_cutoff: float = 21.5
    #: conditions (regular expressions, case-insensitive) and sources the MAS rules are for, beside JIA
    population_conditions: tuple[str, ...] = ("juvenile idiopathic arthritis", r"\bjia\b", "still'?s disease")
    population_sources: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """The configuration of a rules file, every value checked (``RulesError`` naming the field)."""
        rules_table = rules_file.field(d, "rules")
        if not isinstance(rules_table, dict) or not rules_table:
            raise RulesError("rules: at least one [rules.NAME] table is needed")
        rules = []
        for name in rules_table:
            p = f"rules.{name}"
            direction = text(d, f"{p}.direction")
            if direction not in ("rise", "fall"):
                raise RulesError(f"{p}.direction: {direction!r} must be rise or fall")
            core = rules_file.field(d, f"{p}.core")
            if not isinstance(core, bool):
                raise RulesError(f"{p}.core: {core!r} must be true or false")
            rules.append(Rule(name, text(d, f"{p}.analyte"), direction,
                              number(d, f"{p}.relative", high=1.0 if direction == "fall" else 100.0),
                              number(d, f"{p}.absolute", low_inclusive=True), core, text(d, f"{p}.source"),
                              bool(rules_table[name].get("requires_crp_high", False))))
        watch, warning = number(d, "levels.watch", integer=True), number(d, "levels.warning", integer=True)
        ordered(("levels.watch", watch), ("levels.warning", warning))
        return cls(
            version=text(d, "version"),
            rules=tuple(rules),
            look_back=window(d, "look_back_days", "days"),
            together=window(d, "together_hours", "hours"),
            episode=window(d, "episode_days", "days"),
            crp_high_mg_l=number(d, "crp_high_mg_l"),
            watch_at=int(watch),
            warning_at=int(warning),
            biologic_stopped=window(d, "context.biologic_stopped_weeks", "weeks"),
            tocilizumab_blunting=window(d, "context.tocilizumab_blunting_weeks", "weeks"),
            fever_cutoff_c=number(d, "criteria_2016.fever_cutoff_c", low=35.0, high=43.0),
            criteria_window=window(d, "criteria_2016.window_hours", "hours"),
            ms_score_cutoff=number(d, "scores.ms_score_cutoff", low=None),
            ferritin_esr_cutoff=number(d, "scores.ferritin_esr_cutoff"),
            **_population(d),
        )


def _population(d: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The ``[population]`` table (optional: a rules file without one takes the defaults)."""
    table = d.get("population")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise RulesError("population: must be a table with conditions and sources")
    out = {}
    for key in ("conditions", "sources"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RulesError(f"population.{key}: a list of texts")
        if key == "conditions":
            for v in value:
                try:
                    re.compile(v)
                except re.error as exc:
                    raise RulesError(f"population.conditions: {v!r} is not a regular expression ({exc})") from None
        out[f"population_{key}"] = tuple(value)
    return out
