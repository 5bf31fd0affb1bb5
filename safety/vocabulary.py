"""The registry-feed contract's vocabulary: message types, analytes, units and their conversion.

Pure data and functions, no I/O. The contract (registry-feed-v1) names every word used here;
unit factors are checked against shared/research/clinical.md section 8 ("Conversions").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Final

SCHEMA_VERSION: Final = 1

MESSAGE_TYPES: Final = (
    "enrolment",
    "intervention",
    "treatment",
    "adverse_event",
    "hospitalisation",
    "lab_result",
    "clinical_finding",
    "visit_assessment",
    "withdrawal",
    "contact",
    "retraction",
    "correction",
)
#: What a ``contact`` says the subject was seen or contacted for (contract 1.2).
CONTACT_KINDS: Final = ("visit", "call", "completion", "other")
#: Types that amend an earlier message instead of stating a clinical fact.
AMENDMENT_TYPES: Final = ("retraction", "correction")

SEXES: Final = ("F", "M", "other", "unknown")
ILAR_CATEGORIES: Final = (
    "systemic",
    "polyarticular RF-",
    "polyarticular RF+",
    "persistent oligoarticular",
    "extended oligoarticular",
    "psoriatic",
    "enthesitis-related",
    "undifferentiated",
)
TREATMENT_ACTIONS: Final = ("start", "stop", "change")
DRUG_CLASSES: Final = ("biologic", "csDMARD", "corticosteroid", "NSAID", "other")
SEVERITIES: Final = ("mild", "moderate", "severe")
SERIOUSNESS_CRITERIA: Final = (
    "death",
    "life-threatening",
    "hospitalisation",
    "disability",
    "congenital-anomaly",
    "important-medical-event",
)
RELATEDNESS: Final = ("not related", "unlikely", "possible", "probable", "definite")

#: Largest message the feed accepts, in bytes of its UTF-8 encoding.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Plausible body temperature range (contract: "temperature outside 30-45 C" is impossible).
TEMPERATURE_RANGE_C: Final = (30.0, 45.0)


@dataclass(frozen=True)
class Analyte:
    """A lab analyte: its contract code, LOINC codes, canonical unit and accepted units."""

    code: str
    loinc: tuple[str, ...]
    unit: str
    #: accepted unit -> factor that turns a value in that unit into the canonical unit
    factors: tuple[tuple[str, float], ...]
    #: highest plausible value in the canonical unit (None: no upper bound)
    maximum: float | None = None

    def factor(self, unit: str) -> float | None:
        for name, factor in self.factors:
            if name == unit:
                return factor
        return None

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.factors)


def _same(*units: str) -> tuple[tuple[str, float], ...]:
    return tuple((u, 1.0) for u in units)


# Contract table "Lab analytes"; extra method-less LOINC variants from clinical.md section 9.
ANALYTES: Final[dict[str, Analyte]] = {
    a.code: a
    for a in (
        # GI/L ("giga per litre") is how SDTM standard units write 10^9/L.
        Analyte("WBC", ("6690-2", "26464-8"), "10^9/L",
                _same("10^9/L", "10^3/uL", "10^3/µL", "/nL", "G/L", "GI/L")),
        Analyte("NEUT", ("751-8", "26499-4"), "10^9/L", _same("10^9/L", "10^3/uL", "10^3/µL", "GI/L")),
        Analyte("PLT", ("777-3", "26515-7"), "10^9/L",
                _same("10^9/L", "10^3/uL", "10^3/µL", "G/L", "GI/L")),
        Analyte("HGB", ("718-7",), "g/L", (("g/L", 1.0), ("g/dL", 10.0), ("mmol/L", 16.11))),
        Analyte("ESR", ("4537-7", "30341-2"), "mm/h", _same("mm/h", "mm/hr"), maximum=200.0),
        Analyte("CRP", ("1988-5",), "mg/L", (("mg/L", 1.0), ("mg/dL", 10.0))),
        Analyte("FERRITIN", ("2276-4",), "ug/L", _same("ug/L", "µg/L", "ng/mL")),
        Analyte("FIBRINOGEN", ("3255-7",), "g/L", (("g/L", 1.0), ("mg/dL", 0.01))),
        Analyte("TG", ("2571-8",), "mmol/L", (("mmol/L", 1.0), ("mg/dL", 1 / 88.57))),
        Analyte("AST", ("1920-8", "30239-8"), "U/L", _same("U/L", "IU/L")),
        Analyte("ALT", ("1742-6",), "U/L", _same("U/L", "IU/L")),
        Analyte("LDH", ("2532-0",), "U/L", _same("U/L", "IU/L")),
        # Total bilirubin (LOINC 1975-2): 1 mg/dL = 17.1 umol/L from its molar mass, 584.66 g/mol [computed].
        Analyte("BILI", ("1975-2",), "umol/L", (("umol/L", 1.0), ("µmol/L", 1.0), ("mg/dL", 17.1))),
        Analyte("ALP", ("6768-6",), "U/L", _same("U/L", "IU/L")),
    )
}

LOINC_TO_ANALYTE: Final[dict[str, str]] = {
    loinc: a.code for a in ANALYTES.values() for loinc in a.loinc
}


class VocabularyError(ValueError):
    """A value outside the contract's vocabulary; ``field`` names where, the message says the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def normalise_unit(unit: str) -> str:
    """Fold the Greek mu (U+03BC) into the micro sign the contract uses, and trim spaces."""
    return unit.strip().replace("\u03bc", "µ")


@dataclass(frozen=True)
class Measurement:
    """A lab value in its canonical unit, with the value and unit as the source sent them."""

    analyte: str
    value: float
    unit: str
    raw_value: float
    raw_unit: str


def resolve_analyte(analyte: str | None, loinc: str | None) -> Analyte:
    """The analyte named by its contract code, its LOINC code, or both (which must agree)."""
    by_loinc = None
    if loinc is not None:
        code = LOINC_TO_ANALYTE.get(loinc)
        if code is None:
            raise VocabularyError(
                "data.loinc", f"unknown LOINC code {loinc}: use one of {sorted(LOINC_TO_ANALYTE)}"
            )
        by_loinc = ANALYTES[code]
    if analyte is not None:
        found = ANALYTES.get(analyte)
        if found is None:
            raise VocabularyError(
                "data.analyte", f"unknown analyte {analyte}: use one of {sorted(ANALYTES)}"
            )
        if by_loinc is not None and by_loinc.code != found.code:
            raise VocabularyError(
                "data.loinc",
                f"LOINC {loinc} is {by_loinc.code}, not {found.code}: send matching codes",
            )
        return found
    if by_loinc is None:
        raise VocabularyError("data.analyte", "missing field analyte: send analyte or loinc")
    return by_loinc


def to_canonical(analyte: Analyte, value: float, unit: str) -> Measurement:
    """Convert a lab value to the analyte's canonical unit, refusing impossible values."""
    if not math.isfinite(value):
        raise VocabularyError("data.value", f"value {value} is not a finite number")
    folded = normalise_unit(unit)
    factor = analyte.factor(folded)
    if factor is None:
        raise VocabularyError(
            "data.unit",
            f"unknown unit {unit} for {analyte.code}: use one of {', '.join(analyte.units)}",
        )
    if value < 0:
        raise VocabularyError(
            "data.value", f"impossible value {value} {unit} for {analyte.code}: it cannot be negative"
        )
    canonical = value * factor
    if analyte.maximum is not None and canonical > analyte.maximum:
        raise VocabularyError(
            "data.value",
            f"impossible value {value} {unit} for {analyte.code}: above "
            f"{analyte.maximum:g} {analyte.unit}",
        )
    return Measurement(analyte.code, round(canonical, 6), analyte.unit, value, unit)

#: the dates the monitor takes (clinical times, knowledge times, data cuts): wider than any patient's
#: life, narrow enough that day arithmetic never leaves Python's calendar (issue 23: 0001-01-01+01:00)
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2999, 12, 31)


def date_in_range(day: date, name: str) -> None:
    """ValueError naming ``name`` when ``day`` is outside EARLIEST_DATE..LATEST_DATE."""
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise ValueError(f"{name} {day.isoformat()}: outside {EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}; "
                         "check the year")

