"""Compose a new version: its card, its ModelPack config and its manifest.

Everything here depends on the version number the store has just chosen, so it
runs under the store's lock; the layers themselves were stored before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..bundle import mediatypes as mt
from ..bundle.card import Card, default_body
from ..bundle.draft import Draft
from ..bundle.manifest import Descriptor, build_config, build_manifest, human_param_size, layer
from ..bundle.metrics import sectioned
from .blobs import Blobs, split

# A commit hook (signing): gets a new version's layers, returns one more layer.
Signer = Callable[[list[Descriptor]], Descriptor]


def now_iso() -> str:
    """The current UTC time as the OCI ``created`` annotation writes it.

    Example:
        >>> len(now_iso())
        20
    """
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def card_front(draft: Draft, version: int, created: str, layers: list[Descriptor]) -> dict[str, Any]:
    """The card's front matter for ``draft`` as version ``version`` (None values left out)."""
    front: dict[str, Any] = {
        "name": draft.name,
        "version": version,
        "description": draft.description or None,
        "license": draft.license,
        "library_name": draft.library or None,
        "tags": ["nbmodelpack", "modelpack", "safetensors"],
        "architecture": draft.architecture,
        "parameters": draft.parameters,
        "precision": draft.precision,
        "quantization": draft.quantization,
        "size_bytes": sum(d.size for d in layers),
        "metrics": sectioned(draft.metrics) or None,
        "datasets": draft.datasets or None,
        "lineage": [*draft.recipe.get("lineage", []), {k: v for k, v in draft.recipe.items() if k != "lineage"}],
        "created": created,
        **draft.card_extra,
    }
    return {k: v for k, v in front.items() if v is not None}


def summary(draft: Draft, version: int) -> dict[str, Any]:
    """The manifest's summary annotation: what listing and ``Draft.from_parent`` read."""
    out = {
        "name": draft.name,
        "version": version,
        "parameters": draft.parameters,
        "precision": draft.precision,
        "quantization": draft.quantization or "",
        "architecture": draft.architecture,
        "metrics": draft.metrics,
        "description": draft.description,
        "license": draft.license,
        "datasets": draft.datasets,
        "card_extra": draft.card_extra,
        "diff_ids": {k: v for k, v in draft.diff_ids.items() if k != v},
    }
    if draft.library:
        out["library"] = draft.library
    return out


def write_version(blobs: Blobs, draft: Draft, version: int, signer: Signer | None = None) -> bytes:
    """Store the card, config and manifest of ``draft`` as ``version``; return the manifest bytes."""
    created = now_iso()
    layers = [d for d in draft.layers if d.filepath != "README.md"]
    front = card_front(draft, version, created, layers)
    card = Card(front, draft.card_body or default_body(front)).render().encode()
    digest, size = blobs.write_chunks(split(card), what="README.md")
    layers.append(layer("README.md", mt.DOC, digest, size))
    if signer is not None:
        layers.append(signer(list(layers)))
    config_raw = build_config(
        name=draft.name,
        version=str(version),
        created=created,
        diff_ids=[draft.diff_ids.get(d.digest, d.digest) for d in layers],
        precision=draft.precision,
        param_size=human_param_size(draft.parameters),
        architecture=str(draft.architecture.get("class", "")) or None,
        quantization=draft.quantization,
        description=draft.description or None,
        licenses=[draft.license] if draft.license else None,
    )
    config_digest, config_size = blobs.write_chunks(split(config_raw), what="config")
    annotations = {
        mt.CREATED: created,
        mt.TITLE: draft.name,
        mt.RECIPE: json.dumps(draft.recipe, sort_keys=True),
        mt.SUMMARY: json.dumps(summary(draft, version), sort_keys=True),
    }
    raw = build_manifest(Descriptor(mt.CONFIG, config_digest, config_size), layers, annotations)
    blobs.write_chunks(split(raw), what="manifest")
    return raw
