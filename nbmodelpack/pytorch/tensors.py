"""Tensor helpers shared by capture, restore and compress (dtype names, aliases)."""

from __future__ import annotations

from typing import Any

import torch

# Open Inference Protocol v2 datatype names.
V2_DATATYPES: dict[torch.dtype, str] = {
    torch.float32: "FP32",
    torch.float16: "FP16",
    torch.bfloat16: "BF16",
    torch.float64: "FP64",
    torch.int64: "INT64",
    torch.int32: "INT32",
    torch.int16: "INT16",
    torch.int8: "INT8",
    torch.uint8: "UINT8",
    torch.bool: "BOOL",
}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``'float32'``."""
    return str(dtype).removeprefix("torch.")


def split_aliases(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one name per shared tensor (tied weights); return ``(tensors, {alias: kept})``.

    Tensors that overlap without being the same view are copied, since
    safetensors stores each tensor's bytes once.
    """
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: dict[int, str] = {}
    for name, tensor in state.items():
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen and t.numel() > 0:
            aliases[name] = seen[key]
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages or not t.is_contiguous() or t.untyped_storage().nbytes() != t.nbytes:
            t = t.contiguous().clone() if ptr in storages else t.contiguous()
        seen[key] = name
        storages.setdefault(ptr, name)
        kept[name] = t
    return kept, aliases


def join_aliases(tensors: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_aliases`: every name of the original state dict."""
    full = dict(tensors)
    for alias, target in aliases.items():
        full[alias] = tensors[target]
    return full


def owner_and_attr(module: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """``"a.b.weight"`` → (submodule ``a.b``, ``"weight"``): parameters and buffers alike."""
    owner, _, attr = name.rpartition(".")
    return (module.get_submodule(owner) if owner else module), attr
