"""The training tracker: ``track()`` for your own loop, and what ``fit`` records and draws with.

A :class:`Tracker` keeps a :class:`History` (one row per ``log`` call or epoch)
and draws it: plain lines and a tqdm bar in a terminal; a door that can do
better registers a view with :func:`nbmodelpack.progress.set_dashboard_view`
(the notebook's live widgets, :mod:`nbmodelpack.notebook.dashboard`). No torch and no Jupyter here:
a hand-written loop needs only this module.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from ..bundle.format import fmt_metric
from ..errors import UsageError
from ..progress import dashboard_view, progress

_PROGRESS_EVERY = 0.1  # seconds between progress redraws
_TABLE_ROWS = 15


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
        values = ", ".join(f"{k} {fmt_metric(v)}" for k, v in kept.items())
        where = f"{self.x} {self.rows[self.kept][self.x]}" if self.kept is not None else "-"
        head = f"{len(self.rows)} {self.x}s in {_duration(self.seconds)}"
        return f"{head}{' (interrupted)' if self.interrupted else ''}; kept {where}: {values}"

    def table_rows(self) -> list[int]:
        """Indices of the rows a table shows: the last ones, and the kept one."""
        indices = list(range(len(self.rows)))
        if len(indices) <= _TABLE_ROWS:
            return indices
        tail = indices[-(_TABLE_ROWS - 1) :]
        return sorted({self.kept or 0, *tail}) if self.kept is not None else tail

    def __str__(self) -> str:
        keys = self.keys
        head = [self.x, *keys]
        rows = [head]
        for i in self.table_rows():
            row = self.rows[i]
            mark = " *" if i == self.kept else ""
            rows.append([f"{fmt_metric(row.get(self.x, i + 1))}{mark}", *(fmt_metric(row[k]) if k in row else "-" for k in keys)])
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join([self.summary_line(), *lines])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rows": self.rows, "x": self.x, "monitor": self.monitor, "kept": self.kept, "interrupted": self.interrupted, "seconds": self.seconds, "metrics": self.metrics}


class DashboardView(Protocol):
    """Where a :class:`Tracker` draws: a terminal, or the notebook's widgets."""

    wants_timing: bool  # put elapsed time and ETA into the status text

    def progress(self, done: int, total: int | None, status: str) -> None: ...

    def point(self, history: History, force: bool = False) -> None: ...

    def close(self, history: History) -> None: ...


def _make_view(title: str) -> DashboardView | None:
    view: DashboardView | None = dashboard_view(title)
    return view


class _TextView:
    """Terminal: a tqdm bar (off with NBMODELPACK_NO_PROGRESS) and one plain line per row."""

    wants_timing = False  # tqdm shows elapsed time and ETA itself

    def __init__(self, title: str, print_rows: bool) -> None:
        self.title = title
        self.print_rows = print_rows
        self.bar: Any = None

    def progress(self, done: int, total: int | None, status: str) -> None:
        if self.bar is None:
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
        text = "  ".join(f"{k} {fmt_metric(v)}" for k, v in row.items())
        from tqdm.auto import tqdm

        tqdm.write(f"{self.title}: {text}", file=sys.stdout)

    def close(self, history: History) -> None:
        if self.bar is not None:
            self.bar.close()
        print(history.summary_line() if self.print_rows else str(history), flush=True)
        if history.note:
            print(history.note, flush=True)


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
            raise UsageError(f"total={total}: give a positive number of steps, or None")
        self.total = total
        self.history = History(x=x)
        self.started = time.monotonic()
        self._last_progress = 0.0
        rows = print_rows if print_rows is not None else (total is not None and total <= 100)
        self._view: DashboardView = _make_view(title) or _TextView(title, rows)
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
                    raise UsageError(f"log({key}=…) needs a number, got {type(value).__name__}") from None
            row[key] = number
        self.history.rows.append(row)
        self.history.kept = len(self.history.rows) - 1
        self.history.seconds = time.monotonic() - self.started
        done = len(self.history.rows)
        if self._log_advances:
            self.advance(done, self.total, "  ".join(f"{k} {fmt_metric(v)}" for k, v in row.items() if k != self.history.x), force=True)
        self._view.point(self.history, force=self.total is not None and done >= self.total)

    def advance(self, done: int, total: int | None, status: str, *, force: bool = False) -> None:
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
        self._view.progress(done, total, text if self._view.wants_timing else status)

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
