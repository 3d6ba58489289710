"""Weight-only quantization and casts, stored as plain tensors in safetensors.

Layout in ``model.safetensors`` (no tensor subclasses, no pickle):

- ``int8``: ``NAME`` holds ``int8`` values with the weight's shape; ``NAME.__scale__``
  one ``float32`` scale per output channel (symmetric, ``w ≈ q * scale``).
- ``int4``: the weight is flattened to ``[out, K]`` and split in groups of
  ``group_size`` along K (K zero-padded to a whole number of groups); ``NAME`` holds
  ``uint8`` bytes with two 4-bit values each (low nibble first, stored as ``q + 8``,
  ``q`` in [-7, 7]); ``NAME.__scale__`` one ``float16`` scale per group ``[out, groups]``.
- ``fp16`` / ``bf16``: every floating tensor is stored in that dtype.

Weights whose output channels are not dim 0 (transformers' ``Conv1D`` is a Linear
stored as ``[in, out]``, transposed convolutions are ``[in, out, …]``) are quantized
as their transpose with the output channels first; the tensor's record then says
``"axis": 1`` and its stored shape is that transpose.

The scheme goes into the safetensors header metadata under ``nbmodelpack.quantization``
(JSON: scheme, group size, and per tensor its original shape, dtype and axis), so the
weights file describes itself. :func:`dequantize_state` turns it back into float
tensors: what ``load`` runs by default (weight-only int8: the outputs do not depend
on what else is in the batch). Which tensors are quantized is :mod:`.qplan`; the
opt-in dynamic int8 kernel is :mod:`.int8dynamic`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from ..errors import BundleFormatError, CompressionError

SCHEMES = ("int8", "int4", "fp16", "bf16")
META_KEY = "nbmodelpack.quantization"
SCALE_SUFFIX = ".__scale__"
_CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}
LINEAR_OPS = {"linear"}
CONV_OPS = {"conv1d", "conv2d", "conv3d", "convolution"}


# ---- which tensors are Linear/Conv weights ---------------------------------------------------
def op_name(target: Any) -> str:
    """``aten.linear.default`` → ``'linear'``."""
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def matmul_weights(model: nn.Module) -> dict[str, str]:
    """State-dict names of Linear/Conv weights → ``'linear'`` or ``'conv'``.

    Works for ordinary modules (by module type) and for graphs rebuilt from a
    ``torch.export`` archive (by the ``aten.linear``/``aten.conv*`` nodes that use them).

    Example:
        >>> matmul_weights(nn.Sequential(nn.Linear(4, 2)))
        {'0.weight': 'linear'}
    """
    found: dict[str, str] = {}
    for prefix, mod in model.named_modules():
        kind = "linear" if isinstance(mod, nn.Linear) else "conv" if isinstance(mod, nn.modules.conv._ConvNd) else None
        if kind and isinstance(getattr(mod, "weight", None), torch.Tensor):
            found[f"{prefix}.weight" if prefix else "weight"] = kind
    graph = getattr(model, "graph", None)
    if isinstance(graph, torch.fx.Graph):
        for node in graph.nodes:
            op = op_name(node.target) if node.op == "call_function" else ""
            if op in LINEAR_OPS | CONV_OPS and len(node.args) > 1:
                w = node.args[1]
                if isinstance(w, torch.fx.Node) and w.op == "get_attr":
                    if op == "convolution" and len(node.args) > 6 and node.args[6]:
                        continue  # transposed convolution: output channels are dim 1
                    found[str(w.target)] = "linear" if op == "linear" else "conv"
    return found


# ---- int8 / int4 math ------------------------------------------------------------------------
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: ``(q int8 like w, scale float32 [out])``.

    Example:
        >>> q, s = quantize_int8(torch.tensor([[1.0, -0.5], [0.0, 0.0]]))
        >>> q.tolist(), s.tolist()[1] > 0
        ([[127, -64], [0, 0]], True)
    """
    w = w.detach().float()
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = (amax / 127).clamp(min=torch.finfo(torch.float32).tiny)
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.round(w / scale.reshape(shape)).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = (-1,) + (1,) * (q.dim() - 1)
    return (q.float() * scale.float().reshape(shape)).to(dtype)


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 in groups along the input dim: ``(packed uint8 [out, K'/2], scale float16 [out, groups])``."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    k = w2.shape[1]
    groups = -(-k // group_size)
    padded = torch.zeros(w2.shape[0], groups * group_size)
    padded[:, :k] = w2
    g = padded.reshape(w2.shape[0], groups, group_size)
    # Scales are stored as float16; quantize with the rounded scale so that load == compress.
    scale = (g.abs().amax(dim=2) / 7).clamp(min=2.0**-14).to(torch.float16)
    q = torch.round(g / scale.float().unsqueeze(2)).clamp(-7, 7).to(torch.int16) + 8
    flat = q.reshape(w2.shape[0], -1).to(torch.uint8)
    packed = flat[:, 0::2] | (flat[:, 1::2] << 4)
    return packed.contiguous(), scale


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, shape: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    out = packed.shape[0]
    low = (packed & 0x0F).to(torch.int16) - 8
    high = (packed >> 4).to(torch.int16) - 8
    q = torch.stack([low, high], dim=2).reshape(out, -1)
    groups = scale.shape[1]
    g = q.reshape(out, groups, -1).float() * scale.float().unsqueeze(2)
    k = 1
    for d in shape[1:]:
        k *= d
    return g.reshape(out, -1)[:, :k].reshape(shape).to(dtype)


# ---- whole state dicts -----------------------------------------------------------------------
def quantize_state(
    state: dict[str, torch.Tensor], targets: dict[str, int] | list[str], scheme: str, group_size: int = 64
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Quantize (``int8``/``int4``: ``targets``, name → output-channel axis) or cast (``fp16``/``bf16``: all floats).

    Returns ``(state, meta)``.

    Example:
        >>> out, meta = quantize_state({"w": torch.ones(2, 3)}, {"w": 1}, "int8")
        >>> out["w"].shape, meta["tensors"]["w"]["axis"]
        (torch.Size([3, 2]), 1)
    """
    if scheme not in SCHEMES:
        raise CompressionError(f"unknown scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
    out = dict(state)
    tensors: dict[str, Any] = {}
    if scheme in _CASTS:
        for name, t in state.items():
            if t.is_floating_point() and t.dtype != _CASTS[scheme]:
                out[name] = t.to(_CASTS[scheme]).contiguous()
                tensors[name] = {"dtype": str(t.dtype).removeprefix("torch.")}
        return out, {"scheme": scheme, "tensors": tensors}
    axes = targets if isinstance(targets, dict) else dict.fromkeys(targets, 0)
    for name, axis in axes.items():
        t = state[name]
        moved = t.movedim(axis, 0) if axis else t
        if scheme == "int8":
            q, s = quantize_int8(moved)
        else:
            q, s = quantize_int4(moved, group_size)
        out[name] = q.contiguous()
        out[name + SCALE_SUFFIX] = s.contiguous()
        tensors[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if axis:
            tensors[name]["axis"] = axis
    meta: dict[str, Any] = {"scheme": scheme, "tensors": tensors}
    if scheme == "int4":
        meta["group_size"] = group_size
    return out, meta


def parse_meta(raw: Any) -> dict[str, Any] | None:
    """The quantization record a shard's header keeps under :data:`META_KEY` (its metadata value), parsed; None if absent.

    Example:
        >>> parse_meta('{"scheme": "int8"}')
        {'scheme': 'int8'}
    """
    if not raw:
        return None
    try:
        return json.loads(raw if isinstance(raw, str) else json.dumps(raw))  # type: ignore[no-any-return]
    except ValueError as exc:
        raise BundleFormatError("model.safetensors has an unreadable quantization record") from exc


# The float dtypes a compressed tensor may come back as (what compress records).
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def dequantize_state(
    state: dict[str, torch.Tensor], meta: dict[str, Any], *, packed: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
) -> dict[str, torch.Tensor]:
    """Float tensors from a quantized/cast state.

    int8 2-D weights with the output channels first also go to ``packed`` (name →
    ``(int8, scale)``), for the opt-in dynamic kernel.
    """
    scheme = meta.get("scheme")
    out = dict(state)
    try:
        for name, info in dict(meta.get("tensors", {})).items():
            dtype = _FLOAT_DTYPES.get(str(info.get("dtype", "float32")))  # never getattr(torch, <bundle text>)
            if dtype is None:
                raise BundleFormatError(f"{name}: unknown original dtype {str(info.get('dtype'))[:40]!r}", hint="re-pack the model")
            if scheme in _CASTS:
                out[name] = state[name].to(dtype)
                continue
            q, s = out.pop(name), out.pop(name + SCALE_SUFFIX)
            shape, axis = [int(d) for d in info["shape"]], info.get("axis", 0)
            if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < max(len(shape), 1):
                raise BundleFormatError(f"{name}: bad quantization axis {str(axis)[:20]!r}", hint="re-compress the model")
            moved = [shape[axis], *shape[:axis], *shape[axis + 1 :]] if shape else shape
            if scheme == "int8":
                w = dequantize_int8(q, s, dtype)
                if packed is not None and q.dim() == 2 and not axis:
                    packed[name] = (q, s.float())
            elif scheme == "int4":
                w = dequantize_int4(q, s, moved, dtype)
            else:
                raise BundleFormatError(f"model.safetensors uses unknown quantization {scheme!r}", hint="upgrade nbmodelpack")
            if list(w.shape) != moved:
                raise BundleFormatError(f"{name}: stored as {list(w.shape)}, recorded as {moved}", hint="re-compress the model")
            out[name] = w.movedim(0, axis).contiguous() if axis else w
    except KeyError as exc:
        raise BundleFormatError(f"model.safetensors lacks quantized tensor {exc}") from exc
    except (TypeError, ValueError) as exc:  # a record that is not the shape of ints we write
        raise BundleFormatError(f"model.safetensors has a malformed quantization record: {str(exc)[:80]}") from exc
    return out


__all__ = [
    "SCHEMES",
    "dequantize_state",
    "matmul_weights",
    "quantize_int4",
    "quantize_int8",
    "quantize_state",
    "parse_meta",
]
