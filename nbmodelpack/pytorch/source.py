"""The source of a class defined in ``__main__`` (a script or notebook cell), with what it needs.

The text is data in the bundle (``model_src.py``): load executes it only with
``trust_code=True``. It holds the class, the ``__main__`` definitions it refers
to (helper classes, functions, plain constants; found by walking the names the
source uses against ``__main__``'s globals, transitively), and import lines for
the modules and importable objects those use.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import sys
import textwrap
import types
from typing import Any

_CONSTANTS = (bool, int, float, str, bytes, type(None))
MAX_DEFINITIONS = 200


def _constant(value: Any) -> bool:
    if isinstance(value, _CONSTANTS):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return all(_constant(v) for v in value)
    if isinstance(value, dict):
        return all(_constant(k) and _constant(v) for k, v in value.items())
    return False


def _class_block(cls: type) -> str | None:
    """A class's source from the cell/script lines its methods were compiled from.

    ``inspect.getsource`` needs ``__main__.__file__``, which a notebook kernel lacks;
    the methods' code objects still name the cell that linecache holds.
    """
    for member in vars(cls).values():
        code = getattr(inspect.unwrap(member) if callable(member) else member, "__code__", None)
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        for start in range(min(code.co_firstlineno, len(lines)) - 1, -1, -1):
            stripped = lines[start].lstrip()
            if stripped.startswith(f"class {cls.__name__}") and stripped[len(cls.__name__) + 6 : len(cls.__name__) + 7] in "(:":
                return textwrap.dedent("".join(inspect.getblock(lines[start:])))
    return None


def definition_source(obj: Any) -> str | None:
    """The source text of a class or function, or ``None`` if Python cannot find it.

    Example:
        >>> definition_source(definition_source).splitlines()[0]
        'def definition_source(obj: Any) -> str | None:'
    """
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return _class_block(obj) if inspect.isclass(obj) else None


def _used_names(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _import_line(name: str, value: Any) -> str | None:
    """An import that binds ``name`` to ``value`` in a fresh process, if there is one."""
    if isinstance(value, types.ModuleType):
        dotted = value.__name__
        if dotted == name:
            return f"import {dotted}"
        if "." in dotted:
            parent, _, leaf = dotted.rpartition(".")
            return f"from {parent} import {leaf}" + ("" if leaf == name else f" as {name}")
        return f"import {dotted} as {name}"
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and module != "__main__" and "." not in qualname and "<" not in qualname:
        return f"from {module} import {qualname}" + ("" if qualname == name else f" as {name}")
    return None


def main_source(cls: type, namespace: dict[str, Any] | None = None) -> str | None:
    """``model_src.py`` for a ``__main__`` class: imports, the definitions it needs, then the class.

    ``None`` when the class's source cannot be found (e.g. ``python -c``).

    Example:
        >>> main_source(int) is None
        True
    """
    if getattr(cls, "__module__", None) != "__main__":
        return None
    names = namespace if namespace is not None else vars(sys.modules["__main__"])
    imports: dict[str, str] = {}
    constants: dict[str, str] = {}
    blocks: list[str] = []  # dependencies first: a definition is emitted after what it uses
    seen: set[str] = set()

    def visit(obj: Any) -> bool:
        text = definition_source(obj)
        if text is None:
            return False
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return False
        for name in sorted(_used_names(tree)):
            if name in seen or name not in names or len(seen) > MAX_DEFINITIONS:
                continue
            seen.add(name)
            value = names[name]
            if (inspect.isclass(value) or inspect.isfunction(value)) and getattr(value, "__module__", None) == "__main__":
                if not visit(value):
                    return False
            elif (line := _import_line(name, value)) is not None:
                imports[name] = line
            elif _constant(value):
                constants[name] = f"{name} = {value!r}"
            elif getattr(builtins, name, None) is value:
                continue
        blocks.append(text.rstrip() + "\n")
        return True

    seen.add(cls.__name__)
    if not visit(cls):
        return None
    parts = ["\n".join(sorted(set(imports.values())))]
    if constants:
        parts.append("\n".join(constants.values()))
    parts.extend(blocks)
    return "\n\n".join(p for p in parts if p) + "\n"
