"""Work spread over forked worker processes, its results taken back in order (issue 28).

The projector's large backlogs (``projections.bulk``) and evaluations (``projections.evaluation``) both hand
jobs to forked workers and use the results in the order of the jobs. Both must be able to stop early (a
span the store refuses, a chunk the parent fails to store) without cutting a worker short: a worker stopped
while it hands back a result leaves the pool waiting for the rest of it for ever (``Pool.terminate`` hung
in a test). So only a few jobs are ever handed out ahead of the caller, and on any exit those are let
finish before the pool is closed and joined.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from itertools import islice
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def workers() -> int:
    """How many worker processes large work uses: the cores there are (none on one core, or where processes
    cannot be forked)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8) if cores > 1 else 0


def in_order(work: Callable[[Job], Result], jobs: Iterable[Job], processes: int) -> Generator[Result, None, None]:
    """Each job's result, in the jobs' order, computed by ``processes`` forked workers with two jobs each
    handed out ahead of the caller (so results waiting to be used stay few). Closing the iterator early
    lets the jobs handed out finish, then ends the workers."""
    pending = iter(jobs)
    pool = multiprocessing.get_context("fork").Pool(processes)
    waiting = deque(pool.apply_async(work, (job,)) for job in islice(pending, 2 * processes))
    try:
        while waiting:
            result = waiting.popleft().get()
            waiting.extend(pool.apply_async(work, (job,)) for job in islice(pending, 1))
            yield result
    finally:
        for handed_out in waiting:
            handed_out.wait()
        pool.close()
        pool.join()
