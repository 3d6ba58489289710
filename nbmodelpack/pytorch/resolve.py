"""Turn an ``architecture.json`` class target into something safe to call.

Nothing is called here: the target is parsed, its module checked against the
allow-list (:mod:`nbmodelpack.bundle.architecture`, the same rules the listings
print), imported, and the object found must be a ``torch.nn.Module`` subclass
(or one of torchvision's registered model builders) before the caller builds it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..bundle.architecture import TRUST_HINT, check_target, module_allowed, plain_kwargs
from ..config import trusted_modules
from ..errors import ArchitectureError

# Builder arguments that would download weights (network I/O decided by a bundle).
_DOWNLOADING_KWARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")

Factory = Callable[..., torch.nn.Module]


def _torchvision_builder(obj: object) -> bool:
    """Is ``obj`` a model builder registered in ``torchvision.models`` (e.g. ``resnet18``)?"""
    if not inspect.isfunction(obj) or not obj.__module__.startswith("torchvision.models"):
        return False
    import torchvision.models

    try:
        return torchvision.models.get_model_builder(obj.__name__) is obj
    except ValueError:
        return False


def resolve_architecture(
    target: object, kwargs: object = None, *, trust_code: bool = False, trusted: Sequence[str] | None = None
) -> tuple[Factory, dict[str, Any]]:
    """``(factory, kwargs)`` for a ``module:Qualname`` target, checked before anything is called.

    Without ``trust_code`` the module must be torch, torchvision or listed in
    ``[trust] modules``; the target must be a ``torch.nn.Module`` subclass (or a
    registered torchvision builder called without downloadable weights); the
    kwargs must be plain JSON data.

    Example:
        >>> factory, kw = resolve_architecture("torch.nn.modules.linear:Linear", {"in_features": 4, "out_features": 2})
        >>> factory(**kw)
        Linear(in_features=4, out_features=2, bias=True)
    """
    allowed = trusted_modules() if trusted is None else list(trusted)
    module_name, qualname = check_target(target, allowed, trust_code=trust_code)
    arguments = plain_kwargs(kwargs)
    where = f"{module_name}:{qualname}"
    try:
        obj: Any = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # an (allowed) module's top level may raise anything, SystemExit included
        raise ArchitectureError(f"cannot import {where}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}") from exc
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        if i and not inspect.isclass(obj):
            raise ArchitectureError(f"{where} is not a class", hint=TRUST_HINT)
        obj = inspect.getattr_static(obj, part, None) if i else getattr(obj, part, None)
        if obj is None:
            raise ArchitectureError(f"cannot import {where}: no attribute {part}")
    if inspect.isclass(obj):
        if not issubclass(obj, torch.nn.Module):
            raise ArchitectureError(f"{where} is not a torch.nn.Module class", hint="re-pack the model")
        if not trust_code and not module_allowed(obj.__module__, allowed):
            raise ArchitectureError(f"{where} is defined in {obj.__module__}, which is not an allowed module", hint=TRUST_HINT)
        return obj, arguments
    if _torchvision_builder(obj):
        downloads = [k for k in _DOWNLOADING_KWARGS if arguments.get(k)]
        if downloads:
            raise ArchitectureError(f"{where} would download weights ({downloads[0]}=...)", hint="the bundle's own weights are used; re-pack without it")
        return obj, arguments
    if trust_code and callable(obj):
        return obj, arguments
    raise ArchitectureError(f"{where} is a {type(obj).__name__}, not a torch.nn.Module class", hint=TRUST_HINT)
