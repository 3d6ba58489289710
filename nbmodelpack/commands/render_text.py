"""Verb results as terminal text and JSON: what the CLI prints and what ``text/plain`` shows.

Example:
    >>> table([("A", "BB"), ("ccc", "d")])
    'A    BB\\nccc  d'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..api import to_json
from ..bundle.format import human_bytes
from ..bundle.info import BundleInfo


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the first row being the header."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def bundle_table(infos: Iterable[BundleInfo]) -> str:
    """The ``ls`` table: one row per version."""
    rows = [("REF", "TAGS", "SIZE", "PARAMS", "PRECISION", "BADGES", "CREATED", "FROM")]
    for i in infos:
        named_tags = ",".join(t for t in i.tags if not t.isdigit()) or "-"
        row = (i.ref, named_tags, human_bytes(i.size), i.param_size or f"{i.parameters:,}", i.precision or "-", ",".join(i.badges) or "-", i.created[:19], i.parent_line or "-")
        rows.append(row)
    if len(rows) == 1:
        return "no bundles (pack one with nbmodelpack.pack or %modelpack pack)"
    return table(rows)


def server_table(entries: Iterable[Any]) -> str:
    """The ``servers`` table: one row per running server."""
    rows = [("REF", "URL", "PID", "WORKERS", "TOKEN")]
    rows += [(s.ref, s.url, str(s.pid), str(s.workers), "yes" if s.token else "no") for s in entries]
    if len(rows) == 1:
        return "no servers running (start one with `modelpack serve REF`)"
    return table(rows)


def render(result: Any, *, as_json: bool) -> str:
    """Text for a verb's result: JSON with ``--json``, else its ``str()``; nothing for ``None``.

    Example:
        >>> render(None, as_json=False)
        ''
    """
    if result is None:
        return ""
    return to_json(result) if as_json else str(result)
