"""``%modelpack``: the CLI's verbs as one IPython line magic.

The magic holds no logic of its own: it splits the line with ``shlex``, hands
it to :func:`nbmodelpack.commands.run` with a notebook
:class:`~nbmodelpack.notebook.context.NotebookContext` (which sees the
notebook's variables), and shows the result. User errors show as one line and
stop the cell (so "Run all" stops too), never as a traceback.

Loading the extension imports only this module: the verbs, the store, torch
and ipywidgets load on the first ``%modelpack`` line that needs them. Once a cell
has imported torch, the seconds torch needs to import its export machinery (for
packing a notebook class, loading an export graph) are spent on a background
thread while the kernel is idle, unless ``NBMODELPACK_NO_WARMUP`` is set.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

_MAGIC = "modelpack"
WARM_UP_THREAD = "nbmodelpack-warm-up"


class ModelPackMagic:
    """The ``%modelpack`` callable; ``%modelpack?`` shows :meth:`getdoc`, built on demand."""

    __name__ = _MAGIC

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, line: str) -> None:
        from .context import run_line, show

        result = run_line(self.shell, line)
        as_json = "--json" in line.split() and type(result).__name__ != "Help"
        show(result, as_json=as_json)

    def getdoc(self) -> str:
        """Usage of every verb (IPython's ``?`` calls this)."""
        from .context import usage

        return usage()


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%modelpack`` (``%load_ext nbmodelpack``).

    Example:
        >>> load_ipython_extension(get_ipython())  # doctest: +SKIP
    """
    from .formatters import register

    ipython.register_magic_function(ModelPackMagic(ipython), magic_kind="line", magic_name=_MAGIC)
    register(ipython)
    if not os.environ.get("NBMODELPACK_NO_WARMUP"):
        _warm_up_after_torch(ipython)


def _warm_up() -> None:
    from ..pytorch.exporting import warm_up

    with contextlib.suppress(Exception):  # a failed warm-up only means the first export pays the import itself
        warm_up()


def _warm_up_after_torch(ipython: Any) -> None:
    """After the first cell that leaves torch imported, import torch's export machinery on a daemon thread."""

    def after_cell(*_: Any) -> None:
        if "torch" not in sys.modules:
            return
        ipython.events.unregister("post_run_cell", after_cell)
        threading.Thread(target=_warm_up, name=WARM_UP_THREAD, daemon=True).start()

    ipython.events.register("post_run_cell", after_cell)


def __getattr__(name: str) -> Any:
    # NotebookContext and friends live in .context, imported on first use.
    if name in {"NotebookContext", "ModelPackMagicError", "run_line"}:
        from . import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
