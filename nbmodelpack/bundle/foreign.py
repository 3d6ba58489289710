"""ModelPack artifacts made by other tools (modctl, KitOps, oras): what they hold and say.

Such an artifact has no ``architecture.json``, ``README.md`` or our manifest summary;
what it says about itself is in its config (``config.paramSize``, ``precision``,
``architecture``, ``format``: see the model-spec config schema) and in its layers'
media types and filepaths. Pure data: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from . import mediatypes as mt
from .format import plain
from .manifest import Descriptor
from .shards import weight_filepaths

# The config fields a listing shows, in display order (model-spec ``ModelConfig``).
CONFIG_FACTS = ("paramSize", "precision", "architecture", "format")
HF_CONFIG = "config.json"

_PARAM_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def config_facts(doc: Any) -> dict[str, str]:
    """The ``config`` fields of a ModelPack config that say what the model is (plain text, 80 characters at most).

    Example:
        >>> config_facts({"config": {"paramSize": "110M", "precision": "fp32", "format": "safetensors", "x": 1}})
        {'paramSize': '110M', 'precision': 'fp32', 'format': 'safetensors'}
    """
    model = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(model, dict):
        return {}
    return {k: plain(model[k])[:80] for k in CONFIG_FACTS if isinstance(model.get(k), str) and model[k]}


def parse_param_size(text: str) -> int:
    """A ``paramSize`` (``"110M"``, ``"1.5B"``, ``"7b"``) as a count; 0 when it is not one.

    Example:
        >>> parse_param_size("1.5B"), parse_param_size("lots")
        (1500000000, 0)
    """
    match = _PARAM_SIZE.fullmatch(text[:40])
    if not match:
        return 0
    return int(float(match.group(1)) * _SCALE[match.group(2).upper()])


def kind_of(desc: Descriptor) -> str:
    """What a layer holds, in words: ``weights``, ``weight config``, ``doc``, ``code``, ``dataset`` (+ archive, wrapping).

    Example:
        >>> kind_of(Descriptor(mt.WEIGHT_TAR, "sha256:" + "0" * 64, 1, {mt.FILEPATH: "w"}))
        'weights, tar'
    """
    base = mt.base_media_type(desc.media_type)
    if base not in mt.SPEC_LAYER_TYPES:
        return plain(base)[:60]
    kind, packing = base.removeprefix("application/vnd.cncf.model.").split(".v1.", 1)
    words = {"weight": "weights", "weight.config": "weight config"}.get(kind, kind)
    extra = [packing] if packing != "raw" else []
    return ", ".join([words, *extra, *(f"{e}-wrapped" for e in desc.encodings)])


def holdings(layers: Iterable[Descriptor], limit: int = 6) -> str:
    """One line listing an artifact's files and what each is.

    Example:
        >>> holdings([Descriptor(mt.WEIGHT, "sha256:" + "0" * 64, 1, {mt.FILEPATH: "model.safetensors"})])
        'model.safetensors (weights)'
    """
    items = [f"{plain(d.filepath or d.digest[:19])[:80]} ({kind_of(d)})" for d in layers]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more if items else "no layers"


def load_plan(layers: Iterable[Descriptor], hf_config: Any, *, transformers: bool) -> tuple[str | None, str]:
    """What ``load`` (without ``arch=``) can do with an artifact that has no ``architecture.json``.

    Returns ``(model_type, line)``: ``model_type`` is set when the weights can be built
    through transformers from ``config.json``; otherwise ``line`` says what is missing.

    Example:
        >>> desc = Descriptor(mt.WEIGHT, "sha256:" + "0" * 64, 1, {mt.FILEPATH: "model.safetensors"})
        >>> load_plan([desc], {"model_type": "bert"}, transformers=True)
        ('bert', 'transformers bert model from config.json')
    """
    descs = list(layers)
    weights = weight_filepaths(d.filepath for d in descs)
    raw = {d.filepath for d in descs if mt.base_media_type(d.media_type) == mt.WEIGHT}
    if not weights or not set(weights) <= raw:
        return None, "no safetensors weights as a plain (raw) layer named model.safetensors"
    model_type = hf_config.get("model_type") if isinstance(hf_config, dict) else None
    if not isinstance(model_type, str) or not model_type:
        return None, "safetensors weights but neither architecture.json nor a Hugging Face config.json with a model_type; pass arch='module.Class'"
    if not transformers:
        return None, f"a transformers {plain(model_type)[:40]} model (config.json), but transformers is not installed"
    return model_type, f"transformers {plain(model_type)[:40]} model from config.json"
