"""The training dashboard in a Jupyter kernel: ipywidgets updated in place.

A progress bar with ETA, loss and metric curves (matplotlib rendered to PNG,
swapped into an ``Image`` widget, so nothing flickers) and a table of the logged
rows. When the run ends the widgets are replaced by the same content as static
output, so a saved notebook shows the final dashboard everywhere (nbconvert,
GitHub, a JupyterLab without the kernel). The tracker itself and its terminal
view live in :mod:`nbmodelpack.pytorch.tracking`; :mod:`nbmodelpack.notebook.formatters`
makes :func:`widget_view` the view wherever a kernel can show widgets.

A kernel interrupt (SIGINT) that lands while the dashboard draws, or while it
first imports matplotlib or ipywidgets, is held until the drawing is done: an
import cut in half leaves a broken module in ``sys.modules`` (``module
'matplotlib' has no attribute 'get_data_path'`` until the kernel restarts). A
held interrupt is raised at the view's next in-loop call (so ``fit`` catches it
inside its loop and returns its history); one that arrives while the dashboard
closes is dropped, since the run is ending anyway.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import sys
import time

from ..bundle.format import fmt_metric
from ..pytorch.interrupts import Held, held_interrupts, import_whole
from ..pytorch.tracking import DashboardView, History, Tracker, track

_PLOT_EVERY = 0.5  # seconds between curve redraws (each is a matplotlib render)


def history_html(history: History) -> str:
    """The logged rows as an HTML table under the summary line (the kept row in bold).

    Example:
        >>> "<table" in history_html(History(rows=[{"step": 1, "loss": 0.5}], kept=0))
        True
    """
    e = html.escape
    keys = history.keys
    body = []
    # Inline styles: the live table sits in an ipywidgets HTML widget, outside JupyterLab's table CSS.
    cell = 'style="text-align:right;padding:1px 10px"'
    th = "".join(f"<th {cell}>{e(k)}</th>" for k in (history.x, *keys))
    for i in history.table_rows():
        row = history.rows[i]
        weight = "font-weight:bold;" if i == history.kept else ""
        tds = "".join(f"<td {cell}>{e(fmt_metric(row[k])) if k in row else '-'}</td>" for k in keys)
        body.append(f'<tr style="{weight}"><td {cell}>{e(fmt_metric(row.get(history.x, i + 1)))}</td>{tds}</tr>')
    caption = e(history.summary_line())
    return (
        f'<div class="nbmp-history"><div>{caption}</div><table style="border-collapse:collapse">'
        f'<thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )



def axis_label(keys: list[str], history: History) -> str:
    """The y-axis title of a panel of curves, with the unit when it is known.

    Example:
        >>> axis_label(["acc", "val_acc"], History(rows=[{"step": 1, "acc": 91.0}]))
        'accuracy (%)'
        >>> axis_label(["loss", "val_loss"], History(rows=[]))
        'loss'
    """
    names = {k.removeprefix("val_") for k in keys}
    if names and all("loss" in n for n in names):
        return "loss"
    if names and all(n.startswith("acc") for n in names):
        values = [v for k in keys for v in history[k] if isinstance(v, int | float)]
        return "accuracy (%)" if any(v > 1 for v in values) else "accuracy (fraction)"
    return ", ".join(sorted(names))


def plot_png(history: History) -> bytes:
    """The curves as PNG: losses on the left, other metrics on the right; ``val_`` dashed.

    Example:
        >>> png = plot_png(History(rows=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]))
        >>> png[:4]
        b'\\x89PNG'
    """
    # The object API (no pyplot): no global backend switch, no figure left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = history.keys
    losses = [k for k in keys if "loss" in k]
    panels = [group for group in (losses, [k for k in keys if k not in losses]) if group]
    fig = Figure(figsize=(4.3 * max(1, len(panels)), 2.9), dpi=96)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    colors: dict[str, str] = {}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for ax, group in zip(axes, panels, strict=False):
        for key in group:
            base = key.removeprefix("val_")
            colors.setdefault(base, palette[len(colors) % len(palette)])
            points = [(row.get(history.x, i + 1), row[key]) for i, row in enumerate(history.rows) if key in row]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, "--" if key.startswith("val_") else "-", color=colors[base], marker="o" if len(xs) <= 30 else None, markersize=4, label=key)
        if history.kept is not None and history.interrupted:
            ax.axvline(history.rows[history.kept].get(history.x, history.kept + 1), color="#888", linewidth=1, linestyle=":")
        ax.set_xlabel(history.x)
        ax.set_ylabel(axis_label(group, history), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_LIBRARIES = ("ipywidgets", "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.ticker")


def _in_kernel() -> bool:
    """Are we running inside a Jupyter kernel (where widgets render)?"""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    # Found, not imported: the view imports it with interrupts held.
    return importlib.util.find_spec("ipywidgets") is not None


def widget_view(title: str) -> DashboardView | None:
    """The widget dashboard inside a Jupyter kernel with ipywidgets; ``None`` elsewhere."""
    return _WidgetView(title) if _in_kernel() else None


class _WidgetView:
    """Jupyter: three outputs (header + bar, curves, table) updated in place, made static at the end."""

    wants_timing = True

    def __init__(self, title: str) -> None:
        self.held = Held()
        with held_interrupts(self.held):
            # Before the loop starts, with interrupts held: never a first import cut in half.
            import_whole(*_LIBRARIES)
            self._build(title)

    def _build(self, title: str) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.title = title
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info", layout=w.Layout(width="420px"))
        self.status = w.HTML(value="starting…")
        header = w.HTML(value=f"<b>{html.escape(title)}</b>")
        self.head = w.VBox([header, w.HBox([self.bar, self.status])])
        self.image = w.Image(format="png", layout=w.Layout(display="none", max_width="900px"))
        self.table = w.HTML()
        self.h_head = display(self.head, display_id=True)
        self.h_plot = display(self.image, display_id=True)
        self.h_table = display(self.table, display_id=True)
        self.last_plot = 0.0
        self.fraction = 0.0
        self.last_status = ""

    def progress(self, done: int, total: int | None, status: str) -> None:
        with held_interrupts(self.held):
            if total:
                self.fraction = min(1.0, done / total)
                self.bar.value = self.fraction
            self.last_status = status
            self.status.value = f"&nbsp;{html.escape(status)}"
        self.held.raise_pending()

    def point(self, history: History, force: bool = False) -> None:
        with held_interrupts(self.held):
            self.table.value = history_html(history)
            now = time.monotonic()
            if force or now - self.last_plot >= _PLOT_EVERY:
                self.image.value = plot_png(history)
                self.image.layout.display = None
                self.last_plot = now
        self.held.raise_pending()

    def close(self, history: History) -> None:
        with held_interrupts(self.held):
            self._close(history)
        self.held.pending = False  # the run is ending: nothing left to stop

    def _close(self, history: History) -> None:
        e = html.escape
        state = "interrupted" if history.interrupted else "done"
        note = f"<div>{e(history.note)}</div>" if history.note else ""
        self.h_head.update(
            {
                "text/html": f"<div><b>{e(self.title)}</b> · {state}<br><progress value=\"{self.fraction:.3f}\" max=\"1\" style=\"width:420px\"></progress>"
                f" {e(self.last_status)}{note}</div>",
                "text/plain": f"{self.title}: {state}. {self.last_status}" + (f"\n{history.note}" if history.note else ""),
            },
            raw=True,
        )
        if history.rows:
            png = base64.b64encode(plot_png(history)).decode()
            self.h_plot.update({"image/png": png, "text/plain": f"<{self.title} curves: {', '.join(history.keys)}>"}, raw=True)
        else:
            self.h_plot.update({"text/plain": ""}, raw=True)
        self.h_table.update({"text/html": history_html(history), "text/plain": str(history)}, raw=True)
        for widget in (self.head, self.image, self.table):
            widget.close()


__all__ = ["History", "Tracker", "history_html", "plot_png", "track", "widget_view"]
