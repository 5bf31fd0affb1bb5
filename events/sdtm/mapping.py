"""SDTM records to contract messages, domain by domain (``docs/sdtm-mapping.md`` says it variable by
variable).

Each record becomes one message whose id is its *record id*: the study, the domain, the subject and a
digest of the record's identifying variables (``IDENTITY``), never ``--SEQ``, which sponsors renumber
between transfers. Records sharing every identifying value are told apart by their content (every
variable but ``--SEQ``), never by their position, so the same rows in another order are the same
records (issue 23). A record that cannot be made into a message (no USUBJID, an unparseable date, a
second DM record of a subject, a subject DM does not name) is a ``Refusal`` with the reason, to be
quarantined; the contract judges the rest (units, ranges) as for any message.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from events.sdtm.fields import Bad, as_number, end_date, first_day, raw_date, start_date
from events.sdtm.visits import COMPLETION, disposition, temperature, visit
from safety.partial_dates import PartialDateError, impute_end

#: the identifying variables of each mapped domain (those a record is known by across transfers)
IDENTITY: dict[str, tuple[str, ...]] = {
    "DM": ("USUBJID",),
    "AE": ("USUBJID", "AETERM", "AESTDTC", "AESPID"),
    "LB": ("USUBJID", "LBTESTCD", "LBCAT", "LBSPEC", "LBMETHOD", "VISITNUM", "LBTPTNUM", "LBDTC"),
    "EX": ("USUBJID", "EXTRT", "EXDOSE", "EXDOSU", "EXSTDTC"),  # of each period's first record
    "DS": ("USUBJID", "DSCAT", "DSDECOD", "DSSTDTC"),
    "VS": ("USUBJID", "VSTESTCD", "VISITNUM", "VSTPTNUM", "VSDTC"),
    "SV": ("USUBJID", "VISITNUM"),
}
#: domains read for context only: TS (the indication) and SUPPAE (merged into AE)
CONTEXT = ("TS", "SUPPAE")

#: SDTM LBTESTCD -> the contract's analyte code; other tests keep their own code
LB_ANALYTES = {
    "WBC": "WBC", "NEUT": "NEUT", "PLAT": "PLT", "HGB": "HGB", "ESR": "ESR", "CRP": "CRP",
    "FERRITIN": "FERRITIN", "FERR": "FERRITIN", "FIBRINO": "FIBRINOGEN", "FIBRINOG": "FIBRINOGEN",
    "TRIG": "TG", "AST": "AST", "ALT": "ALT", "LDH": "LDH", "BILI": "BILI", "ALP": "ALP",
}
SEVERITY = {"MILD": "mild", "MODERATE": "moderate", "SEVERE": "severe"}
#: AEREL is sponsor-defined; these are the usual values (others are kept in ``supplemental``)
RELATEDNESS = {
    "NONE": "not related", "NOT RELATED": "not related", "N": "not related", "UNRELATED": "not related",
    "REMOTE": "unlikely", "UNLIKELY": "unlikely", "UNLIKELY RELATED": "unlikely",
    "POSSIBLE": "possible", "POSSIBLY RELATED": "possible",
    "PROBABLE": "probable", "PROBABLY RELATED": "probable",
    "DEFINITE": "definite", "DEFINITELY RELATED": "definite", "RELATED": "definite", "Y": "definite",
}
#: seriousness flags (Y/N) -> the contract's criteria
SERIOUSNESS = (("AESDTH", "death"), ("AESLIFE", "life-threatening"), ("AESHOSP", "hospitalisation"),
               ("AESDISAB", "disability"), ("AESCONG", "congenital-anomaly"), ("AESMIE", "important-medical-event"))
SEX = {"F": "F", "M": "M", "U": "unknown", "UNDIFFERENTIATED": "other"}
#: DS disposition events that are not a discontinuation
NOT_WITHDRAWN = ("COMPLETED", "SCREEN FAILURE")



@dataclass(frozen=True)
class Position:
    """Where a record is: its file, domain and row (1-based), for the quarantine and the summary."""

    file: str
    domain: str
    row: int

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "domain": self.domain, "row": self.row}


@dataclass(frozen=True)
class Mapped:
    """A record as a contract message (``message["message_id"]`` is its record id)."""

    record: str
    domain: str
    message: dict[str, Any]
    position: Position


@dataclass(frozen=True)
class Refusal:
    """A record that cannot be a message; ``reason`` names the variable and the fix. ``record`` is its
    record id where its identifying variables allow one, so the version an earlier transfer sent stays
    current instead of being retracted as absent."""

    domain: str
    reason: str
    row: dict[str, Any]
    position: Position
    record: str | None = None


@dataclass
class Context:
    """What mapping a record needs from elsewhere: each subject's first exposure (to impute partial
    dates), the study's indication, the AE qualifiers of SUPPAE."""

    source: str
    transfer: str
    first_exposure: dict[tuple[str, str], date]
    condition: dict[str, str]
    qualifiers: dict[tuple[str, str, str], dict[str, str]]
    #: (study, USUBJID) of every subject DM names, in this transfer or an earlier one of the source
    subjects: set[tuple[str, str]] = field(default_factory=set)
    #: the record ids earlier transfers sent (a record that no longer collides keeps its content id)
    known: set[str] | frozenset[str] = frozenset()


#: what separates a record id's identity from the content digest that tells colliding records apart
CONTENT_SEPARATOR = "~"


def _digest(values: Any) -> str:
    return hashlib.sha256("\x1f".join("" if v is None else str(v) for v in values).encode()).hexdigest()[:12]


def record_id(study: str, domain: str, subject: str, identity: tuple[Any, ...], content: str | None = None) -> str:
    """``STUDY/DOMAIN/USUBJID/digest`` (``~content`` when other records share the identity); at most 100,
    leaving room for the suffixes of amendments."""
    rid = f"{study}/{domain}/{subject}" if domain == "DM" else f"{study}/{domain}/{subject}/{_digest(identity)}"
    if content is not None:
        rid += CONTENT_SEPARATOR + content
    if len(rid) > 100:
        rid = f"{domain}/{hashlib.sha256(rid.encode()).hexdigest()[:40]}"
    return rid


def content_digest(domain: str, row: dict[str, Any]) -> str:
    """A record's content: every variable but ``--SEQ`` (sponsors renumber it), by name, so the order of
    the rows and of the columns changes nothing."""
    skip = f"{domain}SEQ"
    return _digest(f"{k}={row[k]}" for k in sorted(row) if k != skip and row[k] is not None)


def identity_base(record: str) -> str:
    """The part of a record id its identifying variables make (without the content digest)."""
    return record.split(CONTENT_SEPARATOR, 1)[0]


def context_from(datasets: dict[str, list[dict[str, Any]]], source: str, transfer: str,
                 known_first_exposure: dict[tuple[str, str], date], known_condition: dict[str, str],
                 known_subjects: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
                 known_records: set[str] | frozenset[str] = frozenset()) -> Context:
    """The context of a transfer: from its DM, TS and SUPPAE, else from what earlier transfers sent."""
    first = dict(known_first_exposure)
    subjects = set(known_subjects)
    for row in datasets.get("DM", []):
        if row.get("USUBJID") and row.get("STUDYID"):
            subjects.add((str(row["STUDYID"]), str(row["USUBJID"])))
        day = first_day(raw_date(row, "RFXSTDTC"))
        if row.get("USUBJID") and day is not None:
            first[(str(row.get("STUDYID")), str(row["USUBJID"]))] = day
    condition = dict(known_condition)
    for row in datasets.get("TS", []):
        if row.get("TSPARMCD") == "INDIC" and row.get("TSVAL"):
            condition[str(row.get("STUDYID"))] = str(row["TSVAL"])
    qualifiers: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for row in datasets.get("SUPPAE", []):
        if row.get("IDVAR") and row.get("QNAM") and row.get("QVAL") is not None:
            idvarval = as_number(row.get("IDVARVAL")) or row.get("IDVARVAL")
            key = (str(row.get("USUBJID")), str(row["IDVAR"]), str(idvarval))
            qualifiers[key][str(row["QNAM"])] = str(row["QVAL"])
    return Context(source, transfer, first, condition, dict(qualifiers), subjects, known_records)


def map_domain(domain: str, rows: list[dict[str, Any]], file: str, ctx: Context) -> Iterator[Mapped | Refusal]:
    """Every record of a mapped domain, as a message or a refusal, in the dataset's order."""
    if domain == "EX":
        yield from _exposure_periods(rows, file, ctx)
        return
    build = _BUILDERS[domain]
    taken = _Identities(domain, ctx.known)
    keys: list[tuple[str, str, tuple[Any, ...]] | None] = []
    for row in rows:
        subject, study = row.get("USUBJID"), row.get("STUDYID")
        key = (str(study), str(subject), tuple(row.get(v) for v in IDENTITY[domain])) if subject and study else None
        keys.append(key)
        if key is not None and _mapped(domain, row):
            taken.count(key)
    first_dm: dict[tuple[str, str], int] = {}
    for n, (row, key) in enumerate(zip(rows, keys, strict=True), start=1):
        position = Position(file, domain, n)
        if key is None:
            missing = "USUBJID" if not row.get("USUBJID") else "STUDYID"
            yield Refusal(domain, f"{missing}: missing; every SDTM record names its study and subject", row,
                          position)
            continue
        if not _mapped(domain, row):
            continue
        study, subject, _ = key
        rid = taken.record(key, row)
        if domain == "DM":
            if (study, subject) in first_dm:
                yield Refusal(domain, f"USUBJID: a second DM record of {subject} (the first is row "
                              f"{first_dm[study, subject]}); DM holds one record per subject: correct the "
                              "transfer and send it again", row, position)
                continue
            first_dm[study, subject] = n
        elif (study, subject) not in ctx.subjects:
            yield Refusal(domain, f"USUBJID: subject {subject} of study {study} is not in DM (of this transfer or "
                          "an earlier one); send the subject's DM record", row, position, rid)
            continue
        as_sent: dict[str, str] = {}
        origin: dict[str, Any] = {"standard": "SDTM", "study": study, "domain": domain, "record": rid,
                                  "transfer": ctx.transfer, "as_sent": as_sent}
        try:
            kind, occurred_at, data = build(row, ctx, as_sent)
        except Bad as exc:
            yield Refusal(domain, str(exc), row, position, rid)
            continue
        yield Mapped(rid, domain, _message(rid, ctx.source, subject, kind, occurred_at, data, origin), position)


def _mapped(domain: str, row: dict[str, Any]) -> bool:
    """Whether a record of the domain becomes a message at all."""
    if domain == "DS":  # milestones and screen failures are not discontinuations; a completion is a contact
        return row.get("DSCAT") == "DISPOSITION EVENT" and (row.get("DSDECOD") == COMPLETION
                                                             or row.get("DSDECOD") not in NOT_WITHDRAWN)
    if domain == "VS":
        return row.get("VSTESTCD") == "TEMP"
    if domain == "SV":  # a planned visit not (yet) done has no date: nothing happened
        return bool(str(row.get("SVSTDTC") or "").strip())
    return True


class _Identities:
    """Record ids of one dataset: the identity's digest, and the content's where identities collide."""

    def __init__(self, domain: str, known: set[str] | frozenset[str]):
        self.domain, self.known = domain, known
        self.seen: dict[tuple[str, str, tuple[Any, ...]], int] = defaultdict(int)

    def count(self, key: tuple[str, str, tuple[Any, ...]]) -> None:
        self.seen[key] += 1

    def record(self, key: tuple[str, str, tuple[Any, ...]], row: dict[str, Any]) -> str:
        study, subject, identity = key
        if self.domain == "DM":
            return record_id(study, self.domain, subject, identity)
        by_content = record_id(study, self.domain, subject, identity, content_digest(self.domain, row))
        if self.seen[key] > 1:
            return by_content
        alone = record_id(study, self.domain, subject, identity)
        # the one left of records that collided before keeps the id its content gave it
        return by_content if alone not in self.known and by_content in self.known else alone


def _message(rid: str, source: str, subject: str, kind: str, occurred_at: str, data: dict[str, Any],
             origin: dict[str, Any]) -> dict[str, Any]:
    if origin.get("as_sent") == {}:
        del origin["as_sent"]
    content = {k: v for k, v in data.items() if v is not None}
    origin["digest"] = digest(kind, subject, occurred_at, content, origin.get("as_sent"))
    return {"schema_version": 1, "message_id": rid, "source": source, "patient_id": subject, "type": kind,
            "occurred_at": occurred_at, "data": {**content, "origin": origin}}


def digest(kind: str, subject: str, occurred_at: str, content: dict[str, Any], as_sent: Any) -> str:
    """What tells a changed record from an unchanged one: its mapped content (not its origin's transfer),
    so the next transfer compares without validating every unchanged record again."""
    text = json.dumps([kind, subject, occurred_at, content, as_sent], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _floor(row: dict[str, Any], ctx: Context) -> date | None:
    return ctx.first_exposure.get((str(row.get("STUDYID")), str(row.get("USUBJID"))))


def _dm(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    when = None
    for name in ("RFICDTC", "RFSTDTC", "DMDTC"):
        when = start_date(row, name, None, as_sent, "occurred_at")
        if when is not None:
            break
    if when is None:
        raise Bad("RFICDTC, RFSTDTC and DMDTC: all missing; the enrolment needs a date")
    sex = SEX.get(str(row.get("SEX")))
    if sex is None:
        raise Bad(f"SEX: {row.get('SEX')!r} is not SDTM's M, F, U or UNDIFFERENTIATED")
    age = as_number(row.get("AGE"))
    unit = row.get("AGEU") or "YEARS"
    factor = {"YEARS": 1, "MONTHS": 1 / 12, "WEEKS": 7 / 365.25, "DAYS": 1 / 365.25}.get(str(unit))
    study = str(row["STUDYID"])
    return "enrolment", when, {
        "sex": sex,
        "condition": ctx.condition.get(study, f"the condition studied in {study}"),
        "age_years": None if age is None or factor is None else round(age * factor, 2),
        "study": study,
        "arm": row.get("ARM"), "arm_code": row.get("ARMCD"),
        "actual_arm": row.get("ACTARM"), "actual_arm_code": row.get("ACTARMCD"),
        "first_exposure_on": start_date(row, "RFXSTDTC", None, as_sent, "first_exposure_on"),
        "last_exposure_on": end_date(row, "RFXENDTC", as_sent, "last_exposure_on"),
        "birth_date": start_date(row, "BRTHDTC", None, as_sent, "birth_date"),
    }


def _ae(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    onset = start_date(row, "AESTDTC", _floor(row, ctx), as_sent, "occurred_at")
    if onset is None:
        raise Bad("AESTDTC: missing; the adverse event needs its onset date (a partial date will do)")
    term = row.get("AEDECOD") or row.get("AETERM")
    if not term:
        raise Bad("AEDECOD and AETERM: both missing; send the reported term")
    supplemental = dict(ctx.qualifiers.get((str(row["USUBJID"]), "AESEQ", str(row.get("AESEQ"))), {}))
    relatedness = RELATEDNESS.get(str(row.get("AEREL") or "").upper())
    if row.get("AEREL") and relatedness is None:
        supplemental["AEREL"] = str(row["AEREL"])  # a sponsor's own term: kept as sent
    grade = as_number(row.get("AETOXGR"))
    code = as_number(row.get("AEPTCD"))
    return "adverse_event", onset, {
        "term": term,
        "verbatim_term": row.get("AETERM"),
        "serious": row.get("AESER") == "Y",
        "severity": SEVERITY.get(str(row.get("AESEV") or "").upper()),
        "ctcae_grade": int(grade) if grade is not None and 1 <= grade <= 5 else None,
        "seriousness": [c for flag, c in SERIOUSNESS if row.get(flag) == "Y"] or None,
        "meddra_pt": row.get("AEDECOD"),
        "meddra_code": None if code is None else str(code),
        "system_organ_class": row.get("AESOC") or row.get("AEBODSYS"),
        "action_taken": row.get("AEACN"),
        "outcome": row.get("AEOUT"),
        "relatedness": relatedness,
        "resolved_at": end_date(row, "AEENDTC", as_sent, "resolved_at"),
        "supplemental": supplemental or None,
    }


def _lb(row: dict[str, Any], ctx: Context, as_sent: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    when = start_date(row, "LBDTC", None, as_sent, "occurred_at")
    if when is None:
        raise Bad("LBDTC: missing; the result needs the date of its specimen")
    code = str(row.get("LBTESTCD") or "")
    if not code:
        raise Bad("LBTESTCD: missing; send the test's code")
    number = as_number(row.get("LBSTRESN"))
    text = row.get("LBSTRESC")
    if number is None and text is None:
        raise Bad("LBSTRESN and LBSTRESC: both empty; a result without a value is not sent (LBSTAT NOT DONE)")
    analyte = LB_ANALYTES.get(code) if number is not None else None
    data: dict[str, Any] = {
        "test_code": code, "test_name": row.get("LBTEST"), "loinc": row.get("LBLOINC"),
        "unit": row.get("LBSTRESU"),
        "reference_low": as_number(row.get("LBSTNRLO")), "reference_high": as_number(row.get("LBSTNRHI")),
    }
    if analyte is not None:
        data["analyte"] = analyte
        data["value"] = number
    elif number is not None:
        data["value"] = number
    else:
        data["result_text"] = str(text)
    if analyte is None:
        data.pop("loinc")  # a LOINC code names one of the contract's analytes; others keep their code
    return "lab_result", when, data


_BUILDERS = {"DM": _dm, "AE": _ae, "LB": _lb, "DS": disposition, "VS": temperature, "SV": visit}


def _exposure_periods(rows: list[dict[str, Any]], file: str, ctx: Context) -> Iterator[Mapped | Refusal]:
    """EX records collapse into periods of one product at one dose: a record that starts on or before the
    day after the previous one ended continues it. Each period is a treatment start and, once it has an
    end, a stop."""
    by_subject: dict[tuple[str, str], list[tuple[int, dict[str, Any], date, date | None]]] = defaultdict(list)
    for n, row in enumerate(rows, start=1):
        position = Position(file, "EX", n)
        subject, study = row.get("USUBJID"), row.get("STUDYID")
        if not subject or not study or not row.get("EXTRT"):
            missing = "USUBJID" if not subject else "STUDYID" if not study else "EXTRT"
            yield Refusal("EX", f"{missing}: missing; every exposure names its study, subject and product", row,
                          position)
            continue
        if (str(study), str(subject)) not in ctx.subjects:
            yield Refusal("EX", f"USUBJID: subject {subject} of study {study} is not in DM (of this transfer or an "
                          "earlier one); send the subject's DM record", row, position)
            continue
        start = first_day(raw_date(row, "EXSTDTC"))
        if start is None:
            yield Refusal("EX", "EXSTDTC: missing or not an ISO 8601 date; an exposure needs its start", row,
                          position)
            continue
        end_text = raw_date(row, "EXENDTC")
        end = None if end_text is None else first_day(impute_end(end_text).value if _valid(end_text) else None)
        by_subject[(str(study), str(subject))].append((n, row, start, end))
    taken = _Identities("EX", ctx.known)
    periods_of: list[tuple[str, str, list[list[tuple[int, dict[str, Any], date, date | None]]]]] = []
    for (study, subject), records in by_subject.items():
        records.sort(key=lambda r: (str(r[1].get("EXTRT")), r[2]))
        periods: list[list[tuple[int, dict[str, Any], date, date | None]]] = []
        for rec in records:
            last = periods[-1][-1] if periods else None
            same = last is not None and all(last[1].get(v) == rec[1].get(v) for v in ("EXTRT", "EXDOSE", "EXDOSU"))
            if same and last is not None and last[3] is not None and (rec[2] - last[3]).days <= 1:
                periods[-1].append(rec)
            else:
                periods.append([rec])
        for period in periods:
            taken.count((study, subject, tuple(period[0][1].get(v) for v in IDENTITY["EX"])))
        periods_of.append((study, subject, periods))
    for study, subject, periods in periods_of:
        for period in periods:
            first_row, first_n = period[0][1], period[0][0]
            rid = taken.record((study, subject, tuple(first_row.get(v) for v in IDENTITY["EX"])), first_row)
            dose = as_number(first_row.get("EXDOSE"))
            data = {"drug": str(first_row["EXTRT"]), "dose": None if dose is None else
                    f"{dose:g} {first_row.get('EXDOSU') or ''}".strip(), "route": first_row.get("EXROUTE")}
            for action, when, n in (("start", period[0][2], first_n), ("stop", period[-1][3], period[-1][0])):
                if when is None:
                    continue
                part = f"{rid}/{action}"
                origin = {"standard": "SDTM", "study": study, "domain": "EX", "record": part, "transfer": ctx.transfer}
                yield Mapped(part, "EX", _message(part, ctx.source, subject, "treatment", when.isoformat(),
                                                  {**data, "action": action}, origin), Position(file, "EX", n))


def _valid(text: str) -> bool:
    try:
        impute_end(text)
        return True
    except PartialDateError:
        return False
