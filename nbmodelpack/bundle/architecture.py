"""What ``load`` will do with an ``architecture.json``: the trust rules, torch-free.

One source of truth for the allow-list: the restorer checks a bundle with
:func:`check_target` / :func:`plain_kwargs` before it imports anything, and the
listings (``show``, ``ls``, the card, the sidebar) print :func:`describe` of the
same document, so what is displayed is what ``load`` will actually do.

Allowed modules are ``torch`` and ``torchvision`` (as top-level packages and
their submodules) plus what the user lists in ``config.toml``::

    [trust]
    modules = ["timm", "mylab.models"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArchitectureError

DEFAULT_MODULES: tuple[str, ...] = ("torch", "torchvision")
MAX_KWARGS_DEPTH = 8
MAX_KWARGS_ITEMS = 10_000
MAX_STRING = 4096

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
TRUST_HINT = "pass trust_code=True if you trust who packed it, or list its module under [trust] modules in config.toml"


def module_allowed(name: str, trusted: Sequence[str] = ()) -> bool:
    """Is ``name`` one of the allowed modules or a submodule of one?

    Example:
        >>> module_allowed("torch.nn.modules.linear"), module_allowed("torchx"), module_allowed("subprocess")
        (True, False, False)
        >>> module_allowed("torch.utils.model_dump.__main__"), module_allowed("torch.testing._internal.common_utils")
        (False, False)
    """
    if any(part.startswith("_") for part in name.split(".")):
        # Private and dunder modules are never allowed: `torch.utils.model_dump.__main__` or a
        # `torch.testing._internal` module runs code (argv parsing, monkey-patching) on import.
        return False
    return any(name == top or name.startswith(top + ".") for top in (*DEFAULT_MODULES, *trusted) if top)


def parse_target(target: object) -> tuple[str, str]:
    """Split ``"module:Qualname"``; a malformed target is an :class:`ArchitectureError`.

    Qualname parts must be public identifiers (no ``__class__`` walks).

    Example:
        >>> parse_target("torch.nn:Linear")
        ('torch.nn', 'Linear')
    """
    if not isinstance(target, str) or len(target) > 512:
        raise ArchitectureError("architecture.json names no class", hint="re-pack the model")
    module, _, qualname = target.partition(":")
    if not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(qualname) or any(p.startswith("_") for p in qualname.split(".")):
        raise ArchitectureError(f"architecture target {target[:80]!r} is not module:Name", hint="e.g. torchvision.models:resnet18")
    return module, qualname


def plain_kwargs(kwargs: object) -> dict[str, Any]:
    """Init arguments as plain JSON data (str/int/float/bool/None/list/dict), bounded in depth and size.

    Example:
        >>> plain_kwargs({"in_features": 4, "out_features": 2})
        {'in_features': 4, 'out_features': 2}
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise ArchitectureError("architecture.json kwargs is not a JSON object", hint="re-pack the model")
    count = 0

    def check(value: object, depth: int) -> None:
        nonlocal count
        count += 1
        if depth > MAX_KWARGS_DEPTH or count > MAX_KWARGS_ITEMS:
            raise ArchitectureError("architecture.json kwargs are nested too deep or too large", hint="re-pack the model")
        if isinstance(value, bool | int | float | type(None)):
            return
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise ArchitectureError("architecture.json kwargs hold an over-long string", hint="re-pack the model")
            return
        if isinstance(value, list):
            for item in value:
                check(item, depth + 1)
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or key.startswith("__"):
                    raise ArchitectureError(f"architecture.json kwargs key {str(key)[:40]!r} is not plain data", hint="re-pack the model")
                check(item, depth + 1)
            return
        raise ArchitectureError(f"architecture.json kwargs hold a {type(value).__name__}, not plain JSON data", hint="re-pack the model")

    check(kwargs, 0)
    for key in kwargs:
        if not _DOTTED.fullmatch(key) or "." in key:
            raise ArchitectureError(f"architecture.json kwargs key {key[:40]!r} is not an argument name", hint="re-pack the model")
    return dict(kwargs)


def check_target(target: object, trusted: Sequence[str] = (), *, trust_code: bool = False) -> tuple[str, str]:
    """``(module, qualname)`` if ``load`` may import ``target``; else a one-line :class:`ArchitectureError`.

    Example:
        >>> check_target("torchvision.models:resnet18")
        ('torchvision.models', 'resnet18')
        >>> check_target("subprocess:run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.ArchitectureError: architecture: subprocess:run is not in an allowed module...
    """
    module, qualname = parse_target(target)
    if not trust_code and not module_allowed(module, trusted):
        raise ArchitectureError(f"{module}:{qualname} is not in an allowed module, so load will not import it", hint=TRUST_HINT)
    return module, qualname


def _describe_export(arch: Mapping[str, Any]) -> str:
    """An export graph, and the better forms ``load`` tries first (see ``pytorch.restore.rebuild``)."""
    try:
        module, qualname = parse_target(arch.get("class"))
        plain_kwargs(arch.get("kwargs"))
    except ArchitectureError:
        return "export graph"
    text = f"export graph (trainable) of {module}:{qualname}"
    if module == "__main__" and "kwargs" in arch:
        text += f"; loads as {qualname} where that class is defined"
        if arch.get("source"):
            text += "; stored source runs only with trust_code"
    return text


def describe(arch: Mapping[str, Any] | object, trusted: Sequence[str] = ()) -> str:
    """One line saying what ``load`` (without ``trust_code``) will do with this ``architecture.json``.

    Example:
        >>> describe({"strategy": "class", "class": "torch.nn.modules.linear:Linear"})
        'torch.nn.modules.linear:Linear (class)'
        >>> describe({"strategy": "class", "class": "subprocess:run"})
        'subprocess:run (function; refused — not an allowed module, needs trust_code)'
        >>> describe({"strategy": "export", "file": "model.pt2"})
        'export graph'
        >>> describe({"strategy": "export", "class": "__main__:Net", "kwargs": {}, "source": "model_src.py"})
        'export graph (trainable) of __main__:Net; loads as Net where that class is defined; stored source runs only with trust_code'
    """
    if not isinstance(arch, Mapping):
        return "unreadable architecture (load refuses it)"
    strategy = arch.get("strategy")
    if strategy == "export":
        return _describe_export(arch)
    if strategy == "source":
        return "source code (needs trust_code)"
    if strategy != "class":
        return f"unknown strategy {str(strategy)[:40]!r} (load refuses it)"
    target = arch.get("class")
    try:
        module, qualname = parse_target(target)
        plain_kwargs(arch.get("kwargs"))
    except ArchitectureError as exc:
        return f"invalid class target (refused — {exc.message})"
    kind = "class" if qualname.rsplit(".", 1)[-1][:1].isupper() else "function"
    if not module_allowed(module, trusted):
        if arch.get("file") == "model.pt2":
            return f"{module}:{qualname} ({kind}; not an allowed module — loads as the export graph unless trusted)"
        return f"{module}:{qualname} ({kind}; refused — not an allowed module, needs trust_code)"
    return f"{module}:{qualname} ({kind})"
