"""How a bundle's weights are split into files: one ``model.safetensors``, or Hugging Face style shards.

Weights above the shard size are written as ``model-00001-of-00003.safetensors`` …
plus ``model.safetensors.index.json`` (``{"metadata": {"total_size": N},
"weight_map": {tensor name: shard file}}``), the layout Hugging Face tools read.
Pure names and JSON: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 << 30

_SHARD_RE = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def shard_name(number: int, count: int) -> str:
    """The file name of shard ``number`` (1-based) of ``count``.

    Example:
        >>> shard_name(1, 3)
        'model-00001-of-00003.safetensors'
    """
    return f"model-{number:05d}-of-{count:05d}.safetensors"


def weight_filepaths(filepaths: Iterable[str]) -> list[str]:
    """The weight files among a bundle's files, in load order: ``model.safetensors`` or its shards.

    Only a complete run of shards (1..N of the same N) counts as sharded weights.

    Example:
        >>> weight_filepaths(["README.md", "model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"])
        ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
        >>> weight_filepaths(["model.safetensors", "architecture.json"])
        ['model.safetensors']
    """
    names = set(filepaths)
    if WEIGHTS in names:
        return [WEIGHTS]
    shards = sorted(n for n in names if _SHARD_RE.fullmatch(n))
    if not shards:
        return []
    count = int(_SHARD_RE.fullmatch(shards[0]).group(2))  # type: ignore[union-attr]
    expected = [shard_name(i, count) for i in range(1, count + 1)]
    return expected if shards == expected else []


# Tensor names are short; a million tensors is far beyond any model. The index is read
# through the bounded JSON reader, so this caps what a hostile index may hold once parsed.
MAX_INDEX_ENTRIES = 1_000_000
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str | int) -> int:
    """A byte count from ``500MB``, ``2GiB``, ``1.5GB`` or a plain number; ``ValueError`` otherwise.

    Example:
        >>> parse_size("500MB"), parse_size("2GiB"), parse_size(1024)
        (500000000, 2147483648, 1024)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE_RE.fullmatch(str(text))
        unit = _UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f"{str(text)[:40]!r} is not a size (e.g. 500MB, 2GiB)")
        value = int(float(match.group(1)) * unit)
    if value < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return value


def plan_shards(sizes: Iterable[tuple[str, int]], limit: int) -> list[list[str]]:
    """Group tensors into shards of at most ``limit`` bytes, greedily in tensor order.

    A tensor is never split; one larger than ``limit`` gets a shard of its own.

    Example:
        >>> plan_shards([("a", 4), ("b", 4), ("c", 9), ("d", 1)], 8)
        [['a', 'b'], ['c'], ['d']]
    """
    shards: list[list[str]] = []
    used = 0
    for name, size in sizes:
        if not shards or used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def index_document(total_size: int, weight_map: dict[str, str]) -> dict[str, Any]:
    """``model.safetensors.index.json`` as Hugging Face writes it.

    Example:
        >>> index_document(8, {"w": "model-00001-of-00001.safetensors"})
        {'metadata': {'total_size': 8}, 'weight_map': {'w': 'model-00001-of-00001.safetensors'}}
    """
    return {"metadata": {"total_size": total_size}, "weight_map": dict(weight_map)}


def check_index(doc: Any, shards: list[str]) -> dict[str, list[str]]:
    """The tensor names of each shard, from a parsed index; ``ValueError`` (one line) if it is not sound.

    Every ``weight_map`` value must be one of ``shards`` and every shard must be named.
    A tensor appears once (JSON object keys); that the names match each shard's header
    is checked when the shards are read.

    Example:
        >>> check_index({"weight_map": {"a": "s1", "b": "s2"}}, ["s1", "s2"])
        {'s1': ['a'], 's2': ['b']}
    """
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{INDEX} has no weight_map object")
    if len(weight_map) > MAX_INDEX_ENTRIES:
        raise ValueError(f"{INDEX} names more than {MAX_INDEX_ENTRIES:,} tensors")
    names: dict[str, list[str]] = {shard: [] for shard in shards}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or shard not in names:
            raise ValueError(f"{INDEX} maps {str(tensor)[:60]!r} to {str(shard)[:60]!r}, which is not a shard of this bundle")
        names[shard].append(tensor)
    empty = [shard for shard, listed in names.items() if not listed]
    if empty:
        raise ValueError(f"{INDEX} names no tensor in {empty[0]}")
    return names
