"""Hold a kernel interrupt (SIGINT) while work that must not be cut in half runs.

A KeyboardInterrupt in the middle of a first import leaves half-initialised
modules behind (``module 'matplotlib' has no attribute 'get_data_path'`` until
the kernel restarts); one in the middle of ``fit``'s set-up (the optimizer's
first use imports ``torch._dynamo``, ``sympy``, ``mpmath``) does the same, and
one before ``fit`` enters its loop leaves the caller without a history. Such
work runs inside :func:`held_interrupts`; the interrupt is recorded and the
caller raises it where it can be handled (``fit``'s loop, the dashboard's next
update). Torch-free and Jupyter-free: ``fit`` and the notebook dashboard share it.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator


class Held:
    """Whether an interrupt arrived while held; :meth:`raise_pending` delivers it.

    Example:
        >>> held = Held()
        >>> held.raise_pending()  # nothing arrived: nothing happens
    """

    def __init__(self) -> None:
        self.pending = False

    def raise_pending(self) -> None:
        """Raise the held KeyboardInterrupt now (once)."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def held_interrupts(held: Held) -> Iterator[Held]:
    """Hold SIGINT for the block (main thread only; elsewhere signals never arrive anyway).

    Example:
        >>> import os, signal
        >>> with held_interrupts(Held()) as held:
        ...     os.kill(os.getpid(), signal.SIGINT)
        >>> held.pending
        True
    """
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.getsignal(signal.SIGINT)

    def hold(signum: int, frame: object) -> None:
        held.pending = True

    signal.signal(signal.SIGINT, hold)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def import_whole(*names: str) -> None:
    """Import ``names`` completely or not at all: if the import fails, its half-imported modules go.

    Example:
        >>> import_whole("json")
    """
    before = set(sys.modules)
    roots = {n.split(".")[0] for n in names}
    try:
        for name in names:
            importlib.import_module(name)
    except BaseException:
        for module in set(sys.modules) - before:
            if module.split(".")[0] in roots:
                del sys.modules[module]
        raise


__all__ = ["Held", "held_interrupts", "import_whole"]
