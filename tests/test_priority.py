"""High priority means something clinical (issue 24): MAS context and tocilizumab for MAS signals, a
fatal or life-threatening outcome for events, a bilirubin above 2×ULN for liver signals; "on PLACEBO"
is context, never priority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from projections.signals import load_config
from safety.liver import evaluate_liver, load_liver_config
from safety.mas import History, Lab, SeriousEvent, Treatment, evaluate

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def liver_lab(n: int, analyte: str, xuln: float, day: int) -> Lab:
    uln = {"ALT": 40.0, "AST": 40.0, "BILI": 20.0, "ALP": 100.0}[analyte]
    return Lab(f"m{n}", analyte, xuln * uln, "U/L", T0 + timedelta(days=day), uln)


def on_placebo(h: History) -> History:
    h.treatments.append(Treatment("PLACEBO", "start", None, T0 - timedelta(days=30)))
    return h


def test_a_transaminase_rise_is_high_priority_only_with_bilirubin_above_twice_the_uln():
    config = load_liver_config()
    alone = on_placebo(History("s", "A"))
    alone.labs += [liver_lab(1, "AST", 3.7, 0)]
    (signal,) = evaluate_liver(alone, config)
    assert signal.kind == "transaminase_elevation" and signal.context == ["on PLACEBO"]
    assert signal.priority == "normal"  # "on PLACEBO" is context, not priority
    cholestatic = on_placebo(History("s", "B"))
    cholestatic.labs += [liver_lab(1, "ALT", 3.5, 0), liver_lab(2, "BILI", 5.9, 2), liver_lab(3, "ALP", 3.0, 2)]
    (signal,) = [s for s in evaluate_liver(cholestatic, config) if s.kind == "transaminase_elevation"]
    assert signal.priority == "high" and "bilirubin 5.9×ULN" in signal.priority_reasons[0]
    assert signal.level == "warning"  # at least a warning with the bilirubin, though ALP rules out Hy's law
    assert [s.kind for s in evaluate_liver(cholestatic, config)] == ["transaminase_elevation"]


def test_an_isolated_bilirubin_above_twice_the_uln_is_watched():
    """Issue 27: a bilirubin of 2.5×ULN with no transaminase rise raised nothing; it is watched now, and a
    bilirubin beside a transaminase rise belongs to that rise's signal instead."""
    config = load_liver_config()
    isolated = on_placebo(History("s", "D"))
    isolated.labs += [liver_lab(1, "ALT", 1.2, 0), liver_lab(2, "BILI", 2.5, 0), liver_lab(3, "BILI", 1.8, 40)]
    (signal,) = evaluate_liver(isolated, config)
    assert (signal.kind, signal.level, signal.details["peak_xuln"]) == ("bilirubin_elevation", "watch", 2.5)
    mild = on_placebo(History("s", "E"))
    mild.labs += [liver_lab(1, "BILI", 1.9, 0)]
    assert evaluate_liver(mild, config) == []


def test_a_fatal_or_life_threatening_event_is_high_priority_and_another_serious_one_is_not():
    config = load_config()
    h = on_placebo(History("s", "C"))
    h.serious_events += [SeriousEvent("e1", "Sepsis", T0, ("death",), fatal=True),
                         SeriousEvent("e2", "Pneumonia", T0, ("hospitalisation",)),
                         SeriousEvent("e3", "Anaphylaxis", T0, ("life-threatening",))]
    by_term = {s.evidence[0]["term"]: s for s in evaluate(h, config)}
    assert by_term["Sepsis"].kind == "death" and by_term["Sepsis"].priority == "high"
    assert by_term["Pneumonia"].priority == "normal"
    assert by_term["Anaphylaxis"].priority_reasons == ("life-threatening",)


def test_mas_rules_apply_to_the_population_they_were_made_for():
    """Issue 27: an adult trial raises no MAS signal (the pilot: WBC 9.86 -> 6.68, PLT 309 -> 205); a JIA
    patient, one whose condition names JIA or Still's disease, and one not enrolled yet do."""
    from safety.mas import mas_applies

    config = load_config()

    def falling(h: History) -> History:
        for day, wbc, plt in ((0, 9.86, 309), (10, 6.68, 205)):
            h.labs += [Lab(f"w{day}", "WBC", wbc, "10^9/L", T0 + timedelta(days=day)),
                       Lab(f"p{day}", "PLT", plt, "10^9/L", T0 + timedelta(days=day))]
        return h

    adult = falling(History("cdiscpilot01", "01-701-1015", condition="Mild to Moderate Alzheimer's Disease"))
    assert not mas_applies(adult, config) and not evaluate(adult, config)
    for h in (History("s", "J", diagnosis="polyarticular RF-"), History("s", "K", condition="Juvenile Idiopathic "
                                                                                          "Arthritis"),
              History("s", "S", condition="adult-onset Still's disease"), History("s", "N")):
        assert mas_applies(falling(h), config), h
        assert [s.kind for s in evaluate(h, config)] == ["mas_trend"]
