"""HTML for notebooks: the bundle card and the bundle table.

Every piece of text is escaped. Colours come from JupyterLab's CSS variables
(with light-theme fallbacks), so the dark theme works. In an untrusted notebook
JupyterLab strips ``<style>`` and ``<script>``: the markup still reads as a
plain table then, and the sort buttons and copy buttons simply do nothing.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from ..bundle.format import fmt_metric, human_bytes
from ..bundle.info import BundleInfo
from ..bundle.metrics import labelled, sectioned
from ..bundle.metrics import text as metrics_text

# Scoped under .nbmp so nothing leaks into the rest of the notebook.
_STYLE = """<style>
.nbmp{font-family:var(--jp-ui-font-family,sans-serif);font-size:var(--jp-ui-font-size1,13px);
 color:var(--jp-ui-font-color1,#222)}
.nbmp-card{max-width:760px;border:1px solid var(--jp-border-color2,#ddd);border-radius:6px;padding:10px 14px;
 background:var(--jp-layout-color1,#fff)}
.nbmp-title{font-size:var(--jp-ui-font-size3,16px);font-weight:600}
.nbmp-title .nbmp-ver{color:var(--jp-ui-font-color2,#666);font-weight:400}
.nbmp-desc{color:var(--jp-ui-font-color2,#555);margin:2px 0 6px}
.nbmp-badge{display:inline-block;margin-left:6px;padding:0 7px;border-radius:9px;font-size:11px;
 font-weight:500;color:var(--jp-ui-inverse-font-color0,#fff);background:var(--jp-brand-color1,#1976d2)}
.nbmp-badge.compressed{background:var(--jp-accent-color1,#00897b)}
.nbmp-badge.encrypted{background:var(--jp-warn-color1,#f57c00)}
.nbmp-badge.signed{background:var(--jp-success-color1,#388e3c)}
.nbmp-badge.published{background:var(--jp-brand-color0,#0d47a1)}
.nbmp table{border-collapse:collapse;margin:4px 0;table-layout:auto;width:auto;max-width:none}
.nbmp-scroll{overflow-x:auto;max-width:100%}
.nbmp table th,.nbmp table td{text-align:left;padding:2px 12px 2px 0;border:none;vertical-align:top;color:inherit}
.nbmp table.nbmp-kv tbody tr,.nbmp table.nbmp-kv tbody tr:nth-child(odd),.nbmp table.nbmp-kv tbody tr:nth-child(even),
.nbmp table.nbmp-kv tbody tr:hover{background:transparent}
.nbmp table.nbmp-kv th{color:var(--jp-ui-font-color2,#666);font-weight:400;white-space:nowrap}
.nbmp table.nbmp-list thead th{border-bottom:1px solid var(--jp-border-color1,#bbb);cursor:pointer;
 white-space:nowrap;user-select:none}
.nbmp table.nbmp-list th,.nbmp table.nbmp-list td,.nbmp table.nbmp-kv th,.nbmp table.nbmp-kv td{text-align:left;white-space:nowrap}
.nbmp table.nbmp-list td.num,.nbmp table.nbmp-list th.num{text-align:right}
.nbmp code,.nbmp-hint{white-space:nowrap;font-family:var(--jp-code-font-family,monospace);font-size:var(--jp-code-font-size,12px)}
.nbmp-hint{user-select:all;background:var(--jp-layout-color2,#f3f3f3);padding:1px 5px;border-radius:3px}
.nbmp-copy{margin-left:4px;font-size:11px;cursor:pointer;border:1px solid var(--jp-border-color2,#ccc);
 background:var(--jp-layout-color1,#fff);color:inherit;border-radius:3px;padding:0 4px}
.nbmp-muted{color:var(--jp-ui-font-color2,#777)}
</style>"""

# Sorting and copying need a little JavaScript; JupyterLab runs it only for trusted output.
_SCRIPT = """<script>
(function(){var t=document.getElementById("%(id)s");if(!t)return;
t.querySelectorAll("button.nbmp-copy").forEach(function(b){b.onclick=function(){
 navigator.clipboard&&navigator.clipboard.writeText(b.dataset.copy);b.textContent="copied";}});
t.querySelectorAll("thead th").forEach(function(th,i){th.onclick=function(){
 var body=t.tBodies[0],rows=Array.from(body.rows),dir=th.dataset.dir==="asc"?-1:1;th.dataset.dir=dir>0?"asc":"desc";
 rows.sort(function(a,b){var x=a.cells[i].dataset.sort,y=b.cells[i].dataset.sort,
  nx=parseFloat(x),ny=parseFloat(y);return dir*(isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny);});
 rows.forEach(function(r){body.appendChild(r);});};});})();
</script>"""

_ids = itertools.count(1)
_NUM = ' class="num"'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badges(info: BundleInfo) -> str:
    return "".join(f'<span class="nbmp-badge {_e(b)}">{_e(b)}</span>' for b in info.badges)


def kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table; keys are escaped here, values arrive escaped (some carry markup).

    Example:
        >>> kv_table([("a<b", "1")])
        '<table class="nbmp-kv"><tr><th>a&lt;b</th><td>1</td></tr></table>'
    """
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="nbmp-kv">{body}</table>'


def load_hint(ref: str) -> str:
    """The magic line that loads ``ref``.

    Example:
        >>> load_hint("mnist-mlp:1")
        '%modelpack load mnist-mlp:1'
    """
    return f"%modelpack load {ref}"


def _lineage(recipe: Mapping[str, Any]) -> str:
    """Ancestors (with their metrics, as theirs), then this version's step."""
    steps = [s for s in [*recipe.get("lineage", []), recipe] if isinstance(s, Mapping) and s.get("op")] if recipe else []
    parts = []
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        params = step.get("params") or {}
        shown = ", ".join(f"{k}={fmt_metric(v)}" for k, v in params.items() if not isinstance(v, dict | list))
        op = _e(step["op"]) + (f" of <code>{_e(step['parent_ref'])}</code>" if step.get("parent_ref") else "")
        who = f"<code>{_e(step['ref'])}</code> " if step.get("ref") and not last else ""
        text = who + op + (f' <span class="nbmp-muted">({_e(shown)})</span>' if shown else "")
        if not last and isinstance(step.get("metrics"), Mapping) and step["metrics"]:
            text += f' <span class="nbmp-muted">[its metrics: {_e(metrics_text(step["metrics"]))}]</span>'
        parts.append(text)
    out = " → ".join(parts)
    parent = recipe.get("parent") if recipe else None
    if parent and not recipe.get("parent_ref"):
        out += f' <span class="nbmp-muted">from <code>{_e(str(parent)[:19])}…</code></span>'
    return out


def _metrics_html(metrics: Mapping[str, Any]) -> str:
    """This version's own metrics, one small table per section (train, validation, …)."""
    sections = sectioned(metrics)
    if not sections:
        return ""
    tables = "".join(f"<div><b>{_e(name)} metrics</b>{kv_table((k, _e(fmt_metric(v))) for k, v in values.items())}</div>" for name, values in sections.items())
    return f"<div>{tables}</div>"


def bundle_card_html(info: BundleInfo, *, heading: str | None = None) -> str:
    """An HTML card of one bundle version (what a notebook shows for a ``BundleInfo``).

    Example:
        >>> info = BundleInfo(name="mnist-mlp", version=1, digest="sha256:" + "0" * 64)
        >>> "mnist-mlp" in bundle_card_html(info)
        True
    """
    arch = info.architecture
    rows: list[tuple[str, str]] = [
        ("size", _e(human_bytes(info.size))),
        ("parameters", _e(f"{info.parameters:,}")),
        ("precision", _e(info.precision or "-") + (f" · {_e(info.quantization)}" if info.quantization else "")),
    ]
    if arch:
        # What load will do (from architecture.json and the trust allow-list), not what the packer claimed.
        line = info.architecture_line
        target = str(arch.get("class") or "")
        how = line[len(target):].strip() if target and line.startswith(target) else line
        rows.append(("architecture", (f"<code>{_e(target)}</code> " if target else "") + f'<span class="nbmp-muted">{_e(how)}</span>'))
    lineage = _lineage(info.recipe)
    if lineage:
        rows.append(("lineage", lineage))
    if info.tags:
        rows.append(("tags", _e(", ".join(info.tags))))
    if info.published:
        rows.append(("published", _e(", ".join(info.published))))
    if info.created:
        rows.append(("created", _e(info.created[:19].replace("T", " "))))
    rows.append(("digest", f"<code>{_e(info.digest[:19])}…</code>"))
    metrics = _metrics_html(info.metrics)
    version = f'<span class="nbmp-ver">:{_e(info.version)}</span>' if info.version is not None else ""
    name = f"{info.remote}/{info.name}" if info.remote else info.name
    top = f"<div>{_e(heading)}</div>" if heading else ""
    desc = f'<div class="nbmp-desc">{_e(info.description)}</div>' if info.description else ""
    hint = load_hint(info.ref)
    return (
        f'{_STYLE}<div class="nbmp nbmp-card">{top}'
        f'<div class="nbmp-title">{_e(name)}{version}{_badges(info)}</div>{desc}'
        f'<div style="display:flex;gap:28px;flex-wrap:wrap">{kv_table(rows)}{metrics}</div>'
        f'<div class="nbmp-muted">load: <span class="nbmp-hint">{_e(hint)}</span></div></div>'
    )


def bundle_table_html(infos: Iterable[BundleInfo]) -> str:
    """A sortable HTML table of bundle versions, each with a copyable load line.

    Example:
        >>> "no bundles" in bundle_table_html([])
        True
    """
    items = list(infos)
    if not items:
        return f'{_STYLE}<div class="nbmp nbmp-muted">no bundles yet: pack one with <code>%modelpack pack VAR --name NAME</code></div>'
    table_id = f"nbmp-table-{next(_ids)}"
    metric_keys: list[str] = []
    shown_metrics = [labelled(i.metrics) for i in items]
    for m in shown_metrics:
        metric_keys += [k for k, v in m.items() if isinstance(v, int | float) and k not in metric_keys and not k.endswith(" epochs")]
    # A table, not a spreadsheet (the card has them all): held-out metrics first (labelled() puts them first).
    metric_keys = sorted(metric_keys, key=lambda k: not k.startswith("validation "))[:2]
    head = ["ref", "size", "parameters", "precision", *metric_keys, "badges", "created", "load"]
    numeric = {"size", "parameters", *metric_keys}
    th = "".join(f'<th class="num" title="sort">{_e(h)}</th>' if h in numeric else f'<th title="sort">{_e(h)}</th>' for h in head)
    body = []
    for i, m in zip(items, shown_metrics, strict=True):
        hint = load_hint(i.ref)
        cells = [
            (
                i.ref,
                f'<code style="white-space:nowrap">{_e(i.ref)}</code>'
                + "".join(f' <span class="nbmp-muted">{_e(t)}</span>' for t in i.tags if not t.isdigit())
                + (f'<div class="nbmp-muted">{_e(i.parent_line)}</div>' if i.parent_line else ""),
            ),
            (i.size, _e(human_bytes(i.size))),
            (i.parameters, _e(f"{i.parameters:,}")),
            (i.precision, _e(i.precision or "-")),
            *[(m.get(k, ""), _e(fmt_metric(m.get(k, "")))) for k in metric_keys],
            (",".join(i.badges), _badges(i) or '<span class="nbmp-muted">-</span>'),
            (i.created, _e(i.created[:16].replace("T", " "))),
            (hint, f'<span class="nbmp-hint">{_e(hint)}</span><button class="nbmp-copy" data-copy="{_e(hint)}" title="copy">copy</button>'),
        ]
        tds = "".join(
            f'<td{_NUM if h in numeric else ""} style="white-space:nowrap" data-sort="{_e(sort)}">{shown}</td>'
            for h, (sort, shown) in zip(head, cells, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return (
        # JupyterLab sets `table-layout: fixed` on output tables, which wraps refs and clips the
        # last column: the table sizes by its content and its wrapper scrolls instead.
        f'{_STYLE}<div class="nbmp nbmp-scroll"><table class="nbmp-list" id="{table_id}" style="table-layout:auto">'
        f'<thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>' + _SCRIPT % {"id": table_id}
    )
