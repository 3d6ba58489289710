"""The verb framework: the :class:`Context` a door offers, the ``verb`` registry, one parser, ``run``.

A verb is one function registered with :func:`verb`. It receives the parsed
arguments and a :class:`Context` (what the door can do: look up notebook
variables, ask for a secret) and returns data (a ``BundleInfo``, a list, a small
result object from :mod:`nbmodelpack.commands.results`); the door renders it.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import ModelPackError, UsageError
from .results import Help

VerbFn = Callable[[argparse.Namespace, "Context"], Any]
ArgSpec = tuple[tuple[str, ...], dict[str, Any]]


class Context:
    """What a door offers verbs. The terminal has no variables to look up."""

    interactive = False
    name = "modelpack"

    def lookup(self, name: str) -> Any:
        raise UsageError(f"{name!r} names a notebook variable; this verb needs %modelpack in a notebook")

    def bind(self, name: str, value: Any) -> None:
        raise UsageError("binding a variable needs %modelpack in a notebook")

    def getpass(self, prompt: str) -> str:
        import getpass

        return getpass.getpass(prompt)


@dataclass
class Verb:
    """One registered verb: its name, help line, argparse specs and function."""

    name: str
    help: str
    args: tuple[ArgSpec, ...]
    run: VerbFn
    notebook_only: bool = False


VERBS: dict[str, Verb] = {}


def arg(*flags: str, **kwargs: Any) -> ArgSpec:
    """An argparse argument spec for :func:`verb`.

    Example:
        >>> arg("--tag", action="append")
        (('--tag',), {'action': 'append'})
    """
    return flags, kwargs


def verb(name: str, help: str, *args: ArgSpec, notebook_only: bool = False) -> Callable[[VerbFn], VerbFn]:
    """Register a verb: ``@verb("tag", "add or move a tag", arg("ref"), arg("new_tag"))``."""

    def register(fn: VerbFn) -> VerbFn:
        VERBS[name] = Verb(name, help, args, fn, notebook_only)
        return fn

    return register


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (with the usage line) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _HelpShown(message or "")


class _HelpShown(Exception):
    """argparse printed help (``-h``); not an error."""


def build_parser(prog: str = "modelpack") -> argparse.ArgumentParser:
    """The parser of every verb.

    Example:
        >>> build_parser().prog
        'modelpack'
    """
    parser = _Parser(prog=prog, description="Pack, load, compress, encrypt, sign, publish and serve PyTorch models as OCI bundles.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for v in VERBS.values():
        p = sub.add_parser(v.name, help=v.help, description=v.help)
        for flags, kwargs in v.args:
            p.add_argument(*flags, **kwargs)
    return parser


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    """The sub-parser of verb ``name`` (``None`` if there is no such verb)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def unknown_verb(name: str) -> UsageError:
    """The error for a verb that does not exist, listing the ones that do."""
    return UsageError(f"unknown verb {name!r}", hint=f"verbs: {', '.join(sorted(VERBS))}")


def run(argv: Sequence[str] | str, ctx: Context | None = None) -> Any:
    """Parse ``argv`` and run the verb; return its result (raise :class:`ModelPackError` on failure).

    Example:
        >>> str(run("help tag")).splitlines()[0]
        'usage: modelpack tag [-h] ref new_tag'
    """
    ctx = ctx or Context()
    args_list = shlex.split(argv) if isinstance(argv, str) else list(argv)
    parser = build_parser(ctx.name)
    if not args_list:
        return Help(parser.format_help())
    if args_list[0] not in VERBS and not args_list[0].startswith("-"):
        raise unknown_verb(args_list[0])
    try:
        ns = parser.parse_args(args_list)
    except _HelpShown:
        sub = subparser(parser, args_list[0])
        return Help((sub or parser).format_help())
    if ns.verb is None:
        return Help(parser.format_help())
    v = VERBS[ns.verb]
    if v.notebook_only and not ctx.interactive:
        raise UsageError(f"`{v.name}` works on notebook variables", hint="use %modelpack in a notebook, or the Python API")
    try:
        return v.run(ns, ctx)
    except OSError as exc:
        # A path the user named that cannot be read or written (a file where a folder
        # should be, no permission, a full disk): one line, as for every other error.
        where = f": {exc.filename}" if exc.filename else ""
        raise ModelPackError(f"{exc.strerror or exc}{where}", hint="check the path and try again") from exc


def json_arg(text: str | None, what: str) -> Any:
    """``text`` parsed as JSON (``None`` stays ``None``); bad JSON is a one-line :class:`UsageError`.

    Example:
        >>> json_arg('{"hidden": 8}', "--arch-kwargs")
        {'hidden': 8}
    """
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from exc
