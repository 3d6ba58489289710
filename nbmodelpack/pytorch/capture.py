"""Module → bundle: weights, architecture, I/O signature, processing.

The architecture is captured in the first way that works:
1. ``class``  – an importable class (or a registered torchvision builder such as
   ``resnet18``) and plain JSON init arguments; ``load`` imports it only from an allowed
   module (see :mod:`nbmodelpack.bundle.architecture`), so for a class from any other
   module the export graph is stored too (``"file": "model.pt2"``);
2. ``modules`` – a ``Sequential``/``ModuleList``/``ModuleDict`` tree of allow-listed layers,
   described as data (see :mod:`nbmodelpack.pytorch.tree`): no graph, no ``torch.export``;
3. ``export`` – a ``torch.export`` graph (every dimension dynamic that the model allows)
   whose weights are stripped (meta tensors), so ``model.safetensors`` stays the only
   copy of the weights. For a ``__main__``/notebook class it also records the init
   arguments (so ``load`` can rebuild the same class defined in the loading kernel) and,
   when Python can find it, the class source with what it uses (``model_src.py``, run
   only with ``trust_code``; see :mod:`nbmodelpack.pytorch.source`);
4. ``source`` – the class source alone, stored only when the caller passes
   ``trust_code=True`` and the model cannot be exported.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..bundle import mediatypes as mt
from ..bundle.architecture import module_allowed
from ..bundle.draft import Draft
from ..bundle.manifest import Descriptor
from ..config import trusted_modules
from ..errors import ArchitectureError, UsageError
from ..store import Store
from .exporting import example_args, export_archive
from .exporting import (
    export_program as export_program,  # re-exported: prune and compression import it from here
)
from .graph import LOADED_ARCHITECTURE
from .resolve import resolve_architecture
from .restore import construct
from .source import main_source
from .tensors import V2_DATATYPES, dtype_name, split_aliases
from .tree import class_path as _class_path
from .tree import describe_tree
from .tree import guess_init_kwargs as _guess_init_kwargs
from .tree import is_json as _is_json
from .weights import SafetensorsStream, weight_files

# A captured file: its bytes, a function that writes it to a path, or a stream of the weights' own memory.
FileContent = bytes | Callable[[Path], None] | SafetensorsStream


@dataclass
class Captured:
    """The files of a bundle before they are stored, plus what the card shows."""

    files: list[tuple[str, str, FileContent]] = field(default_factory=list)  # (filepath, media type, content)
    architecture: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    precision: str = "float32"
    example_output: Any = None  # the model's output on the example, in eval mode (pack's load check reuses it)


# ---- architecture ---------------------------------------------------------------------------
def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def _rebuilds(factory: Any, kwargs: dict[str, Any], model: torch.nn.Module) -> bool:
    """Does ``factory(**kwargs)`` build a module with the same state-dict keys and shapes?"""
    try:
        with torch.device("meta"):
            candidate = factory(**kwargs)
    except Exception:
        return False
    if not isinstance(candidate, torch.nn.Module):
        return False
    want = {k: v[0] for k, v in _shapes(model.state_dict()).items()}
    got = {k: v[0] for k, v in _shapes(candidate.state_dict()).items()}
    return want == got


def _torchvision_builder(model: torch.nn.Module) -> tuple[str, dict[str, Any]] | None:
    """A registered torchvision builder (and ``num_classes``) that rebuilds ``model``, if one does.

    Classes such as ``ResNet`` take a block class as init argument (not JSON), but
    their builders (``resnet18``) take only plain arguments.
    """
    cls = type(model)
    if not cls.__module__.startswith("torchvision.models"):
        return None
    import torchvision.models

    heads = [p for p in model.parameters() if p.dim() == 2]
    candidates: list[dict[str, Any]] = [{}]
    if heads:
        candidates.append({"num_classes": int(heads[-1].shape[0])})
    for name in torchvision.models.list_models():
        builder = torchvision.models.get_model_builder(name)
        if inspect.signature(builder).return_annotation is not cls:
            continue
        for kwargs in candidates:
            if _rebuilds(builder, kwargs, model):
                return f"{builder.__module__}:{builder.__name__}", kwargs
    return None


def _source(cls: type) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError) as exc:
        raise ArchitectureError(f"no source found for {cls.__qualname__}") from exc
    header = "import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nfrom torch import Tensor\n\n"
    return header + src


def capture_architecture(
    model: torch.nn.Module,
    *,
    example: Any = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_code: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """Pick the first strategy that works; return ``(architecture.json, extra files)``."""
    cls = type(model)
    if arch is not None:
        if not _is_json(dict(arch_kwargs or {})):
            raise UsageError("arch_kwargs must be JSON values (numbers, strings, lists, dicts)")
        # The same check load applies: a bundle that could not be loaded is not packed.
        factory, kwargs = resolve_architecture(arch, dict(arch_kwargs or {}), trust_code=trust_code)
        if not _rebuilds(factory, kwargs, model):
            raise ArchitectureError(
                f"{arch}(**{kwargs}) does not build a module with this model's parameters",
                hint="check arch= and its arguments",
            )
        return {"strategy": "class", "class": arch, "kwargs": kwargs}, []
    path = _class_path(cls)
    kwargs_guess = _guess_init_kwargs(model)
    if path and kwargs_guess is not None and _rebuilds(cls, kwargs_guess, model):
        found: dict[str, Any] = {"strategy": "class", "class": path, "kwargs": kwargs_guess}
        if example is not None and not module_allowed(path.partition(":")[0], trusted_modules()):
            # load imports this class only with trust: keep the export graph as the form it can always use.
            with contextlib.suppress(Exception):  # torch.export raises many types; the class form stays
                return {**found, "file": "model.pt2"}, [("model.pt2", mt.CODE, export_archive(model, example))]
        return found, []
    built = _torchvision_builder(model) if path else None
    if built is not None:
        return {"strategy": "class", "class": built[0], "kwargs": built[1]}, []
    tree = describe_tree(model, construct, _torchvision_builder)
    if tree is not None:
        return {"strategy": "modules", "class": tree["class"], "tree": tree}, []
    # A graph loaded from a bundle keeps the class it was packed from (not torch.fx's GraphModuleImpl).
    loaded = getattr(model, LOADED_ARCHITECTURE, None)
    init: dict[str, Any] | None
    src: str | None
    if isinstance(loaded, dict):
        class_name, init, src = str(loaded.get("class")), loaded.get("kwargs"), None
    else:
        class_name = f"{cls.__module__}:{cls.__qualname__}"
        init = kwargs_guess if kwargs_guess is not None and _rebuilds(cls, kwargs_guess, model) else None
        src = main_source(cls) if init is not None else None
    export_error = "no example input was given"
    if example is not None:
        try:
            doc: dict[str, Any] = {"strategy": "export", "class": class_name, "file": "model.pt2"}
            files = [("model.pt2", mt.CODE, export_archive(model, example))]
        except Exception as exc:  # torch.export raises many types; we report and fall through
            export_error = f"torch.export failed: {str(exc).splitlines()[0][:160]}"
        else:
            if init is not None:
                doc["kwargs"] = init  # lets load rebuild the same class defined in the loading process
            if src is not None:
                doc["source"] = "model_src.py"  # run only with trust_code
                files.append(("model_src.py", mt.CODE, src.encode()))
            return doc, files
    if trust_code and kwargs_guess is not None:
        text = main_source(cls) or _source(cls)
        return (
            {"strategy": "source", "class": f"model_src:{cls.__name__}", "kwargs": kwargs_guess, "file": "model_src.py"},
            [("model_src.py", mt.CODE, text.encode())],
        )
    raise ArchitectureError(
        f"cannot capture {cls.__qualname__}: not importable by a fresh process, and {export_error}",
        hint="pass example= so it can be exported, move the class into an importable module, "
        "or pass trust_code=True to store its source",
    )


# ---- signature and processing ---------------------------------------------------------------
def _tensor_spec(name: str, t: torch.Tensor) -> dict[str, Any]:
    shape = list(t.shape)
    if shape:
        shape[0] = -1
    return {"name": name, "datatype": V2_DATATYPES.get(t.dtype, dtype_name(t.dtype).upper()), "shape": shape}


# Above this many bytes of weights the signature is inferred on the meta device (shapes only, no compute).
META_SIGNATURE_BYTES = 256 << 20


def _meta_call(model: torch.nn.Module, args: tuple[Any, ...]) -> Any:
    """``model(*args)`` with every tensor on the meta device: output shapes and dtypes without reading a weight."""
    tensors = {k: v.to("meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    return torch.func.functional_call(model, tensors, tuple(a.to("meta") for a in args))


def signature_and_output(model: torch.nn.Module, example: Any) -> tuple[dict[str, Any], Any]:
    """Inputs and outputs (v2 names, datatypes, shapes with -1 batch) from one example call, and the example's output (pack's load check reuses it: one forward, not two).

    For a big model the call runs on the meta device where it can (the output is then ``None``).
    """
    args = example_args(example)
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise UsageError("example must be a tensor or a tuple of tensors")
    out: Any = None
    outs: tuple[Any, ...] | None = None
    with torch.no_grad():
        if sum(t.numel() * t.element_size() for t in model.state_dict().values()) > META_SIGNATURE_BYTES:
            with contextlib.suppress(Exception):  # data-dependent code cannot run on meta: it runs for real below
                outs = tuple(example_args(_meta_call(model, args)))
        if outs is None:
            out = model(*args)
            outs = tuple(example_args(out))
    in_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    out_names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    return {
        "inputs": [_tensor_spec(n, a) for n, a in zip(in_names, args, strict=True)],
        "outputs": [_tensor_spec(n, o) for n, o in zip(out_names, outs, strict=True) if isinstance(o, torch.Tensor)],
    }, out


_PREPROCESS_KEYS = {"mode", "size", "invert", "scale", "mean", "std", "layout"}


def processing_doc(labels: Iterable[Any] | None, preprocess: dict[str, Any] | None) -> dict[str, Any]:
    """``processing.json``: declarative image pre-processing and output labels.

    ``preprocess`` keys: ``mode`` (``"L"``/``"RGB"``), ``size`` ``[H, W]``,
    ``invert``, ``scale`` (e.g. 1/255), ``mean``/``std`` lists, ``layout``
    (``"NCHW"``, ``"NHWC"`` or ``"flat"``).
    """
    doc: dict[str, Any] = {"version": 1}
    if preprocess:
        unknown = set(preprocess) - _PREPROCESS_KEYS
        if unknown:
            raise UsageError(f"unknown preprocess keys: {', '.join(sorted(unknown))}", hint=f"use {sorted(_PREPROCESS_KEYS)}")
        doc["preprocess"] = dict(preprocess)
    if labels is not None:
        doc["labels"] = [str(x) for x in labels]
    doc["postprocess"] = {"softmax": True} if labels is not None else {}
    return doc


def state_versions(model: torch.nn.Module) -> dict[str, int]:
    """The per-submodule ``_version`` a state dict carries (``MNASNet`` refuses weights without it).

    Example:
        >>> state_versions(torch.nn.BatchNorm1d(2))
        {'': 2}
    """
    meta = getattr(model.state_dict(), "_metadata", None) or {}
    # Version 1 is every module's default; only the others need recording.
    return {prefix: v["version"] for prefix, v in meta.items() if isinstance(v, dict) and isinstance(v.get("version"), int) and v["version"] != 1}


# ---- the whole capture ----------------------------------------------------------------------
def weights_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], int, str]:
    """The tensors to store (one per shared storage), the alias map, parameter count and precision."""
    kept, aliases = split_aliases(model.state_dict())
    params = sum(p.numel() for p in model.parameters())
    dtypes = {t.dtype for t in kept.values() if t.is_floating_point()}
    precision = dtype_name(dtypes.pop()) if len(dtypes) == 1 else ("mixed" if dtypes else "none")
    return kept, aliases, params, precision


def capture(
    model: torch.nn.Module,
    *,
    example: Any = None,
    labels: Iterable[Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_code: bool = False,
    shard_size: int | None = None,
) -> Captured:
    """Turn a module into bundle files (not yet stored); weights above ``shard_size`` bytes are sharded."""
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"pack needs a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    with contextlib.suppress(NotImplementedError):
        model.eval()  # a raw ExportedProgram.module() (not one load returns) refuses .eval()
    try:
        arch_doc, extra = capture_architecture(model, example=example, arch=arch, arch_kwargs=arch_kwargs, trust_code=trust_code)
        signature, output = signature_and_output(model, example) if example is not None else ({"inputs": [], "outputs": []}, None)
    finally:
        with contextlib.suppress(NotImplementedError):
            model.train(was_training)
    kept, aliases, params, precision = weights_state(model)
    arch_doc["aliases"] = aliases
    versions = state_versions(model)
    if versions:
        arch_doc["versions"] = versions
    arch_doc["torch"] = torch.__version__.split("+")[0]
    # The weights stream from the tensors' own memory into the store (no second copy of the model).
    files: list[tuple[str, str, FileContent]] = [*weight_files(kept, shard_size=shard_size), ("architecture.json", mt.WEIGHT_CONFIG, json.dumps(arch_doc, indent=1).encode())]
    files += extra
    files.append(("signature.json", mt.WEIGHT_CONFIG, json.dumps(signature, indent=1).encode()))
    if labels is not None or preprocess:
        files.append(("processing.json", mt.WEIGHT_CONFIG, json.dumps(processing_doc(labels, preprocess), indent=1).encode()))
    return Captured(files=files, architecture={"strategy": arch_doc["strategy"], "class": arch_doc["class"]}, parameters=params, precision=precision, example_output=output)


def store_files(store: Store, files: list[tuple[str, str, FileContent]]) -> list[Descriptor]:
    """Write captured files as blobs (outside the index lock)."""
    out = []
    for path, media_type, data in files:
        if isinstance(data, bytes):
            out.append(store.put_layer(path, media_type, data))
        elif isinstance(data, SafetensorsStream):
            out.append(store.put_stream(path, media_type, data.chunks()))
        else:
            out.append(store.put_written(path, media_type, data))
    return out


def draft_from(
    captured: Captured,
    layers: list[Descriptor],
    *,
    name: str,
    metrics: dict[str, Any] | None,
    description: str | None,
    op: str = "pack",
    params: dict[str, Any] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
) -> Draft:
    return Draft(
        name=name,
        layers=layers,
        recipe={"op": op, "parent": None, "params": dict(params or {}), "lineage": []},
        parameters=captured.parameters,
        precision=captured.precision,
        architecture=captured.architecture,
        metrics=dict(metrics or {}),
        description=description or "",
        license=license,
        datasets=list(datasets or []),
        library="pytorch",
    )
