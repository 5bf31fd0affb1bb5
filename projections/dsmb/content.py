"""What the DSMB report holds (issue 27): the answers of the read models at one data cut and knowledge
time, for the open session (pooled: no arm, no per-arm count, no comparison) or the closed session (by
arm, planned or actual, optionally masked as Group A, B, C), as sections with their fingerprints.

The report follows the study's design: the before/after section only where patients have the anchor
intervention (the seed study); the trial sections (disposition, demographics, adverse-event tables,
listings, time to event, liver, laboratory shifts) wherever subjects were exposed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from string import ascii_uppercase
from typing import Any

from projections.db import ReadDB, loads
from projections.dsmb import tables
from projections.dsmb.figures import edish_svg, incidence_svg, km_svg
from projections.efficacy import efficacy
from projections.exposure import Settings as TableSettings
from projections.exposure import ae_tables
from projections.facts import Facts, patient_facts
from projections.incidence import incidence, utc_text
from projections.liver import edish_view, lab_outliers, lab_shifts
from projections.transfers import transfer_changes
from safety.incidence import Settings as IncidenceSettings
from safety.listings import (
    Record,
    deaths,
    demographics,
    discontinuations,
    disposition,
    record_of,
    serious_events,
)
from safety.liver import LiverConfig
from safety.survival import kaplan_meier, most_common_term, times_to_first

SESSIONS = ("open", "closed")
BANNER = {"open": "Open session", "closed": "Closed session — confidential"}
BASIS = {"actual": "the treatment started, SDTM ACTARM: as treated", "planned": "the randomised arm, SDTM ARM"}


@dataclass(frozen=True)
class ReportOptions:
    session: str = "closed"
    arm_basis: str = "actual"
    mask_arms: bool = False
    anchor: str = "MSC infusion"
    pre_months: int = 3
    post_months: int = 12
    as_of: datetime | None = None
    data_cut: datetime | None = None
    changes_since: datetime | None = None
    km_term: str | None = None


@dataclass(frozen=True)
class ReportSources:
    """The read models' databases (brought up to date by the caller) and the rules in force."""

    incidence: ReadDB
    exposure: ReadDB
    signals: ReadDB
    efficacy: ReadDB
    transfers: ReadDB
    liver: LiverConfig
    rules: dict[str, str]


@dataclass
class Section:
    key: str
    title: str
    body: str
    fingerprint: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    session: str
    title: str
    banner: str
    meta: list[tuple[str, str]]
    sections: list[Section]
    fingerprint: str
    data_cut: str
    knowledge_time: str
    rules: str
    #: masked arm label -> arm (closed session with masking): written to its own file, never the report
    mask_key: dict[str, str] | None = None


def rules_in_force(mas_version: str, liver_version: str, detection_version: str) -> dict[str, str]:
    """Every rules version a report's numbers depend on, as its footers state them."""
    from safety.ctcae import VERSION as CTCAE_VERSION

    return {"MAS": mas_version, "liver": liver_version, "detection": detection_version, "grading": CTCAE_VERSION,
            "seriousness": "ICH E2A"}


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _records(src: ReportSources, opt: ReportOptions, known: Facts) -> tuple[list[Record], date, int]:
    """Every patient's record from the facts ``known`` at the knowledge time, those before the data cut only;
    the horizon; and the signals read model's last position those facts come from."""
    cut = utc_text(opt.data_cut) if opt.data_cut else None
    records, last, position = [], "", 0
    for (source, pid), facts in sorted(known.items()):
        kept = [(mid, typ, at, loads(data)) for mid, typ, at, data in facts if cut is None or at < cut]
        if not kept:
            continue
        last = max([last] + [at for _, _, at, _ in kept])
        records.append(record_of(source, pid, kept, opt.arm_basis))
    rows = src.signals.query("SELECT MAX(notification_id) FROM {t}signal_facts"
                             + (" WHERE recorded_at <= {p}" if opt.as_of else ""),
                             [utc_text(opt.as_of)] if opt.as_of else [])
    position = int(rows[0][0] or 0)
    horizon = ((opt.data_cut - timedelta(microseconds=1)).date() if opt.data_cut
               else date.fromisoformat(last[:10]) if last else date.today())
    return records, horizon, position


def mask(value: Any, key: dict[str, str]) -> Any:
    """``value`` with every string equal to an arm name, and every dict key that is one, replaced by its
    label (exact matches only: an adverse event's term is never touched)."""
    if isinstance(value, str):
        return key.get(value, value)
    if isinstance(value, dict):
        return {key.get(k, k) if isinstance(k, str) else k: mask(v, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask(v, key) for v in value)
    return value


def masking_key(arms: list[str]) -> dict[str, str]:
    """Arm -> "Group A", "Group B", ... in an order drawn at random, so the letters say nothing."""
    order = list(arms)
    secrets.SystemRandom().shuffle(order)
    return {arm: f"Group {ascii_uppercase[i]}" for i, arm in enumerate(order)}


def build_report(src: ReportSources, opt: ReportOptions, now: datetime) -> Report:
    """The report's sections, each from the read models as of ``opt.as_of`` and before ``opt.data_cut``."""
    if opt.session not in SESSIONS:
        raise ValueError(f"session {opt.session!r}: open or closed")
    pooled = opt.session == "open"
    if pooled and opt.mask_arms:
        raise ValueError("--mask-arms is for the closed session: the open session names no arm at all")
    incid = incidence(src.incidence, IncidenceSettings(opt.anchor, opt.pre_months, opt.post_months, opt.data_cut),
                      opt.as_of)
    ae = ae_tables(src.exposure, TableSettings(data_cut=opt.data_cut, arm_basis=opt.arm_basis, pooled=pooled),
                   opt.as_of)
    known = patient_facts(src.signals, opt.as_of)  # read once: the records, the liver and outlier sections
    records, horizon, position = _records(src, opt, known)
    by = "pooled" if pooled else "arm"
    liver = edish_view(src.signals, src.liver, by=by, as_of=opt.as_of, arm_basis=opt.arm_basis,
                       data_cut=opt.data_cut, facts=known)
    shifts = lab_shifts(src.signals, by=by, as_of=opt.as_of, arm_basis=opt.arm_basis, data_cut=opt.data_cut,
                        facts=known)
    exposed = [r for r in records if r.exposed]
    km_term = opt.km_term or most_common_term(exposed)
    km = {"term": km_term,
          "to_term": kaplan_meier(times_to_first(exposed, horizon, km_term, pooled)) if km_term else {},
          "to_discontinuation": kaplan_meier(times_to_first(exposed, horizon, None, pooled))}
    data: dict[str, Any] = {
        "ae": ae, "liver": liver, "shifts": shifts, "km": km,
        "outliers": lab_outliers(src.signals, by=by, as_of=opt.as_of, arm_basis=opt.arm_basis, data_cut=opt.data_cut,
                                 facts=known),
        "deaths": deaths(exposed, pooled), "serious": serious_events(exposed, pooled),
        "discontinued": discontinuations(exposed, pooled), "disposition": disposition(records, pooled),
        "demographics": demographics(exposed, horizon, pooled),
    }
    key = None
    if opt.mask_arms:
        arms = sorted({g["name"] for g in ae["groups"]} | {r.arm for r in records if r.exposed})
        key = masking_key(arms)
        data = mask(data, key)
    as_of = utc_text(opt.as_of) if opt.as_of else None
    listing_fp = f"{position}-{_digest('listings', position, opt.arm_basis, opt.session, as_of, opt.data_cut)}"
    sections = _sections(incid, data, listing_fp, pooled, src, opt)
    fingerprint = f"{position}-{_digest([s.fingerprint for s in sections], opt.session, opt.mask_arms)}"
    cut = (opt.data_cut - timedelta(microseconds=1)).date().isoformat() if opt.data_cut else None
    knowledge = (opt.as_of or now).strftime("%Y-%m-%d %H:%M UTC")
    rules = "; ".join(f"{k} {v}" for k, v in src.rules.items())
    studies = sorted({r.study or r.source for r in records})
    meta = [("Session", BANNER[opt.session]),
            ("Studies (sources)", ", ".join(studies) or "none"),
            ("Clinical data cut", cut or f"none: every clinical fact known (observation ends {horizon.isoformat()})"),
            ("Knowledge time", knowledge + ("" if opt.as_of else " (everything recorded when the report was made)")),
            ("Arms", "pooled: no arm is named in the open session" if pooled else
             f"{opt.arm_basis} arm ({BASIS[opt.arm_basis]})"
             + ("; masked as groups (the key is kept apart)" if key else "")),
            ("Rules", rules), ("Fingerprint", fingerprint), ("Generated", now.strftime("%Y-%m-%d %H:%M UTC"))]
    title = f"DSMB safety report — {BANNER[opt.session]}"
    return Report(opt.session, title, BANNER[opt.session], meta, sections, fingerprint, cut or "none", knowledge,
                  rules, {label: arm for arm, label in key.items()} if key else None)


def _sections(incid: dict[str, Any], data: dict[str, Any], listing_fp: str, pooled: bool, src: ReportSources,
              opt: ReportOptions) -> list[Section]:
    ae = data["ae"]
    out = [Section("disposition", "Disposition", tables.disposition_html(data["disposition"]), listing_fp,
                   ["Enrolled: every subject of the sources; exposed: with a first exposure (the safety "
                    "population); each exposed subject's last disposition, else ongoing."]),
           Section("demographics", "Demographics and exposure",
                   tables.demographics_html(data["demographics"], doses=not opt.mask_arms),
                   listing_fp, ["Exposure: days from the first dose through the last, or through the end of "
                                "observation while ongoing; mean (SD), median (min–max)."])]
    if incid["patients"]:  # the seed study's design: adverse events before and after the anchor intervention
        out.append(Section("prepost", f"Adverse events before and after {opt.anchor}",
                           tables.prepost_html(incid) + incidence_svg(incid), incid["fingerprint"],
                           [f"{incid['patients']} patients with the anchor; windows {opt.pre_months} months "
                            f"before and {opt.post_months} months from the first {opt.anchor}."]))
    if ae["groups"]:
        missing = sum(ae["causality_missing"].values())
        meaning = {o["row"]: o["meaning"] for o in ae["overview"]}
        out.append(Section("teae", "Treatment-emergent adverse events", tables.ae_html(ae), ae["fingerprint"], [
            f"Treatment-emergent: {ae['treatment_emergent']}. Time at risk: {ae['time_at_risk']}.",
            f"Related: {meaning['related']}. "
            f"{missing} emergent event{'s' if missing != 1 else ''} had no causality given.",
            f"Leading to discontinuation: {meaning['leading_to_discontinuation']}.",
            "Percentages round half up; EAIR per 100 patient-years at risk with the exact Poisson interval."]))
        if not pooled and ae["comparisons"]:
            out.append(Section("comparisons", f"Comparisons with {ae['control']}", tables.comparisons_html(ae),
                               ae["fingerprint"], [f"{k}: {v}" for k, v in ae["methods"].items()
                                                   if k in ("risk_difference", "relative_risk", "eair_ratio")]))
        out.append(Section("discontinuations", "Discontinuations due to adverse events, by preferred term",
                           tables.discontinuation_html(ae, data["discontinued"]), ae["fingerprint"],
                           [ae["methods"]["discontinuations_by_term"] + "."]))
    out += [Section("deaths", "Deaths", tables.listing_html(data["deaths"], tables.DEATH_COLUMNS, pooled), listing_fp,
                    ["Day 1 is the first dose; days after the last dose count from the day after it."]),
            Section("serious", "Serious adverse events", tables.listing_html(data["serious"], tables.SAE_COLUMNS,
                                                                             pooled), listing_fp,
                    ["Serious as ICH E2A: flagged serious or meeting a criterion (death, life-threatening, "
                     "hospitalisation, disability, congenital anomaly, important medical event)."])]
    km = data["km"]
    if km["to_discontinuation"]:
        body = ((km_svg(km["to_term"], f"first {km['term']}") + tables.km_html(km["to_term"]) if km["to_term"] else "")
                + km_svg(km["to_discontinuation"], "discontinuation for an adverse event")
                + tables.km_html(km["to_discontinuation"]))
        out.append(Section("time_to_event", f"Time to first {km['term']} and to discontinuation", body, listing_fp,
                           ["Kaplan–Meier (lifelines), 95% log-log intervals; day 1 the first dose; censored at "
                            "the end of observation (withdrawal, last contact, or the data cut)."]))
    liver = data["liver"]
    if liver["patients"]:
        out.append(Section("liver", "Liver: eDISH and the Hy's law range",
                           edish_svg(liver) + tables.hys_law_html(liver), listing_fp,
                           [f"Peaks on treatment (from the first exposure); lines at "
                            f"{liver['thresholds']['transaminase_xuln']:g}×ULN and "
                            f"{liver['thresholds']['bilirubin_xuln']:g}×ULN (FDA 2009); {liver['rules_version']}."]))
    out.append(Section("lab_outliers", "Laboratory outliers (CTCAE grade 3 or more)",
                       tables.listing_html(data["outliers"], tables.OUTLIER_COLUMNS, pooled), listing_fp,
                       ["Every result after the day of the first exposure of grade 3 or more, graded on the scale "
                        "of the shift tables."]))
    if data["shifts"]["matrices"]:
        out.append(Section("shifts", f"Laboratory shifts ({data['shifts']['version']})",
                           tables.shifts_html(data["shifts"]), listing_fp,
                           [f"Baseline: {data['shifts']['baseline']}; {data['shifts']['scale']}."]))
    if incid["patients"]:
        eff = efficacy(src.efficacy, anchor=opt.anchor)
        if eff.get("patients"):
            out.append(Section("efficacy", "Efficacy", tables.efficacy_html(eff), incid["fingerprint"]))
    changes = transfer_changes(src.transfers, utc_text(opt.changes_since) if opt.changes_since else None)
    if changes or opt.changes_since:
        since = f" since {opt.changes_since.strftime('%Y-%m-%d %H:%M UTC')}" if opt.changes_since else ""
        out.append(Section("transfers", f"Data transfers{since}", tables.changes_html(changes), listing_fp,
                           ["Records each SDTM transfer added, corrected (a changed value or date) or retracted "
                            "(absent from the transfer), as recorded in the ledger."]))
    return out
