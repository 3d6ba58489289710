"""Progress bars for long work: ``tqdm.auto`` (a widget in notebooks, text in terminals).

``NBMODELPACK_NO_PROGRESS=1`` turns them off (tests, CI).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

# Where training dashboards draw besides plain text: a door registers a factory
# (the notebook: live widgets); it returns None where it cannot draw.
_view_factory: Callable[[str], Any] | None = None


def set_dashboard_view(factory: Callable[[str], Any] | None) -> None:
    """Let a door draw training dashboards: ``factory(title)`` returns a view, or ``None`` for text.

    The view has the methods of :class:`nbmodelpack.pytorch.tracking.DashboardView`.

    Example:
        >>> set_dashboard_view(None)  # plain text everywhere
    """
    global _view_factory
    _view_factory = factory


def dashboard_view(title: str) -> Any:
    """The registered door's view for a new dashboard, or ``None`` (then the tracker writes text).

    Example:
        >>> dashboard_view("training") is None
        True
    """
    return _view_factory(title) if _view_factory is not None else None


# Who else wants to know how far a bar got (the sidebar's background jobs); per thread/context.
_observer: ContextVar[Callable[[str, float, float | None], None] | None] = ContextVar("nbmodelpack_progress", default=None)


@contextlib.contextmanager
def observe(callback: Callable[[str, float, float | None], None]) -> Iterator[None]:
    """Call ``callback(desc, done, total)`` on every update of bars opened inside this block.

    Example:
        >>> seen = []
        >>> with observe(lambda d, n, t: seen.append(n)):
        ...     with progress(total=2, desc="demo", unit="step") as bar:
        ...         _ = bar.update(2)
        >>> seen
        [2.0]
    """
    token = _observer.set(callback)
    try:
        yield
    finally:
        _observer.reset(token)


def progress(total: int | float | None = None, *, desc: str = "", unit: str = "B", **kwargs: Any) -> Any:
    """A tqdm bar, disabled when ``NBMODELPACK_NO_PROGRESS`` is set.

    Bars only appear once work has taken half a second (``delay``), so quick
    steps stay quiet.

    Example:
        >>> with progress(total=2, desc="demo", unit="step") as bar:
        ...     bar.update(2)
    """
    from tqdm.auto import tqdm

    observer = _observer.get()
    if observer is not None:
        return _observed(observer, total=total, desc=desc, unit=unit, **kwargs)
    disable = os.environ.get("NBMODELPACK_NO_PROGRESS", "") not in ("", "0")
    scale = unit == "B"
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        disable=disable,
        delay=0.5,
        leave=False,
        **kwargs,
    )


def _observed(observer: Callable[[str, float, float | None], None], **kwargs: Any) -> Any:
    from tqdm import tqdm

    class _Observed(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            observer(str(self.desc), float(self.n), self.total)
            return shown

    # A plain (non-widget) bar writing nowhere: the observer is the only reader.
    return _Observed(file=io.StringIO(), leave=False, mininterval=0, **kwargs)
