"""``%modelpack``: the CLI's verbs as one IPython line magic.

The magic holds no logic of its own: it splits the line with ``shlex``, hands
it to :func:`nbmodelpack.commands.run` with a notebook
:class:`~nbmodelpack.notebook.context.NotebookContext` (which sees the
notebook's variables), and shows the result. User errors show as one line and
stop the cell (so "Run all" stops too), never as a traceback.

Loading the extension imports only this module: the verbs, the store, torch
and ipywidgets load on the first ``%modelpack`` line that needs them.
"""

from __future__ import annotations

from typing import Any

_MAGIC = "modelpack"


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


def __getattr__(name: str) -> Any:
    # NotebookContext and friends live in .context, imported on first use.
    if name in {"NotebookContext", "ModelPackMagicError", "run_line"}:
        from . import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
