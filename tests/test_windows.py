"""Calendar months and the windows anchored at the intervention."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety.windows import Window, add_months, months_between, window_after, window_before


def d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_add_months_clips_to_the_end_of_the_month():
    assert add_months(d(2015, 1, 31), 1) == d(2015, 2, 28)
    assert add_months(d(2016, 3, 31), -1) == d(2016, 2, 29)
    assert add_months(d(2015, 9, 7), -3) == d(2015, 6, 7)
    assert add_months(d(2015, 9, 7), 12) == d(2016, 9, 7)


def test_months_between_counts_whole_and_partial_calendar_months():
    assert months_between(d(2015, 6, 7), d(2015, 9, 7)) == 3.0
    assert months_between(d(2015, 9, 7), d(2016, 9, 7)) == 12.0
    assert months_between(d(2015, 1, 1), d(2015, 1, 16)) == pytest.approx(15 / 31)
    assert months_between(d(2015, 2, 1), d(2015, 3, 15)) == pytest.approx(1 + 14 / 31)
    assert months_between(d(2015, 3, 1), d(2015, 2, 1)) == 0.0


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
       st.integers(min_value=0, max_value=36))
def test_a_window_of_n_months_measures_n_months(start, n):
    start = start.replace(tzinfo=UTC)
    assert months_between(start, add_months(start, n)) == pytest.approx(n)


def test_windows_around_the_anchor_and_clipping():
    anchor = d(2015, 9, 7)
    pre, post = window_before(anchor, 3), window_after(anchor, 12)
    assert (pre.start, pre.end, post.start, post.end) == (d(2015, 6, 7), anchor, anchor, d(2016, 9, 7))
    assert post.contains(anchor) and not pre.contains(anchor)
    withdrawn = post.clipped(d(2016, 3, 7))
    assert withdrawn.months == 6.0
    assert post.clipped(d(2015, 1, 1)) == Window(anchor, anchor)
