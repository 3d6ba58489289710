"""A crafted shard index or shard set is refused in one line before any tensor reaches a module."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from crypto_helpers import add_variant
from models import MLP

import nbmodelpack
from nbmodelpack.bundle.shards import INDEX
from nbmodelpack.errors import BundleFormatError, ModelPackError

FIRST, SECOND = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


@pytest.fixture
def sharded() -> tuple[str, dict[str, str]]:
    torch.manual_seed(0)
    info = nbmodelpack.pack(MLP(hidden=32), "shards", example=torch.zeros(1, 1, 28, 28), shard_size=50_000)
    index = nbmodelpack.get_store().open(info.ref).read_json(INDEX)
    assert set(index["weight_map"].values()) == {FIRST, SECOND}
    return info.ref, dict(index["weight_map"])


def _index(weight_map: object) -> bytes:
    return json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}).encode()


CASES = {
    "maps a tensor to a file that is not a shard": (lambda m: {"replace": {INDEX: _index({**m, "net.1.bias": "README.md"})}}, "not a shard of this bundle"),
    "moves a tensor to the other shard": (lambda m: {"replace": {INDEX: _index({**m, "net.3.bias": FIRST})}}, "holds other tensors than"),
    "leaves a shard out": (lambda m: {"replace": {INDEX: _index({k: FIRST for k in m})}}, "names no tensor in"),
    "has no weight map object": (lambda m: {"replace": {INDEX: _index(list(m))}}, "has no weight_map object"),
    "is missing": (lambda m: {"drop": INDEX}, "has shards but no"),
    "lacks a shard": (lambda m: {"drop": SECOND}, "no complete set of shards"),
    "is larger than any index": (lambda m: {"replace": {INDEX: b'{"weight_map": {}, "pad": "' + b"x" * (17 << 20) + b'"}'}}, "larger than"),
    "comes with a shard declaring a terabyte header": (lambda m: {"replace": {SECOND: struct.pack("<Q", 1 << 40) + b"{}"}}, "byte header"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_index_or_shard_set_is_refused_in_one_line(sharded: tuple[str, dict[str, str]], case: str) -> None:
    ref, weight_map = sharded
    change, message = CASES[case]
    crafted = add_variant(ref, **change(weight_map))
    with pytest.raises(ModelPackError, match=message) as caught:
        nbmodelpack.load(crafted)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, BundleFormatError) or "larger than" in message
