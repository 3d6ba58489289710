"""Media types and annotation keys of a CNCF ModelPack bundle."""

from __future__ import annotations

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
# Layers other ModelPack tools (modctl, KitOps) write: one tar archive per file or directory.
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
# OpenSSF model-signing bundle (Sigstore bundle JSON) stored as a layer.
SIGNATURE = "application/vnd.dev.sigstore.bundle.v0.3+json"

# Layer annotation that every layer carries: the file name inside the bundle.
FILEPATH = "org.cncf.model.filepath"
# OCI standard annotations.
CREATED = "org.opencontainers.image.created"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
# Our recipe (lineage, metrics, compression, encryption): the config admits no extra keys.
RECIPE = "dev.nbmodelpack.recipe"
# Short summary of the card, so that listing never reads more than the manifest.
SUMMARY = "dev.nbmodelpack.summary"
# Layer annotation: the byte size of a layer's content once unwrapped (zstd, age); caps decoding.
PLAIN_SIZE = "dev.nbmodelpack.plain-size"

# Layer annotation: how our bytes are wrapped, innermost first ("zstd", "age", "zstd,age").
# The media type stays the model-spec one the plaintext has; the title says the wrapping.
ENCODING = "dev.nbmodelpack.encoding"
ZSTD = "zstd"
AGE = "age"
# File name extensions a spec-only tool writes wrapped layers with (``oras pull``).
_EXTENSIONS = {ZSTD: ".zst", AGE: ".age"}

# Legacy form (bundles written before ENCODING): the wrappers as media-type suffixes.
ZSTD_SUFFIX = "+zstd"
AGE_SUFFIX = "+age"

# The model-spec layer media types: four kinds of file, each raw or archived.
_KINDS = ("weight", "weight.config", "doc", "code", "dataset")
_PACKINGS = ("raw", "tar", "tar+gzip", "tar+zstd")
SPEC_LAYER_TYPES = frozenset(f"application/vnd.cncf.model.{k}.v1.{p}" for k in _KINDS for p in _PACKINGS)
ARCHIVES = {"tar": "", "tar+gzip": "gz", "tar+zstd": "zstd"}


def archive_of(media_type: str) -> str | None:
    """How a model-spec layer is archived: ``""`` (plain tar), ``"gz"``, ``"zstd"``; ``None`` for raw and other types.

    Example:
        >>> archive_of("application/vnd.cncf.model.weight.v1.tar+gzip")
        'gz'
    """
    if media_type not in SPEC_LAYER_TYPES:
        return None
    return ARCHIVES.get(media_type.rsplit(".v1.", 1)[1])


def layer_media_type(base: str, encodings: tuple[str, ...] = (), filepath: str = "") -> tuple[str, dict[str, str]]:
    """The media type and annotations of a layer holding ``filepath`` wrapped by ``encodings`` (innermost first).

    The media type is the plaintext's own (a model-spec one); the wrapping goes in
    :data:`ENCODING`, and :data:`TITLE` (the file name ``oras pull`` writes) gains
    ``.zst`` / ``.age`` so a spec-only tool never writes ciphertext under the plaintext's name.

    Example:
        >>> layer_media_type(WEIGHT, ("zstd", "age"), "model.safetensors")
        ('application/vnd.cncf.model.weight.v1.raw', {'org.cncf.model.filepath': 'model.safetensors', 'org.opencontainers.image.title': 'model.safetensors.zst.age', 'dev.nbmodelpack.encoding': 'zstd,age'})
    """
    base, legacy = _split_legacy(base)
    wrapping = legacy + tuple(encodings)  # a legacy suffix given here is moved to the annotation
    annotations = {FILEPATH: filepath, TITLE: filepath + "".join(_EXTENSIONS.get(e, "") for e in wrapping)} if filepath else {}
    if wrapping:
        annotations[ENCODING] = ",".join(wrapping)
    return base, annotations


def encodings(media_type: str, annotations: dict[str, str] | None = None) -> tuple[str, ...]:
    """How a layer's bytes are wrapped, innermost first: from :data:`ENCODING`, or the legacy ``+zstd``/``+age`` suffixes.

    Unknown names are returned as they are, so the store refuses them by name.

    Example:
        >>> encodings(WEIGHT + "+zstd+age")
        ('zstd', 'age')
        >>> encodings(WEIGHT, {ENCODING: "zstd"})
        ('zstd',)
    """
    text = (annotations or {}).get(ENCODING, "")
    if text:
        return tuple(part.strip() for part in text[:200].split(","))
    return _legacy_encodings(media_type)


def _split_legacy(media_type: str) -> tuple[str, tuple[str, ...]]:
    """``(base, encodings)`` of a media type that may carry our legacy ``+zstd``/``+age`` suffixes."""
    if media_type in SPEC_LAYER_TYPES:  # ``….tar+zstd`` is the spec's own archive type, not our wrapping
        return media_type, ()
    found: list[str] = []
    for name, suffix in ((AGE, AGE_SUFFIX), (ZSTD, ZSTD_SUFFIX)):
        if media_type.endswith(suffix):
            found.insert(0, name)
            media_type = media_type[: -len(suffix)]
    return media_type, tuple(found)


def _legacy_encodings(media_type: str) -> tuple[str, ...]:
    return _split_legacy(media_type)[1]


def base_media_type(media_type: str) -> str:
    """Strip the ``+zstd`` / ``+age`` wrappers from a layer media type.

    Example:
        >>> base_media_type("application/vnd.cncf.model.weight.v1.raw+zstd+age")
        'application/vnd.cncf.model.weight.v1.raw'
        >>> base_media_type("application/vnd.cncf.model.weight.v1.tar+zstd")
        'application/vnd.cncf.model.weight.v1.tar+zstd'
    """
    return _split_legacy(media_type)[0]
    for suffix in (AGE_SUFFIX, ZSTD_SUFFIX):
        if media_type.endswith(suffix):
            media_type = media_type[: -len(suffix)]
    return media_type
