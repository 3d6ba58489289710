"""Magnitude pruning: global unstructured (zeros) and structured (whole neurons/channels removed).

Structured pruning really shrinks tensors and compute, so it changes shapes. It
finds, in the ``torch.export`` graph of the model, each Linear/Conv whose output
flows only through channel-wise ops (activations, batch norm, pooling, dropout,
flatten) into exactly one next Linear/Conv; it drops the output channels with the
smallest L2 norm there, and the matching inputs of the next layer. Layers that
feed the output, residual adds or anything else are left whole. torch offers
masks (``torch.nn.utils.prune.ln_structured``) but nothing that removes channels,
hence the graph walk here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from ..errors import CompressionError
from .capture import export_program
from .quantize import CONV_OPS, LINEAR_OPS, matmul_weights, op_name
from .tensors import owner_and_attr

# aten ops that keep the channel dimension as it is (elementwise or per-channel spatial)
_PASSTHROUGH = (
    "relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardswish", "leaky_relu", "elu", "mish",
    "dropout", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "clone", "contiguous", "alias",
    "max_pool2d_with_indices", "getitem",
)  # fmt: skip
_FLATTEN = ("flatten", "view", "reshape", "_unsafe_view")


# ---- unstructured --------------------------------------------------------------------------
def prune_unstructured(model: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """Zero the ``amount`` fraction of smallest-magnitude Linear/Conv weights, globally; return masks.

    Example:
        >>> m = nn.Sequential(nn.Linear(10, 10))
        >>> masks = prune_unstructured(m, 0.5)
        >>> int((m[0].weight == 0).sum())
        50
    """
    names = list(matmul_weights(model))
    if not names:
        raise CompressionError("the model has no Linear or Conv layers to prune")
    params = [owner_and_attr(model, n) for n in names]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    masks = {}
    for n, (mod, attr) in zip(names, params, strict=True):
        masks[n] = getattr(mod, attr + "_mask").detach().clone().bool()
        tprune.remove(mod, attr)  # make it permanent: a plain Parameter with zeros
    return masks


def keep_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[Any]:
    """Gradient hooks that keep pruned weights at zero while fine-tuning; remove them after."""
    handles = []
    for name, mask in masks.items():
        mod, attr = owner_and_attr(model, name)
        p = getattr(mod, attr)
        if isinstance(p, torch.Tensor) and p.requires_grad:
            handles.append(p.register_hook(lambda g, m=mask: g * m))
    return handles


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            mod, attr = owner_and_attr(model, name)
            getattr(mod, attr).mul_(mask)


# ---- structured ----------------------------------------------------------------------------
@dataclass
class _Group:
    """One producer layer, the per-channel tensors after it and the consumer that reads it."""

    producer: str
    producer_bias: str | None
    per_channel: list[str] = field(default_factory=list)  # batch-norm weight/bias/stats
    consumer: str = ""
    spatial: int = 1  # features per channel after a flatten (conv → linear)


def _groups(ep: torch.export.ExportedProgram) -> list[_Group]:
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}

    def pname(arg: Any) -> str | None:
        return names.get(arg.name) if isinstance(arg, torch.fx.Node) else None

    def is_mm(node: torch.fx.Node) -> str | None:
        if node.op != "call_function":
            return None
        op = op_name(node.target)
        if op in LINEAR_OPS:
            return "linear"
        if op in CONV_OPS:
            groups = node.args[8] if op == "convolution" and len(node.args) > 8 else (node.args[6] if len(node.args) > 6 else 1)
            transposed = op == "convolution" and len(node.args) > 6 and node.args[6]
            return "conv" if groups == 1 and not transposed else None
        return None

    out: list[_Group] = []
    for node in ep.graph.nodes:
        kind = is_mm(node)
        weight = pname(node.args[1]) if kind else None
        if not kind or weight is None:
            continue
        bias_arg = node.args[2] if len(node.args) > 2 else None
        group = _Group(weight, pname(bias_arg))
        if bias_arg is not None and group.producer_bias is None:
            continue
        cur, flattened = node, False
        while True:
            users = list(cur.users)
            if len(users) != 1:
                break
            user = users[0]
            op = op_name(user.target) if user.op == "call_function" else ""
            if user.op == "call_function" and user.args and user.args[0] is not cur:
                break
            user_kind = is_mm(user)
            if user_kind:
                if user_kind == "linear" and kind == "conv" and not flattened:
                    break
                if user_kind == "conv" and (kind == "linear" or flattened):
                    break
                group.consumer = pname(user.args[1]) or ""
                if group.consumer:
                    out.append(group)
                break
            if "batch_norm" in op:
                bn = [pname(a) for a in user.args[1:5]]
                if any(a is not None and n is None for a, n in zip(user.args[1:5], bn, strict=True)):
                    break
                group.per_channel += [n for n in bn if n]
                cur = user
            elif op in _PASSTHROUGH:
                if op == "getitem" and user.args[1] != 0:
                    break
                cur = user
            elif op in _FLATTEN and kind == "conv" and not flattened:
                before, after = cur.meta.get("val"), user.meta.get("val")
                if before is None or after is None or after.dim() != 2 or before.dim() < 3:
                    break
                spatial = 1
                for d in before.shape[2:]:
                    spatial *= int(d)
                group.spatial, flattened = spatial, True
                cur = user
            else:
                break
    return out


def prune_structured(model: nn.Module, amount: float, example: Any) -> dict[str, Any]:
    """Remove the ``amount`` fraction of lowest-norm neurons/channels of each prunable layer, in place.

    Returns what changed: ``{"layers": {weight name: [before, after]}}``.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
        >>> prune_structured(m, 0.5, torch.zeros(2, 8))["layers"]
        {'0.weight': [16, 8]}
    """
    try:
        ep = export_program(model, example)
    except Exception as exc:  # torch.export raises many types
        raise CompressionError(f"structured pruning needs torch.export of the model: {str(exc).splitlines()[0][:160]}") from exc
    groups = _groups(ep)
    if not groups:
        raise CompressionError(
            "no layer can lose channels: none feeds exactly one next Linear/Conv through channel-wise ops",
            hint="use unstructured pruning (without structured=True)",
        )
    state = {k: v.detach() for k, v in model.state_dict().items()}
    new: dict[str, torch.Tensor] = {}
    changed: dict[str, list[int]] = {}
    for g in groups:
        w = new.get(g.producer, state[g.producer])
        channels = w.shape[0]
        n_keep = max(1, round(channels * (1 - amount)))
        keep = torch.sort(torch.topk(w.float().reshape(channels, -1).norm(dim=1), n_keep).indices).values
        new[g.producer] = w[keep].contiguous()
        for name in [g.producer_bias, *g.per_channel]:
            if name:
                new[name] = state[name][keep].contiguous()
        cons = new.get(g.consumer, state[g.consumer])
        cols = (keep[:, None] * g.spatial + torch.arange(g.spatial)).reshape(-1)
        new[g.consumer] = cons[:, cols].contiguous()
        changed[g.producer] = [channels, n_keep]
    for name, t in new.items():
        mod, attr = owner_and_attr(model, name)
        if attr in mod._parameters:
            old = mod._parameters[attr]
            mod._parameters[attr] = nn.Parameter(t.clone(), requires_grad=bool(old is not None and old.requires_grad))
        else:
            mod._buffers[attr] = t.clone()
        _fix_shape_attrs(mod)
    return {"layers": changed}


def _fix_shape_attrs(mod: nn.Module) -> None:
    """Keep ``in_features``/``out_channels``/``num_features`` true to the new weights (for repr and re-export)."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        return
    if isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
    elif isinstance(mod, nn.modules.conv._ConvNd):
        mod.out_channels, mod.in_channels = int(w.shape[0]), int(w.shape[1]) * mod.groups
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        mod.num_features = int(w.shape[0])
