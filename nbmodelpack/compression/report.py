"""The compression report: parent and child side by side (text, HTML, PNG chart).

Example:
    >>> r = nbmodelpack.compress("mnist-mlp:1", quantize="int8", eval=(x, y))  # doctest: +SKIP
    >>> print(r)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.format import fmt_number, human_bytes
from ..bundle.info import BundleInfo
from ..errors import CompressionError, UsageError
from .evaluate import LATENCY_BATCH


# ---- the report ------------------------------------------------------------------------------
@dataclass
class Row:
    """One model measured: parent or child."""

    label: str
    ref: str
    bundle_bytes: int  # every layer except the card (which embeds these numbers)
    weight_bytes: int  # the weight layers as stored (after zstd)
    parameters: int
    nonzeros: int
    metric: float | None = None
    latency_ms: float | None = None
    drift_max: float | None = None
    drift_mean: float | None = None


@dataclass
class CompressionReport:
    """Parent vs child: size, parameters, non-zeros, metric, latency, drift.

    ``left_float`` names the tensors (two or more dims) that int8/int4 left in float,
    with the reason. Renders as a table and a chart in notebooks, text in terminals,
    JSON for tools.

    Example:
        >>> r = nbmodelpack.compress("mnist-mlp:1", quantize="int8", eval=(x, y))  # doctest: +SKIP
        >>> print(r)  # doctest: +SKIP
    """

    parent: Row
    child: Row
    params: dict[str, Any]
    metric_name: str = "accuracy"
    info: BundleInfo | None = None
    model: Any = field(default=None, repr=False)
    left_float: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times smaller the child bundle is."""
        return self.parent.bundle_bytes / max(self.child.bundle_bytes, 1)

    @property
    def metric_drop(self) -> float | None:
        if self.parent.metric is None or self.child.metric is None:
            return None
        return self.parent.metric - self.child.metric

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``; the card carries the same numbers)."""
        return {
            "parent": asdict(self.parent),
            "child": asdict(self.child),
            "ratio": round(self.ratio, 3),
            "metric": self.metric_name,
            "params": self.params,
            "left_float": dict(self.left_float),
            "ref": self.info.ref if self.info else None,
        }

    def rows(self) -> list[Row]:
        return [self.parent, self.child]

    def __str__(self) -> str:
        head = f"compress {self.parent.ref} -> {self.child.ref}  ({describe_params(self.params)}): {self.ratio:.2f}x smaller"
        lines = left_float_lines(self.left_float)
        return head + "\n" + _text_table(self.rows(), self.metric_name, self.parent.bundle_bytes) + "".join("\n" + line for line in lines)

    def figure(self) -> Any:
        """A matplotlib Figure: size, metric and latency, parent vs child."""
        return _figure(self.rows(), self.metric_name)

    def save_png(self, path: str | Path) -> Path:
        """Write the chart as a PNG file."""
        return _save_png(self.figure(), path)

    def _repr_html_(self) -> str:
        title = f"compress {html.escape(self.parent.ref)} → {html.escape(self.child.ref)} ({html.escape(describe_params(self.params))}): <b>{self.ratio:.2f}× smaller</b>"
        lines = left_float_lines(self.left_float)
        notes = f'<p style="margin:4px 0">{"<br/>".join(html.escape(line) for line in lines)}</p>' if lines else ""
        return _html(title, self.rows(), self.metric_name, self.parent.bundle_bytes, notes)


@dataclass
class Comparison:
    """Several compressions of one parent side by side (one table, one chart).

    Example:
        >>> both = nbmodelpack.compression.compare([r_int8, r_int4])  # doctest: +SKIP
    """

    reports: list[CompressionReport]

    def rows(self) -> list[Row]:
        return [self.reports[0].parent, *(r.child for r in self.reports)]

    @property
    def metric_name(self) -> str:
        return self.reports[0].metric_name

    def best(self, max_drop: float = 0.5) -> CompressionReport:
        """The smallest child whose metric drops at most ``max_drop`` (points) from the parent."""
        ok = [r for r in self.reports if r.metric_drop is None or r.metric_drop <= max_drop]
        if not ok:
            raise CompressionError(f"no variant keeps the {self.metric_name} within {max_drop} of the parent")
        return min(ok, key=lambda r: r.child.bundle_bytes)

    def __str__(self) -> str:
        return _text_table(self.rows(), self.metric_name, self.rows()[0].bundle_bytes)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.reports]

    def figure(self) -> Any:
        return _figure(self.rows(), self.metric_name)

    def save_png(self, path: str | Path) -> Path:
        return _save_png(self.figure(), path)

    def _repr_html_(self) -> str:
        return _html(f"{len(self.reports)} compressions of {html.escape(self.reports[0].parent.ref)}", self.rows(), self.metric_name, self.rows()[0].bundle_bytes)


def compare(reports: Iterable[CompressionReport]) -> Comparison:
    """Put several reports of the same parent in one table and chart.

    Example:
        >>> compare([r1, r2, r3]).save_png("compare.png")  # doctest: +SKIP
    """
    items = list(reports)
    if not items:
        raise UsageError("compare needs at least one report")
    return Comparison(items)


def describe_params(params: dict[str, Any]) -> str:
    parts = []
    if params.get("prune"):
        parts.append(f"{'structured ' if params.get('structured') else ''}prune {params['prune']:g}")
    if params.get("finetune"):
        parts.append("fine-tuned")
    if params.get("quantize"):
        q = params["quantize"]
        parts.append(f"{q} g{params['group_size']}" if q == "int4" else q)
        if params.get("int8_kernel") == "dynamic":
            parts.append("dynamic int8 kernel")
    return ", ".join(parts) or "no change"


def left_float_lines(left: dict[str, str], most: int = 12) -> list[str]:
    """One line per tensor int8/int4 left in float (at most ``most``, then a count).

    Example:
        >>> left_float_lines({"pos": "not the weight of a Linear…: kept float"})
        ['left in float (1 tensor):', '  pos: not the weight of a Linear…: kept float']
    """
    if not left:
        return []
    names = sorted(left)
    lines = [f"left in float ({len(names)} tensor{'s' if len(names) > 1 else ''}):"]
    lines += [f"  {n}: {left[n]}" for n in names[:most]]
    if len(names) > most:
        lines.append(f"  … and {len(names) - most} more")
    return lines



def _cells(row: Row, base: int) -> list[str]:
    drift = "-" if row.drift_max is None else f"{row.drift_max:.3g} / {row.drift_mean:.3g}"
    return [
        row.label,
        row.ref,
        human_bytes(row.bundle_bytes),
        f"{base / max(row.bundle_bytes, 1):.2f}x",
        human_bytes(row.weight_bytes),
        f"{row.parameters:,}",
        f"{row.nonzeros:,}",
        fmt_number(row.metric, ".2f"),
        fmt_number(row.latency_ms, ".3f", " ms"),
        drift,
    ]


def _headers(metric: str) -> list[str]:
    return ["", "ref", "bundle", "smaller", "weights", "params", "non-zeros", metric, f"latency/{LATENCY_BATCH} (1 thread)", "drift max / mean"]


def _text_table(rows: list[Row], metric: str, base: int) -> str:
    table = [_headers(metric)] + [_cells(r, base) for r in rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table)


# JupyterLab lays output tables out with `table-layout: fixed` in the cell's width, which
# squeezes ten columns into wrapped fragments: size the table by its content and let the
# wrapper scroll sideways instead (inline styles: they survive an untrusted notebook).
_TABLE_STYLE = "table-layout:auto;width:auto;max-width:none;border-collapse:collapse"
_CELL_STYLE = "white-space:nowrap;text-align:right;padding:2px 10px"


def _html(title: str, rows: list[Row], metric: str, base: int, notes: str = "") -> str:
    head = "".join(f'<th style="{_CELL_STYLE}">{html.escape(h)}</th>' for h in _headers(metric))
    body = "".join("<tr>" + "".join(f'<td style="{_CELL_STYLE}">{html.escape(c)}</td>' for c in _cells(r, base)) + "</tr>" for r in rows)
    png = base64.b64encode(_png_bytes(_figure(rows, metric))).decode()
    return (
        f'<div class="nbmodelpack-compress"><p>{title}</p>'
        f'<div style="overflow-x:auto"><table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{notes}'
        f'<img alt="size, {html.escape(metric)} and latency" style="max-width:100%" src="data:image/png;base64,{png}"/></div>'
    )


def metric_axis_label(metric: str, values: list[float]) -> str:
    """The x-axis label of the metric panel, with its unit.

    Example:
        >>> metric_axis_label("accuracy", [97.1, 96.8])
        'top-1 accuracy (%)'
        >>> metric_axis_label("f1", [0.91])
        'f1 (higher is better)'
    """
    if metric == "accuracy":
        return "top-1 accuracy (%)" if any(v > 1 for v in values) else "top-1 accuracy (fraction)"
    return f"{metric} (higher is better)"


def _figure(rows: list[Row], metric: str) -> Any:
    # matplotlib's object API (no pyplot): no global state, no GUI backend needed.
    from matplotlib.figure import Figure

    labels = [r.label for r in rows]
    colors = ["#7f7f7f"] + ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"] * 2
    fig = Figure(figsize=(10, 0.6 * len(rows) + 2.0), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    measured = any(r.metric is not None for r in rows)
    metric_values = [r.metric for r in rows if r.metric is not None]
    # (title, axis label with its unit, values, bar label format): short titles fit their panel.
    panels = [
        ("bundle size", "kB (as `ls` shows)", [r.bundle_bytes / 1000 for r in rows], "{:.0f}"),
        (metric if measured else "output drift",
         metric_axis_label(metric, metric_values) if measured else "max abs difference from the parent",
         [r.metric for r in rows] if measured else [r.drift_max or 0.0 for r in rows], "{:.2f}"),
        ("CPU latency", f"ms per batch of {LATENCY_BATCH}, 1 thread", [r.latency_ms or 0.0 for r in rows], "{:.2f}"),
    ]  # fmt: skip
    for ax, (title, xlabel, values, spec) in zip(axes, panels, strict=True):
        vals = [float("nan") if v is None else float(v) for v in values]
        ax.barh(range(len(rows)), vals, color=colors[: len(rows)])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        for i, v in enumerate(vals):
            if not math.isnan(v):
                ax.text(v, i, " " + spec.format(v), va="center", fontsize=8)
        finite = [v for v in vals if not math.isnan(v)]
        if title == metric and finite:
            low = min(finite)
            ax.set_xlim(max(0.0, low - 5), max(finite) + 2)
        elif finite:
            ax.set_xlim(0, max(finite) * 1.3 or 1)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    return fig


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _save_png(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.write_bytes(_png_bytes(fig))
    return out
