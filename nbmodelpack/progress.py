"""Progress bars for long work: ``tqdm.auto`` (a widget in notebooks, text in terminals).

``NBMODELPACK_NO_PROGRESS=1`` turns them off (tests, CI).
"""

from __future__ import annotations

import os
from typing import Any


def progress(total: int | float | None = None, *, desc: str = "", unit: str = "B", **kwargs: Any) -> Any:
    """A tqdm bar, disabled when ``NBMODELPACK_NO_PROGRESS`` is set.

    Bars only appear once work has taken half a second (``delay``), so quick
    steps stay quiet.

    Example:
        >>> with progress(total=2, desc="demo", unit="step") as bar:
        ...     bar.update(2)
    """
    from tqdm.auto import tqdm

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
