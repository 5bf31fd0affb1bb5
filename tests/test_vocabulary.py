"""Unit conversion and analyte lookup of the contract's lab table."""

from __future__ import annotations

import pytest

from safety.vocabulary import ANALYTES, VocabularyError, resolve_analyte, to_canonical


@pytest.mark.parametrize(
    ("code", "value", "unit", "expected"),
    [
        ("PLT", 89, "10^3/µL", 89.0),
        ("PLT", 89, "10^3/\u03bcL", 89.0),  # Greek mu folded into the micro sign
        ("WBC", 1.7, "/nL", 1.7),
        ("HGB", 11.2, "g/dL", 112.0),
        ("HGB", 7.0, "mmol/L", 112.77),
        ("CRP", 0.28, "mg/dL", 2.8),
        ("FERRITIN", 41.2, "ng/mL", 41.2),
        ("FIBRINOGEN", 340, "mg/dL", 3.4),
        ("TG", 248, "mg/dL", 2.800045),
        ("ESR", 82, "mm/hr", 82.0),
        ("AST", 48, "IU/L", 48.0),
    ],
)
def test_values_convert_to_the_canonical_unit_and_keep_the_raw(code, value, unit, expected):
    m = to_canonical(ANALYTES[code], value, unit)
    assert m.value == pytest.approx(expected, abs=1e-6)
    assert m.unit == ANALYTES[code].unit
    assert (m.raw_value, m.raw_unit) == (value, unit)


def test_156_mg_dl_triglycerides_is_the_1_76_mmol_l_of_the_2016_criteria():
    assert to_canonical(ANALYTES["TG"], 156, "mg/dL").value == pytest.approx(1.761, abs=1e-3)


@pytest.mark.parametrize(
    ("code", "value", "unit", "field", "words"),
    [
        ("PLT", 100, "mg/dL", "data.unit", "unknown unit mg/dL for PLT"),
        ("WBC", -1, "10^9/L", "data.value", "cannot be negative"),
        ("ESR", 201, "mm/h", "data.value", "above 200"),
        ("CRP", float("nan"), "mg/L", "data.value", "not a finite"),
    ],
)
def test_impossible_values_and_units_name_the_field(code, value, unit, field, words):
    with pytest.raises(VocabularyError) as exc:
        to_canonical(ANALYTES[code], value, unit)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_loinc_maps_to_the_analyte_and_must_agree_with_the_code():
    assert resolve_analyte(None, "777-3").code == "PLT"
    assert resolve_analyte(None, "30341-2").code == "ESR"
    assert resolve_analyte("PLT", "777-3").code == "PLT"
    with pytest.raises(VocabularyError, match="LOINC 6690-2 is WBC, not PLT"):
        resolve_analyte("PLT", "6690-2")
    with pytest.raises(VocabularyError, match="unknown LOINC"):
        resolve_analyte(None, "0000-0")
