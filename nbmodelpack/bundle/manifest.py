"""OCI manifest and CNCF ModelPack config: build, serialize, parse.

Pure data: no I/O, no torch. The store decides where bytes live; this module
decides what the JSON looks like (DESIGN.md §1).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleFormatError
from . import mediatypes as mt


def sha256_digest(data: bytes) -> str:
    """The OCI digest of some bytes.

    Example:
        >>> sha256_digest(b"")[:20]
        'sha256:e3b0c44298fc1'
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Stable JSON bytes (sorted keys, no spaces) so equal content gives equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def filepath(self) -> str:
        return self.annotations.get(mt.FILEPATH, "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        try:
            return cls(
                media_type=str(obj["mediaType"]),
                digest=str(obj["digest"]),
                size=int(obj["size"]),
                annotations={str(k): str(v) for k, v in (obj.get("annotations") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleFormatError(f"bad descriptor {obj!r:.80}") from exc


def layer(filepath: str, media_type: str, digest: str, size: int) -> Descriptor:
    """A layer descriptor carrying its ``org.cncf.model.filepath``."""
    return Descriptor(media_type, digest, size, {mt.FILEPATH: filepath})


@dataclass(frozen=True)
class Manifest:
    """A parsed ModelPack manifest."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]
    digest: str
    raw: bytes

    def layer(self, filepath: str) -> Descriptor | None:
        for desc in self.layers:
            if desc.filepath == filepath:
                return desc
        return None

    @property
    def recipe(self) -> dict[str, Any]:
        return _json_annotation(self.annotations, mt.RECIPE)

    @property
    def summary(self) -> dict[str, Any]:
        return _json_annotation(self.annotations, mt.SUMMARY)

    @property
    def size(self) -> int:
        """Bytes of everything the manifest references, itself included."""
        return len(self.raw) + self.config.size + sum(d.size for d in self.layers)


def _json_annotation(annotations: dict[str, str], key: str) -> dict[str, Any]:
    text = annotations.get(key)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleFormatError(f"annotation {key} is not JSON") from exc
    return value if isinstance(value, dict) else {}


def build_manifest(
    config: Descriptor, layers: list[Descriptor], annotations: dict[str, str]
) -> bytes:
    """Serialize a ModelPack image manifest (artifactType = model manifest)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.MANIFEST,
        "artifactType": mt.ARTIFACT,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
        "annotations": dict(annotations),
    }
    return json.dumps(doc, indent=2, sort_keys=False).encode()


def parse_manifest(raw: bytes, digest: str | None = None) -> Manifest:
    """Parse manifest bytes; raise :class:`BundleFormatError` if it is not a ModelPack manifest."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError("manifest is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("mediaType", mt.MANIFEST) != mt.MANIFEST:
        raise BundleFormatError("not an OCI image manifest")
    if doc.get("artifactType") not in (mt.ARTIFACT, None) and doc["config"].get("mediaType") != mt.CONFIG:
        raise BundleFormatError(f"not a model artifact ({doc.get('artifactType')})")
    try:
        config = Descriptor.from_json(doc["config"])
        layers = tuple(Descriptor.from_json(d) for d in doc.get("layers", []))
    except (KeyError, TypeError) as exc:
        raise BundleFormatError("manifest lacks config or layers") from exc
    annotations = {str(k): str(v) for k, v in (doc.get("annotations") or {}).items()}
    return Manifest(config, layers, annotations, digest or sha256_digest(raw), raw)


def build_config(
    *,
    name: str,
    version: str,
    created: str,
    diff_ids: list[str],
    precision: str,
    param_size: str,
    architecture: str | None = None,
    quantization: str | None = None,
    description: str | None = None,
    licenses: list[str] | None = None,
    capabilities: dict[str, Any] | None = None,
) -> bytes:
    """Serialize a ModelPack config that validates against the shared schema."""
    descriptor: dict[str, Any] = {"name": name, "version": version, "createdAt": created}
    if description:
        descriptor["description"] = description
    if licenses:
        descriptor["licenses"] = list(licenses)
    model_config: dict[str, Any] = {"format": "safetensors", "precision": precision, "paramSize": param_size}
    if architecture:
        model_config["architecture"] = architecture
    if quantization:
        model_config["quantization"] = quantization
    if capabilities:
        model_config["capabilities"] = capabilities
    doc = {
        "descriptor": descriptor,
        "config": model_config,
        "modelfs": {"type": "layers", "diffIds": list(diff_ids)},
    }
    return canonical_json(doc)


def human_param_size(count: int) -> str:
    """ModelPack ``paramSize`` text: ``101.8K``, ``11.7M``, ``7B``.

    Example:
        >>> human_param_size(11_689_512)
        '11.7M'
    """
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}".rstrip("0").rstrip(".") + unit
    return str(count)
