"""The package's layers, enforced: no upward import, no import cycle, no borrowed private name.

Layers, lowest first; a module imports only from its own layer or below. Every import
counts: module-level, function-level and ``TYPE_CHECKING`` ones, relative ones resolved.
A ``TYPE_CHECKING`` import is never run, so it may close a cycle (a package annotating
with its own facade class) but may still not point upward.
The checker is a pure function over ``{file path: source}``, so the synthetic packages
below show it failing on exactly the mistakes it exists to catch.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "nbmodelpack"
ROOT = Path(__file__).resolve().parents[1]

# Top-level names (module or subpackage) per layer, lowest first. ``exchange`` (export and
# import of OCI layouts) is part of the one API, which re-exports it. The package root and
# ``__main__`` are doors: the root imports everything lazily.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "paths", "_files", "version", "config", "extras", "progress"),
    ("bundle",),
    ("store", "remote"),
    ("pytorch",),
    ("compression", "crypto", "signing"),
    ("api", "exchange"),
    ("commands",),
    ("cli", "notebook", "labapi", "serving", "__init__", "__main__"),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``kind`` is upward, cycle, private or unlayered."""

    kind: str
    module: str
    target: str
    line: int = 0

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        if self.kind == "upward":
            return f"upward: {self.module} [{layer_name(self.module)}] imports {self.target} [{layer_name(self.target)}]{where}"
        if self.kind == "cycle":
            return f"cycle: {self.target}"
        if self.kind == "private":
            return f"private: {self.module} uses {self.target}{where}"
        return f"unlayered: {self.module} is in no layer (add it to LAYERS)"


@dataclass(frozen=True)
class _Module:
    name: str
    is_package: bool
    tree: ast.Module


def _top(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def layer(module: str) -> int | None:
    """The layer number of a dotted module name of the package (None: in no layer)."""
    return LAYER_OF.get(_top(module))


def layer_name(module: str) -> str:
    level = layer(module)
    return f"L{level} {_top(module)}" if level is not None else "no layer"


def _module_name(path: str) -> tuple[str, bool]:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join([PACKAGE, *parts[:-1]]), True
    return ".".join([PACKAGE, *parts]), False


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module_owner(module: str) -> str | None:
    """For ``a.b._c.d``: ``a.b`` (the package a private module belongs to); None if all public."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            return ".".join(parts[:i])
    return None


def _longest_known(dotted: str, modules: Mapping[str, _Module]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imports(mod: _Module, modules: Mapping[str, _Module]) -> Iterator[tuple[str, int, str | None, int]]:
    """(imported package module, line, imported name if it is not a module, node id) for every import."""
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _longest_known(alias.name, modules)
                if target is not None:
                    yield target, node.lineno, None, id(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    yield f"{base}.{alias.name}", node.lineno, None, id(node)
                else:
                    target = _longest_known(base, modules)
                    if target is not None:
                        yield target, node.lineno, alias.name, id(node)


def _module_aliases(mod: _Module, modules: Mapping[str, _Module]) -> dict[str, str]:
    """Local names bound to package modules (``import a.b as c``, ``from a import b``)."""
    bound: dict[str, str] = {}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _private_uses(mod: _Module, modules: Mapping[str, _Module]) -> Iterator[Violation]:
    def check_module(target: str, line: int) -> Iterator[Violation]:
        owner = _private_module_owner(target)
        if owner is not None and not mod.name.startswith(owner + "."):
            yield Violation("private", mod.name, target, line)

    for target, line, name, _ in _imports(mod, modules):
        yield from check_module(target, line)
        if name is not None and _is_private(name):
            yield Violation("private", mod.name, f"{target}.{name}", line)
    aliases = _module_aliases(mod, modules)
    for node in ast.walk(mod.tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts = _dotted(node)
        if not parts or parts[0] not in aliases:
            continue
        full = ".".join([aliases[parts[0]], *parts[1:]])
        known = _longest_known(full, modules)
        rest = full[len(known) + 1 :].split(".") if known and len(full) > len(known) else []
        if rest and _is_private(rest[0]):
            yield Violation("private", mod.name, f"{known}.{rest[0]}", node.lineno)


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component (Tarjan; stdlib graphlib only ever names one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        # Breadth-first from start back to start, inside the component.
        paths = {succ: [start, succ] for succ in sorted(graph[start] & members)}
        frontier = list(paths)
        while start not in paths:
            nxt = []
            for node in frontier:
                for succ in sorted(graph[node] & members):
                    if succ not in paths:
                        paths[succ] = [*paths[node], succ]
                        nxt.append(succ)
            frontier = nxt
        cycles.append(paths[start])
    return sorted(cycles)


def _type_only(tree: ast.Module) -> set[int]:
    """Ids of import nodes under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return found


def check(sources: Mapping[str, str]) -> list[Violation]:
    """Every layer rule broken by a package given as ``{path inside the package: source}``.

    Example:
        >>> check({"__init__.py": "", "bundle/__init__.py": "", "bundle/info.py": "from .. import api", "api.py": ""})
        [Violation(kind='upward', module='nbmodelpack.bundle.info', target='nbmodelpack.api', line=1)]
    """
    modules: dict[str, _Module] = {}
    for path, source in sources.items():
        name, is_package = _module_name(path)
        modules[name] = _Module(name, is_package, ast.parse(source, filename=path))

    violations: list[Violation] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, mod in sorted(modules.items()):
        here = layer(name)
        if here is None:
            violations.append(Violation("unlayered", name, ""))
            continue
        reported: set[str] = set()
        type_only = _type_only(mod.tree)
        for target, line, _, node_id in _imports(mod, modules):
            if target == name:
                continue
            if node_id not in type_only:  # a type-only import is no cycle at run time, but still no upward one
                graph[name].add(target)
            there = layer(target)
            if there is not None and there > here and target not in reported:
                reported.add(target)
                violations.append(Violation("upward", name, target, line))
        violations.extend(dict.fromkeys(_private_uses(mod, modules)))
    violations.extend(Violation("cycle", cycle[0], " -> ".join(cycle)) for cycle in _cycles(graph))
    return violations


def package_sources(root: Path = ROOT / PACKAGE) -> dict[str, str]:
    """The package's Python files as ``{posix path relative to the package: source}``."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.py"))}


# --- the checker on synthetic packages: it catches what it must, and only that ---

BASE = {"__init__.py": "", "errors.py": "", "bundle/__init__.py": "", "bundle/info.py": "from ..errors import BundleError\n", "api.py": "from .bundle import info\n"}


def test_checker_reports_exactly_a_deliberate_upward_import():
    sources = {**BASE, "bundle/info.py": "from ..errors import BundleError\n\ndef html():\n    from nbmodelpack.api import show\n    return show\n"}
    assert check(BASE) == []
    assert [str(v) for v in check(sources)] == [
        "upward: nbmodelpack.bundle.info [L1 bundle] imports nbmodelpack.api [L5 api] (line 4)",
        "cycle: nbmodelpack.api -> nbmodelpack.bundle.info -> nbmodelpack.api",
    ]
    alone = {**sources, "api.py": ""}
    assert check(alone) == [Violation("upward", "nbmodelpack.bundle.info", "nbmodelpack.api", 4)]


def test_checker_sees_type_checking_imports_and_resolves_relative_ones():
    sources = {**BASE, "store/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..crypto import Key\n", "crypto.py": ""}
    assert check(sources) == [Violation("upward", "nbmodelpack.store", "nbmodelpack.crypto", 3)]


def test_checker_allows_a_type_only_cycle_but_not_a_type_only_upward_import():
    sources = {
        **BASE,
        "store/__init__.py": "from . import gc\n",
        "store/gc.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import Store\n    from ..api import pack\n",
        "api.py": "",
    }
    assert [str(v) for v in check(sources)] == ["upward: nbmodelpack.store.gc [L2 store] imports nbmodelpack.api [L5 api] (line 4)"]


def test_checker_reports_a_cycle_inside_one_layer():
    sources = {**BASE, "store/__init__.py": "from . import blobs\n", "store/blobs.py": "import nbmodelpack.store.index\n", "store/index.py": "from nbmodelpack.store import blobs\n"}
    assert [str(v) for v in check(sources)] == ["cycle: nbmodelpack.store.blobs -> nbmodelpack.store.index -> nbmodelpack.store.blobs"]


def test_checker_reports_borrowed_private_names_but_not_package_private_modules():
    sources = {
        **BASE,
        "_files.py": "def _tmp(): ...\ndef atomic_write(): ...\n",
        "pytorch/__init__.py": "",
        "pytorch/_tensors.py": "def owner(): ...\n",
        "pytorch/quantize.py": "from ._tensors import owner\nfrom .._files import atomic_write\n",
        "crypto.py": "from .pytorch._tensors import owner\nfrom . import _files\n_files._tmp()\n",
        "signing.py": "import nbmodelpack.bundle.info as info\nfrom ._files import _tmp\ninfo._card\n",
    }
    assert [str(v) for v in check(sources)] == [
        "private: nbmodelpack.crypto uses nbmodelpack.pytorch._tensors (line 1)",
        "private: nbmodelpack.crypto uses nbmodelpack._files._tmp (line 3)",
        "private: nbmodelpack.signing uses nbmodelpack._files._tmp (line 2)",
        "private: nbmodelpack.signing uses nbmodelpack.bundle.info._card (line 3)",
    ]


def test_checker_names_a_module_in_no_layer():
    assert check({**BASE, "helpers.py": ""}) == [Violation("unlayered", "nbmodelpack.helpers", "")]


# --- the real package ---


def test_package_imports_only_downward_without_cycles_or_borrowed_privates():
    violations = check(package_sources())
    assert not violations, f"{len(violations)} layer violations:\n" + "\n".join(map(str, violations))
