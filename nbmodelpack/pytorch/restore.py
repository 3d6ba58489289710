"""Bundle → module: rebuild the architecture, put the weights back, eval mode.

Which form comes back is decided by :func:`rebuild`, without running code the
bundle was not allowed to run; ``module.bundle_form`` says which one it was.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
import types
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from ..bundle.architecture import check_int8_kernel, check_target, parse_target, plain_kwargs
from ..config import trusted_modules
from ..errors import ArchitectureError, BundleFormatError, ModelPackError
from ..store import StoredBundle
from .graph import LOADED_ARCHITECTURE, trainable
from .int8dynamic import chosen_int8_kernel, use_int8_kernels
from .pt2archive import check_archive
from .resolve import Factory, resolve_architecture
from .tensors import join_aliases, owner_and_attr
from .tree import build_tree
from .weights import check_device, load_state

__all__ = ["construct", "load_state", "put_weights", "rebuild", "restore"]

# A module's __init__ may make buffers the state dict lacks (non-persistent caches); building it
# for real may allocate at most this much beyond the stored weights.
_EXTRA_BUFFER_BYTES = 256 * 2**20


def construct(factory: Factory, kwargs: dict[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Build ``factory(**kwargs)`` on the meta device (no random init of big weights).

    Built for real only when ``__init__`` fails on meta, or makes buffers that
    ``state`` lacks, and then only if those buffers are of bounded size.

    Example:
        >>> construct(torch.nn.Linear, {"in_features": 2, "out_features": 1}).weight.is_meta
        True
    """
    name = getattr(factory, "__name__", "the factory")
    try:
        with torch.device("meta"):
            module = factory(**kwargs)
    except Exception as exc:
        # A real build would allocate whatever the init arguments ask for (a bundle's choice),
        # and pack only picks the class form when the meta build works.
        raise ArchitectureError(f"{name} cannot be built on the meta device: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}", hint="re-pack the model") from exc
    if not isinstance(module, torch.nn.Module):
        raise ArchitectureError(f"{name} did not return a torch.nn.Module")
    extra = [b for n, b in module.named_buffers() if b.is_meta and n not in (state or {})]
    if extra and state is not None:
        size = sum(b.numel() * b.element_size() for b in extra)
        if size > _EXTRA_BUFFER_BYTES:
            raise ArchitectureError(f"rebuilding needs {size / 2**20:.0f} MiB of buffers the bundle does not hold", hint="re-pack the model")
        # Built for real only when everything else is exactly what the bundle holds: the real
        # build then allocates no more than the stored weights plus those small buffers.
        for key, tensor in module.state_dict().items():
            if key in state and tuple(state[key].shape) != tuple(tensor.shape):
                raise ArchitectureError(f"{key} is {tuple(tensor.shape)} in {name} but {tuple(state[key].shape)} in the bundle", hint="the weights do not fit the architecture")
        module = factory(**kwargs)
        if not isinstance(module, torch.nn.Module):
            raise ArchitectureError(f"{getattr(factory, '__name__', 'the factory')} did not return a torch.nn.Module")
    return module


def put_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], versions: dict[str, int] | None = None) -> torch.nn.Module:
    """Load ``state`` into ``module`` (meta tensors replaced, tied weights kept tied).

    ``versions`` are the per-submodule state-dict versions recorded at pack time
    (some modules, e.g. torchvision's MNASNet, refuse weights without them); the
    module's own versions fill in the rest.

    Example:
        >>> put_weights(torch.nn.Linear(2, 1), {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}).weight.sum().item()
        2.0
    """
    expected = set(module.state_dict().keys())
    missing = sorted(expected - state.keys())
    if missing:
        raise BundleFormatError(f"the weights lack {len(missing)} tensors (e.g. {missing[0]})")
    # assign=True replaces each parameter one by one, which would untie tied weights:
    # remember which names share one tensor and tie them again afterwards.
    groups: dict[int, list[str]] = {}
    for name, tensor in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), []).append(name)
    wanted: OrderedDict[str, torch.Tensor] = OrderedDict((k, state[k]) for k in sorted(expected))
    own = getattr(module.state_dict(), "_metadata", None)
    metadata = OrderedDict((k, dict(v)) for k, v in (own or {}).items())
    for prefix, version in (versions or {}).items():
        if prefix in metadata:
            metadata[prefix]["version"] = version
    wanted._metadata = metadata  # type: ignore[attr-defined]  # how torch passes versions to _load_from_state_dict
    try:
        module.load_state_dict(wanted, strict=True, assign=True)
    except (RuntimeError, ValueError) as exc:
        raise BundleFormatError(f"weights do not fit the architecture: {str(exc).splitlines()[0][:160]}") from exc
    for first, *others in (names for names in groups.values() if len(names) > 1):
        keep = owner_and_attr(module, first)
        for other in others:
            setattr(*owner_and_attr(module, other), getattr(*keep))
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise ArchitectureError(f"{leftover[0]} has no weights after loading")
    return module


def _versions(arch: dict[str, Any]) -> dict[str, int]:
    raw = arch.get("versions")
    if not isinstance(raw, dict):
        return {}
    return {str(k)[:4096]: v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _import_output_types(arch: dict[str, Any]) -> None:
    """Import the packed class's module if it is allowed: it registers the graph's output pytree types.

    (transformers' ``ModelOutput`` classes exist only once their module is imported.)
    """
    with contextlib.suppress(ArchitectureError):
        module_name, _ = check_target(arch.get("class"), trusted_modules())
        with contextlib.suppress(Exception):  # an allowed module that fails to import leaves the graph to fail clearly
            importlib.import_module(module_name)


def _exported(bundle: StoredBundle, arch: dict[str, Any], identity: Any) -> torch.nn.Module:
    """The module of ``model.pt2``, accepted only with the entries our packer writes."""
    blob = bundle.plaintext("model.pt2", identity=identity)
    check_archive(blob)  # before torch sees it: torch.export.load unpickles and evals
    _import_output_types(arch)
    try:
        program = torch.export.load(io.BytesIO(blob))
        return program.module()
    except Exception as exc:
        raise BundleFormatError(f"model.pt2 cannot be loaded: {str(exc).splitlines()[0][:160]}") from exc


def _graph(bundle: StoredBundle, arch: dict[str, Any], state: dict[str, torch.Tensor], identity: Any) -> torch.nn.Module:
    module = trainable(put_weights(_exported(bundle, arch, identity), state))
    setattr(module, LOADED_ARCHITECTURE, {"class": arch.get("class"), "kwargs": arch.get("kwargs"), "source": bool(arch.get("source"))})
    return module


def live_class(arch: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module | None:
    """An instance of the class with the stored name defined in this process's ``__main__``, if it fits.

    It fits when building it with the stored (plain JSON) init arguments gives the
    stored state-dict keys and shapes. Nothing from the bundle runs: the class and
    its ``__init__`` are the caller's own.
    """
    try:
        module_name, qualname = parse_target(arch.get("class"))
        kwargs = plain_kwargs(arch.get("kwargs"))
    except ArchitectureError:
        return None
    main = sys.modules.get("__main__")
    if module_name != "__main__" or "kwargs" not in arch or main is None:
        return None
    obj: Any = main
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part, None)
    if not inspect.isclass(obj) or not issubclass(obj, torch.nn.Module) or obj.__module__ != "__main__":
        return None
    try:
        module = construct(obj, kwargs, state)
    except Exception:  # the caller's class with other arguments: not the packed model
        return None
    want = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return module if got == want else None


def _from_source(bundle: StoredBundle, arch: dict[str, Any], state: dict[str, torch.Tensor], identity: Any) -> torch.nn.Module:
    """Execute the stored source (the caller passed ``trust_code=True``) and build its class."""
    filepath = str(arch.get("source") or arch.get("file") or "model_src.py")
    src = bundle.plaintext(filepath, identity=identity).decode()
    mod = types.ModuleType(f"nbmodelpack_src_{bundle.digest[7:19]}")
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"<{bundle.name}/{filepath}>", "exec"), mod.__dict__)  # noqa: S102 - trust_code=True
    _, qualname = parse_target(arch.get("class"))
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not inspect.isclass(obj) or not issubclass(obj, torch.nn.Module):
        raise ArchitectureError(f"{filepath} defines no torch.nn.Module class {qualname}", hint="re-pack the model")
    return put_weights(construct(obj, plain_kwargs(arch.get("kwargs")), state), state, _versions(arch))


def rebuild(
    bundle: StoredBundle,
    state: dict[str, torch.Tensor],
    *,
    trust_code: bool = False,
    identity: Any = None,
    live: bool = True,
) -> tuple[torch.nn.Module, str]:
    """Rebuild the module ``architecture.json`` describes, load ``state``; return it and its form.

    Forms, best first: ``class`` (an allowed importable class), ``modules`` (a container
    tree of allowed layers, built from data), ``live class`` (the
    same class defined in this process's ``__main__``), ``source`` (stored source,
    only with ``trust_code``), ``graph`` (the export graph, made trainable).
    ``live=False`` skips the class of this process (what a fresh process gets).
    """
    arch = bundle.read_json("architecture.json", identity=identity)
    if not isinstance(arch, dict) or "strategy" not in arch:
        raise BundleFormatError("architecture.json has no strategy")
    state = join_aliases(state, dict(arch.get("aliases", {})))
    versions = _versions(arch)
    strategy = arch["strategy"]
    if strategy == "class":
        try:
            factory, kwargs = resolve_architecture(arch.get("class"), arch.get("kwargs"), trust_code=trust_code)
        except ArchitectureError:
            # A class load may not import still loads as the export graph stored beside it.
            if arch.get("file") != "model.pt2" or not bundle.has("model.pt2"):
                raise
            return _graph(bundle, arch, state, identity), "graph"
        return put_weights(construct(factory, kwargs, state), state, versions), "class"
    if strategy == "modules":
        return put_weights(build_tree(arch.get("tree"), state, construct, trust_code=trust_code), state, versions), "modules"
    if strategy == "export":
        same = live_class(arch, state) if live else None
        if same is not None:
            return put_weights(same, state, versions), "live class"
        if trust_code and arch.get("source"):
            return _from_source(bundle, arch, state, identity), "source"
        return _graph(bundle, arch, state, identity), "graph"
    if strategy == "source":
        if not trust_code:
            raise ArchitectureError(
                f"{bundle.name} stores its model class as source code, which load would run",
                hint="pass trust_code=True if you trust who packed it; "
                "being in your store or signed does not grant that",
            )
        return _from_source(bundle, arch, state, identity), "source"
    raise BundleFormatError(f"unknown architecture strategy {strategy!r}")


def form_note(module: torch.nn.Module) -> str | None:
    """One line for the doors when ``load`` returned the export graph, saying how to get the class.

    Example:
        >>> form_note(torch.nn.Linear(1, 1)) is None
        True
    """
    if getattr(module, "bundle_form", None) != "graph":
        return None
    info = getattr(module, "bundle_info", None)
    ref = getattr(info, "ref", None) or "the bundle"
    arch = getattr(module, LOADED_ARCHITECTURE, None) or {}
    module_name, _, qualname = str(arch.get("class") or "").partition(":")
    name = qualname.rsplit(".", 1)[-1] or "the model class"
    if module_name == "__main__":
        how = f"define class {name} in this kernel" + (" (or pass trust_code=True)" if arch.get("source") else "")
    elif arch.get("kwargs") is not None:
        how = f"list {module_name or 'its module'} under [trust] modules in config.toml"
    else:  # e.g. a class built from a config object: no plain init arguments were recorded
        return f"loaded {ref} as an export graph (trainable); {name} has no plain-JSON init arguments to rebuild it from"
    return f"loaded {ref} as an export graph (trainable); {how} to get {name} back"


def restore(
    bundle: StoredBundle,
    *,
    trust_code: bool = False,
    identity: Any = None,
    device: str = "cpu",
    dequantize: bool = False,
    verify: bool = False,
    int8_kernel: str | None = None,
) -> torch.nn.Module:
    """Rebuild the module in eval mode; ``module.bundle_info`` is its :class:`BundleInfo`, ``module.bundle_form`` its form.

    int8 weights are dequantized at load (weight-only: float kernels, outputs
    independent of the batch). ``int8_kernel="dynamic"`` runs int8 Linear layers
    on torch's dynamic int8 CPU kernel instead; ``None`` follows what compress
    recorded in the recipe; ``dequantize=True`` is ``int8_kernel="weight-only"``.
    ``verify=True`` re-hashes the weights even when the store recorded them as intact.
    """
    dev = check_device(device)
    kernel = chosen_int8_kernel(bundle.manifest.recipe, "weight-only" if dequantize else check_int8_kernel(int8_kernel))
    try:
        dynamic = kernel == "dynamic" and dev.type == "cpu"
        packed: dict[str, Any] = {}  # int8 copies are kept only for the dynamic kernel
        # Weights are mapped straight onto the device (safetensors copies each tensor there, no CPU copy of the model).
        state = load_state(bundle, identity=identity, packed=packed if dynamic else None, device=dev, verify=verify)
        module, form = rebuild(bundle, state, trust_code=trust_code, identity=identity)
        if packed and dynamic:
            use_int8_kernels(module, packed)
    except ModelPackError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"cannot rebuild {bundle.name}: {str(exc).splitlines()[0][:200]}") from exc
    return finish(module, form, bundle, dev)


def finish(module: torch.nn.Module, form: str, bundle: StoredBundle, device: str | torch.device) -> torch.nn.Module:
    """The loaded module on ``device``, in eval mode, carrying ``bundle_info`` and ``bundle_form``.

    Example:
        >>> finish(torch.nn.Linear(1, 1), "class", bundle, "cpu").bundle_form  # doctest: +SKIP
        'class'
    """
    module = module.to(device)
    module.eval()
    module.bundle_info = bundle.info  # type: ignore[assignment]  # plain attribute, not a submodule
    module.bundle_form = form  # type: ignore[assignment]  # "class", "modules", "live class", "source" or "graph"
    return module
