"""Compression: bundle version → new, smaller bundle version, with an honest report.

``nbmodelpack.compress(ref, quantize="int8", prune=0.5, eval=(x, y))`` loads the
parent version, prunes (globally by magnitude, or whole neurons/channels with
``structured=True``), optionally fine-tunes, quantizes weight-only (int8 per
output channel, int4 in groups) or casts (fp16/bf16), writes the child version
(recipe: op ``compress``, parent digest, params) and measures parent and child
side by side: bytes on disk, parameters, non-zeros, accuracy (or your metric),
CPU latency per batch, and output drift. The metrics go on the child's card.

The tensor math lives in :mod:`nbmodelpack.pytorch.quantize` and
:mod:`nbmodelpack.pytorch.prune`; this module is the transform and the report.

The module is ``compression`` (not ``compress``, as DESIGN.md §5 had it) so that
importing it never shadows the public function ``nbmodelpack.compress``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bundle import mediatypes as mt
from .bundle.info import BundleInfo, human_bytes
from .bundle.manifest import Manifest, sha256_digest
from .errors import CompressionError, ModelPackError, UsageError
from .store import Store, StoredBundle

if TYPE_CHECKING:
    import torch

SCHEMES = ("int8", "int4", "fp16", "bf16")
_ZSTD_LEVEL = 19  # weights are written once and read many times
_LATENCY_BATCH = 64  # rows per timed forward pass


# ---- the report ------------------------------------------------------------------------------
@dataclass
class Row:
    """One model measured: parent or child."""

    label: str
    ref: str
    bundle_bytes: int  # every layer except the card (which embeds these numbers)
    weight_bytes: int  # model.safetensors as stored (after zstd)
    parameters: int
    nonzeros: int
    metric: float | None = None
    latency_ms: float | None = None
    drift_max: float | None = None
    drift_mean: float | None = None


@dataclass
class CompressionReport:
    """Parent vs child: size, parameters, non-zeros, metric, latency, drift.

    Renders as a table and a chart in notebooks, text in terminals, JSON for tools.

    Example:
        >>> r = nbmodelpack.compress("mnist-mlp:1", quantize="int8", eval="mnist")  # doctest: +SKIP
        >>> print(r)  # doctest: +SKIP
    """

    parent: Row
    child: Row
    params: dict[str, Any]
    metric_name: str = "accuracy"
    info: BundleInfo | None = None
    model: Any = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        """How many times smaller the child bundle is."""
        return self.parent.bundle_bytes / max(self.child.bundle_bytes, 1)

    @property
    def metric_drop(self) -> float | None:
        if self.parent.metric is None or self.child.metric is None:
            return None
        return self.parent.metric - self.child.metric

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``; the card carries the same numbers)."""
        return {
            "parent": asdict(self.parent),
            "child": asdict(self.child),
            "ratio": round(self.ratio, 3),
            "metric": self.metric_name,
            "params": self.params,
            "ref": self.info.ref if self.info else None,
        }

    def rows(self) -> list[Row]:
        return [self.parent, self.child]

    def __str__(self) -> str:
        head = f"compress {self.parent.ref} -> {self.child.ref}  ({_describe(self.params)}): {self.ratio:.2f}x smaller"
        return head + "\n" + _text_table(self.rows(), self.metric_name, self.parent.bundle_bytes)

    def figure(self) -> Any:
        """A matplotlib Figure: size, metric and latency, parent vs child."""
        return _figure(self.rows(), self.metric_name)

    def save_png(self, path: str | Path) -> Path:
        """Write the chart as a PNG file."""
        return _save_png(self.figure(), path)

    def _repr_html_(self) -> str:
        title = f"compress {html.escape(self.parent.ref)} → {html.escape(self.child.ref)} ({html.escape(_describe(self.params))}): <b>{self.ratio:.2f}× smaller</b>"
        return _html(title, self.rows(), self.metric_name, self.parent.bundle_bytes)


@dataclass
class Comparison:
    """Several compressions of one parent side by side (one table, one chart).

    Example:
        >>> both = nbmodelpack.compression.compare([r_int8, r_int4])  # doctest: +SKIP
    """

    reports: list[CompressionReport]

    def rows(self) -> list[Row]:
        return [self.reports[0].parent, *(r.child for r in self.reports)]

    @property
    def metric_name(self) -> str:
        return self.reports[0].metric_name

    def best(self, max_drop: float = 0.5) -> CompressionReport:
        """The smallest child whose metric drops at most ``max_drop`` (points) from the parent."""
        ok = [r for r in self.reports if r.metric_drop is None or r.metric_drop <= max_drop]
        if not ok:
            raise CompressionError(f"no variant keeps the {self.metric_name} within {max_drop} of the parent")
        return min(ok, key=lambda r: r.child.bundle_bytes)

    def __str__(self) -> str:
        return _text_table(self.rows(), self.metric_name, self.rows()[0].bundle_bytes)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.reports]

    def figure(self) -> Any:
        return _figure(self.rows(), self.metric_name)

    def save_png(self, path: str | Path) -> Path:
        return _save_png(self.figure(), path)

    def _repr_html_(self) -> str:
        return _html(f"{len(self.reports)} compressions of {html.escape(self.reports[0].parent.ref)}", self.rows(), self.metric_name, self.rows()[0].bundle_bytes)


def compare(reports: Iterable[CompressionReport]) -> Comparison:
    """Put several reports of the same parent in one table and chart.

    Example:
        >>> compare([r1, r2, r3]).save_png("compare.png")  # doctest: +SKIP
    """
    items = list(reports)
    if not items:
        raise UsageError("compare needs at least one report")
    return Comparison(items)


def _describe(params: dict[str, Any]) -> str:
    parts = []
    if params.get("prune"):
        parts.append(f"{'structured ' if params.get('structured') else ''}prune {params['prune']:g}")
    if params.get("finetune"):
        parts.append("fine-tuned")
    if params.get("quantize"):
        q = params["quantize"]
        parts.append(f"{q} g{params['group_size']}" if q == "int4" else q)
    return ", ".join(parts) or "no change"


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{spec}}{unit}"


def _cells(row: Row, base: int) -> list[str]:
    drift = "-" if row.drift_max is None else f"{row.drift_max:.3g} / {row.drift_mean:.3g}"
    return [
        row.label,
        row.ref,
        human_bytes(row.bundle_bytes),
        f"{base / max(row.bundle_bytes, 1):.2f}x",
        human_bytes(row.weight_bytes),
        f"{row.parameters:,}",
        f"{row.nonzeros:,}",
        _fmt(row.metric, ".2f"),
        _fmt(row.latency_ms, ".3f", " ms"),
        drift,
    ]


def _headers(metric: str) -> list[str]:
    return ["", "ref", "bundle", "smaller", "weights", "params", "non-zeros", metric, f"latency/{_LATENCY_BATCH} (1 thread)", "drift max / mean"]


def _text_table(rows: list[Row], metric: str, base: int) -> str:
    table = [_headers(metric)] + [_cells(r, base) for r in rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table)


def _html(title: str, rows: list[Row], metric: str, base: int) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(metric))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, base)) + "</tr>" for r in rows)
    png = base64.b64encode(_png_bytes(_figure(rows, metric))).decode()
    return (
        f'<div class="nbmodelpack-compress"><p>{title}</p>'
        f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f'<img alt="size, {html.escape(metric)} and latency" src="data:image/png;base64,{png}"/></div>'
    )


def _figure(rows: list[Row], metric: str) -> Any:
    # matplotlib's object API (no pyplot): no global state, no GUI backend needed.
    from matplotlib.figure import Figure

    labels = [r.label for r in rows]
    colors = ["#7f7f7f"] + ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"] * 2
    fig = Figure(figsize=(10, 0.6 * len(rows) + 1.6), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = [
        ("bundle size (kB)", [r.bundle_bytes / 1000 for r in rows], "{:.0f}"),
        (metric if any(r.metric is not None for r in rows) else "output drift (max abs)",
         [r.metric for r in rows] if any(r.metric is not None for r in rows) else [r.drift_max or 0.0 for r in rows], "{:.2f}"),
        (f"CPU latency / batch of {_LATENCY_BATCH}, 1 thread (ms)", [r.latency_ms or 0.0 for r in rows], "{:.2f}"),
    ]  # fmt: skip
    for ax, (title, values, spec) in zip(axes, panels, strict=True):
        vals = [float("nan") if v is None else float(v) for v in values]
        ax.barh(range(len(rows)), vals, color=colors[: len(rows)])
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            if not math.isnan(v):
                ax.text(v, i, " " + spec.format(v), va="center", fontsize=8)
        finite = [v for v in vals if not math.isnan(v)]
        if title == metric and finite:
            low = min(finite)
            ax.set_xlim(max(0.0, low - 5), max(finite) + 2)
        elif finite:
            ax.set_xlim(0, max(finite) * 1.3 or 1)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    return fig


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _save_png(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.write_bytes(_png_bytes(fig))
    return out


# ---- evaluation ------------------------------------------------------------------------------
def _batches(data: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``eval`` as a list of (x, y) batches: a DataLoader, an (x, y) pair, or ``"mnist"``."""
    import torch

    if isinstance(data, str):
        if data != "mnist":
            raise UsageError(f"eval={data!r}: pass a DataLoader, (x, y) tensors or 'mnist'")
        from .pytorch.data import mnist_loaders

        data = mnist_loaders(n_train=8000)[1]
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise CompressionError(f"eval has {len(x)} inputs but {len(y)} targets")
        return [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]
    if isinstance(data, Iterable):
        out = []
        for item in data:
            if not (isinstance(item, tuple | list) and len(item) >= 2 and isinstance(item[0], torch.Tensor)):
                raise CompressionError("eval batches must be (inputs, targets) pairs of tensors")
            out.append((item[0], item[1]))
        if not out:
            raise CompressionError("eval data is empty")
        return out
    raise UsageError(f"eval must be a DataLoader or (x, y) tensors, not {type(data).__name__}")


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return 100.0 * float((outputs.argmax(-1) == targets).float().mean())


def _evaluate(model: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], metric: Callable[..., float]) -> float:
    import torch

    with torch.inference_mode():
        outs = torch.cat([model(x) for x, _ in batches])
    return float(metric(outs, torch.cat([y for _, y in batches])))


def _latency_ms(models: list[Any], args: tuple[Any, ...], runs: int = 20) -> list[float]:
    """Fastest CPU time of one forward pass on ``args`` per model (interleaved, after warm-up).

    One thread, and the fastest of ``runs`` rather than the median: on a shared
    machine, thread barriers and the median mostly measure other processes.
    """
    import torch

    times: list[list[float]] = [[] for _ in models]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _time_runs(models, args, runs, times)
    finally:
        torch.set_num_threads(threads)
    return [1000 * min(t) for t in times]


def _time_runs(models: list[Any], args: tuple[Any, ...], runs: int, times: list[list[float]]) -> None:
    import torch

    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                m(*args)
        for _ in range(runs):
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                m(*args)
                times[i].append(time.perf_counter() - t0)


def _rows(example: Any, n: int) -> Any:
    """The first ``n`` rows of an example input (a tensor or a tuple of tensors)."""
    if isinstance(example, tuple | list):
        return tuple(_rows(e, n) for e in example)
    # clone: a slice is a view, and saving it (torch.export does) would save the whole storage
    return example[:n].clone() if hasattr(example, "shape") and len(example.shape) > 0 else example


def _signature_example(bundle: StoredBundle, batch: int = 8) -> Any:
    import torch

    sig = bundle.read_json("signature.json") if bundle.has("signature.json") else {}
    inputs = sig.get("inputs") or []
    dtypes = {"FP32": torch.float32, "FP16": torch.float16, "BF16": torch.bfloat16, "FP64": torch.float64}
    tensors = []
    gen = torch.Generator().manual_seed(0)
    for spec in inputs:
        shape = [batch] + [int(d) for d in spec["shape"][1:]]
        if any(d < 0 for d in shape) or spec["datatype"] not in dtypes:
            return None
        tensors.append(torch.randn(shape, generator=gen, dtype=torch.float32).to(dtypes[spec["datatype"]]))
    if not tensors:
        return None
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _check_eval_shape(bundle: StoredBundle, x: torch.Tensor) -> None:
    sig = bundle.read_json("signature.json") if bundle.has("signature.json") else {}
    inputs = sig.get("inputs") or []
    if len(inputs) != 1:
        return
    want = [int(d) for d in inputs[0]["shape"]]
    got = list(x.shape)
    if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want[1:], got[1:], strict=False)):
        raise CompressionError(
            f"eval inputs have shape {got}; {bundle.name} takes {want}",
            hint="pass eval data shaped like the model's input (see `modelpack show`)",
        )


def _nonzeros(state: dict[str, torch.Tensor]) -> int:
    return sum(int(t.count_nonzero()) for t in state.values() if t.is_floating_point())


# ---- the transform -------------------------------------------------------------------------------
def _validate(quantize: str | None, group_size: int, prune: float, structured: bool, finetune: Any) -> None:
    if quantize is not None and quantize not in SCHEMES:
        raise CompressionError(f"unknown scheme {quantize!r}", hint=f"use one of {', '.join(SCHEMES)}")
    if isinstance(prune, bool) or not isinstance(prune, int | float) or not 0.0 <= float(prune) < 1.0:
        raise CompressionError(f"prune={prune!r} is outside [0, 1)", hint="e.g. --prune 0.5 removes half the weights")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise CompressionError(f"group size {group_size!r} must be an even number ≥ 2", hint="e.g. 32, 64 or 128")
    if structured and not prune:
        raise CompressionError("structured pruning needs prune > 0", hint="e.g. --prune 0.5 --structured")
    if quantize is None and not prune:
        raise CompressionError("nothing to do", hint="pass --quantize int8|int4|fp16|bf16 and/or --prune FRACTION")
    if finetune is not None and not callable(finetune):
        raise UsageError("finetune must be a function (model) -> None")


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


def _draft_view(store: Store, name: str, parent: StoredBundle, layers: list[Any]) -> StoredBundle:
    """A not-yet-committed version, readable like a stored one (to load the child exactly as users will)."""
    m = parent.manifest
    draft_manifest = Manifest(config=m.config, layers=tuple(layers), annotations={}, digest=m.digest, raw=b"")
    return StoredBundle(store, name, draft_manifest)


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
) -> CompressionReport:
    """Compress a bundle version into a new version; return the parent-vs-child report.

    ``quantize``: ``"int8"`` (per output channel), ``"int4"`` (groups of ``group_size``),
    ``"fp16"`` or ``"bf16"``. ``prune``: fraction in [0, 1) of Linear/Conv weights to
    zero (global magnitude), or with ``structured=True`` of each layer's neurons/channels
    to remove. ``finetune(model)`` trains the pruned model before quantization.
    ``eval``: a DataLoader, ``(x, y)`` tensors or ``"mnist"``; ``metric(outputs, targets)``
    replaces top-1 accuracy. No version is written unless every check passes.

    Example:
        >>> report = nbmodelpack.compress("mnist-mlp:1", quantize="int8", eval=(x, y))  # doctest: +SKIP
        >>> report.info.ref, round(report.ratio, 1)  # doctest: +SKIP
        ('mnist-mlp:2', 3.9)
    """
    _validate(quantize, group_size, prune, structured, finetune)
    import safetensors.torch
    import torch
    import zstandard

    from .bundle.draft import Draft
    from .bundle.refs import validate_name
    from .progress import progress
    from .pytorch import prune as pr
    from .pytorch import quantize as qz
    from .pytorch._tensors import split_aliases
    from .pytorch.capture import _export
    from .pytorch.restore import load_state, restore
    from .store import get_store

    target = get_store(store)
    parent = target.open(ref)
    if parent.info.encrypted:
        # Its child would hold the weights in plaintext: keep the order explicit.
        raise CompressionError(f"{parent.info.ref} is encrypted", hint="decrypt it, compress the plaintext version, then encrypt the result")
    child_name = validate_name(name) if name else parent.name
    params: dict[str, Any] = {"quantize": quantize, "prune": float(prune), "structured": bool(structured), "finetune": finetune is not None}
    if quantize == "int4":
        params["group_size"] = group_size
    with progress(total=5, desc=f"compress {parent.info.ref}", unit="step") as bar:
        parent_model = restore(parent, trust_code=trust_code, dequantize=True)
        batches = _batches(eval) if eval is not None else None
        if batches is not None:
            _check_eval_shape(parent, batches[0][0])
            try:
                with torch.inference_mode():
                    parent_model(batches[0][0])
            except Exception as exc:  # any failure of the user's data in the model
                raise CompressionError(f"eval data does not fit the model: {str(exc).splitlines()[0][:160]}") from exc
        if example is None:
            example = batches[0][0] if batches else _signature_example(parent)
        # torch.export keeps its example inputs in the archive: export with two rows only.
        small = _rows(example, 2) if example is not None else None
        work = restore(parent, trust_code=trust_code, dequantize=True)
        targets = qz.matmul_weights(work)
        if quantize in ("int8", "int4") and not targets:
            raise CompressionError(f"{quantize} needs Linear or Conv layers; {parent.name} has none", hint="use --quantize fp16 or bf16")
        if prune and not targets:
            raise CompressionError(f"pruning needs Linear or Conv layers; {parent.name} has none")
        if structured and example is None:
            raise CompressionError("structured pruning needs an example input", hint="pass example=, or pack the model with example=")
        bar.update(1)

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
        bar.update(1)

        state, aliases = split_aliases({k: v.detach() for k, v in work.state_dict().items()})
        meta: dict[str, Any] | None = None
        if quantize:
            state, meta = qz.quantize_state(state, [t for t in targets if t in state], quantize, group_size)
        metadata = {"format": "pt"}
        if meta:
            metadata[qz.META_KEY] = json.dumps(meta, separators=(",", ":"))
        raw = safetensors.torch.save(state, metadata=metadata)
        draft = Draft.from_parent(parent.manifest, name=child_name, op="compress", params=params)
        # Integer and sparse weights compress well; dense float weights stay raw (DESIGN.md §1).
        packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw) if quantize in ("int8", "int4") or (prune and not structured) else None
        if packed is not None and len(packed) < len(raw):
            layer = target.put_layer("model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, packed)
            # The inflated size, which caps decompression on load.
            layer = replace(layer, annotations={**layer.annotations, mt.PLAIN_SIZE: str(len(raw))})
            draft.replace_layer(layer, diff_id=sha256_digest(raw))
        else:
            draft.replace_layer(target.put_layer("model.safetensors", mt.WEIGHT, raw))
        if structured:
            arch = parent.read_json("architecture.json")
            new_arch = {"strategy": "export", "class": arch.get("class", type(work).__name__), "file": "model.pt2", "aliases": aliases, "torch": torch.__version__.split("+")[0]}
            try:
                pt2 = _export(work, small)
            except Exception as exc:  # torch.export raises many types
                raise CompressionError(f"cannot export the pruned model: {str(exc).splitlines()[0][:160]}") from exc
            draft.layers = [d for d in draft.layers if d.filepath != "model_src.py"]
            draft.replace_layer(target.put_layer("model.pt2", mt.CODE, pt2))
            draft.replace_layer(target.put_layer("architecture.json", mt.WEIGHT_CONFIG, json.dumps(new_arch, indent=1).encode()))
            draft.architecture = {"strategy": "export", "class": new_arch["class"]}
        draft.parameters = sum(p.numel() for p in work.parameters())
        draft.quantization = quantize if quantize in ("int8", "int4") else None
        if quantize in ("fp16", "bf16"):
            draft.precision = {"fp16": "float16", "bf16": "bfloat16"}[quantize]
        bar.update(1)

        # Load the child from the very bytes just stored, the way users will load it.
        view = _draft_view(target, child_name, parent, [d for d in draft.layers if d.filepath != "README.md"])
        try:
            child_model: Any = restore(view, trust_code=trust_code)
        except ModelPackError as exc:
            raise CompressionError(f"the compressed model does not load: {exc}") from exc
        parent_state = load_state(parent)
        child_state = load_state(view)
        metric_fn = metric or _accuracy
        metric_name = getattr(metric, "__name__", "metric") if metric else "accuracy"
        rows = []
        for label, bundle, model, st, layers in (
            ("parent", parent, parent_model, parent_state, parent.manifest.layers),
            (_describe(params), view, child_model, child_state, view.manifest.layers),
        ):
            weights = next(d for d in layers if d.filepath == "model.safetensors")
            rows.append(Row(
                label=label,
                ref=parent.info.ref if bundle is parent else "(this version)",
                bundle_bytes=sum(d.size for d in layers if d.filepath != "README.md"),
                weight_bytes=weights.size,
                parameters=sum(p.numel() for p in model.parameters()) if bundle is parent else draft.parameters,
                nonzeros=_nonzeros(st),
                metric=_evaluate(model, batches, metric_fn) if batches else None,
            ))  # fmt: skip
        bar.update(1)
        probe = _rows(batches[0][0] if batches else example, _LATENCY_BATCH) if (batches or example is not None) else None
        if probe is not None:
            args = probe if isinstance(probe, tuple) else (probe,)
            with torch.inference_mode():
                a, b = parent_model(*args), child_model(*args)
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                diff = (a.float() - b.float()).abs()
                rows[1].drift_max, rows[1].drift_mean = float(diff.max()), float(diff.mean())
                rows[0].drift_max = rows[0].drift_mean = 0.0
            lat = _latency_ms([parent_model, child_model], args)
            rows[0].latency_ms, rows[1].latency_ms = lat
        report = CompressionReport(parent=rows[0], child=rows[1], params=params, metric_name=metric_name, model=child_model)

        # The card says what this version is and how it compares with its parent.
        inherited = {k: v for k, v in draft.metrics.items() if k != metric_name}
        draft.metrics = {**(inherited if batches else {}), "size_ratio": round(report.ratio, 3)}
        if rows[1].metric is not None:
            draft.metrics[metric_name] = round(rows[1].metric, 4)
        if rows[1].drift_max is not None:
            draft.metrics["output_drift_max"] = float(f"{rows[1].drift_max:.4g}")
        if rows[1].latency_ms is not None:
            draft.metrics["latency_ms"] = round(rows[1].latency_ms, 4)
        draft.card_extra = {**draft.card_extra, "compression": {**report.to_json(), "pruned_layers": pruned_info.get("layers")}}
        draft.card_extra["compression"].pop("ref", None)
        info = target.commit(draft, tags=tags)
        bar.update(1)
    report.info = info
    report.child.ref = info.ref
    child_model.bundle_info = info
    return report


__all__ = ["SCHEMES", "Comparison", "CompressionReport", "Row", "compare", "compress"]
