"""A large backlog's pages read, decoded and made into rows in worker processes (issue 28).

A rebuild spends most of its pages phase reading and decoding events and making rows of them, in one
process while the machine's other cores wait (a thread cannot help: decoding holds the interpreter lock).
Here forked workers each take a span of the ledger (a few pages' worth of notification ids), read and decode it
over a connection of their own and make its rows (``PageRows.rows``, pure); the projector writes the spans
in ledger order, each in one transaction with its tracked position, as it writes a page.

Anything out of the ordinary (a worker's error, a write the store refuses, a rival projector) ends this
path: the projector's own page-by-page path goes on from the last span written and deals with it as it
always has (escaping text, applying event by event, recording a stop), so the rows are the same
whichever path wrote them.

The workers are forked (``projections.forked``), as the evaluation's are: they use no lock another
thread of the projecting process may hold (they open their own connections, and log nothing), and a
projecting process runs no other thread on the database (the board's follower is a process of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking

from events.ledger import Ledger
from projections.db import no_cycle_collection
from projections.forked import in_order, workers
from projections.view import PageRows

if TYPE_CHECKING:
    from projections.runner import Projector

log = logging.getLogger(__name__)

#: pages of backlog from which workers pay for their start (a rebuild, a store's first catch-up)
SPANS_FROM = 20

#: pages of ledger a span holds, by store: each span is one transaction, whose commit flushes the WAL to disk
#: on PostgreSQL (3.9 ms here; four pages a span: its rebuild's writing 9.7 -> 7.2 s at 15,000 patients) and
#: not on SQLite, where smaller spans keep the workers and the writer closer in step (0.7 s less)
SPAN_PAGES = {"sqlite": 1, "postgresql": 4}

#: (ledger, model, database) for the workers: set in the parent before they are forked
_CONTEXT: list[Any] = []
#: a worker's own ledger, opened in the worker: a forked connection must not be used by two processes
_READER: list[Ledger] = []

#: a span as a worker hands it back: (after, up to, events read or -1 when it failed, rows or the error)
Span = tuple[int, int, int, Any]


def applies(projector: Projector, start: int, head: int) -> bool:
    """Whether this catch-up's backlog is read in workers: the whole ledger's (not one segment's), a model
    that makes rows apart from writing them, enough pages, and cores to spare."""
    return (head - start > SPANS_FROM * projector.page and projector.segment is None
            and isinstance(projector.model, PageRows) and workers() > 0)


def _span(job: tuple[int, int]) -> Span:
    after, upto = job
    ledger, model, db = _CONTEXT
    try:
        if not _READER:
            _READER.append(Ledger(ledger.store, env=dict(ledger.env), seal=ledger.tables.sealer))
        reader = _READER[0]
        with no_cycle_collection():
            notes = reader.page(after, upto - after, model.topics, stop=upto)
            decode = reader.decode_as_text if getattr(model, "takes_recorded_text", False) else reader.decode
            return after, upto, len(notes), model.rows(db, [(n.id, decode(n)) for n in notes])
    except Exception as exc:  # handed back: the projector's own path meets it again and deals with it
        return after, upto, -1, f"{type(exc).__name__}: {exc}"


def load(projector: Projector, start: int, head: int, upstream: str,
         on_page: Callable[[int, int], None] | None) -> tuple[int, int]:
    """Write the spans of ``start`` to ``head`` in order; returns how many events were applied and the
    position reached (``head``, or where the projector's own path is to go on)."""
    width = projector.page * SPAN_PAGES[projector.ledger.store.kind]
    jobs = [(after, min(after + width, head)) for after in range(start, head, width)]
    applied = 0
    _CONTEXT[:] = [projector.ledger, projector.model, projector.view.db]
    try:
        with closing(in_order(_span, jobs, workers())) as spans:
            for after, upto, count, rows in spans:
                if count < 0:
                    log.info("%s: a worker could not read events %d to %d (%s); going on page by page",
                             projector.model.name, after + 1, upto, rows)
                    break
                if not count:
                    continue  # the next span written, or the page-by-page path, moves the position past it
                try:
                    with no_cycle_collection():
                        projector.view.write_rows(rows, Tracking(upstream, upto), after=start)
                except Exception as exc:
                    log.info("%s: events %d to %d not written at once (%s: %s); going on page by page",
                             projector.model.name, after + 1, upto, type(exc).__name__, exc)
                    break
                applied += count
                start = upto
                if on_page:
                    on_page(count, upto)
    finally:
        _CONTEXT.clear()
    return applied, start
