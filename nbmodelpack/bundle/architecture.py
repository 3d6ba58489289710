"""What ``load`` will do with an ``architecture.json``: the trust rules, torch-free.

One source of truth for the allow-list: the restorer checks a bundle with
:func:`check_target` / :func:`plain_kwargs` (every node of a ``"modules"`` tree with
:func:`tree_nodes`) before it imports anything, and the
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

from ..errors import ArchitectureError, UsageError

DEFAULT_MODULES: tuple[str, ...] = ("torch", "torchvision")
MAX_KWARGS_DEPTH = 8
MAX_KWARGS_ITEMS = 10_000
MAX_STRING = 4096
# A "modules" tree: containers built here, leaves checked like a class target.
CONTAINERS = {
    "torch.nn.modules.container:Sequential": "Sequential",
    "torch.nn.modules.container:ModuleList": "ModuleList",
    "torch.nn.modules.container:ModuleDict": "ModuleDict",
}
MAX_TREE_DEPTH = 16
MAX_TREE_NODES = 10_000
_CHILD = re.compile(r"[A-Za-z0-9_]{1,128}")

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


def tree_nodes(tree: object, trusted: Sequence[str] = (), *, trust_code: bool = False) -> list[tuple[str, Mapping[str, Any]]]:
    """Every node of a ``"modules"`` tree as ``(dotted path, node)``, parents first; checked, nothing imported.

    A node is a container ``{"class": <Sequential|ModuleList|ModuleDict>, "children": {name: node}}``
    or a leaf ``{"class": "module:Class", "kwargs": {...}}`` checked like a class target.

    Example:
        >>> leaf = {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 2, "out_features": 1}}
        >>> [p for p, _ in tree_nodes({"class": "torch.nn.modules.container:Sequential", "children": {"0": leaf}})]
        ['', '0']
    """
    nodes: list[tuple[str, Mapping[str, Any]]] = []
    pending: list[tuple[str, object, int]] = [("", tree, 0)]
    while pending:
        path, node, depth = pending.pop()
        where = f" at {path[:80]!r}" if path else ""
        if depth > MAX_TREE_DEPTH:
            raise ArchitectureError(f"architecture.json module tree nests deeper than {MAX_TREE_DEPTH} levels", hint="re-pack the model")
        if len(nodes) >= MAX_TREE_NODES:
            raise ArchitectureError(f"architecture.json module tree has more than {MAX_TREE_NODES:,} modules", hint="re-pack the model")
        if not isinstance(node, Mapping):
            raise ArchitectureError(f"architecture.json module tree has a node{where} that is not an object", hint="re-pack the model")
        target = node.get("class")
        if target in CONTAINERS:
            children = node.get("children")
            if not isinstance(children, Mapping) or "kwargs" in node:
                raise ArchitectureError(f"architecture.json container{where} has no children object", hint="re-pack the model")
            if len(nodes) + len(pending) + len(children) >= MAX_TREE_NODES:
                raise ArchitectureError(f"architecture.json module tree has more than {MAX_TREE_NODES:,} modules", hint="re-pack the model")
            names = list(children)
            if CONTAINERS[str(target)] == "ModuleList" and names != [str(i) for i in range(len(names))]:
                raise ArchitectureError(f"architecture.json ModuleList{where} is not numbered 0..n-1", hint="re-pack the model")
            for name in names:
                if not isinstance(name, str) or not _CHILD.fullmatch(name) or name.startswith("__"):
                    raise ArchitectureError(f"architecture.json module name {str(name)[:40]!r}{where} is not a plain name", hint="re-pack the model")
            pending.extend((f"{path}.{n}" if path else n, children[n], depth + 1) for n in reversed(names))
        else:
            if "children" in node:
                raise ArchitectureError(f"architecture.json node{where} has children but is not Sequential, ModuleList or ModuleDict", hint="re-pack the model")
            check_target(target, trusted, trust_code=trust_code)
            plain_kwargs(node.get("kwargs"))
        nodes.append((path, node))
    return nodes


def _describe_modules(arch: Mapping[str, Any], trusted: Sequence[str]) -> str:
    """``Sequential of 4 modules (Flatten, Linear, ReLU)``, or why load refuses the tree."""
    tree = arch.get("tree")
    try:
        nodes = tree_nodes(tree, trusted, trust_code=True)
    except ArchitectureError as exc:
        return f"invalid module tree (refused — {exc.message})"
    root = str(nodes[0][1].get("class")).rpartition(":")[2]
    leaves = [str(node.get("class")) for _, node in nodes if node.get("class") not in CONTAINERS]
    kinds = list(dict.fromkeys(t.rpartition(":")[2] for t in leaves))
    text = f"{root} of {len(leaves)} module{'' if len(leaves) == 1 else 's'} ({', '.join(kinds[:6])}{', …' if len(kinds) > 6 else ''})"
    refused = next((t for t in leaves if not module_allowed(t.partition(":")[0], trusted)), None)
    if refused is not None:
        return f"{text}; refused — {refused} is not an allowed module, needs trust_code"
    return text


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
        >>> describe({"strategy": "modules", "tree": {"class": "torch.nn.modules.container:Sequential", "children": {
        ...     "0": {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 2, "out_features": 1}}}}})
        'Sequential of 1 module (Linear)'
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
    if strategy == "modules":
        return _describe_modules(arch, trusted)
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


# How int8 Linear layers run at load (a recipe records compress's choice); weight-only is the default.
INT8_KERNELS = ("weight-only", "dynamic")


def check_int8_kernel(value: Any) -> str | None:
    """``None`` (the bundle's choice, else weight-only) or one of :data:`INT8_KERNELS`; else a one-line error.

    Example:
        >>> check_int8_kernel("dynamic")
        'dynamic'
    """
    if value is None or value in INT8_KERNELS:
        return value
    raise UsageError(f"int8 kernel {str(value)[:40]!r} is not one of {', '.join(INT8_KERNELS)}", hint="the default, weight-only, matches compress's weights exactly")
