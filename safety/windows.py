"""Calendar-month arithmetic for observation windows and person-time.

A window of N months is counted in calendar months, as a DSMB reads "3 months before the
infusion": from the same day-of-month N months earlier (clipped to the month's last day).
A partial month counts as the fraction of its own length that was observed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property


def add_months(when: datetime, months: int) -> datetime:
    """The same day-of-month ``months`` later (negative: earlier), clipped to the month's end."""
    index = when.year * 12 + (when.month - 1) + months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def months_between(start: datetime, end: datetime) -> float:
    """Calendar months from ``start`` to ``end`` (0 when end <= start), partial months as fractions."""
    if end <= start:
        return 0.0
    whole = (end.year - start.year) * 12 + (end.month - start.month) + 1
    while whole > 0 and add_months(start, whole) > end:
        whole -= 1
    reached = add_months(start, whole)
    following = add_months(start, whole + 1)
    return whole + (end - reached) / (following - reached)


@dataclass(frozen=True)
class Window:
    """A half-open interval [start, end) of clinical time."""

    start: datetime
    end: datetime

    def contains(self, when: datetime) -> bool:
        return self.start <= when < self.end

    def clipped(self, stop: datetime | None) -> Window:
        """The window cut short at ``stop`` (withdrawal, data cut), never before its start."""
        if stop is None or stop >= self.end:
            return self
        return Window(self.start, max(self.start, stop))

    @cached_property
    def months(self) -> float:
        """Calendar months observed (remembered: a cohort's summary asks each window once per category)."""
        return months_between(self.start, self.end)


def window_before(anchor: datetime, months: int) -> Window:
    return Window(add_months(anchor, -months), anchor)


def window_after(anchor: datetime, months: int) -> Window:
    """From the anchor (the anchor's own day belongs to "after") for ``months`` months."""
    return Window(anchor, add_months(anchor, months))
