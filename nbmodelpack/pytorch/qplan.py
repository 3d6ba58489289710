"""Which tensors int8/int4 quantize, along which axis, and why the others stay float.

A weight is quantized per output channel when we know which of its dims that is:

- ``nn.Linear`` and convolutions: dim 0; transposed convolutions: dim 1;
- transformers' ``Conv1D`` (GPT-2's attention and MLP; a Linear stored as ``[in, out]``): dim 1;
- ``nn.Embedding``/``nn.EmbeddingBag``: dim 0 (one scale per row);
- ``nn.RNN``/``nn.LSTM``/``nn.GRU`` matrices (``weight_ih_l*``, ``weight_hh_l*``,
  ``weight_hr_l*``): dim 0 (one scale per gate row);
- in graphs rebuilt from ``torch.export``: the weights of ``aten.linear``/``conv*``
  (dim 0, transposed: 1), ``aten.addmm`` (dim 1) and ``aten.embedding`` (dim 0) nodes,
  and the RNN matrices by their ``nn.RNNBase`` names (the loops that use them are
  subgraphs).

Loading dequantizes these at load (weight-only), so each is exactly ``q * scale`` in
its own dtype whatever layer reads it. Every other floating tensor with two or more
dims stays float and is listed with the reason; 1-D tensors (biases, norms) always
stay float and are not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .quantize import CONV_OPS, LINEAR_OPS, op_name

_RNN_MATRICES = ("weight_ih_l", "weight_hh_l", "weight_hr_l")
_TRANSPOSED_CONV_OPS = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_RNN_NAME = re.compile(r"(^|\.)weight_(ih|hh|hr)_l\d+(_reverse)?$")


@dataclass
class Plan:
    """``targets``: state-dict name → output-channel axis; ``skipped``: name → why it stays float."""

    targets: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _is_conv1d(mod: nn.Module) -> bool:
    # transformers' Conv1D, recognised without importing transformers.
    return type(mod).__name__ == "Conv1D" and type(mod).__module__.startswith("transformers.")


def _module_axes(model: nn.Module) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for prefix, mod in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(mod, nn.Linear | nn.Embedding | nn.EmbeddingBag) or (isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed):
            found.append((dot + "weight", 0))
        elif isinstance(mod, nn.modules.conv._ConvNd) or _is_conv1d(mod):
            found.append((dot + "weight", 1))
        elif isinstance(mod, nn.RNNBase):
            found += [(dot + name, 0) for name, _ in mod.named_parameters(recurse=False) if name.startswith(_RNN_MATRICES)]
    return found


def _graph_axes(model: nn.Module) -> list[tuple[str, int]]:
    graph = getattr(model, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return []
    found: list[tuple[str, int]] = []
    for node in graph.nodes:
        op = op_name(node.target) if node.op == "call_function" else ""
        if op in LINEAR_OPS | CONV_OPS:
            w, axis = (node.args[1] if len(node.args) > 1 else None), 0
            if op == "convolution" and len(node.args) > 6 and node.args[6]:
                axis = 1  # transposed convolution: output channels are dim 1
        elif op in _TRANSPOSED_CONV_OPS:
            w, axis = (node.args[1] if len(node.args) > 1 else None), 1
        elif op == "addmm":
            w, axis = (node.args[2] if len(node.args) > 2 else None), 1
        elif op == "embedding":
            w, axis = (node.args[0] if node.args else None), 0
        else:
            continue
        if isinstance(w, torch.fx.Node) and w.op == "get_attr":
            found.append((str(w.target), axis))
    # nn.LSTM/nn.GRU are exported as while loops whose bodies take the matrices as operands;
    # the graph keeps their nn.RNNBase names (``…weight_ih_l0``), which say what they are.
    found += [(name, 0) for name, _ in model.named_parameters() if _RNN_NAME.search(name)]
    return found


def plan(model: nn.Module, state: dict[str, torch.Tensor], aliases: dict[str, str] | None = None) -> Plan:
    """What int8/int4 quantize in ``state`` (the tensors to store; ``aliases``: tied name → stored name).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2), nn.LSTM(2, 3))
        >>> p = plan(m, m.state_dict())
        >>> sorted(p.targets), p.skipped
        (['0.weight', '1.weight_hh_l0', '1.weight_ih_l0'], {})
    """
    aliases = aliases or {}
    axes: dict[str, set[int]] = {}
    for name, axis in [*_module_axes(model), *_graph_axes(model)]:
        axes.setdefault(aliases.get(name, name), set()).add(axis)
    result = Plan()
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.dim() < 2:
            continue
        found = axes.get(name)
        if found is None:
            result.skipped[name] = "not the weight of a Linear, Conv, Conv1D, Embedding or RNN layer: kept float"
        elif len(found) > 1:
            result.skipped[name] = "shared by layers that read it along different axes: kept float"
        else:
            result.targets[name] = found.pop()
    return result


__all__ = ["Plan", "plan"]
