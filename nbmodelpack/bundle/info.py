"""``BundleInfo``: what a user sees of one bundle version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from . import mediatypes as mt
from .foreign import config_facts, parse_param_size
from .format import human_bytes, plain
from .manifest import Manifest
from .metrics import text as metrics_text


@dataclass
class BundleInfo:
    """One bundle version as listed and shown (made from its manifest alone).

    Example:
        >>> info = BundleInfo(name="mnist-mlp", version=1, digest="sha256:" + "0" * 64)
        >>> info.ref
        'mnist-mlp:1'
    """

    name: str
    version: int | None
    digest: str
    tags: list[str] = field(default_factory=list)
    created: str = ""
    size: int = 0
    parameters: int = 0
    precision: str = ""
    quantization: str = ""
    architecture: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    compressed: bool = False
    encrypted: bool = False
    signed: bool = False
    published: list[str] = field(default_factory=list)
    remote: str | None = None
    # From the ModelPack config, for artifacts other tools made (no summary of ours).
    param_size: str = ""
    format: str = ""

    @property
    def ref(self) -> str:
        """The reference that names this version (``name:version`` or ``name@digest``)."""
        base = f"{self.remote}/{self.name}" if self.remote else self.name
        if self.version is not None:
            return f"{base}:{self.version}"
        return f"{base}@{self.digest}"

    @property
    def architecture_line(self) -> str:
        """What load will do with the architecture (listings of a local store say it from
        ``architecture.json``); for a remote listing, what the manifest claims.

        Example:
            >>> BundleInfo("m", 1, "sha256:" + "0" * 64, architecture={"load": "export graph"}).architecture_line
            'export graph'
        """
        if "load" in self.architecture:
            if "strategy" not in self.architecture and "class" in self.architecture:  # another tool's artifact
                return f"{self.architecture['class']} (ModelPack config); load: {self.architecture['load']}"
            return str(self.architecture["load"])
        if "strategy" not in self.architecture and "class" in self.architecture:
            return f"{self.architecture['class']} (as the ModelPack config says; checked at load)"
        return f"{self.architecture.get('class', '-')} ({self.architecture.get('strategy', '-')}; as published, checked at load)"

    @property
    def parent_line(self) -> str:
        """How this version was made from its parent (``finetune of mnist-mlp:1``); empty for a first pack.

        Example:
            >>> BundleInfo("m", 2, "sha256:" + "0" * 64, recipe={"op": "finetune", "parent": "sha256:" + "1" * 64, "parent_ref": "m:1"}).parent_line
            'finetune of m:1'
        """
        parent = self.recipe.get("parent") if isinstance(self.recipe, dict) else None
        if not parent:
            return ""
        named = self.recipe.get("parent_ref")
        return f"{plain(self.recipe.get('op'))} of {plain(named) if isinstance(named, str) and named else plain(parent)[:19] + '…'}"

    @property
    def badges(self) -> list[str]:
        flags = [("compressed", self.compressed), ("encrypted", self.encrypted), ("signed", self.signed)]
        out = [name for name, on in flags if on]
        if self.published:
            out.append("published")
        return out

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, *, name: str, tags: list[str] | None = None, remote: str | None = None, config: Any = None
    ) -> BundleInfo:
        """The info the manifest gives; ``config`` (the parsed ModelPack config) fills what our summary would say.

        Example:
            >>> from nbmodelpack.bundle.manifest import Descriptor, build_manifest, parse_manifest
            >>> BundleInfo.from_manifest(parse_manifest(build_manifest(Descriptor(mt.CONFIG, "sha256:" + "0" * 64, 2), [], {})),
            ...     name="bert", config={"config": {"paramSize": "4.4M", "precision": "fp32"}}).parameters
            4400000
        """
        summary = manifest.summary
        facts = config_facts(config)
        recipe = manifest.recipe
        steps = [s.get("op") for s in recipe.get("lineage", [])] + [recipe.get("op")]
        version = summary.get("version")
        return cls(
            name=name,
            version=int(version) if isinstance(version, int | str) and str(version).isdigit() else None,
            digest=manifest.digest,
            tags=sorted(tags or [], key=tag_order),
            created=manifest.annotations.get(mt.CREATED, ""),
            size=manifest.size,
            parameters=int(summary.get("parameters", 0)) or parse_param_size(facts.get("paramSize", "")),
            precision=str(summary.get("precision", "")) or facts.get("precision", ""),
            quantization=str(summary.get("quantization", "")),
            architecture=dict(summary.get("architecture", {})) or ({"class": facts["architecture"]} if "architecture" in facts else {}),
            metrics=dict(summary.get("metrics", {})),
            description=str(summary.get("description", "")),
            recipe=recipe,
            layers=[
                {"filepath": d.filepath, "mediaType": d.media_type, "encoding": ",".join(d.encodings), "digest": d.digest, "size": d.size}
                for d in manifest.layers
            ],
            compressed="compress" in steps,
            encrypted=any(mt.AGE in d.encodings for d in manifest.layers),
            signed=any(d.media_type == mt.SIGNATURE for d in manifest.layers),
            remote=remote,
            param_size=facts.get("paramSize", ""),
            format=facts.get("format", ""),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints and the REST API returns)."""
        out = asdict(self)
        out["ref"] = self.ref
        out["badges"] = self.badges
        return out

    def __str__(self) -> str:
        badges = f" [{', '.join(self.badges)}]" if self.badges else ""
        metrics = metrics_text(self.metrics)
        lines = [
            f"{self.ref}{badges}",
            f"  digest      {self.digest}",
            f"  tags        {', '.join(self.tags) or '-'}",
            f"  size        {human_bytes(self.size)}",
            f"  parameters  {self.parameters:,}{f' ({self.param_size})' if self.param_size else ''}  precision {self.precision or '-'}"
            + (f"  quantization {self.quantization}" if self.quantization else "")
            + (f"  format {self.format}" if self.format else ""),
            f"  arch        {self.architecture_line}",
        ]
        if metrics:
            lines.append(f"  metrics     {metrics}")
        if self.parent_line:
            lines.append(f"  from        {self.parent_line}")
        return "\n".join(lines)


def listing_order(info: BundleInfo) -> tuple[str, int, str]:
    """Sort key for listings: by name, newest version first, then digest.

    Example:
        >>> a, b = (BundleInfo(name="m", version=v, digest="sha256:" + "0" * 64) for v in (1, 2))
        >>> [i.version for i in sorted([a, b], key=listing_order)]
        [2, 1]
    """
    return (info.name, -(info.version or 0), info.digest)


def tag_order(tag: str) -> tuple[int, int, str]:
    """Sort key for tags: version numbers first (numerically), then names.

    Example:
        >>> sorted(["latest", "10", "2", "prod"], key=tag_order)
        ['2', '10', 'latest', 'prod']
    """
    return (0, int(tag), "") if tag.isdigit() else (1, 0, tag)
