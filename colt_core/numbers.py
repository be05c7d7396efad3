"""Numbers in stored records and in tables: one rule for what counts as a number (and an interval), one for a
fraction in percent (with its interval).

A foundation module: the run records (`colt_core.rundir`) and the reports (`colt_core.report`) both use it.
"""

from __future__ import annotations

import math
from typing import Any


def as_number(value: Any, *, keep_nan: bool = False) -> float | None:
    """`value` as a float when it is a real number (a bool is not); None otherwise, and for NaN unless
    `keep_nan` (a record keeps the NaN its task reported; a table shows it as an empty cell)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if math.isnan(value) and not keep_nan:
        return None
    return float(value)


def percent(value: Any, digits: int = 2, unit: str = "") -> str:
    """A fraction in percent with `digits` decimals and `unit` after it ("12.34", or "12.34%" with unit "%");
    "" for anything `as_number` does not take (None, NaN, a missing value)."""
    number = as_number(value)
    return "" if number is None else f"{100 * number:.{digits}f}{unit}"


def as_interval(value: Any) -> tuple[float, float] | None:
    """`value` as (lo, hi) when it is a pair of real numbers, as records store an interval ([lo, hi]); None
    otherwise (no interval, or one the task could not compute)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = (as_number(v) for v in value)
    return None if lo is None or hi is None else (lo, hi)


def percent_interval(value: Any, interval: Any, digits: int = 2) -> str:
    """A fraction in percent with its interval in brackets, "70.60 [67.10, 73.80]"; as `percent` alone where the
    interval is missing (an older record) or the value is."""
    shown = percent(value, digits)
    bounds = as_interval(interval)
    if not shown or bounds is None:
        return shown
    return f"{shown} [{percent(bounds[0], digits)}, {percent(bounds[1], digits)}]"
