"""The public surface: what ``nbmodelpack`` exports lazily is what type checkers see, and it all resolves."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import nbmodelpack
from nbmodelpack import api, errors

INIT = Path(nbmodelpack.__file__)


def _type_checking_names() -> set[str]:
    """Names the ``if TYPE_CHECKING:`` block of the package root imports."""
    tree = ast.parse(INIT.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.dump(stmt)
                names |= {alias.asname or alias.name for alias in stmt.names}
    return names


def test_every_lazy_name_is_in_the_type_checking_block_and_nothing_else() -> None:
    assert _type_checking_names() == set(nbmodelpack._LAZY)


def test_every_lazy_name_resolves_to_what_its_module_defines() -> None:
    for name, module in nbmodelpack._LAZY.items():
        value = getattr(nbmodelpack, name)
        assert not isinstance(value, types.ModuleType), f"{name} exports a module"
        assert getattr(__import__(f"nbmodelpack.{module}", fromlist=[name]), name) is value


def test_all_lists_the_verbs_the_errors_and_nothing_private() -> None:
    exported = set(nbmodelpack.__all__)
    assert set(nbmodelpack._LAZY) <= exported
    assert {n for n in errors.__all__ if n.endswith("Error") or n in ("BundleNotFound", "InvalidReference", "RemoteUnavailable")} <= exported
    assert not [n for n in exported if n.startswith("_") and n != "__version__"]
    assert nbmodelpack.__all__ == sorted(nbmodelpack.__all__)
    for name in exported:
        assert hasattr(nbmodelpack, name), name


def test_the_root_verbs_are_the_api_verbs() -> None:
    for name, module in nbmodelpack._LAZY.items():
        if module == "api":
            assert name in api.__all__, name
    assert nbmodelpack.export is api.export and nbmodelpack.encrypt is api.encrypt and nbmodelpack.publish is api.publish


def test_a_checker_sees_a_lazy_name_missing_from_type_checking() -> None:
    # The first test compares two sets; show that a name added to _LAZY alone breaks it.
    source = INIT.read_text().replace('    "pack": "api",\n', '    "pack": "api",\n    "unlisted": "api",\n')
    lazy = ast.literal_eval(next(
        n.value for n in ast.parse(source).body if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "_LAZY"
    ))
    assert set(lazy) - _type_checking_names() == {"unlisted"}
