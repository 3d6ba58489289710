"""``Draft``: everything a new bundle version needs before the store numbers it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .manifest import Descriptor, Manifest


@dataclass
class Draft:
    """A bundle version about to be committed (layers already stored as blobs).

    The store adds what depends on the version number: the card layer, the
    config, the summary annotation and the tags.

    Example:
        >>> Draft(name="m", layers=[], recipe={"op": "pack"}).recipe["op"]
        'pack'
    """

    name: str
    layers: list[Descriptor]
    recipe: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    precision: str = "float32"
    quantization: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    license: str | None = None
    datasets: list[str] = field(default_factory=list)
    card_extra: dict[str, Any] = field(default_factory=dict)
    card_body: str | None = None
    # The framework that rebuilds the model (the card's ``library_name``); its adapter sets it.
    library: str = ""
    # layer digest -> digest of its uncompressed, unencrypted content (ModelPack diffIds)
    diff_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_parent(
        cls, manifest: Manifest, *, name: str, op: str, params: dict[str, Any] | None = None
    ) -> Draft:
        """A child of ``manifest`` made by ``op``: same layers and card, recipe naming the parent."""
        summary = manifest.summary
        parent_recipe = manifest.recipe
        lineage = list(parent_recipe.get("lineage", []))
        if parent_recipe:
            lineage.append({k: parent_recipe[k] for k in ("op", "parent", "params") if k in parent_recipe})
        return cls(
            name=name,
            layers=[d for d in manifest.layers if d.filepath != "README.md"],
            recipe={"op": op, "parent": manifest.digest, "params": dict(params or {}), "lineage": lineage},
            parameters=int(summary.get("parameters", 0)),
            precision=str(summary.get("precision", "float32")),
            quantization=summary.get("quantization") or None,
            architecture=copy.deepcopy(summary.get("architecture", {})),
            metrics=dict(summary.get("metrics", {})),
            description=str(summary.get("description", "")),
            license=summary.get("license"),
            datasets=list(summary.get("datasets", [])),
            card_extra=copy.deepcopy(summary.get("card_extra", {})),
            diff_ids=dict(summary.get("diff_ids", {})),
            library=str(summary.get("library", "")),
        )

    def replace_layer(self, new: Descriptor, *, diff_id: str | None = None) -> None:
        """Put ``new`` in place of the layer with the same filepath (or append it)."""
        for i, old in enumerate(self.layers):
            if old.filepath == new.filepath:
                self.diff_ids.pop(old.digest, None)
                self.layers[i] = new
                break
        else:
            self.layers.append(new)
        if diff_id:
            self.diff_ids[new.digest] = diff_id
