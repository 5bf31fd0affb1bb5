"""Liver safety: results as multiples of the upper limit of normal (ULN), transaminase elevations,
Hy's law (``liver_rules.toml``), and the eDISH view of each patient's peaks. Pure; no I/O.

Each result is read against its own reference range (``reference_high``, which SDTM supplies);
without one, against a documented default (``[default_uln]``), and otherwise not at all. The range
used is kept in the evidence. Everything is evaluated from a patient's whole history in clinical
order, so a late panel re-evaluates the signals after it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from safety.mas import History, Lab, Signal, signal_id
from safety.rules_file import RulesError, number, ordered, text, window

TRANSAMINASES = ("ALT", "AST")
LIVER = ("ALT", "AST", "BILI", "ALP")


@dataclass(frozen=True)
class LiverConfig:
    version: str
    episode: timedelta
    watch_xuln: float
    warning_xuln: float
    hy_transaminase_xuln: float
    hy_bilirubin_xuln: float
    hy_window: timedelta
    cholestatic_alp_xuln: float
    default_uln: dict[str, tuple[float, str]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LiverConfig:
        """The configuration of a liver rules file, every value checked (``RulesError`` naming the field)."""
        watch = number(d, "transaminase_elevation.watch_xuln", high=1000)
        warning = number(d, "transaminase_elevation.warning_xuln", high=1000)
        ordered(("transaminase_elevation.watch_xuln", watch), ("transaminase_elevation.warning_xuln", warning))
        default_uln = d.get("default_uln", {})
        if not isinstance(default_uln, dict):
            raise RulesError("default_uln: must be a table of [default_uln.TEST] tables")
        return cls(text(d, "version"), window(d, "episode_days", "days"), watch, warning,
                   number(d, "hys_law.transaminase_xuln", high=1000), number(d, "hys_law.bilirubin_xuln", high=1000),
                   window(d, "hys_law.window_days", "days"), number(d, "hys_law.cholestatic_alp_xuln", high=1000),
                   {k: (number(d, f"default_uln.{k}.uln"), text(d, f"default_uln.{k}.source")) for k in default_uln})


def load_liver_config(text: str | None = None) -> LiverConfig:
    raw = text if text is not None else (resources.files("safety") / "liver_rules.toml").read_text()
    return LiverConfig.from_dict(tomllib.loads(raw))


@dataclass(frozen=True)
class Multiple:
    """A result as a multiple of its ULN, with the range used."""

    lab: Lab
    uln: float
    uln_source: str

    @property
    def xuln(self) -> float:
        return self.lab.value / self.uln

    def evidence(self, rule: str) -> dict[str, Any]:
        return {"rule": rule, "test": self.lab.analyte, "value": self.lab.value, "unit": self.lab.unit,
                "uln": self.uln, "uln_source": self.uln_source, "xuln": round(self.xuln, 2),
                "at": self.lab.at.isoformat(), "message_id": self.lab.message_id,
                "term": f"{self.lab.analyte} {self.lab.value:g} {self.lab.unit} = {self.xuln:.1f}×ULN "
                        f"(ULN {self.uln:g}, {self.uln_source}) on {self.lab.at.date().isoformat()}"}


def multiples(labs: list[Lab], config: LiverConfig) -> list[Multiple]:
    """The liver results that can be read as multiples of a ULN, in clinical order."""
    out = []
    for lab in sorted((x for x in labs if x.analyte in LIVER), key=lambda x: x.at):
        if lab.reference_high:
            out.append(Multiple(lab, lab.reference_high, "the result's own reference range"))
        elif lab.analyte in config.default_uln:
            uln, source = config.default_uln[lab.analyte]
            out.append(Multiple(lab, uln, f"default: {source}"))
    return out


def _drugs_on(h: History, at: datetime) -> list[str]:
    on: dict[str, bool] = {}
    for t in sorted(h.treatments, key=lambda t: t.at):
        if t.at <= at:
            on[t.drug] = t.action != "stop"
    return sorted(drug for drug, active in on.items() if active)


@dataclass(frozen=True)
class HysLaw:
    """The timed rule's verdict for one transaminase elevation."""

    transaminase: Multiple
    bilirubin: Multiple | None
    alp: Multiple | None
    met: bool
    reason: str


def hys_law(ms: list[Multiple], config: LiverConfig) -> list[HysLaw]:
    """For each transaminase result at or above the threshold: a bilirubin at or above its threshold on or
    after it and within the window, and the ALP nearest that bilirubin (on or before it) below the
    cholestatic threshold."""
    out = []
    for t in ms:
        if t.lab.analyte not in TRANSAMINASES or t.xuln < config.hy_transaminase_xuln:
            continue
        bili = next((b for b in ms if b.lab.analyte == "BILI" and b.xuln >= config.hy_bilirubin_xuln
                     and t.lab.at <= b.lab.at <= t.lab.at + config.hy_window), None)
        if bili is None:
            out.append(HysLaw(t, None, None, False, f"no total bilirubin ≥ {config.hy_bilirubin_xuln:g}×ULN within "
                                                     f"{config.hy_window.days} days on or after the transaminase rise"))
            continue
        alps = [a for a in ms if a.lab.analyte == "ALP" and a.lab.at <= bili.lab.at]
        alp = alps[-1] if alps else None
        if alp is not None and alp.xuln >= config.cholestatic_alp_xuln:
            out.append(HysLaw(t, bili, alp, False, f"cholestatic pattern: ALP {_at(alp)}, the ALP nearest before "
                                                   f"the bilirubin rise ({_at(bili)}), is ≥ "
                                                   f"{config.cholestatic_alp_xuln:g}×ULN, so not Hy's law"))
            continue
        note = ("ALP not measured before the bilirubin rise" if alp is None
                else f"ALP {_at(alp)}, the ALP nearest before the bilirubin rise")
        out.append(HysLaw(t, bili, alp, True, f"ALT or AST ≥ {config.hy_transaminase_xuln:g}×ULN and bilirubin ≥ "
                                               f"{config.hy_bilirubin_xuln:g}×ULN within {config.hy_window.days} "
                                               f"days; {note}"))
    return out


def _at(m: Multiple) -> str:
    """A result as the reasons cite it: ``5.80×ULN on 2013-05-12`` (two decimals, as the peaks beside it)."""
    return f"{m.xuln:.2f}×ULN on {m.lab.at.date().isoformat()}"


def _episodes(items: list[Any], at: Any, gap: timedelta) -> list[list[Any]]:
    groups: list[list[Any]] = []
    for item in items:
        if groups and at(item) - at(groups[-1][-1]) <= gap:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def evaluate_liver(h: History, config: LiverConfig) -> list[Signal]:
    """The patient's transaminase-elevation and Hy's law signals."""
    ms = multiples(h.labs, config)
    signals: list[Signal] = []
    raised = [m for m in ms if m.lab.analyte in TRANSAMINASES and m.xuln >= config.watch_xuln]
    for group in _episodes(raised, lambda m: m.lab.at, config.episode):
        peak = max(group, key=lambda m: m.xuln)
        bilirubin = _bilirubin_priority(ms, group, config)
        # a bilirubin above 2×ULN beside the rise: liver function is affected, so at least a warning even
        # when ALP rules out Hy's law (issue 27)
        level = "warning" if peak.xuln >= config.warning_xuln or bilirubin else "watch"
        evidence = [m.evidence(f"{m.lab.analyte} ≥ {config.watch_xuln:g}×ULN") for m in group]
        drugs = _drugs_on(h, peak.lab.at)
        signals.append(Signal(signal_id(h.source, h.patient_id, "transaminase_elevation", group[0].lab.at.isoformat()),
                              h.source, h.patient_id, "transaminase_elevation", level, peak.lab.at, evidence,
                              [f"on {', '.join(drugs)}"] if drugs else [],
                              details={"rules_version": config.version, "peak_xuln": round(peak.xuln, 2),
                                       "drugs": drugs},
                              priority_reasons=bilirubin))
    signals += _isolated_bilirubin(h, ms, raised, config)
    verdicts = [v for v in hys_law(ms, config) if v.met]
    for group in _episodes(verdicts, lambda v: v.transaminase.lab.at, config.episode):
        first = group[0]
        assert first.bilirubin is not None
        evidence = [first.transaminase.evidence("transaminase ≥ 3×ULN"), first.bilirubin.evidence("bilirubin ≥ 2×ULN")]
        if first.alp is not None:
            evidence.append(first.alp.evidence("ALP below the cholestatic threshold"))
        drugs = _drugs_on(h, first.bilirubin.lab.at)
        signals.append(Signal(signal_id(h.source, h.patient_id, "hys_law", first.transaminase.lab.at.isoformat()),
                              h.source, h.patient_id, "hys_law", "alert", first.bilirubin.lab.at, evidence,
                              [f"on {', '.join(drugs)}"] if drugs else [],
                              details={"rules_version": config.version, "reason": first.reason, "drugs": drugs},
                              priority_reasons=(f"bilirubin {first.bilirubin.xuln:.1f}×ULN (above 2×ULN)",)))
    return signals


#: a bilirubin above this multiple of its ULN makes a liver signal urgent (FDA 2009 DILI guidance)
BILIRUBIN_PRIORITY_XULN = 2.0


def _isolated_bilirubin(h: History, ms: list[Multiple], raised: list[Multiple], config: LiverConfig) -> list[Signal]:
    """A total bilirubin above 2×ULN with no transaminase rise within the Hy's law window of it: watched
    (``bilirubin_elevation``), since it may be the first sign of an injury whose transaminases were not yet
    measured, or of cholestasis or haemolysis that the physician should see (issue 27)."""
    high = [m for m in ms if m.lab.analyte == "BILI" and m.xuln > BILIRUBIN_PRIORITY_XULN
            and not any(abs(t.lab.at - m.lab.at) <= config.hy_window for t in raised)]
    out = []
    for group in _episodes(high, lambda m: m.lab.at, config.episode):
        peak = max(group, key=lambda m: m.xuln)
        drugs = _drugs_on(h, peak.lab.at)
        out.append(Signal(signal_id(h.source, h.patient_id, "bilirubin_elevation", group[0].lab.at.isoformat()),
                          h.source, h.patient_id, "bilirubin_elevation", "watch", peak.lab.at,
                          [m.evidence(f"bilirubin > {BILIRUBIN_PRIORITY_XULN:g}×ULN") for m in group],
                          [f"on {', '.join(drugs)}"] if drugs else [],
                          details={"rules_version": config.version, "peak_xuln": round(peak.xuln, 2), "drugs": drugs,
                                   "reason": "no ALT or AST ≥ the watch threshold within the Hy's law window"}))
    return out


def _bilirubin_priority(ms: list[Multiple], group: list[Multiple], config: LiverConfig) -> tuple[str, ...]:
    """A bilirubin above 2×ULN within the Hy's law window of the episode's results: the liver injury
    affects function, whatever the ALP says."""
    start, end = group[0].lab.at - config.hy_window, group[-1].lab.at + config.hy_window
    bilirubin = [m for m in ms if m.lab.analyte == "BILI" and start <= m.lab.at <= end]
    peak = max(bilirubin, key=lambda m: m.xuln, default=None)
    if peak is None or peak.xuln <= BILIRUBIN_PRIORITY_XULN:
        return ()
    return (f"bilirubin {peak.xuln:.1f}×ULN (above 2×ULN) on {peak.lab.at.date().isoformat()}",)


QUADRANTS = ("normal", "temple_corollary", "hyperbilirubinaemia", "hys_law_range")


def edish(h: History, config: LiverConfig, after: datetime | None = None,
          measured: list[Multiple] | None = None) -> dict[str, Any]:
    """A patient's peak ALT, AST, bilirubin and ALP as ULN multiples (from ``after`` when given), the
    eDISH quadrant of the peaks, and whether the timed Hy's law rule is met (with the reason).
    ``measured``: the patient's ``multiples``, when the caller has them already."""
    every = multiples(h.labs, config) if measured is None else measured
    ms = [m for m in every if after is None or m.lab.at >= after]
    peaks = {a: max((m.xuln for m in ms if m.lab.analyte == a), default=None) for a in LIVER}
    transaminase = max((p for a in TRANSAMINASES if (p := peaks[a]) is not None), default=None)
    bili = peaks["BILI"]
    high_t = transaminase is not None and transaminase >= config.hy_transaminase_xuln
    high_b = bili is not None and bili >= config.hy_bilirubin_xuln
    quadrant = QUADRANTS[int(high_t) + 2 * int(high_b)]
    verdicts = hys_law(ms, config)
    met = next((v for v in verdicts if v.met), None)
    # the nearest miss says most: a bilirubin rise in a cholestatic pattern before one with no bilirubin rise
    miss = next((v for v in verdicts if v.bilirubin is not None), verdicts[0] if verdicts else None)
    verdict = met or miss
    reason = verdict.reason if verdict is not None else f"no ALT or AST ≥ {config.hy_transaminase_xuln:g}×ULN"
    return {"peak_alt_xuln": _r(peaks["ALT"]), "peak_ast_xuln": _r(peaks["AST"]), "peak_bili_xuln": _r(bili),
            "peak_alp_xuln": _r(peaks["ALP"]), "quadrant": quadrant, "potential_hys_law": met is not None,
            "reason": reason}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
