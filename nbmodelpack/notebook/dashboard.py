"""The training dashboard: ``track()`` for your own loop, and what ``fit`` draws with.

In a Jupyter kernel the dashboard is ipywidgets updated in place: a progress bar
with ETA, loss and metric curves (matplotlib rendered to PNG, swapped into an
``Image`` widget, so nothing flickers) and a table of the logged rows. When the
run ends the widgets are replaced by the same content as static output, so a
saved notebook shows the final dashboard everywhere (nbconvert, GitHub, a
JupyterLab without the kernel). In a terminal it is a tqdm bar and plain lines.

No torch here: a hand-written loop needs only this module.
"""

from __future__ import annotations

import base64
import html
import io
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_PROGRESS_EVERY = 0.1  # seconds between progress redraws
_PLOT_EVERY = 0.5  # seconds between curve redraws (each is a matplotlib render)
_TABLE_ROWS = 15


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class History:
    """What a training run logged: one row per epoch (``fit``) or per ``log`` call (``track``).

    ``kept`` is the index of the row whose weights the model holds at the end
    (the last row, or after an interrupt the best one); its values are
    :attr:`metrics`, which the next ``pack`` puts on the card.

    Example:
        >>> h = History(rows=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.3}], x="epoch")
        >>> h["loss"]
        [0.5, 0.3]
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    x: str = "step"
    monitor: str = "loss"
    kept: int | None = None
    interrupted: bool = False
    seconds: float = 0.0
    note: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    @property
    def keys(self) -> list[str]:
        """The logged value names, in first-seen order (without the x axis)."""
        out: list[str] = []
        for row in self.rows:
            out += [k for k in row if k != self.x and k not in out]
        return out

    @property
    def metrics(self) -> dict[str, float]:
        """The values of the kept row (what ``pack(metrics="auto")`` records)."""
        if self.kept is None or not self.rows:
            return {}
        row = self.rows[self.kept]
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items() if k != self.x}

    def summary_line(self) -> str:
        """One line: how far it got and the kept values."""
        if not self.rows:
            return self.note or "nothing logged"
        kept = self.metrics
        values = ", ".join(f"{k} {_fmt(v)}" for k, v in kept.items())
        where = f"{self.x} {self.rows[self.kept][self.x]}" if self.kept is not None else "-"
        head = f"{len(self.rows)} {self.x}s in {_duration(self.seconds)}"
        return f"{head}{' (interrupted)' if self.interrupted else ''}; kept {where}: {values}"

    def _table_rows(self) -> list[int]:
        indices = list(range(len(self.rows)))
        if len(indices) <= _TABLE_ROWS:
            return indices
        tail = indices[-(_TABLE_ROWS - 1) :]
        return sorted({self.kept or 0, *tail}) if self.kept is not None else tail

    def __str__(self) -> str:
        keys = self.keys
        head = [self.x, *keys]
        rows = [head]
        for i in self._table_rows():
            row = self.rows[i]
            mark = " *" if i == self.kept else ""
            rows.append([f"{_fmt(row.get(self.x, i + 1))}{mark}", *(_fmt(row[k]) if k in row else "-" for k in keys)])
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join([self.summary_line(), *lines])

    def _repr_html_(self) -> str:
        e = html.escape
        keys = self.keys
        body = []
        # Inline styles: the live table sits in an ipywidgets HTML widget, outside JupyterLab's table CSS.
        cell = 'style="text-align:right;padding:1px 10px"'
        th = "".join(f"<th {cell}>{e(k)}</th>" for k in (self.x, *keys))
        for i in self._table_rows():
            row = self.rows[i]
            weight = "font-weight:bold;" if i == self.kept else ""
            tds = "".join(f"<td {cell}>{e(_fmt(row[k])) if k in row else '-'}</td>" for k in keys)
            body.append(f'<tr style="{weight}"><td {cell}>{e(_fmt(row.get(self.x, i + 1)))}</td>{tds}</tr>')
        caption = e(self.summary_line())
        return (
            f'<div class="nbmp-history"><div>{caption}</div><table style="border-collapse:collapse">'
            f'<thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rows": self.rows, "x": self.x, "monitor": self.monitor, "kept": self.kept, "interrupted": self.interrupted, "seconds": self.seconds, "metrics": self.metrics}


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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _in_kernel() -> bool:
    """Are we running inside a Jupyter kernel (where widgets render)?"""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class _TextView:
    """Terminal: a tqdm bar (off with NBMODELPACK_NO_PROGRESS) and one plain line per row."""

    def __init__(self, title: str, print_rows: bool) -> None:
        self.title = title
        self.print_rows = print_rows
        self.bar: Any = None

    def progress(self, done: int, total: int | None, status: str) -> None:
        if self.bar is None:
            from ..progress import progress

            self.bar = progress(total=total, desc=self.title, unit="it")
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(status, refresh=False)
        self.bar.refresh()

    def point(self, history: History, force: bool = False) -> None:
        if not self.print_rows:
            return
        row = history.rows[-1]
        text = "  ".join(f"{k} {_fmt(v)}" for k, v in row.items())
        from tqdm.auto import tqdm

        tqdm.write(f"{self.title}: {text}", file=sys.stdout)

    def close(self, history: History) -> None:
        if self.bar is not None:
            self.bar.close()
        print(history.summary_line() if self.print_rows else str(history), flush=True)
        if history.note:
            print(history.note, flush=True)


class _WidgetView:
    """Jupyter: three outputs (header + bar, curves, table) updated in place, made static at the end."""

    def __init__(self, title: str) -> None:
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
        if total:
            self.fraction = min(1.0, done / total)
            self.bar.value = self.fraction
        self.last_status = status
        self.status.value = f"&nbsp;{html.escape(status)}"

    def point(self, history: History, force: bool = False) -> None:
        self.table.value = history._repr_html_()
        now = time.monotonic()
        if force or now - self.last_plot >= _PLOT_EVERY:
            self.image.value = plot_png(history)
            self.image.layout.display = None
            self.last_plot = now

    def close(self, history: History) -> None:
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
        self.h_table.update({"text/html": history._repr_html_(), "text/plain": str(history)}, raw=True)
        for widget in (self.head, self.image, self.table):
            widget.close()


class Tracker:
    """A live dashboard for a training loop; made by :func:`track`.

    Example:
        >>> with track(total=3) as t:  # doctest: +SKIP
        ...     for epoch in range(3):
        ...         t.log(loss=1 / (epoch + 1), acc=50 + 10 * epoch)
    """

    def __init__(
        self, total: int | None = None, *, title: str = "training", x: str = "step", print_rows: bool | None = None, advance_on_log: bool = True
    ) -> None:
        if total is not None and total < 1:
            from ..errors import UsageError

            raise UsageError(f"total={total}: give a positive number of steps, or None")
        self.total = total
        self.history = History(x=x)
        self.started = time.monotonic()
        self._last_progress = 0.0
        rows = print_rows if print_rows is not None else (total is not None and total <= 100)
        self._view: _TextView | _WidgetView = _WidgetView(title) if _in_kernel() else _TextView(title, rows)
        self._closed = False
        self._log_advances = advance_on_log  # fit moves the bar per batch instead

    def log(self, **values: Any) -> None:
        """Record one row of values (numbers, or 0-d tensors/arrays) and redraw.

        Example:
            >>> t.log(loss=0.31, acc=91.2)  # doctest: +SKIP
        """
        row: dict[str, float] = {}
        x = values.pop(self.history.x, None)
        row[self.history.x] = x if x is not None else len(self.history.rows) + 1
        for key, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                from ..errors import UsageError

                raise UsageError(f"log({key}=…) needs a number, got {type(value).__name__}") from None
            row[key] = number
        self.history.rows.append(row)
        self.history.kept = len(self.history.rows) - 1
        self.history.seconds = time.monotonic() - self.started
        done = len(self.history.rows)
        if self._log_advances:
            self._advance(done, self.total, "  ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != self.history.x), force=True)
        self._view.point(self.history, force=self.total is not None and done >= self.total)

    def _advance(self, done: int, total: int | None, status: str, *, force: bool = False) -> None:
        """Move the progress bar (fit calls this per batch); redraws are throttled."""
        now = time.monotonic()
        if not force and now - self._last_progress < _PROGRESS_EVERY and (total is None or done < total):
            return
        self._last_progress = now
        elapsed = now - self.started
        timing = f"{_duration(elapsed)}"
        if total and 0 < done < total:
            timing += f" · ETA {_duration(elapsed / done * (total - done))}"
        progress = f"{done}/{total}" if total else f"{done}"
        text = f"{progress} · {timing} · {status}" if status else f"{progress} · {timing}"
        self._view.progress(done, total, text if isinstance(self._view, _WidgetView) else status)

    def close(self, *, interrupted: bool = False, note: str = "") -> History:
        """Finish the dashboard (static summary); return the :class:`History`."""
        if self._closed:
            return self.history
        self._closed = True
        self.history.interrupted = interrupted or self.history.interrupted
        self.history.seconds = time.monotonic() - self.started
        self.history.note = note or self.history.note
        self._view.close(self.history)
        return self.history

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        note = f"interrupted after {len(self.history.rows)} {self.history.x}s" if interrupted else ""
        self.close(interrupted=interrupted, note=note)
        return interrupted  # Ctrl-C stops the loop cleanly; other errors propagate


def track(total: int | None = None, *, title: str = "training", x: str = "step") -> Tracker:
    """The ``fit`` dashboard for your own loop: ``with track(total=epochs) as t: t.log(loss=…)``.

    Each :meth:`Tracker.log` call adds one row (one point on every curve).
    Ctrl-C inside the ``with`` block ends it cleanly: the dashboard shows what
    was logged and the code after the block runs.

    Example:
        >>> with nbmodelpack.track(total=2, x="epoch") as t:  # doctest: +SKIP
        ...     for epoch in range(2):
        ...         t.log(loss=train_one_epoch(), acc=evaluate())
        >>> t.history.metrics  # doctest: +SKIP
        {'loss': 0.21, 'acc': 93.4}
    """
    return Tracker(total, title=title, x=x)
