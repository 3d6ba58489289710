"""How a bundle's weights are split into files: one ``model.safetensors``, or Hugging Face style shards.

Weights above the shard size are written as ``model-00001-of-00003.safetensors`` …
plus ``model.safetensors.index.json`` (``{"metadata": {"total_size": N},
"weight_map": {tensor name: shard file}}``), the layout Hugging Face tools read.
Pure names and JSON: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
