"""The expedited-reporting clock for SUSARs (suspected unexpected serious adverse reactions). Pure; no I/O.

ICH E2A (section III.A), EU Regulation 536/2014 article 42 and 21 CFR 312.32(c) ask for a report to the
authorities within 7 calendar days of first knowledge when the event is fatal or life-threatening, and
within 15 days otherwise. A case is an adverse event that is

- serious (``serious`` true),
- related to the study intervention (``relatedness`` possible, probable or definite), and
- unexpected: its term (the MedDRA preferred term when coded, else the reported term, without regard
  to case) is not in the reference safety information (RSI) of a product of the RSI that the patient
  received on or before the onset. Without an RSI, or when the patient received no product named in
  it, expectedness cannot be shown and the event is taken as unexpected (the conservative reading).

The clock starts at the awareness time: the ``reported_at`` of the first message that made the event a
case (the original, or a correction that made it serious, related or unexpected), else the time the
monitor recorded that message. A retraction, or a correction that makes the event no longer a case,
closes it with the reason.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from safety.seriousness import criteria, serious

RELATED = ("possible", "probable", "definite")
FATAL_OR_LIFE_THREATENING = ("death", "life-threatening")
DAYS_FATAL, DAYS_OTHER = 7, 15


class RSIError(ValueError):
    """A reference safety information file that cannot be used; the message says why."""


def load_rsi(text: str) -> dict[str, frozenset[str]]:
    """``[[product]]`` tables with ``name`` and ``expected`` (a list of terms): product -> expected terms,
    both in lower case."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RSIError(f"reference safety information: not TOML ({exc})") from None
    unknown = sorted(set(doc) - {"product"})
    if unknown:
        raise RSIError(f"reference safety information: unknown key {unknown[0]!r}; the file holds [[product]] tables "
                       "only")
    products = doc.get("product", [])
    if not isinstance(products, list):
        raise RSIError("reference safety information: product must be [[product]] tables (an array of tables)")
    out: dict[str, frozenset[str]] = {}
    for i, product in enumerate(products, start=1):
        where = f"reference safety information: [[product]] number {i}"
        if not isinstance(product, dict):
            raise RSIError(f"{where}: must be a table with name and expected")
        extra = sorted(set(product) - {"name", "expected"})
        if extra:
            raise RSIError(f"{where}: unknown key {extra[0]!r}; a product has name and expected only")
        name, expected = product.get("name"), product.get("expected", [])
        if not isinstance(name, str) or not name.strip():
            raise RSIError(f"{where}: name must be the product's name as text")
        if not isinstance(expected, list) or not all(isinstance(t, str) and t.strip() for t in expected):
            raise RSIError(f"{where} ({name}): expected must be a list of terms (text)")
        if name.strip().lower() in out:
            raise RSIError(f"{where}: {name!r} is listed twice; give each product one table")
        out[name.strip().lower()] = frozenset(t.strip().lower() for t in expected)
    return out


@dataclass(frozen=True)
class Message:
    """One message of a patient that the clock reads, in the order the ledger recorded them."""

    message_id: str
    type: str
    occurred_at: datetime
    reported_at: datetime | None
    recorded_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Submission:
    """One expedited report of a case to an authority, as recorded."""

    on: date
    authority: str
    by: str

    def as_dict(self) -> dict[str, str]:
        return {"on": self.on.isoformat(), "authority": self.authority, "by": self.by}


def check_submission(on: date, aware_at: datetime, today: date) -> None:
    """A submission date must lie between the day the case became known and today (ValueError naming
    the field)."""
    if on > today:
        raise ValueError(f"--on {on.isoformat()}: that day is in the future (today is {today.isoformat()}); give the "
                         "day the report was submitted")
    if on < aware_at.date():
        raise ValueError(f"--on {on.isoformat()}: before the case became known on {aware_at.date().isoformat()}; a "
                         "report cannot precede its case: check the date")


@dataclass
class Case:
    case: str
    source: str
    patient_id: str
    term: str
    fatal_or_life_threatening: bool
    aware_at: datetime
    due_at: datetime
    status: str = "open"
    closed_reason: str | None = None
    products: list[str] = field(default_factory=list)
    #: every report of the case, in the order recorded (several authorities each get one)
    submissions: list[Submission] = field(default_factory=list)
    onset: datetime | None = None
    relatedness: str | None = None

    @property
    def clock_reason(self) -> str:
        """Why the clock runs 7 or 15 calendar days (ICH E2A; EU 536/2014 art. 42; 21 CFR 312.32)."""
        if self.fatal_or_life_threatening:
            return "7 days: fatal or life-threatening"
        return "15 days: serious, neither fatal nor life-threatening"

    @property
    def days_late(self) -> int | None:
        """Days after the due date that the first report went (None when on time or not submitted)."""
        if not self.submissions:
            return None
        late = (min(s.on for s in self.submissions) - self.due_at.date()).days
        return late if late > 0 else None

    @property
    def clock_days(self) -> int:
        return (self.due_at - self.aware_at).days


def _term(data: dict[str, Any]) -> str:
    return str(data.get("meddra_pt") or data.get("term") or "")


def _products_before(history: list[Message], onset: datetime, rsi: dict[str, frozenset[str]]) -> list[str]:
    """RSI products the patient received on or before the onset (interventions, treatment starts)."""
    received = []
    for m in history:
        if m.occurred_at > onset:
            continue
        name = m.data.get("name") if m.type == "intervention" else (
            m.data.get("drug") if m.type == "treatment" and m.data.get("action") == "start" else None)
        if name and str(name).strip().lower() in rsi and str(name).strip().lower() not in received:
            received.append(str(name).strip().lower())
    return received


def why_not(data: dict[str, Any], products: list[str], rsi: dict[str, frozenset[str]]) -> str | None:
    """None when the event is a case, else what it lacks."""
    if not serious(data):
        return "not serious"
    if data.get("relatedness") not in RELATED:
        return f"not related (relatedness {data.get('relatedness') or 'not given'})"
    term = _term(data).lower()
    expected_for = [p for p in products if term in rsi.get(p, frozenset())]
    if products and len(expected_for) == len(products):
        return f"expected for {', '.join(expected_for)} (reference safety information)"
    return None


def fatal_or_life_threatening(data: dict[str, Any]) -> bool:
    return bool(set(criteria(data)) & set(FATAL_OR_LIFE_THREATENING))


def patient_cases(source: str, patient_id: str, history: list[Message], rsi: dict[str, frozenset[str]],
                  submitted: dict[str, list[Submission]]) -> list[Case]:
    """The cases of one patient's messages (in recording order): each adverse event's state is followed
    message by message, so the clock starts at the first message that made it a case."""
    current: dict[str, dict[str, Any]] = {}
    onset: dict[str, datetime] = {}
    cases: dict[str, Case] = {}
    facts = [m for m in history if m.type in ("intervention", "treatment")]
    for m in history:
        if m.type == "adverse_event":
            target, current[m.message_id], onset[m.message_id] = m.message_id, dict(m.data), m.occurred_at
        elif m.type in ("retraction", "correction") and m.data.get("target_message_id") in current:
            target = str(m.data["target_message_id"])
            if m.type == "retraction":
                if target in cases and cases[target].status != "closed":
                    cases[target].status, cases[target].closed_reason = "closed", f"retracted: {m.data.get('reason')}"
                del current[target]
                continue
            current[target] = dict(m.data["data"])
        else:
            continue
        data = current[target]
        products = _products_before(facts, onset[target], rsi)
        reason = why_not(data, products, rsi)
        case_id = f"{source}/{target}"
        if reason is None and target not in cases:
            aware = m.reported_at or m.recorded_at
            serious_kind = fatal_or_life_threatening(data)
            cases[target] = Case(case_id, source, patient_id, _term(data), serious_kind, aware,
                                 aware + timedelta(days=DAYS_FATAL if serious_kind else DAYS_OTHER), products=products,
                                 onset=onset[target], relatedness=data.get("relatedness"))
        elif reason is None:
            case = cases[target]
            case.term, case.status, case.closed_reason = _term(data), "open", None
            case.relatedness = data.get("relatedness")
            if fatal_or_life_threatening(data) and not case.fatal_or_life_threatening:  # the clock shortens
                case.fatal_or_life_threatening = True
                case.due_at = min(case.due_at, (m.reported_at or m.recorded_at) + timedelta(days=DAYS_FATAL))
        elif target in cases:
            cases[target].status, cases[target].closed_reason = "closed", f"no longer a SUSAR: {reason}"
    for case in cases.values():
        if case.status != "closed" and case.case in submitted:
            case.submissions = list(submitted[case.case])
            case.status = "submitted_late" if case.days_late else "submitted"
    return list(cases.values())


def with_clock(cases: list[Case], now: datetime) -> list[Case]:
    """The cases read at ``now``: open ones past their due date as ``overdue`` (copies: the cases given are
    kept as they are, to be read again later); by due date, most urgent first."""
    read = [replace(case, status="overdue") if case.status == "open" and now > case.due_at else case
            for case in cases]
    return sorted(read, key=lambda c: (c.status == "closed", c.status.startswith("submitted"), c.due_at))
