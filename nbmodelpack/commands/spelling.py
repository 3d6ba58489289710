"""Say things the way the user's door spells them: ``modelpack ls`` / ``%modelpack ls``, ``--example`` / ``example=``.

Messages and hints are written once, where the error is raised, in the Python
API's spelling for parameters (``example=``, ``identity=FILE``) and the CLI's for
commands (```modelpack ls```). The verb framework re-spells every error for the
door it runs in (the :class:`~nbmodelpack.commands.Context` knows its ``name``), so a
user of ``%modelpack`` never reads a terminal command and a terminal user never
reads a Python keyword. This is the one place those rules live.
"""

from __future__ import annotations

import re
import shlex

from ..errors import ModelPackError

# `modelpack VERB`, not nbmodelpack, model_signing or an already-spelled %modelpack.
_COMMAND = re.compile(r"(?<![\w%./-])modelpack(?= [a-z-]+)")
# Python keywords that stand for a flag: `identity=FILE`, `example=`, `trust_code=True`.
_PASSPHRASE = re.compile(r"\bidentity=nbmodelpack\.Passphrase\(\.\.\.\)")
_KWARG_PLACEHOLDER = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=([A-Z][A-Z_]*)\b")
_KWARG_TRUE = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=True\b")
_KWARG_BARE = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?=[\s,;)]|$)")
# A keyword with a quoted or numeric value: `quantize="int8"`, `engine='ray'`, `prune=0.5`, `recipients=["age1…"]`.
_KWARG_VALUE = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?:\[\"([^\"]*)\"\]|\"([^\"]*)\"|'([^']*)'|(\d+(?:\.\d+)?)\b)")
# Where the CLI's words differ from the API's: a keyword's flag, or a keyword with one value a flag of its own.
_PLAIN_WORD = re.compile(r"[^\s'\"\\$`;&|<>()*?!#~]+")
_FLAGS = {"recipients": "--to", "as_name": "--as"}
_VALUE_FLAGS = {("format", "dir"): "--dir DIR", ("format", "files"): "--files DIR"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _valued(m: re.Match[str]) -> str:
    value = next(v for v in m.groups()[1:] if v is not None)
    # Quoted for a shell only when it has to be (`age1…` stays as typed; `3d unet` does not).
    word = value if _PLAIN_WORD.fullmatch(value) else shlex.quote(value)
    return _VALUE_FLAGS.get((m[1], value), f"{_flag(m[1])} {word}")


def spell(text: str, door: str) -> str:
    """``text`` in the spelling of ``door`` (``"modelpack"`` = CLI, ``"%modelpack"`` = magic, ``"python"``).

    Example:
        >>> spell("run `modelpack ls` to see what exists", "%modelpack")
        'run `%modelpack ls` to see what exists'
        >>> spell("pass example=, or identity=FILE", "modelpack")
        'pass --example, or --identity FILE'
        >>> spell("pass identity=nbmodelpack.Passphrase(...)", "%modelpack")
        'pass --passphrase'
        >>> spell('pass quantize="int8" and prune=0.5, or recipients=["age1…"]', "modelpack")
        'pass --quantize int8 and --prune 0.5, or --to age1…'
    """
    if door == "python":
        return text
    text = _PASSPHRASE.sub("--passphrase", text)
    text = _KWARG_VALUE.sub(_valued, text)
    text = _KWARG_PLACEHOLDER.sub(lambda m: f"{_flag(m[1])} {m[2]}", text)
    text = _KWARG_TRUE.sub(lambda m: _flag(m[1]), text)
    text = _KWARG_BARE.sub(lambda m: _flag(m[1]), text)
    if door.startswith("%"):
        text = _COMMAND.sub("%modelpack", text)
    return text


def respell(exc: ModelPackError, door: str) -> ModelPackError:
    """Re-spell an error's message and hint for ``door`` in place; return it.

    Example:
        >>> from nbmodelpack.errors import BundleNotFound
        >>> str(respell(BundleNotFound("m:9", hint="run `modelpack ls`"), "%modelpack"))
        'bundle not found: m:9 (run `%modelpack ls`)'
    """
    exc.message = spell(exc.message, door)
    exc.hint = spell(exc.hint, door) if exc.hint else exc.hint
    exc.args = (str(exc),)
    return exc


__all__ = ["respell", "spell"]
