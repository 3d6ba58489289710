"""Bundle → module: rebuild the architecture, put the weights back, eval mode."""

from __future__ import annotations

import contextlib
import io
import sys
import types
from typing import Any

import safetensors.torch
import torch

from ..bundle import mediatypes as mt
from ..bundle.architecture import plain_kwargs
from ..errors import ArchitectureError, BundleFormatError, ModelPackError
from ..store import StoredBundle
from .pt2archive import check_archive
from .quantize import dequantize_state, read_meta, use_int8_kernels
from .resolve import Factory, resolve_architecture
from .tensors import join_aliases, owner_and_attr

# A module's __init__ may make buffers the state dict lacks (non-persistent caches); building it
# for real may allocate at most this much beyond the stored weights.
_EXTRA_BUFFER_BYTES = 256 * 2**20


def load_state(
    bundle: StoredBundle, *, identity: Any = None, packed: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, decrypted/decompressed in memory, verified.

    Quantized or cast weights come back as float tensors; int8 Linear weights
    are also put in ``packed`` (name → (int8, scale)) for the fast int8 path.
    """
    desc = bundle.descriptor("model.safetensors")
    try:
        if desc.media_type == mt.base_media_type(desc.media_type):
            # Plain layer: safetensors maps the blob file while a second thread hashes it.
            path = bundle.store.blob_path(desc.digest)
            check = bundle.store.verify_in_background(desc.digest, what="model.safetensors")
            try:
                state = safetensors.torch.load_file(path)
                with open(path, "rb") as f:
                    head = f.read(8)
                    head += f.read(int.from_bytes(head, "little")) if len(head) == 8 else b""
            finally:
                check()  # a damaged blob is an integrity error before anything else
        else:
            head = bundle.plaintext("model.safetensors", identity=identity)
            state = safetensors.torch.load(head)
    except ModelPackError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise BundleFormatError(f"model.safetensors cannot be read: {str(exc)[:120]}", hint="the file is truncated or not safetensors") from exc
    meta = read_meta(head)
    return dequantize_state(state, meta, packed=packed) if meta else state


def construct(factory: Factory, kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """Build ``factory(**kwargs)`` on the meta device (no random init of big weights).

    Built for real only when ``__init__`` fails on meta, or makes buffers that
    ``state`` lacks, and then only if those buffers are of bounded size.

    Example:
        >>> construct(torch.nn.Linear, {"in_features": 2, "out_features": 1}).weight.is_meta
        True
    """
    try:
        with torch.device("meta"):
            module = factory(**kwargs)
    except Exception:
        module = factory(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ArchitectureError(f"{getattr(factory, '__name__', 'the factory')} did not return a torch.nn.Module")
    extra = [b for n, b in module.named_buffers() if b.is_meta and n not in (state or {})]
    if extra and state is not None:
        size = sum(b.numel() * b.element_size() for b in extra)
        if size > _EXTRA_BUFFER_BYTES:
            raise ArchitectureError(f"rebuilding needs {size / 2**20:.0f} MiB of buffers the bundle does not hold", hint="re-pack the model")
        module = factory(**kwargs)
        if not isinstance(module, torch.nn.Module):
            raise ArchitectureError(f"{getattr(factory, '__name__', 'the factory')} did not return a torch.nn.Module")
    return module


def put_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load ``state`` into ``module`` (meta tensors replaced, tied weights kept tied).

    Example:
        >>> put_weights(torch.nn.Linear(2, 1), {"weight": torch.ones(1, 2), "bias": torch.zeros(1)}).weight.sum().item()
        2.0
    """
    expected = set(module.state_dict().keys())
    missing = sorted(expected - state.keys())
    if missing:
        raise BundleFormatError(f"model.safetensors lacks {len(missing)} tensors (e.g. {missing[0]})")
    # assign=True replaces each parameter one by one, which would untie tied weights:
    # remember which names share one tensor and tie them again afterwards.
    groups: dict[int, list[str]] = {}
    for name, tensor in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), []).append(name)
    try:
        module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    except RuntimeError as exc:
        raise BundleFormatError(f"weights do not fit the architecture: {str(exc).splitlines()[0][:160]}") from exc
    for first, *others in (names for names in groups.values() if len(names) > 1):
        keep = owner_and_attr(module, first)
        for other in others:
            setattr(*owner_and_attr(module, other), getattr(*keep))
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise ArchitectureError(f"{leftover[0]} has no weights after loading")
    return module


def _exported(bundle: StoredBundle, identity: Any) -> torch.nn.Module:
    """The module of ``model.pt2``, accepted only with the entries our packer writes."""
    blob = bundle.plaintext("model.pt2", identity=identity)
    check_archive(blob)  # before torch sees it: torch.export.load unpickles and evals
    try:
        program = torch.export.load(io.BytesIO(blob))
    except Exception as exc:
        raise BundleFormatError(f"model.pt2 cannot be loaded: {str(exc).splitlines()[0][:160]}") from exc
    return program.module()


def rebuild(
    bundle: StoredBundle,
    state: dict[str, torch.Tensor],
    *,
    trust_code: bool = False,
    identity: Any = None,
) -> torch.nn.Module:
    """Rebuild the module that ``architecture.json`` describes and load ``state`` into it."""
    arch = bundle.read_json("architecture.json", identity=identity)
    if not isinstance(arch, dict) or "strategy" not in arch:
        raise BundleFormatError("architecture.json has no strategy")
    state = join_aliases(state, dict(arch.get("aliases", {})))
    strategy = arch["strategy"]
    if strategy == "class":
        try:
            factory, kwargs = resolve_architecture(arch.get("class"), arch.get("kwargs"), trust_code=trust_code)
        except ArchitectureError:
            # A class load may not import still loads as the export graph stored beside it.
            if arch.get("file") != "model.pt2" or not bundle.has("model.pt2"):
                raise
            return put_weights(_exported(bundle, identity), state)
        return put_weights(construct(factory, kwargs, state), state)
    if strategy == "export":
        return put_weights(_exported(bundle, identity), state)
    if strategy == "source":
        if not trust_code:
            raise ArchitectureError(
                f"{bundle.name} stores its model class as source code, which load would run",
                hint="pass trust_code=True (or --trust-code) if you trust who packed it",
            )
        src = bundle.plaintext(str(arch.get("file", "model_src.py")), identity=identity).decode()
        mod = types.ModuleType(f"nbmodelpack_src_{bundle.digest[7:19]}")
        sys.modules[mod.__name__] = mod
        exec(compile(src, f"<{bundle.name}/model_src.py>", "exec"), mod.__dict__)  # noqa: S102 - trust_code=True
        cls = getattr(mod, str(arch["class"]).split(":", 1)[1])
        return put_weights(construct(cls, plain_kwargs(arch.get("kwargs")), state), state)
    raise BundleFormatError(f"unknown architecture strategy {strategy!r}")


def restore(
    bundle: StoredBundle, *, trust_code: bool = False, identity: Any = None, device: str = "cpu", dequantize: bool = False
) -> torch.nn.Module:
    """Rebuild the module in eval mode; ``module.bundle_info`` is its :class:`BundleInfo`.

    int8 Linear weights run on the int8 CPU kernel where torch has one, unless
    ``dequantize=True`` (plain float weights: the portable path).
    """
    try:
        packed: dict[str, Any] = {}
        state = load_state(bundle, identity=identity, packed=packed)
        module = rebuild(bundle, state, trust_code=trust_code, identity=identity)
        if packed and not dequantize and device == "cpu":
            use_int8_kernels(module, packed)
    except ModelPackError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"cannot rebuild {bundle.name}: {str(exc).splitlines()[0][:200]}") from exc
    module = module.to(device)
    with contextlib.suppress(NotImplementedError):
        module.eval()  # exported graphs were traced in eval mode and refuse .eval()
    module.bundle_info = bundle.info  # type: ignore[assignment]  # plain attribute, not a submodule
    return module
