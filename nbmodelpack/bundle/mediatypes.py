"""Media types and annotation keys of a CNCF ModelPack bundle."""

from __future__ import annotations

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
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

# Suffixes that say how a layer's bytes are wrapped.
ZSTD_SUFFIX = "+zstd"
AGE_SUFFIX = "+age"


def base_media_type(media_type: str) -> str:
    """Strip the ``+zstd`` / ``+age`` wrappers from a layer media type.

    Example:
        >>> base_media_type("application/vnd.cncf.model.weight.v1.raw+zstd+age")
        'application/vnd.cncf.model.weight.v1.raw'
    """
    for suffix in (AGE_SUFFIX, ZSTD_SUFFIX):
        if media_type.endswith(suffix):
            media_type = media_type[: -len(suffix)]
    return media_type
