"""Work spread over forked workers (``projections.forked``): results come back in the jobs' order, and
leaving early, or a job's error, ends the workers without cutting one short or hanging."""

from __future__ import annotations

import multiprocessing
import time
from contextlib import closing

import pytest

from projections.forked import in_order


def slow_square(n: int) -> int:
    time.sleep(0.02 * (n % 3))  # later jobs often finish first
    return n * n


def failing_at_three(n: int) -> int:
    if n == 3:
        raise ValueError("job 3 is bad")
    return n


def test_results_come_back_in_the_jobs_order():
    assert list(in_order(slow_square, range(12), 2)) == [n * n for n in range(12)]


def test_leaving_early_ends_the_workers():
    with closing(in_order(slow_square, range(1000), 2)) as results:
        first = [next(results) for _ in range(3)]
    assert first == [0, 1, 4]
    assert not multiprocessing.active_children()


def test_a_jobs_error_reaches_the_caller_and_ends_the_workers():
    taken: list[int] = []
    with pytest.raises(ValueError, match="job 3 is bad"):
        for n in in_order(failing_at_three, range(50), 2):
            taken.append(n)
    assert taken == [0, 1, 2]
    assert not multiprocessing.active_children()
