"""Parser processes: the CPU-heavy part of ingest that needs no database (parse, validate, serialise),
spread over processes while the ingesting one stores."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from datetime import datetime

from eventsourcing.application import Application

from events.admission import Prepared, Rejected, prepare
from events.encoding import StateEncoder
from events.ledger import Ledger

_worker_encoder: StateEncoder | None = None


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects that exist when a long run starts (modules, clients, settings) outlive it: kept out of
    the cyclic collector's full passes until it ends, which otherwise walk all of them every few batches
    (ingest's main process 26.7 -> 25.2 µs an event; BENCHMARKS.md). Then they are collectable again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _init_worker(settings: dict[str, str]) -> None:
    global _worker_encoder
    _worker_encoder = StateEncoder(Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo", **settings}).mapper)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    gc.freeze()  # the modules and the encoder live as long as the process: out of the collector's full passes


def _exit_with_parent() -> None:
    """A parser whose parent was killed (SIGKILL leaves no time to shut the pool) ends too."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _ready() -> None:
    """A task that only waits for its process to be up."""


def _prepare_chunk(lines: list[bytes], now: datetime) -> list[Prepared | Rejected]:
    assert _worker_encoder is not None
    return [prepare(line, now, _worker_encoder) for line in lines]


class ParserPool:
    """Processes that parse and serialise messages (the CPU-heavy part that needs no database), for a
    caller that stores batch by batch (the Kafka consumer): each batch is split between them, and
    the next batch can be parsing while this process stores the last. They are spawned, so they import
    the caller's ``__main__`` (as multiprocessing does): a script must guard its work with
    ``if __name__ == "__main__"``."""

    #: below this, the round trip to the processes costs more than it saves
    min_batch = 200

    def __init__(self, workers: int, ledger: Ledger):
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(ledger.mapper_settings(),))

    def start(self) -> None:
        """Start every process now (they start on demand otherwise, delaying the first batches)."""
        wait(self._start())

    def starting(self) -> Callable[[], bool]:
        """Start every process; call the result to know whether they are all up."""
        futures = self._start()
        return lambda: all(f.done() for f in futures)

    def _start(self) -> list[Future[None]]:
        return [self.pool.submit(_ready) for _ in range(self.workers)]

    def submit(
        self, raws: list[bytes], now: datetime, *, split: bool = True
    ) -> Callable[[], list[Prepared | Rejected]]:
        """Parse ``raws`` (split between the processes, or whole in one when the caller keeps several
        batches in flight); call the result to wait for the items, in order."""
        size = max(1, -(-len(raws) // self.workers) if split else len(raws))
        futures = [self.pool.submit(_prepare_chunk, raws[i : i + size], now) for i in range(0, len(raws), size)]
        return lambda: [item for future in futures for item in future.result()]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
