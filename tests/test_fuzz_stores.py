"""Fuzzing through both stores: messages whose every string is drawn from all of Unicode (NUL and other
control characters, lone surrogates, right-to-left marks, combining characters, strings at the length
limits) go through ingest, every read model, the incidence answer, the DSMB report and the board's
data layer, on SQLite and PostgreSQL. Nothing may raise; every message is stored or quarantined with a
reason; no read model stops.

``SAFETY_MONITOR_FUZZ_EXAMPLES`` scales the campaign (the suite runs a few thousand messages per store;
RELIABILITY.md records the larger campaign)."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.admission import RawMessage
from events.ingest import Ingestor
from events.ledger import Ledger
from events.store import Store
from projections.board import BoardData
from projections.dsmb import ReportOptions
from projections.efficacy import efficacy
from projections.incidence import incidence
from projections.runner import Projector
from projections.signal_queries import query_signals
from safety.cli import read_models
from safety.incidence import Settings
from safety.vocabulary import ANALYTES
from tests.reliability import record

EXAMPLES = int(os.environ.get("SAFETY_MONITOR_FUZZ_EXAMPLES", "40"))

SPECIALS = ["\x00", "\t", "\n", "\x1b", "\x7f", "\u200f", "\u202e", "\u0301", "\ufeff", "\ud800", "\udfff",
            "\U0001f600", "é", "ß", "中"]
#: every code point, surrogates included (hypothesis leaves them out unless asked)
ANY_CHAR = st.characters(exclude_categories=()) | st.sampled_from(SPECIALS)


def hostile_text(max_size: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(ANY_CHAR, min_size=1, max_size=min(max_size, 24)),
        st.builds(lambda c, n: (c * n)[:max_size], ANY_CHAR, st.integers(max_size - 2, max_size + 2)),
    )


ids = itertools.count()


@st.composite
def hostile_message(draw: Any) -> dict[str, Any]:
    n = next(ids)
    patient = draw(st.sampled_from(["P1", "P2"]) | hostile_text(64))
    kind = draw(st.sampled_from(["adverse_event", "lab_result", "intervention", "treatment", "enrolment",
                                 "hospitalisation", "visit_assessment", "retraction"]))
    text = hostile_text
    data: dict[str, Any]
    if kind == "adverse_event":
        data = {"term": draw(text(256)), "severity": "severe", "serious": draw(st.booleans()),
                "outcome": draw(text(128)), "meddra_pt": draw(text(256))}
    elif kind == "lab_result":
        analyte = draw(st.sampled_from(sorted(ANALYTES)))
        data = {"analyte": analyte, "value": draw(st.floats(0, 150)),
                "unit": draw(st.sampled_from(ANALYTES[analyte].units) | text(32))}
    elif kind == "intervention":
        data = {"name": draw(st.just("MSC infusion") | text(128)), "dose": draw(text(128))}
    elif kind == "treatment":
        data = {"drug": draw(text(128)), "action": "start", "dose": draw(text(128))}
    elif kind == "enrolment":
        data = {"sex": "F", "diagnosis": "systemic", "study": draw(text(128))}
    elif kind == "hospitalisation":
        data = {"reason": draw(text(256))}
    elif kind == "visit_assessment":
        data = {"active_joints": 3, "physician_global": 4.0, "patient_global": 5.0}
    else:
        data = {"target_message_id": draw(st.sampled_from([f"f{n - 1}", f"f{n - 2}"]) | text(128)),
                "reason": draw(text(256))}
    day = 1 + n % 27
    return {"schema_version": 1, "message_id": draw(st.just(f"f{n}") | text(128)),
            "source": draw(st.just("reg-a") | text(64)), "patient_id": patient, "type": kind,
            "occurred_at": f"2024-{1 + n % 12:02d}-{day:02d}", "data": data}


def everything_answers(projectors: list[Projector], board: BoardData) -> None:
    """Every read model up to date and not stopped, and every reader of them answers."""
    for projector in projectors:
        projector.catch_up()
        assert projector.view.stopped() is None, projector.view.stopped()
    answer = incidence(board.incidence_db, Settings())
    efficacy(board.efficacy_db)
    board.dsmb_report(ReportOptions())
    query_signals(board.signals_db)
    board.feed_counts()
    board.quarantine()
    board.read_models()
    for source, patient in board.patients()[:5]:
        board.patient_events(source, patient)
        board.patient_labs(source, patient)
    json.dumps(answer, ensure_ascii=False)


def campaign(store_url: str) -> None:
    store = Store.parse(store_url)
    ledger = Ledger(store)
    projectors = [Projector(ledger, model) for model in read_models()]
    board = BoardData(store)
    seen = {"messages": 0, "accepted": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(hostile_message(), min_size=1, max_size=40))
    def run(messages: list[dict[str, Any]]) -> None:
        raws = [RawMessage(json.dumps(m).encode(), {"line": i}) for i, m in enumerate(messages)]
        counts = Ingestor(ledger).ingest(raws, batch_size=16)
        assert counts.total == len(raws)
        assert all(q["reason"] for q in ledger.tables.quarantined())
        seen["messages"] += len(raws)
        seen["accepted"] += counts.accepted
        everything_answers(projectors, board)

    run()
    assert ledger.tables.message_digest()[0] == seen["accepted"]
    record(f"hostile Unicode through ingest, every read model, report and board data ({store.kind})", 0,
           seen["messages"], 0, 0, f"{EXAMPLES} examples; no exception, every message stored or quarantined, "
           "no read model stopped")


def test_hostile_unicode_through_every_layer(store_url: str):
    campaign(store_url)


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


@settings(max_examples=3000, deadline=None)
@given(hostile_message())
def test_the_contract_accepts_only_what_every_store_can_keep(m: dict[str, Any]):
    """All of Unicode through the contract: a refusal with a reason, or a message whose every string a
    store can keep and whose identifiers hold no control character."""
    from events.contract import ContractViolation, parse_message

    try:
        parsed = parse_message(json.dumps(m).encode())
    except ContractViolation as exc:
        assert exc.reason
        return
    assert _storable(parsed.data) and _storable([parsed.message_id, parsed.patient_id, parsed.source])
    assert not any(ord(c) < 32 or ord(c) == 127 for c in parsed.message_id + parsed.patient_id)
