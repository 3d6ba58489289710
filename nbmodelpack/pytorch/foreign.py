"""Build the module of an artifact without ``architecture.json`` (another tool's ModelPack artifact).

Two ways, nothing chosen by the artifact's code:

- a Hugging Face ``config.json`` with a ``model_type``: transformers builds that
  model type's own class (the one ``config.json``'s ``architectures`` names when it
  belongs to that model type, else the base model) from the config. No
  ``trust_remote_code``: ``auto_map`` is dropped, so no code from the artifact or
  the Hub runs, and nothing is downloaded.
- ``arch="module.Class"`` from the caller: a class the allow-list permits (torch,
  torchvision, ``[trust] modules``), built with no arguments, or a transformers
  model class, built from ``config.json``. transformers classes are allowed for
  ``arch`` by default because they are built only through their own config class;
  a bundle's ``architecture.json`` naming transformers still needs ``[trust]
  modules`` (it chooses a callable and its arguments, e.g. ``transformers:pipeline``).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

from ..bundle.architecture import check_target
from ..bundle.foreign import HF_CONFIG, holdings
from ..config import trusted_modules
from ..errors import ArchitectureError, BundleFormatError, ModelPackError, UsageError
from ..store import StoredBundle
from .restore import construct, finish, load_state, put_weights

# Keys of config.json that would make transformers look for code outside its own package.
_REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")


def target_of(arch: str) -> str:
    """``module:Qualname`` for an ``arch`` given as ``module.Class`` or ``module:Class``.

    Example:
        >>> target_of("transformers.BertModel")
        'transformers:BertModel'
    """
    if ":" in arch:
        return arch
    module, _, name = arch.rpartition(".")
    if not module:
        raise UsageError(f"arch {arch!r:.80} names no module", hint="give it as module.Class, e.g. transformers.BertModel")
    return f"{module}:{name}"


def _hf_config(bundle: StoredBundle, identity: Any) -> Any:
    """``config.json`` as a transformers config object of its own model type (no remote code)."""
    from transformers import AutoConfig

    doc = bundle.read_json(HF_CONFIG, identity=identity)
    if not isinstance(doc, dict) or not isinstance(doc.get("model_type"), str):
        raise BundleFormatError(f"{HF_CONFIG} has no model_type", hint="pass arch='module.Class'")
    fields = {k: v for k, v in doc.items() if k not in (*_REMOTE_CODE_KEYS, "model_type")}
    try:
        return AutoConfig.for_model(doc["model_type"], **fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchitectureError(f"transformers cannot read {HF_CONFIG}: {str(exc).splitlines()[0][:120]}", hint="pass arch='module.Class' or update transformers") from exc


def _own_class(config: Any) -> Any:
    """The class ``architectures`` names if it is this model type's own, else the model type's base model."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
        if inspect.isclass(cls) and getattr(cls, "config_class", None) is type(config):
            return cls
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise ArchitectureError(f"transformers has no model for {config.model_type}", hint="pass arch='module.Class'") from None


def _user_class(arch: str, trust_code: bool) -> Any:
    target = target_of(arch)
    module_name, qualname = target.split(":", 1)
    if module_name.split(".")[0] != "transformers":
        module_name, qualname = check_target(target, trusted_modules(), trust_code=trust_code)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"arch {arch}: cannot import {module_name} ({exc.msg[:80]})", hint="install it, or give another class") from exc
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not inspect.isclass(obj) or not issubclass(obj, torch.nn.Module):
        raise UsageError(f"arch {arch} is not a torch.nn.Module class")
    if module_name.split(".")[0] == "transformers" and not hasattr(obj, "config_class"):
        raise UsageError(f"arch {arch}: only transformers model classes (built from {HF_CONFIG}) are allowed without [trust] modules")
    return obj


def rebuild_foreign(
    bundle: StoredBundle, state: dict[str, torch.Tensor], *, arch: str | None, trust_code: bool, identity: Any
) -> tuple[torch.nn.Module, str]:
    """The module for ``state`` without ``architecture.json``: from ``arch`` or ``config.json``; returns it and its form."""
    if arch is not None:
        cls = _user_class(arch, trust_code)
        if hasattr(cls, "config_class") and cls.__module__.startswith("transformers."):
            module, form = construct(cls, {"config": _hf_config(bundle, identity)}, state), "transformers"
        else:
            module, form = construct(cls, {}, state), "class"
    else:
        config = _hf_config(bundle, identity)
        module, form = construct(_own_class(config), {"config": config}, state), "transformers"
    _check_all_used(module, state)
    return put_weights(module, state), form


def _check_all_used(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Refuse weights the class has no place for: a class chosen without ``architecture.json`` may be the wrong one."""
    places = set(module.state_dict()) | {name for name, _ in module.named_buffers()}
    unused = sorted(state.keys() - places)
    if unused:
        raise BundleFormatError(
            f"model.safetensors holds {len(unused)} tensors {type(module).__name__} has no place for (e.g. {unused[0][:80]})",
            hint="these are not the weights of that class; give the class they belong to",
        )


def restore_foreign(
    bundle: StoredBundle, *, arch: str | None = None, trust_code: bool = False, identity: Any = None, device: str = "cpu", verify: bool = False
) -> torch.nn.Module:
    """Load an artifact without ``architecture.json`` (or with ``arch`` chosen by the caller), as :func:`restore` does.

    Example:
        >>> restore_foreign(store.open("bert-tiny:1")).bundle_form  # doctest: +SKIP
        'transformers'
    """
    if arch is None:
        model_type, line = bundle.foreign_plan()
        if model_type is None:
            raise ArchitectureError(f"cannot load {bundle.name}: {line}", hint='pass arch="module.Class" for weights whose class you know')
    if not bundle.weight_files():
        raise BundleFormatError(f"cannot load {bundle.name}: no model.safetensors; it holds {holdings(bundle.manifest.layers)}")
    try:
        state = load_state(bundle, identity=identity, verify=verify)
        module, form = rebuild_foreign(bundle, state, arch=arch, trust_code=trust_code, identity=identity)
    except ModelPackError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"cannot build {bundle.name}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc
    return finish(module, form, bundle, device)
