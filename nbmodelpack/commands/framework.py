"""The verb framework: the :class:`Context` a door offers, the ``verb`` registry, one parser, ``run``.

A verb is one function registered with :func:`verb`. It receives the parsed
arguments and a :class:`Context` (what the door can do: look up notebook
variables, ask for a secret) and returns data (a ``BundleInfo``, a list, a small
result object from :mod:`nbmodelpack.commands.results`); the door renders it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import ModelPackError, UsageError
from .results import Help
from .spelling import respell

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

    def note(self, text: str) -> None:
        """Tell the user one line beside the verb's result (a default it chose, a warning)."""
        import sys

        print(text, file=sys.stderr)


@dataclass
class Verb:
    """One registered verb: its name, help line, argparse specs and function."""

    name: str
    help: str
    args: tuple[ArgSpec, ...]
    run: VerbFn
    notebook_only: bool = False


VERBS: dict[str, Verb] = {}

# The order `help` lists verbs in: a notebook user's path first, store maintenance last.
# A verb not named here (a door's own, added later) comes after the path, before maintenance.
HELP_ORDER = (
    "pack", "load", "train", "ls", "show", "compress", "finetune", "encrypt", "decrypt", "sign", "verify", "keygen",
    "publish", "pull", "remote", "login", "serve", "servers", "stop", "containerize",
)
MAINTENANCE = ("tag", "export", "import", "import-pth", "rm", "gc", "fsck", "help")


def ordered_verbs() -> list[Verb]:
    """Every verb in the order ``help`` lists them.

    Example:
        >>> [v.name for v in ordered_verbs()][:3]
        ['pack', 'load', 'train']
    """
    def rank(name: str) -> tuple[int, int]:
        if name in HELP_ORDER:
            return 0, HELP_ORDER.index(name)
        if name in MAINTENANCE:
            return 2, MAINTENANCE.index(name)
        return 1, 0

    return sorted(VERBS.values(), key=lambda v: rank(v.name))


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
    for v in ordered_verbs():
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


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """The closest of ``choices`` to a mistyped ``word``, if one is close.

    Example:
        >>> did_you_mean("lod", ["load", "ls", "pack"])
        'load'
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_verb(name: str, prog: str = "modelpack") -> UsageError:
    """The error for a verb that does not exist: the closest verb, else the ones that do.

    Example:
        >>> str(unknown_verb("lod", "%modelpack"))
        "unknown verb 'lod' (did you mean `%modelpack load`?)"
    """
    guess = did_you_mean(name, list(VERBS))
    if guess:
        return UsageError(f"unknown verb {name!r}", hint=f"did you mean `{prog} {guess}`?")
    return UsageError(f"unknown verb {name!r}", hint=f"verbs: {', '.join(v.name for v in ordered_verbs())}")


def unknown_flags(sub: argparse.ArgumentParser, extras: Sequence[str]) -> UsageError:
    """The error for arguments a verb does not take, with "did you mean" and that verb's usage."""
    flags = [o for a in sub._actions for o in a.option_strings]
    shown = " ".join(extras)
    guess = next((g for g in (did_you_mean(e.split("=", 1)[0], flags) for e in extras if e.startswith("-")) if g), None)
    hint = f" (did you mean {guess}?)" if guess else ""
    return UsageError(f"unrecognized arguments: {shown}{hint}\n{sub.format_usage().strip()}")


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
    try:
        return _run(parser, args_list, ctx)
    except ModelPackError as exc:
        respell(exc, ctx.name)
        raise


def _run(parser: argparse.ArgumentParser, args_list: list[str], ctx: Context) -> Any:
    if args_list[0] not in VERBS and not args_list[0].startswith("-"):
        raise unknown_verb(args_list[0], ctx.name)
    try:
        # parse_known_args: a flag the verb does not take is that verb's error (its usage,
        # "did you mean"), not the top-level parser's.
        ns, extras = parser.parse_known_args(args_list)
    except _HelpShown:
        sub = subparser(parser, args_list[0])
        return Help((sub or parser).format_help())
    if ns.verb is None:
        if extras:
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}\n{parser.format_usage().strip()}")
        return Help(parser.format_help())
    if extras:
        raise unknown_flags(subparser(parser, ns.verb) or parser, extras)
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
