"""``Draft``: everything a new bundle version needs before the store numbers it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .manifest import Descriptor, Manifest


def child_recipe(
    parent_recipe: dict[str, Any], *, digest: str, ref: str, metrics: dict[str, Any] | None, op: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The recipe of a child made by ``op`` from a parent: the parent's lineage plus the
    parent's own step, which carries the parent's ref and metrics (shown as the parent's).

    Example:
        >>> r = child_recipe({"op": "pack", "parent": None, "params": {}}, digest="sha256:" + "1" * 64, ref="m:1",
        ...                  metrics={"validation": {"accuracy": 97.0}}, op="finetune", params={"epochs": 2})
        >>> r["op"], r["parent_ref"], r["lineage"][0]["ref"], r["lineage"][0]["metrics"]
        ('finetune', 'm:1', 'm:1', {'validation': {'accuracy': 97.0}})
    """
    lineage = [step for step in parent_recipe.get("lineage", []) if isinstance(step, dict)]
    if parent_recipe:
        step = {k: parent_recipe[k] for k in ("op", "parent", "parent_ref", "params") if k in parent_recipe}
        lineage.append({**step, "ref": ref, **({"metrics": dict(metrics)} if metrics else {})})
    return {"op": op, "parent": digest, "parent_ref": ref, "params": dict(params or {}), "lineage": lineage}


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
        """A child of ``manifest`` made by ``op``: same layers, card and metrics, recipe naming the parent."""
        summary = manifest.summary
        version = summary.get("version")
        ref = f"{summary.get('name', name)}:{version}" if version is not None else f"{summary.get('name', name)}@{manifest.digest}"
        found = summary.get("metrics")
        metrics: dict[str, Any] = found if isinstance(found, dict) else {}
        return cls(
            name=name,
            layers=[d for d in manifest.layers if d.filepath != "README.md"],
            recipe=child_recipe(manifest.recipe, digest=manifest.digest, ref=ref, metrics=metrics, op=op, params=params),
            parameters=int(summary.get("parameters", 0)),
            precision=str(summary.get("precision", "float32")),
            quantization=summary.get("quantization") or None,
            architecture=copy.deepcopy(summary.get("architecture", {})),
            # Same weights, same metrics (sign, encrypt); a transform that changes weights replaces them.
            metrics=dict(metrics),
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
