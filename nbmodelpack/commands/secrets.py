"""How verbs that read weights take a key: ``--identity FILE|AGE-SECRET-KEY-…`` or ``--passphrase``.

One definition of the two flags, so ``load``, ``serve``, ``decrypt`` (and any verb
that reads encrypted weights) spell them alike. A passphrase is never a flag value
(it would land in shell history and notebook cells): it is asked through the
door's :meth:`~nbmodelpack.commands.Context.getpass` (a password box in a
notebook, the terminal otherwise), or read from ``$NBMODELPACK_PASSPHRASE``.
"""

from __future__ import annotations

import argparse
import os

from ..crypto.keys import PASSPHRASE_ENV, Passphrase
from ..errors import UsageError
from .framework import ArgSpec, Context, arg

IDENTITY_ARGS: tuple[ArgSpec, ...] = (
    arg("--identity", metavar="FILE", help="age identity file (or an AGE-SECRET-KEY-… string) for an encrypted bundle (default: $NBMODELPACK_AGE_IDENTITY, keys/)"),
    arg("--passphrase", action="store_true", help="the bundle was encrypted with a passphrase (asked; or $NBMODELPACK_PASSPHRASE)"),
)


def ask_passphrase(ctx: Context, *, confirm: bool) -> Passphrase:
    """``$NBMODELPACK_PASSPHRASE``, else asked without echo (never stored, never in history)."""
    if os.environ.get(PASSPHRASE_ENV):
        return Passphrase(os.environ[PASSPHRASE_ENV])
    first = ctx.getpass("passphrase: ")
    if confirm and first != ctx.getpass("passphrase (again): "):
        raise UsageError("the passphrases differ; nothing was encrypted")
    return Passphrase(first)


def identity_of(args: argparse.Namespace, ctx: Context) -> str | Passphrase | None:
    """The key the user gave with :data:`IDENTITY_ARGS` (``None``: the defaults).

    Example:
        >>> identity_of(argparse.Namespace(identity="me.txt", passphrase=False), Context())
        'me.txt'
    """
    if args.identity and args.passphrase:
        raise UsageError("give --identity FILE or --passphrase, not both")
    if args.passphrase:
        return ask_passphrase(ctx, confirm=False)
    return str(args.identity) if args.identity else None


__all__ = ["IDENTITY_ARGS", "ask_passphrase", "identity_of"]
