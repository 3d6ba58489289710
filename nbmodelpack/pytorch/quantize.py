"""Weight-only quantization and casts, stored as plain tensors in safetensors.

Layout in ``model.safetensors`` (no tensor subclasses, no pickle):

- ``int8``: ``NAME`` holds ``int8`` values with the weight's shape; ``NAME.__scale__``
  one ``float32`` scale per output channel (symmetric, ``w ≈ q * scale``).
- ``int4``: the weight is flattened to ``[out, K]`` and split in groups of
  ``group_size`` along K (K zero-padded to a whole number of groups); ``NAME`` holds
  ``uint8`` bytes with two 4-bit values each (low nibble first, stored as ``q + 8``,
  ``q`` in [-7, 7]); ``NAME.__scale__`` one ``float16`` scale per group ``[out, groups]``.
- ``fp16`` / ``bf16``: every floating tensor is stored in that dtype.

The scheme goes into the safetensors header metadata under ``nbmodelpack.quantization``
(JSON: scheme, group size, and per tensor its original shape and dtype), so the
weights file describes itself. :func:`dequantize_state` turns it back into float
tensors (the portable path); :func:`use_int8_kernels` runs int8 Linear layers
with ``torch._weight_int8pack_mm`` where the platform has it (the fast path).
"""

from __future__ import annotations

import json
import struct
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import BundleFormatError, CompressionError
from .tensors import owner_and_attr

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
    state: dict[str, torch.Tensor], targets: list[str], scheme: str, group_size: int = 64
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Quantize (``int8``/``int4``: ``targets``) or cast (``fp16``/``bf16``: all floats); return ``(state, meta)``."""
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
    for name in targets:
        t = state[name]
        if scheme == "int8":
            q, s = quantize_int8(t)
        else:
            q, s = quantize_int4(t, group_size)
        out[name] = q
        out[name + SCALE_SUFFIX] = s.contiguous()
        tensors[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    meta: dict[str, Any] = {"scheme": scheme, "tensors": tensors}
    if scheme == "int4":
        meta["group_size"] = group_size
    return out, meta


def read_meta(data: bytes) -> dict[str, Any] | None:
    """The quantization record in a safetensors file's header, if any."""
    # The safetensors Python API reads metadata only from files; the header is
    # an 8-byte little-endian length followed by JSON (the documented format).
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
        raw = (header.get("__metadata__") or {}).get(META_KEY)
        return json.loads(raw) if raw else None
    except (ValueError, AttributeError) as exc:
        raise BundleFormatError("model.safetensors has an unreadable quantization record") from exc


# The float dtypes a compressed tensor may come back as (what compress records).
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def dequantize_state(
    state: dict[str, torch.Tensor], meta: dict[str, Any], *, packed: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
) -> dict[str, torch.Tensor]:
    """Float tensors from a quantized/cast state; int8 2-D weights also go to ``packed`` (for the fast path)."""
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
            if scheme == "int8":
                out[name] = dequantize_int8(q, s, dtype)
                if packed is not None and q.dim() == 2:
                    packed[name] = (q, s.float())
            elif scheme == "int4":
                out[name] = dequantize_int4(q, s, list(info["shape"]), dtype)
            else:
                raise BundleFormatError(f"model.safetensors uses unknown quantization {scheme!r}", hint="upgrade nbmodelpack")
    except KeyError as exc:
        raise BundleFormatError(f"model.safetensors lacks quantized tensor {exc}") from exc
    return out


# ---- the fast int8 path ----------------------------------------------------------------------
# torch's x86/fbgemm (or ARM qnnpack) dynamic int8 Linear: int8 weights stay int8 in
# memory and activations are quantized per batch. On CPUs it is several times faster
# than float for large layers; ``torch._weight_int8pack_mm`` measured far slower here.
def int8_kernel_available() -> bool:
    """Does this torch build have a dynamic int8 Linear kernel for the CPU?"""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    return hasattr(torch.ops.quantized, "linear_dynamic") and any(e in engines for e in ("x86", "fbgemm", "qnnpack"))


class Int8Linear(nn.Module):
    """A Linear layer running on int8 weights (per-channel scales, dynamic int8 activations).

    Its state dict holds the float ``weight``/``bias`` it stands for, so a loaded
    model packs again like the original.
    """

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = int(qweight.shape[0]), int(qweight.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks quantized tensors deprecated in favour of torchao
            zero = torch.zeros(qweight.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(qweight, scale.double(), zero, 0)
            self._packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float(), self._packed, True)
        return y.reshape(*shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        qw, bias = torch.ops.quantized.linear_unpack(self._packed)
        destination[prefix + "weight"] = qw.dequantize()
        if bias is not None:
            destination[prefix + "bias"] = bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def use_int8_kernels(model: nn.Module, packed: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Run Linear layers whose weights are in ``packed`` on int8 kernels; return how many.

    Ordinary modules get their ``nn.Linear`` children replaced by :class:`Int8Linear`;
    graphs rebuilt from ``torch.export`` get each ``aten.linear`` node turned into a call
    of an :class:`Int8Linear` put where the weight's owner module was (same state-dict names).
    """
    if not packed or not int8_kernel_available():
        return 0
    swapped = 0
    try:
        for prefix, mod in list(model.named_modules()):
            name = f"{prefix}.weight" if prefix else "weight"
            if isinstance(mod, nn.Linear) and name in packed and prefix:
                setattr(*owner_and_attr(model, prefix), Int8Linear(*packed[name], mod.bias))
                swapped += 1
        if isinstance(model, torch.fx.GraphModule):
            swapped += _rewrite_graph(model, packed)
    except RuntimeError:
        return swapped  # no usable engine on this CPU: the layers stay float (still correct)
    return swapped


def _rewrite_graph(gm: torch.fx.GraphModule, packed: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or op_name(node.target) != "linear":
            continue
        w = node.args[1]
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if not (isinstance(w, torch.fx.Node) and w.op == "get_attr" and str(w.target) in packed):
            continue
        owner, _, attr = str(w.target).rpartition(".")
        # Only when the owner holds just this weight (and its bias): it becomes the Int8Linear.
        if not owner or attr != "weight" or len(w.users) != 1:
            continue
        owner_mod = gm.get_submodule(owner)
        b_name = str(bias.target) if isinstance(bias, torch.fx.Node) else None
        if set(owner_mod.state_dict()) - {"weight", "bias"} or (b_name and b_name != f"{owner}.bias"):
            continue
        b = getattr(owner_mod, "bias", None) if b_name else None
        gm.add_submodule(owner, Int8Linear(*packed[str(w.target)], b))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(owner, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        for attr_node in (w, bias):
            if isinstance(attr_node, torch.fx.Node) and not attr_node.users:
                gm.graph.erase_node(attr_node)
        count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return count


__all__ = [
    "SCHEMES",
    "Int8Linear",
    "dequantize_state",
    "int8_kernel_available",
    "matmul_weights",
    "quantize_int4",
    "quantize_int8",
    "quantize_state",
    "read_meta",
    "use_int8_kernels",
]
