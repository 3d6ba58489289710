"""The bundle format: media types, references, manifest + config, card, info.

Nothing here does I/O or imports torch or Jupyter.
"""

from .card import Card
from .info import BundleInfo
from .manifest import Descriptor, Manifest, build_config, build_manifest, parse_manifest
from .refs import Reference, parse

__all__ = [
    "BundleInfo",
    "Card",
    "Descriptor",
    "Manifest",
    "Reference",
    "build_config",
    "build_manifest",
    "parse",
    "parse_manifest",
]
