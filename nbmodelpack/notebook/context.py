"""What ``%modelpack`` runs: the notebook :class:`~nbmodelpack.commands.Context`, errors, display.

Imported on the first ``%modelpack`` line, not when the extension loads (see
:mod:`nbmodelpack.notebook.magics`): the verbs pull in the store and its
dependencies, which a kernel that never uses them should not pay for.
"""

from __future__ import annotations

import getpass
import keyword
import shlex
from typing import Any

from .. import commands
from ..commands.render_text import render
from ..errors import ModelPackError, UsageError, render_error
from ..extras import missing_extra
from ..serving import verbs  # noqa: F401 - registers serve, servers, stop, containerize
from .formatters import html_of


class NotebookContext(commands.Context):
    """Verbs run from ``%modelpack``: variables live in the shell's user namespace."""

    interactive = True
    name = "%modelpack"

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def lookup(self, name: str) -> Any:
        if not name.isidentifier():
            raise UsageError(f"{name!r} is not a variable name", hint="pass the name of a notebook variable")
        try:
            return self.shell.user_ns[name]
        except KeyError:
            raise UsageError(f"no variable {name!r} in this notebook", hint="run the cell that defines it first") from None

    def bind(self, name: str, value: Any) -> None:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"{name!r} is not a valid variable name")
        self.shell.user_ns[name] = value

    def note(self, text: str) -> None:
        print(text)  # above the result, in the cell's output

    def getpass(self, prompt: str) -> str:
        # In a kernel, ipykernel routes getpass to the front end's password box (never echoed).
        from IPython.core.error import StdinNotImplementedError

        try:
            return getpass.getpass(prompt)
        except StdinNotImplementedError:
            raise UsageError("this kernel cannot ask for a password (no input channel)", hint="run the cell interactively") from None


class ModelPackMagicError(Exception):
    """A user error from ``%modelpack``: IPython shows it as its one line, without a traceback."""

    def __init__(self, error: ModelPackError) -> None:
        super().__init__(str(error))
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return [render_error(self.error)]


def show(result: Any, *, as_json: bool = False) -> None:
    """Display a verb's result: JSON with ``--json``, plain text for messages, text + HTML for the rest."""
    if result is None:
        return
    if as_json:
        print(render(result, as_json=True))
        return
    html = None if isinstance(result, str | commands.Help) else html_of(result)
    if html is None:
        print(result)
        return
    from IPython.display import display

    display({"text/plain": str(result), "text/html": html}, raw=True)


def run_line(shell: Any, line: str) -> Any:
    """Run one ``%modelpack`` line in ``shell``; return the verb's result.

    Raises :class:`ModelPackMagicError` for every user error: one ``error: …`` line (bad
    arguments add the verb's usage), the prefix the CLI uses too.

    Example:
        >>> run_line(get_ipython(), "help load")  # doctest: +SKIP
    """
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise ModelPackMagicError(UsageError(f"cannot split the line: {exc}")) from None
    try:
        try:
            return commands.run(argv, NotebookContext(shell))
        except ModuleNotFoundError as exc:
            missing = missing_extra(exc)  # a verb that needs an extra the kernel lacks
            if missing is None:
                raise
            raise missing from None
    except ModelPackError as exc:
        raise ModelPackMagicError(exc) from None
    except KeyboardInterrupt:
        raise ModelPackMagicError(ModelPackError("interrupted; nothing half-written was kept")) from None


def usage() -> str:
    """What ``%modelpack?`` shows: the notebook forms, then every verb from the parser."""
    parser = commands.build_parser(NotebookContext.name)
    return (
        "%modelpack VERB [ARGS]: the modelpack CLI's verbs in a notebook, plus notebook forms\n"
        "(`pack VAR --name N`, `load REF as VAR`, `train VAR --data VAR`).\n"
        "`%modelpack help VERB` shows one verb.\n\n" + parser.format_help()
    )

