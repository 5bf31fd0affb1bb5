"""How numbers are printed in tables a DSMB signs off (issue 27). Pure.

- Rounding is half up (6/96 = 6.25% prints 6.3%), as study reports round, never Python's half to even
  or the binary float's accident (``f"{6.25:.1f}"`` gives 6.2).
- p-values below 0.001 print as ``<0.001``, never ``0.000``.
- An interval prints as ``(low–high)``; a missing bound as ``NE`` (not estimable), never a dangling dash.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

MISSING = "–"
NOT_ESTIMABLE = "NE"


def half_up(value: float | None, digits: int = 1) -> str:
    """``value`` rounded half up to ``digits`` decimals; ``–`` when missing, ``∞`` when infinite."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    # repr gives the shortest decimal that reads back as the float (6.25, not 6.2499999...)
    exact = Decimal(repr(float(value)))
    return str(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def percent(n: int, total: int, digits: int = 1) -> str:
    """n/N as a percentage, half up: ``6.3`` for 6 of 96."""
    if not total:
        return MISSING
    return half_up(float(Decimal(n) * 100 / Decimal(total)), digits)


def p_value(p: float | None) -> str:
    """``<0.001`` below a thousandth, else three decimals half up."""
    if p is None or math.isnan(p):
        return MISSING
    return "<0.001" if p < 0.001 else half_up(p, 3)


def interval(low: float | None, high: float | None, digits: int = 2) -> str:
    """``(low–high)`` with each bound half up; an unestimable bound is ``NE``."""
    if low is None and high is None:
        return f"({NOT_ESTIMABLE})"

    def bound(v: float | None) -> str:
        return NOT_ESTIMABLE if v is None or math.isnan(v) else half_up(v, digits)

    return f"({bound(low)}–{bound(high)})"


def estimate(value: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """An estimate with its interval: ``0.52 (0.31–0.88)``; ``NE`` when the estimate is undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_ESTIMABLE
    return f"{half_up(value, digits)} {interval(low, high, digits)}"
