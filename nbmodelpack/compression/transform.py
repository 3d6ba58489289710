"""The compress transform: parent version → pruned/quantized child version, measured side by side.

``compress`` loads the parent, prunes (globally by magnitude, or whole
neurons/channels with ``structured=True``), optionally fine-tunes, quantizes
weight-only (int8 per output channel, int4 in groups) or casts (fp16/bf16),
writes the child (recipe: op ``compress``, parent digest, params), loads the
child from the bytes just stored on the path ``load`` will take (weight-only
int8 unless ``int8_kernel="dynamic"``, which the recipe then records), and
reports both, with the tensors it left float and why. The tensor math lives in
:mod:`nbmodelpack.pytorch.quantize` and :mod:`nbmodelpack.pytorch.prune`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import zstandard

from ..bundle import mediatypes as mt
from ..bundle.architecture import check_int8_kernel
from ..bundle.draft import Draft
from ..bundle.manifest import Descriptor, Manifest, sha256_digest
from ..bundle.metrics import COMPRESSION, VALIDATION
from ..bundle.refs import validate_name
from ..bundle.shards import INDEX
from ..errors import CompressionError, ModelPackError, UsageError
from ..progress import progress
from ..pytorch import prune as pr
from ..pytorch import qplan
from ..pytorch import quantize as qz
from ..pytorch.capture import export_archive
from ..pytorch.evaluate import accuracy, batches, top1_accuracy
from ..pytorch.restore import construct, load_state, restore
from ..pytorch.tensors import split_aliases
from ..pytorch.tree import describe_tree
from ..pytorch.weights import shard_bytes, weight_files
from ..store import Store, StoredBundle, get_store
from .evaluate import (
    LATENCY_BATCH,
    check_eval_shape,
    first_rows,
    latency_ms,
    nonzeros,
    output_tensors,
    signature_example,
)
from .report import CompressionReport, Row, describe_params

SCHEMES = qz.SCHEMES
_ZSTD_LEVEL = 19  # weights are written once and read many times


def _validate(quantize: str | None, group_size: int, prune: float, structured: bool, finetune: Any, int8_kernel: Any = None) -> None:
    if quantize is not None and quantize not in SCHEMES:
        raise CompressionError(f"unknown scheme {quantize!r}", hint=f"use one of {', '.join(SCHEMES)}")
    if check_int8_kernel(int8_kernel) is not None and quantize != "int8":
        raise CompressionError(f"an int8 kernel ({int8_kernel}) needs quantize='int8'", hint='pass quantize="int8", or drop int8_kernel=')
    if isinstance(prune, bool) or not isinstance(prune, int | float) or not 0.0 <= float(prune) < 1.0:
        raise CompressionError(f"prune={prune!r} is outside [0, 1)", hint="e.g. prune=0.5 removes half the weights")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise CompressionError(f"group size {group_size!r} must be an even number ≥ 2", hint="e.g. 32, 64 or 128")
    if structured and not prune:
        raise CompressionError("structured pruning needs prune > 0", hint="e.g. prune=0.5, structured=True")
    if quantize is None and not prune:
        raise CompressionError("nothing to do", hint="pass quantize= (int8, int4, fp16 or bf16) and/or prune=FRACTION")
    if finetune is not None and not callable(finetune):
        raise UsageError("finetune must be a function (model) -> None")


def _eval_batches(data: Any, parent: StoredBundle, model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The caller's evaluation data as batches, checked against the parent model."""
    if data is None:
        return None
    try:
        pairs = batches(data, what="eval")
    except UsageError as exc:
        raise CompressionError(exc.message, hint=exc.hint or "pass your own held-out data") from exc
    check_eval_shape(parent, pairs[0][0])
    try:
        with torch.inference_mode():
            model(pairs[0][0])
    except Exception as exc:  # any failure of the user's data in the model
        raise CompressionError(f"eval data does not fit the model: {str(exc).splitlines()[0][:160]}") from exc
    return pairs


def _allow_train(model: Any) -> None:
    """Graphs rebuilt from torch.export refuse ``.train()``; let a fine-tune call it anyway.

    The graph was traced in eval mode (batch norm uses running stats, dropout is off),
    which is a sound way to fine-tune briefly; calling ``.train()`` changes nothing.
    """
    try:
        model.train()
        model.eval()
    except NotImplementedError:
        model.train = types.MethodType(lambda self, mode=True: self, model)
        model.eval = types.MethodType(lambda self: self, model)


def _prune_and_finetune(work: torch.nn.Module, prune: float, structured: bool, small: Any, finetune: Callable[[Any], None] | None) -> dict[str, Any]:
    masks: dict[str, torch.Tensor] = {}
    pruned_info: dict[str, Any] = {}
    if prune and structured:
        pruned_info = pr.prune_structured(work, float(prune), small)
    elif prune:
        masks = pr.prune_unstructured(work, float(prune))
    if finetune is not None:
        _allow_train(work)
        with torch.enable_grad():
            for p in work.parameters():
                p.requires_grad_(True)
            handles = pr.keep_masks(work, masks)
            try:
                finetune(work)
            finally:
                for h in handles:
                    h.remove()
                work.eval()
        pr.apply_masks(work, masks)
    return pruned_info


def _weights_layer(target: Store, filepath: str, raw: bytes, compressible: bool) -> tuple[Descriptor, str | None]:
    """A weight layer as stored: zstd when that is smaller (integer or sparse weights), else raw."""
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw) if compressible else None
    if packed is not None and len(packed) < len(raw):
        layer = target.put_layer(filepath, mt.WEIGHT, packed, encodings=(mt.ZSTD,))
        # The inflated size caps decompression on load.
        return replace(layer, annotations={**layer.annotations, mt.PLAIN_SIZE: str(len(raw))}), sha256_digest(raw)
    return target.put_layer(filepath, mt.WEIGHT, raw), None


def _put_weights(target: Store, draft: Draft, parent: StoredBundle, state: dict[str, torch.Tensor], meta: dict[str, Any] | None, compressible: bool) -> None:
    """The child's weights in place of the parent's: one file, or shards (one in memory at a time) and their index."""

    def per_shard(names: list[str]) -> dict[str, str]:
        if not meta:
            return {}
        held = set(names)
        part = {**meta, "tensors": {k: v for k, v in meta.get("tensors", {}).items() if k in held}}
        return {qz.META_KEY: json.dumps(part, separators=(",", ":"))}

    old = {*parent.weight_files(), INDEX}
    draft.layers = [d for d in draft.layers if d.filepath not in old]
    for filepath, media_type, content in weight_files(state, shard_size=shard_bytes(None), per_shard=per_shard):
        if isinstance(content, bytes):
            draft.replace_layer(target.put_layer(filepath, media_type, content))
            continue
        layer, diff_id = _weights_layer(target, filepath, b"".join(content.chunks()), compressible)
        draft.replace_layer(layer, diff_id=diff_id)


def _draft_view(store: Store, name: str, parent: StoredBundle, layers: list[Any]) -> StoredBundle:
    """A not-yet-committed version, readable like a stored one (to load the child exactly as users will)."""
    m = parent.manifest
    draft_manifest = Manifest(config=m.config, layers=tuple(layers), annotations={}, digest=m.digest, raw=b"")
    return StoredBundle(store, name, draft_manifest)


@dataclass
class _Measured:
    parent: StoredBundle
    view: StoredBundle
    models: tuple[Any, Any]
    pairs: list[tuple[torch.Tensor, torch.Tensor]] | None
    metric: Callable[..., float]
    rows: list[Row] = field(default_factory=list)


def _measure(m: _Measured, params: dict[str, Any], child_parameters: int, example: Any) -> None:
    """Rows for parent and child: sizes, non-zeros, metric on the caller's data, drift and latency."""

    def payload(bundle: StoredBundle) -> int:
        return sum(d.size for d in bundle.manifest.layers if d.filepath != "README.md")

    # Sizes are BundleInfo.size (what `ls` shows). The child has no card, config or manifest
    # yet: until it is committed, count the parent's for them.
    overhead = m.parent.info.size - payload(m.parent)
    for label, bundle, model in (("parent", m.parent, m.models[0]), (describe_params(params), m.view, m.models[1])):
        weight_bytes = sum(bundle.descriptor(f).size for f in bundle.weight_files())
        m.rows.append(Row(
            label=label,
            ref=m.parent.info.ref if bundle is m.parent else "(this version)",
            bundle_bytes=payload(bundle) + overhead,
            weight_bytes=weight_bytes,
            parameters=sum(p.numel() for p in model.parameters()) if bundle is m.parent else child_parameters,
            nonzeros=nonzeros(load_state(bundle)),
            metric=accuracy(model, m.pairs, metric=m.metric) if m.pairs else None,
        ))  # fmt: skip
    probe = first_rows(m.pairs[0][0] if m.pairs else example, LATENCY_BATCH) if (m.pairs or example is not None) else None
    if probe is None:
        return
    args = probe if isinstance(probe, tuple) else (probe,)
    with torch.inference_mode():
        a, b = m.models[0](*args), m.models[1](*args)
    ta, tb = output_tensors(a), output_tensors(b)
    if ta and len(ta) == len(tb) and all(x.shape == y.shape for x, y in zip(ta, tb, strict=True)):
        diff = torch.cat([(x.float() - y.float()).abs().flatten() for x, y in zip(ta, tb, strict=True)])
        m.rows[1].drift_max, m.rows[1].drift_mean = float(diff.max()), float(diff.mean())
        m.rows[0].drift_max = m.rows[0].drift_mean = 0.0
    m.rows[0].latency_ms, m.rows[1].latency_ms = latency_ms(list(m.models), args)


def _card_metrics(draft: Draft, report: CompressionReport, evaluated: bool, pruned_info: dict[str, Any]) -> None:
    """The child's card: only what was measured on the child (the parent's metrics stay in the lineage)."""
    child = report.child
    compression: dict[str, Any] = {"size_ratio": round(report.ratio, 3)}
    if child.drift_max is not None:
        compression["output_drift_max"] = float(f"{child.drift_max:.4g}")
    if child.latency_ms is not None:
        compression["latency_ms"] = round(child.latency_ms, 4)
    draft.metrics = {COMPRESSION: compression}
    if evaluated and child.metric is not None:
        draft.metrics[VALIDATION] = {report.metric_name: round(child.metric, 4)}
    draft.card_extra = {**draft.card_extra, "compression": {**report.to_json(), "pruned_layers": pruned_info.get("layers")}}
    draft.card_extra["compression"].pop("ref", None)


def compress(
    ref: str,
    *,
    quantize: str | None = None,
    group_size: int = 64,
    prune: float = 0.0,
    structured: bool = False,
    finetune: Callable[[Any], None] | None = None,
    eval: Any = None,  # noqa: A002 - the name users expect
    example: Any = None,
    metric: Callable[[Any, Any], float] | None = None,
    name: str | None = None,
    tags: Iterable[str] = (),
    trust_code: bool = False,
    store: Store | str | None = None,
    int8_kernel: str | None = None,
) -> CompressionReport:
    """Compress a bundle version into a new version; return the parent-vs-child report.

    ``quantize``: ``"int8"`` (per output channel), ``"int4"`` (groups of ``group_size``),
    ``"fp16"`` or ``"bf16"``. ``prune``: fraction in [0, 1) of Linear/Conv weights to
    zero (global magnitude), or with ``structured=True`` of each layer's neurons/channels
    to remove. ``finetune(model)`` trains the pruned model before quantization.
    ``eval``: your held-out data, a DataLoader or ``(x, y)`` tensors; ``metric(outputs, targets)``
    replaces top-1 accuracy. ``int8_kernel``: how the int8 child is measured and
    later loaded: ``"weight-only"`` (default: float kernels on the dequantized int8
    weights) or ``"dynamic"`` (int8 activations too; recorded in the recipe, so
    ``load`` follows it unless told otherwise). The report lists the tensors left
    float and why. No version is written unless every check passes.

    Example:
        >>> report = nbmodelpack.compress("mnist-mlp:1", quantize="int8", eval=(x, y))  # doctest: +SKIP
        >>> report.info.ref, round(report.ratio, 1)  # doctest: +SKIP
        ('mnist-mlp:2', 3.9)
    """
    _validate(quantize, group_size, prune, structured, finetune, int8_kernel)
    target = get_store(store)
    parent = target.open(ref)
    if parent.info.encrypted:
        # Its child would hold the weights in plaintext: keep the order explicit.
        raise CompressionError(f"{parent.info.ref} is encrypted", hint="decrypt it, compress the plaintext version, then encrypt the result")
    child_name = validate_name(name) if name else parent.name
    params: dict[str, Any] = {"quantize": quantize, "prune": float(prune), "structured": bool(structured), "finetune": finetune is not None}
    if quantize == "int4":
        params["group_size"] = group_size
    if quantize == "int8":
        params["int8_kernel"] = int8_kernel or "weight-only"
    with progress(total=5, desc=f"compress {parent.info.ref}", unit="step") as bar:
        parent_model = restore(parent, trust_code=trust_code, dequantize=True)
        pairs = _eval_batches(eval, parent, parent_model)
        if example is None:
            example = pairs[0][0] if pairs else signature_example(parent)
        # torch.export keeps its example inputs in the archive: export with two rows only.
        small = first_rows(example, 2) if example is not None else None
        work = restore(parent, trust_code=trust_code, dequantize=True)
        targets = qz.matmul_weights(work)
        if quantize in ("int8", "int4") and not qplan.plan(work, work.state_dict()).targets:
            raise CompressionError(f"{quantize} needs Linear or Conv layers (or Embedding, RNN); {parent.name} has none", hint='use quantize="fp16" or quantize="bf16"')
        if prune and not targets:
            raise CompressionError(f"pruning needs Linear or Conv layers; {parent.name} has none")
        if structured and example is None:
            raise CompressionError("structured pruning needs an example input", hint="pass example=, or pack the model with example=")
        bar.update(1)

        pruned_info = _prune_and_finetune(work, prune, structured, small, finetune)
        bar.update(1)

        state, aliases = split_aliases({k: v.detach() for k, v in work.state_dict().items()})
        meta: dict[str, Any] | None = None
        left_float: dict[str, str] = {}
        if quantize in ("int8", "int4"):
            chosen = qplan.plan(work, state, aliases)
            state, meta = qz.quantize_state(state, chosen.targets, quantize, group_size)
            left_float = chosen.skipped
        elif quantize:
            state, meta = qz.quantize_state(state, [], quantize, group_size)
        draft = Draft.from_parent(parent.manifest, name=child_name, op="compress", params=params)
        _put_weights(target, draft, parent, state, meta, quantize in ("int8", "int4") or bool(prune and not structured))
        if structured:
            arch = parent.read_json("architecture.json")
            tree = describe_tree(work, construct)  # pruning keeps each layer's init attributes true to its weights
            if tree is not None:
                new_arch = {"strategy": "modules", "class": tree["class"], "tree": tree, "aliases": aliases, "torch": torch.__version__.split("+")[0]}
                draft.layers = [d for d in draft.layers if d.filepath not in ("model_src.py", "model.pt2")]
            else:
                new_arch = {"strategy": "export", "class": arch.get("class", type(work).__name__), "file": "model.pt2", "aliases": aliases, "torch": torch.__version__.split("+")[0]}
                try:
                    pt2 = export_archive(work, small)
                except Exception as exc:  # torch.export raises many types
                    raise CompressionError(f"cannot export the pruned model: {str(exc).splitlines()[0][:160]}") from exc
                draft.layers = [d for d in draft.layers if d.filepath != "model_src.py"]
                draft.replace_layer(target.put_layer("model.pt2", mt.CODE, pt2))
            draft.replace_layer(target.put_layer("architecture.json", mt.WEIGHT_CONFIG, json.dumps(new_arch, indent=1).encode()))
            draft.architecture = {"strategy": new_arch["strategy"], "class": new_arch["class"]}
        draft.parameters = sum(p.numel() for p in work.parameters())
        draft.quantization = quantize if quantize in ("int8", "int4") else None
        if quantize:
            # The precision the weights are stored in (what `ls`, cards and the sidebar show).
            draft.precision = {"fp16": "float16", "bf16": "bfloat16"}.get(quantize, quantize)
        bar.update(1)

        # Load the child from the very bytes just stored, the way users will load it.
        view = _draft_view(target, child_name, parent, [d for d in draft.layers if d.filepath != "README.md"])
        try:
            child_model: Any = restore(view, trust_code=trust_code, int8_kernel=params.get("int8_kernel"))
        except ModelPackError as exc:
            raise CompressionError(f"the compressed model does not load: {exc}") from exc
        measured = _Measured(parent, view, (parent_model, child_model), pairs, metric or top1_accuracy)
        _measure(measured, params, draft.parameters, example)
        bar.update(1)
        metric_name = getattr(metric, "__name__", "metric") if metric else "accuracy"
        report = CompressionReport(
            parent=measured.rows[0], child=measured.rows[1], params=params, metric_name=metric_name, model=child_model, left_float=left_float
        )
        _card_metrics(draft, report, pairs is not None, pruned_info)
        info = target.commit(draft, tags=tags)
        bar.update(1)
    # One definition of a bundle's size everywhere (`ls`, cards, this report): BundleInfo.size.
    report.parent.bundle_bytes, report.child.bundle_bytes = parent.info.size, info.size
    report.info = info
    report.child.ref = info.ref
    child_model.bundle_info = info
    return report
