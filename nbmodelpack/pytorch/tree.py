"""A ``Sequential``/``ModuleList``/``ModuleDict`` of allow-listed layers, described as data.

The ``"modules"`` architecture strategy: pack writes the tree as JSON (containers with
their named children; leaves as a ``module:Class`` target with plain init arguments
recovered from the layer, as for the class strategy) and keeps that description only
if building it back on the meta device, the way load does, gives the same state-dict
keys, shapes and dtype kinds, and the same type and ``extra_repr()`` for every
submodule. Otherwise pack falls back to the export graph. Load checks the whole tree
(:func:`nbmodelpack.bundle.architecture.tree_nodes`) before importing anything,
resolves every leaf through the class strategy's allow-list and builds it on the meta
device. Neither side touches ``torch.export``.

Floating-point dtypes come from the stored weights (load assigns them), so a bf16
``Sequential`` is described by the same tree as an fp32 one.
"""

from __future__ import annotations

import importlib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..bundle.architecture import CONTAINERS, MAX_TREE_DEPTH, MAX_TREE_NODES, tree_nodes
from ..config import trusted_modules
from ..errors import ArchitectureError
from .resolve import Factory, resolve_architecture

_JSON_SCALARS = (bool, int, float, str, type(None))
_CONTAINER_TARGETS = {getattr(torch.nn, name): target for target, name in CONTAINERS.items()}

# restore.construct: build a leaf on the meta device (passed in: restore imports this module).
Construct = Callable[[Factory, dict[str, Any], Mapping[str, torch.Tensor] | None], torch.nn.Module]
# A leaf whose class takes non-JSON arguments, as ``(builder target, kwargs)`` (e.g. torchvision's ``resnet18``).
LeafBuilder = Callable[[torch.nn.Module], tuple[str, dict[str, Any]] | None]


def class_path(cls: type) -> str | None:
    """``module:Qualname`` if a fresh process can import ``cls`` by that name.

    Example:
        >>> class_path(torch.nn.Linear)
        'torch.nn.modules.linear:Linear'
    """
    module = getattr(cls, "__module__", "")
    qualname = getattr(cls, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname or module.startswith("__"):
        return None
    try:
        obj: Any = importlib.import_module(module)  # the class's own module: already imported
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is cls else None


def is_json(value: Any) -> bool:
    """Is ``value`` plain JSON data (tuples count as lists)?

    Example:
        >>> is_json({"size": (3, 3)}), is_json(torch.ones(1))
        (True, False)
    """
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list | tuple):
        return all(is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return False


def guess_init_kwargs(model: torch.nn.Module) -> dict[str, Any] | None:
    """Init arguments recovered from same-named attributes (``self.hidden = hidden``) or defaults.

    A boolean argument named like a parameter slot (``bias=False`` leaves ``bias`` None)
    is read from whether that parameter exists.

    Example:
        >>> guess_init_kwargs(torch.nn.Linear(3, 2, bias=False))
        {'in_features': 3, 'out_features': 2, 'bias': False}
    """
    try:
        params = inspect.signature(type(model).__init__).parameters
    except (TypeError, ValueError):
        return None
    kwargs: dict[str, Any] = {}
    for pname, p in list(params.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value: Any = inspect.Parameter.empty
        for attr in (pname, f"_{pname}"):
            value = model.__dict__.get(attr, inspect.Parameter.empty)
            if value is not inspect.Parameter.empty:
                break
        if value is not inspect.Parameter.empty and is_json(value):
            kwargs[pname] = list(value) if isinstance(value, tuple) else value
        elif isinstance(p.default, bool) and pname in model._parameters:
            kwargs[pname] = model._parameters[pname] is not None
        elif p.default is p.empty:
            return None
    return kwargs


def _leaf(module: torch.nn.Module, construct: Construct, trusted: list[str], builder: LeafBuilder | None) -> dict[str, Any] | None:
    """A leaf node that rebuilds exactly ``module``: its class with guessed kwargs, else its builder."""
    path = class_path(type(module))
    if path is None:
        return None
    kwargs = guess_init_kwargs(module)
    if kwargs is not None and _rebuilds({"class": path, "kwargs": kwargs}, module, construct, trusted):
        return {"class": path, "kwargs": kwargs}
    built = builder(module) if builder is not None else None  # e.g. SqueezeNet's `version` is no attribute
    if built is not None and _rebuilds({"class": built[0], "kwargs": built[1]}, module, construct, trusted):
        return {"class": built[0], "kwargs": built[1]}
    return None


def _rebuilds(node: dict[str, Any], module: torch.nn.Module, construct: Construct, trusted: list[str]) -> bool:
    """Does the leaf ``node``, resolved like a class target and built on meta, match ``module`` exactly?"""
    try:
        factory, kwargs = resolve_architecture(node["class"], node["kwargs"], trusted=trusted)
        return _same(module, construct(factory, kwargs, None))
    except ArchitectureError:  # outside the allow-list, or does not build on meta
        return False


def _node(module: torch.nn.Module, depth: int, count: list[int], leaf: Callable[[torch.nn.Module], dict[str, Any] | None]) -> dict[str, Any] | None:
    """The JSON node of ``module`` (a container or a leaf that rebuilds exactly), or None if it is neither."""
    count[0] += 1
    if depth > MAX_TREE_DEPTH or count[0] > MAX_TREE_NODES:
        return None
    target = _CONTAINER_TARGETS.get(type(module))
    if target is None:
        return leaf(module)
    children: dict[str, Any] = {}
    for name, child in module._modules.items():
        node = _node(child, depth + 1, count, leaf) if child is not None else None
        if node is None:
            return None
        children[name] = node
    return {"class": target, "children": children}


def _plain(model: torch.nn.Module) -> bool:
    """No hooks, per-instance ``forward``, shared submodules or shared parameters (a rebuild would lose them)."""
    modules = list(model.named_modules(remove_duplicate=False))
    if len(modules) != len({id(m) for _, m in modules}):
        return False
    tensors = [id(t) for _, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]]
    if len(tensors) != len(set(tensors)):
        return False
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return not any("forward" in m.__dict__ or any(getattr(m, h, None) for h in hooks) for _, m in modules)


def _same(model: torch.nn.Module, rebuilt: torch.nn.Module) -> bool:
    """Same state-dict keys, shapes and dtype kinds; same type and ``extra_repr()`` for every submodule."""
    want, got = model.state_dict(), rebuilt.state_dict()
    if list(want) != list(got):
        return False
    for key, a in want.items():
        b = got[key]
        if tuple(a.shape) != tuple(b.shape) or a.is_floating_point() != b.is_floating_point():
            return False
        if not a.is_floating_point() and a.dtype != b.dtype:
            return False
    mine, theirs = list(model.named_modules()), list(rebuilt.named_modules())
    if [n for n, _ in mine] != [n for n, _ in theirs]:
        return False
    return all(type(a) is type(b) and a.extra_repr() == b.extra_repr() for (_, a), (_, b) in zip(mine, theirs, strict=True))


def describe_tree(model: torch.nn.Module, construct: Construct, builder: LeafBuilder | None = None) -> dict[str, Any] | None:
    """The ``"tree"`` of a container of allow-listed layers, if load rebuilds exactly ``model`` from it.

    ``builder`` names a leaf whose init arguments are not plain data (a torchvision model).

    Example:
        >>> from nbmodelpack.pytorch.restore import construct
        >>> describe_tree(torch.nn.Sequential(torch.nn.ReLU()), construct)["children"]["0"]
        {'class': 'torch.nn.modules.activation:ReLU', 'kwargs': {'inplace': False}}
    """
    if type(model) not in _CONTAINER_TARGETS or not _plain(model):
        return None
    trusted = trusted_modules()
    tree = _node(model, 0, [0], lambda m: _leaf(m, construct, trusted, builder))
    if tree is None:
        return None
    try:
        rebuilt = build_tree(tree, None, construct, trust_code=False)
    except ArchitectureError:  # a leaf outside the allow-list, or one that does not build on meta
        return None
    return tree if _same(model, rebuilt) else None


def _split_state(state: Mapping[str, torch.Tensor], leaves: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    """``state`` grouped by the leaf that owns each key (keys relative to that leaf)."""
    out: dict[str, dict[str, torch.Tensor]] = {path: {} for path in leaves}
    for key, tensor in state.items():
        parts = key.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in leaves:
                out[prefix][".".join(parts[i:])] = tensor
                break
    return out


def build_tree(
    tree: object, state: Mapping[str, torch.Tensor] | None, construct: Construct, *, trust_code: bool = False
) -> torch.nn.Module:
    """Build the module a ``"modules"`` tree describes, every leaf on the meta device.

    The whole tree is checked first (structure, sizes, every target against the
    allow-list, plain kwargs); then each leaf is resolved like a class target and built
    by ``construct`` with its part of ``state`` (to size the buffers it may make).

    Example:
        >>> from nbmodelpack.pytorch.restore import construct
        >>> leaf = {"class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 2, "out_features": 1}}
        >>> build_tree({"class": "torch.nn.modules.container:Sequential", "children": {"0": leaf}}, None, construct)
        Sequential(
          (0): Linear(in_features=2, out_features=1, bias=True)
        )
    """
    trusted = trusted_modules()
    nodes = tree_nodes(tree, trusted, trust_code=trust_code)
    leaves = {
        path: resolve_architecture(node.get("class"), node.get("kwargs"), trust_code=trust_code, trusted=trusted)
        for path, node in nodes
        if node.get("class") not in CONTAINERS
    }
    parts = _split_state(state, set(leaves)) if state is not None else None
    built: dict[str, torch.nn.Module] = {}
    for path, node in reversed(nodes):  # children before their parents
        if path in leaves:
            factory, kwargs = leaves[path]
            built[path] = construct(factory, kwargs, None if parts is None else parts[path])
            continue
        kind = CONTAINERS[str(node.get("class"))]
        children = OrderedDict((name, built.pop(f"{path}.{name}" if path else name)) for name in node["children"])
        try:
            if kind == "Sequential":
                built[path] = torch.nn.Sequential(children)
            elif kind == "ModuleList":
                built[path] = torch.nn.ModuleList(children.values())
            else:
                built[path] = torch.nn.ModuleDict(children)
        except (KeyError, TypeError, ValueError) as exc:  # e.g. a child named like an attribute ("forward")
            raise ArchitectureError(f"architecture.json {kind} at {path[:80] or 'the root'!r} cannot hold its children: {str(exc)[:80]}", hint="re-pack the model") from exc
    return built[""]
