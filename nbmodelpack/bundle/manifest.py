"""OCI manifest and CNCF ModelPack config: build, serialize, parse.

Pure data: no I/O, no torch. The store decides where bytes live; this module
decides what the JSON looks like, and refuses any manifest whose layers could
not be written out as plain files side by side (see :func:`check_filepath`).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from .._files import load_json_limited
from ..errors import BundleFormatError
from . import mediatypes as mt
from .refs import DIGEST_RE

# The OCI distribution limit for manifests; configs get the same.
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20


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
        """The file's path in the bundle: ``org.cncf.model.filepath``, else the title plain ``oras push`` gives (same checks)."""
        return self.annotations.get(mt.FILEPATH) or self.annotations.get(mt.TITLE, "")

    @property
    def encodings(self) -> tuple[str, ...]:
        """How the layer's bytes are wrapped, innermost first (``("zstd", "age")``); see :func:`mt.encodings`."""
        return mt.encodings(self.media_type, self.annotations)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        """A descriptor from manifest JSON; refuses a digest that is not ``sha256:<64 hex>``.

        Example:
            >>> Descriptor.from_json({"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1}).size
            1
        """
        try:
            desc = cls(
                media_type=str(obj["mediaType"]),
                digest=str(obj["digest"]),
                size=int(obj["size"]),
                annotations={str(k): str(v) for k, v in (obj.get("annotations") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleFormatError(f"bad descriptor {obj!r:.80}") from exc
        if isinstance(obj["size"], bool) or desc.size < 0:
            raise BundleFormatError(f"bad size {obj['size']!r:.40} for {desc.filepath or desc.digest[:19]}")
        if not DIGEST_RE.match(desc.digest):
            raise BundleFormatError(
                f"{desc.filepath or 'config'} has digest {desc.digest!r:.80}, not sha256:<64 hex>",
                hint="the manifest was not written by a ModelPack tool",
            )
        return desc


def layer(filepath: str, media_type: str, digest: str, size: int, encodings: tuple[str, ...] = ()) -> Descriptor:
    """A layer descriptor: a model-spec media type, its ``org.cncf.model.filepath`` and title, and its wrapping.

    Example:
        >>> layer("model.safetensors", mt.WEIGHT, "sha256:" + "0" * 64, 1, ("age",)).annotations[mt.TITLE]
        'model.safetensors.age'
    """
    media_type, annotations = mt.layer_media_type(media_type, encodings, filepath)
    return Descriptor(media_type, digest, size, annotations)


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
    value = load_json_limited(text.encode(), what=f"annotation {key}", max_bytes=MAX_MANIFEST_BYTES)
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
    """Parse manifest bytes; raise :class:`BundleFormatError` if it is not a ModelPack manifest.

    Refused: more than 4 MiB, digests that are not ``sha256:<64 hex>``, and layer
    filepaths that :func:`check_filepath` refuses or that collide.

    Example:
        >>> parse_manifest(b"[]")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: not an OCI image manifest
    """
    doc = load_json_limited(raw, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("mediaType", mt.MANIFEST) != mt.MANIFEST:
        raise BundleFormatError("not an OCI image manifest")
    config_doc = doc.get("config")
    layer_docs = doc.get("layers", [])
    if not isinstance(config_doc, dict) or not isinstance(layer_docs, list):
        raise BundleFormatError("manifest lacks config or layers")
    if doc.get("artifactType") not in (mt.ARTIFACT, None) and config_doc.get("mediaType") != mt.CONFIG:
        raise BundleFormatError(f"not a model artifact ({doc.get('artifactType')!s:.80})")
    config = Descriptor.from_json(config_doc)
    layers = tuple(Descriptor.from_json(d) for d in layer_docs)
    check_filepaths([d.filepath for d in layers])
    annotations_doc = doc.get("annotations") or {}
    if not isinstance(annotations_doc, dict):
        raise BundleFormatError("manifest annotations are not a mapping")
    annotations = {str(k): str(v) for k, v in annotations_doc.items()}
    return Manifest(config, layers, annotations, digest or sha256_digest(raw), raw)


def check_filepath(filepath: str) -> str:
    """Refuse a layer filepath that is not a plain relative path (``a/../b``, ``./x``, ``/x``, NUL, ...).

    A bundle's files are written out side by side (``export --files``, signature
    checks), so a filepath must name exactly one place inside that directory.

    Example:
        >>> check_filepath("weights/model.safetensors")
        'weights/model.safetensors'
        >>> check_filepath("a/../b")
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: layer filepath 'a/../b' is not a plain relative path (no ., .., empty parts, backslashes or control characters)
    """
    parts = filepath.split("/")
    bad = (
        not filepath
        or len(filepath) > 4096
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in filepath
        or any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in filepath)
    )
    if bad:
        raise BundleFormatError(
            f"layer filepath {filepath!r:.120} is not a plain relative path"
            " (no ., .., empty parts, backslashes or control characters)"
        )
    return filepath


def check_filepaths(filepaths: list[str]) -> None:
    """Refuse bad filepaths (:func:`check_filepath`) and two layers that would land on one file.

    Names are compared as a case-insensitive file system would (NFC, casefolded), and a
    filepath may not also be a directory of another one.

    Example:
        >>> check_filepaths(["README.md", "readme.md"])
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.BundleFormatError: unreadable bundle: two layers have the filepath 'readme.md' (a bundle holds each file once)
    """
    seen: set[str] = set()
    for filepath in filepaths:
        key = unicodedata.normalize("NFC", check_filepath(filepath)).casefold()
        if key in seen:
            raise BundleFormatError(f"two layers have the filepath {filepath!r:.120} (a bundle holds each file once)")
        seen.add(key)
    for key in seen:
        parts = key.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise BundleFormatError(f"layer filepath {key!r:.120} lies inside another layer's file")


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
