"""CTCAE v5.0 laboratory grades (NCI, 27 November 2017) and shift tables. Pure; no I/O.

Increased terms are graded on multiples of the ULN; when the baseline was abnormal (above the ULN),
CTCAE grades ALT, AST, bilirubin and ALP on multiples of the baseline instead, and creatinine on
either (the higher grade). Decreased haematology terms are graded on absolute values in 10^9/L (the
bands of shared/research/clinical.md section 5c, from pharmaverse admiral's encoding); anaemia on
haemoglobin in g/L (grade 4 is clinical, never from a value). Grade 1 of a decreased term needs the
value below the result's LLN; without an LLN, grades 2 to 4 are still given. Grade 0: within the
limits, or not gradable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

VERSION = "CTCAE v5.0"

#: term, and the upper bounds (in ×ULN, or ×baseline when the baseline was abnormal) of grades 1, 2, 3
INCREASED: dict[str, tuple[str, tuple[float, float, float], float]] = {
    # code: (term, (G1 top, G2 top, G3 top) in ×ULN, G1 floor in ×baseline when the baseline was abnormal)
    "ALT": ("Alanine aminotransferase increased", (3.0, 5.0, 20.0), 1.5),
    "AST": ("Aspartate aminotransferase increased", (3.0, 5.0, 20.0), 1.5),
    "BILI": ("Blood bilirubin increased", (1.5, 3.0, 10.0), 1.0),
    "ALP": ("Alkaline phosphatase increased", (2.5, 5.0, 20.0), 2.0),
    "CREAT": ("Creatinine increased", (1.5, 3.0, 6.0), 1.5),
}
#: term, and the lower bounds of grades 1, 2, 3 (grade 4 below the last) in the canonical unit
DECREASED: dict[str, tuple[str, tuple[float, float, float]]] = {
    "WBC": ("White blood cell decreased", (3.0, 2.0, 1.0)),
    "NEUT": ("Neutrophil count decreased", (1.5, 1.0, 0.5)),
    "PLT": ("Platelet count decreased", (75.0, 50.0, 25.0)),
    "HGB": ("Anemia", (100.0, 80.0, 0.0)),  # g/L; grade 3 is < 80 g/L, grade 4 clinical only
}
GRADED = (*INCREASED, *DECREASED)


def grade(test: str, value: float, low: float | None, high: float | None, baseline: float | None = None) -> int:
    """The CTCAE v5.0 grade of one result (0 when within the limits or not gradable)."""
    if test in INCREASED:
        return _increased(test, value, high, baseline) if high else 0
    if test in DECREASED:
        _, bounds = DECREASED[test]
        g1, g2, g3 = bounds
        if value < g3 and test != "HGB":
            return 4
        if value < g2:
            return 3
        if value < g1:
            return 2
        return 1 if low is not None and value < low else 0
    return 0


def _increased(test: str, value: float, high: float, baseline: float | None) -> int:
    _, tops, abnormal_floor = INCREASED[test]
    by_uln = _band(value / high, tops)
    if test == "CREAT":  # G2 >1.5-3.0 x baseline; G3 >3.0 x baseline; or by ULN, whichever is higher
        ratio = value / baseline if baseline and baseline > 0 else 0.0
        return max(by_uln, 3 if ratio > 3.0 else 2 if ratio > 1.5 else 0)
    if baseline is None or baseline <= high:
        return by_uln
    ratio = value / baseline  # an abnormal baseline: the bands apply to multiples of it
    starts = ratio > 1.0 if test == "BILI" else ratio >= abnormal_floor
    return _band(ratio, tops) if starts else 0


def _band(multiple: float, tops: tuple[float, float, float]) -> int:
    """Grade by the bands of an increased term: above 1 (the limit) up to each top, then grade 4."""
    if multiple <= 1.0:
        return 0
    for g, top in enumerate(tops, start=1):
        if multiple <= top:
            return g
    return 4


class Result(NamedTuple):
    """One graded result (a named tuple: one is made per haematology or liver result of every evaluation)."""

    test: str
    value: float
    low: float | None
    high: float | None
    at: datetime
    unit: str | None = None


#: a subject of the group with no result in the period: the shift table's missing row or column
MISSING = "missing"
GRADES: tuple[int | str, ...] = (0, 1, 2, 3, 4, MISSING)
#: how both columns of a shift table are graded (issue 27: one scale per table)
SHIFT_SCALE = ("both the baseline and the worst post-baseline value graded on CTCAE v5.0's criteria against "
               "the result's own reference range (multiples of the ULN; absolute bands for the decreased "
               "haematology terms): the criteria that grade against an abnormal baseline are for adverse "
               "events, not used here, so the two columns share one scale")


def shift(results: list[Result], first_exposure: datetime | None) -> dict[str, tuple[int | str, int | str]]:
    """Per test with any result: (baseline grade, worst post-baseline grade), either ``MISSING``. The
    baseline is the last result on or before the day of the first exposure (without an exposure date, the
    first result); post-baseline, every later result. Both on one scale (``SHIFT_SCALE``)."""
    out: dict[str, tuple[int | str, int | str]] = {}
    by_test: dict[str, list[Result]] = {}
    for r in results:
        by_test.setdefault(r.test, []).append(r)
    for test in GRADED:
        if test not in by_test:
            continue
        series = sorted(by_test[test], key=lambda r: r.at)
        base: Result | None
        if first_exposure is None:
            base, later = series[0], series[1:]
        else:  # by day: a result on the day of the first dose counts as its baseline (as SDTM's LBBLFL does)
            day = first_exposure.date()
            before = [r for r in series if r.at.date() <= day]
            base = before[-1] if before else None
            later = [r for r in series if r.at.date() > day]
        baseline_grade: int | str = grade(test, base.value, base.low, base.high) if base is not None else MISSING
        worst: int | str = max(grade(test, r.value, r.low, r.high) for r in later) if later else MISSING
        out[test] = (baseline_grade, worst)
    return out


def outliers(results: list[Result], first_exposure: datetime, min_grade: int = 3) -> list[Result]:
    """The results after the day of the first exposure of grade ``min_grade`` or more, on the shift tables'
    scale (the ULN; absolute bands for the decreased terms)."""
    day = first_exposure.date()
    return sorted((r for r in results if r.at.date() > day and grade(r.test, r.value, r.low, r.high) >= min_grade),
                  key=lambda r: (r.test, r.at))


def term_of(test: str) -> str:
    return INCREASED[test][0] if test in INCREASED else DECREASED[test][0]


def shift_matrices(patients: list[tuple[str, dict[str, tuple[int | str, int | str]]]]) -> list[dict[str, Any]]:
    """Per test with any result and group: N (the group's subjects) and the baseline × worst post-baseline
    matrix over ``GRADES``; a subject without a result of the test counts as missing in both, so every
    matrix sums to N."""
    groups: dict[str, int] = {}
    for group, _ in patients:
        groups[group] = groups.get(group, 0) + 1
    tested = [t for t in GRADED if any(t in shifts for _, shifts in patients)]
    out = []
    for test in tested:
        for group in sorted(groups):
            counts = {(b, w): 0 for b in GRADES for w in GRADES}
            for g, shifts in patients:
                if g == group:
                    counts[shifts.get(test, (MISSING, MISSING))] += 1
            out.append({"test": test, "term": term_of(test), "group": group, "N": groups[group],
                        "matrix": [[counts[(b, w)] for w in GRADES] for b in GRADES]})
    return out


def shift_rows(matrices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The matrices as rows (CSV, JSON): one per non-empty cell, with its table's N."""
    return [{"test": m["test"], "term": m["term"], "group": m["group"], "N": m["N"], "baseline_grade": b,
             "worst_grade": w, "patients": n}
            for m in matrices for i, b in enumerate(GRADES) for j, w in enumerate(GRADES)
            if (n := m["matrix"][i][j])]
