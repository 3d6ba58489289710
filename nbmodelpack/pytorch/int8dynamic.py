"""The opt-in int8 kernel: dynamic int8 activations on int8 weights (``int8_kernel="dynamic"``).

What ``load`` runs for an int8 bundle:

- ``"weight-only"`` (the default): every int8 tensor is dequantized once, at load,
  to the float dtype it was compressed from, and the parent's float kernels run on
  it: the parent's speed, and an item's output is the same alone or in any batch
  (up to float rounding, as for the parent).
  ``torch.ops.aten._weight_int8pack_mm`` (a true weight-only int8 matmul) measured
  4–35× slower than float ``linear`` on this project's CPUs (torch 2.14, AVX-512,
  batch 1 and 64), so it is never chosen.
- ``"dynamic"``: Linear layers run torch's x86/fbgemm (or ARM qnnpack) dynamic int8
  kernel: weights stay int8 in memory and activations are quantized per batch, so
  an output depends slightly on what else is in its batch. Chosen only on request,
  or when the bundle's recipe says compress measured it (``compress(int8_kernel="dynamic")``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..bundle.architecture import INT8_KERNELS, check_int8_kernel
from .quantize import op_name
from .tensors import owner_and_attr


def chosen_int8_kernel(recipe: Any, requested: str | None) -> str:
    """The kernel to run: the caller's, else the one compress recorded in the bundle's recipe, else weight-only.

    A recipe can only pick between our own two kernels; anything else in it is ignored.

    Example:
        >>> chosen_int8_kernel({"op": "compress", "params": {"int8_kernel": "dynamic"}}, None)
        'dynamic'
    """
    if requested is not None:
        return check_int8_kernel(requested) or "weight-only"
    params = recipe.get("params") if isinstance(recipe, dict) and recipe.get("op") == "compress" else None
    recorded = params.get("int8_kernel") if isinstance(params, dict) else None
    return recorded if recorded in INT8_KERNELS else "weight-only"


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


__all__ = ["Int8Linear", "chosen_int8_kernel", "int8_kernel_available", "use_int8_kernels"]
