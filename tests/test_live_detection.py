"""Signal detection live in the signals read model (issue 26): the registry-wide ``disproportionality``
and ``sequential`` signals, kept up to date as deliveries arrive, equal to the commands' answers and to a
rebuild, raised once each, through the workflow and the notifications, on both stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.delivery import notification_for, signal_raises
from projections.runner import Projector
from projections.signal_queries import query_signals
from projections.signals import SignalsModel
from safety.cli import app
from safety.detection_signals import REGISTRY
from tests.messages import message, raw
from tests.test_surveillance import PLAN, independent, registry

PLANTED = ("tocilizumab", {"neutropenia", "neutrophil count decreased"}, 4.0, 30)


def registry_signals(projector: Projector, kind: str | None = None) -> list[dict[str, Any]]:
    return [s for s in query_signals(projector.view.db) if s["source"] == REGISTRY and kind in (None, s["kind"])]


def comparable(projector: Projector) -> list[tuple[Any, ...]]:
    """What a rebuild must reproduce: every signal but the times it was raised and updated."""
    return sorted((s["id"], s["kind"], s["level"], s["status"], s["occurred_at"], json.dumps(s["evidence"]),
                   json.dumps(s["details"], sort_keys=True)) for s in query_signals(projector.view.db))


def deliver(ledger: Ledger, batch: list[dict[str, Any]]) -> None:
    Ingestor(ledger).ingest([raw(m, i) for i, m in enumerate(batch)])


def test_the_sequential_signal_appears_once_and_follows_the_evidence(store_url: str):
    """After each delivery the live signal equals an independent computation of the plan's test; the late
    arrivals move it (one id, one alert noted for notifications); the null pair never signals."""
    ledger = Ledger(Store.parse(store_url))
    projector = Projector(ledger, SignalsModel(surveillance_plan=PLAN))
    first, late = registry()
    delivered: list[dict[str, Any]] = []
    seen: set[str] = set()
    for batch in (first, late):
        deliver(ledger, batch)
        delivered += batch
        projector.catch_up()
        want = independent(delivered, *PLANTED)
        sequential = registry_signals(projector, "sequential")
        if want["signalled"]:
            (signal,) = sequential
            assert signal["level"] == "alert" and signal["patient_id"] == ""
            assert signal["occurred_at"][:10] == want["signalled"][0]
            assert signal["details"]["observed"] == want["signalled"][1]
            assert signal["details"]["expected"] == pytest.approx(want["signalled"][2], rel=1e-9)
            assert signal["details"]["name"] == "tocilizumab-neutropenia"
            assert signal["details"]["critical_value"] == pytest.approx(3.064248, abs=1e-4)
            seen.add(signal["id"])
        else:
            assert sequential == []
    assert len(seen) == 1  # the same signal, however often the evidence was re-evaluated
    raises = [(sid, level) for sid, level in signal_raises(projector.view.db) if sid in seen]
    assert raises == [(next(iter(seen)), "alert")]
    note = notification_for(projector.view.db, next(iter(seen)), "alert", None)
    assert note is not None and "registry" in note.subject and "tocilizumab" in note.summary
    # a lab result changes no share: nothing is re-screened and the signal stands as it was
    before = comparable(projector)
    deliver(ledger, [message("P000-lab", type="lab_result", patient_id="P000", occurred_at="2024-06-01",
                             data={"analyte": "WBC", "value": 6.1, "unit": "10^9/L"})])
    projector.catch_up()
    assert comparable(projector) == before


def test_incremental_equals_rebuild_and_the_commands(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Deliveries projected one by one give the signals a rebuild gives, and those equal what the
    ``disproportionality`` and ``surveillance`` commands answer; a retraction takes an unsupported open
    signal away, while one a physician acknowledged stays with its status."""
    ledger = Ledger(Store.parse(store_url))
    live = Projector(ledger, SignalsModel(surveillance_plan=PLAN))
    first, late = registry(seed=11)
    for start in range(0, len(first), 40):
        deliver(ledger, first[start:start + 40])
        live.catch_up()
    deliver(ledger, late)
    live.catch_up()
    fresh = Projector(Ledger(Store.parse(store_url)), SignalsModel(surveillance_plan=PLAN))
    fresh.rebuild()
    assert comparable(live) == comparable(fresh)

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    answer = json.loads(CliRunner().invoke(app, ["surveillance", "--plan", str(plan), "--format", "json",
                                                 "--store", store_url]).stdout)
    # the live plan's answer comes from the shares the signals read model keeps: the same answer
    monkeypatch.setenv("SAFETY_MONITOR_SURVEILLANCE", str(plan))
    from_shares = json.loads(CliRunner().invoke(app, ["surveillance", "--format", "json",
                                                      "--store", store_url]).stdout)
    assert from_shares == answer
    signalled = {p["name"]: p for p in answer["pairs"] if p["status"] == "signalled"}
    assert signalled, "the planted association must signal"
    assert {s["details"]["name"]: s["occurred_at"][:10] for s in registry_signals(live, "sequential")} == {
        name: p["signalled_on"] for name, p in signalled.items()}
    screen = json.loads(CliRunner().invoke(app, ["disproportionality", "--format", "json",
                                                 "--store", store_url]).stdout)
    meets = {(p["drug"], p["term"]) for p in screen["pairs"] if p["signal"][screen["rules"]["method"]]}
    assert meets, "the planted pair meets the IC rule"
    assert {(s["details"]["drug"], s["details"]["term"]) for s in registry_signals(live, "disproportionality")} == meets

    # acknowledge the sequential signal, then retract the planted events: the disproportionality signal
    # is no longer supported and goes; the acknowledged sequential one stays, acknowledged
    (sequential,) = registry_signals(live, "sequential")
    result = CliRunner().invoke(app, ["signal", "ack", sequential["id"], "--by", "physician", "--note", "seen",
                                      "--store", store_url])
    assert result.exit_code == 0, result.output
    retractions = [message(f"{m['message_id']}-x", type="retraction", patient_id=m["patient_id"],
                           occurred_at=m["occurred_at"],
                           data={"target_message_id": m["message_id"], "reason": "not neutropenia"})
                   for m in first + late if m["type"] == "adverse_event" and m["data"]["term"] == "Neutropenia"]
    deliver(ledger, retractions)
    live.catch_up()
    kinds = {s["kind"]: s for s in registry_signals(live)}
    assert ("tocilizumab", "neutropenia") not in {(s["details"]["drug"], s["details"]["term"])
                                                  for s in registry_signals(live, "disproportionality")}
    assert kinds["sequential"]["status"] == "acknowledged"
    fresh.rebuild()
    assert comparable(live) == comparable(fresh)


def test_a_new_plan_derives_every_share_again(sqlite_url: str):
    """Projected without a plan, then with one: the sequential signals appear as if the plan had been
    there all along (the shares are derived again, once)."""
    ledger = Ledger(Store.parse(sqlite_url))
    first, late = registry()
    deliver(ledger, first + late)
    Projector(ledger, SignalsModel()).catch_up()
    assert registry_signals(Projector(ledger, SignalsModel()), "sequential") == []
    planned = Projector(ledger, SignalsModel(surveillance_plan=PLAN))
    deliver(ledger, [message("P001-lab", type="lab_result", patient_id="P001", occurred_at="2024-06-01",
                             data={"analyte": "WBC", "value": 6.1, "unit": "10^9/L"})])
    planned.catch_up()
    fresh = Projector(Ledger(Store.parse(sqlite_url)), SignalsModel(surveillance_plan=PLAN))
    fresh.rebuild()
    assert len(registry_signals(planned, "sequential")) == 1
    assert comparable(planned) == comparable(fresh)
