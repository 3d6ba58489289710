"""Formatting numbers for people: byte sizes, metric values (pure, no I/O).

Every door (CLI tables, cards, the dashboard, reports) formats with these, so a
number reads the same everywhere.
"""

from __future__ import annotations

import math
from typing import Any


def human_bytes(n: int | float) -> str:
    """``1.2 MB`` style sizes (powers of 1000, like ``ls -lh --si``).

    Example:
        >>> human_bytes(1_234_567)
        '1.2 MB'
        >>> human_bytes(999)
        '999 B'
    """
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns at TB


def fmt_metric(value: Any) -> str:
    """A metric value as shown on cards and tables: floats to 4 significant digits.

    Very large or small floats switch to exponent notation; anything else is ``str()``.

    Example:
        >>> fmt_metric(0.987654)
        '0.9877'
        >>> fmt_metric(123456.0)
        '1.235e+05'
        >>> fmt_metric(3)
        '3'
        >>> fmt_metric(2.0)  # a count stored as a float reads as a count ("epochs 2", not "2.00")
        '2'
    """
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def fmt_number(value: float | None, spec: str, unit: str = "") -> str:
    """A number with a format spec and unit, or ``-`` when it is missing (None or NaN).

    Example:
        >>> fmt_number(1.23456, ".3f", " ms")
        '1.235 ms'
        >>> fmt_number(float("nan"), ".2f")
        '-'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def plain(value: object, limit: int = 120) -> str:
    """Text from a bundle's own annotations, safe for a terminal: no control characters, bounded.

    Example:
        >>> plain("m:1\x1b[2J")
        'm:1[2J'
    """
    return "".join(ch for ch in str(value) if ch.isprintable())[:limit]
