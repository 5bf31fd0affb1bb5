"""The contract's amendment rules in one place."""

from __future__ import annotations

from safety.amendments import Amendments


def test_retracted_facts_stop_counting_corrected_facts_count_corrected_and_amendments_never_count():
    a: Amendments[str] = Amendments()
    a.note("retraction", "ae-1")
    a.note("correction", "lab-1", {"analyte": "TG", "value": 1.5, "unit": "mmol/L"})
    assert not a.counts("adverse_event", "ae-1")
    assert a.counts("lab_result", "lab-1") and a.counts("lab_result", "lab-2")
    assert not a.counts("retraction", "r-1") and not a.counts("correction", "c-1")
    assert a.data("lab-1", {"value": 9})["value"] == 1.5
    assert a.data("lab-2", {"value": 9}) == {"value": 9}
