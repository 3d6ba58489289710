"""Helpers for the encryption and signing tests: a model with recognisable weights, manifest surgery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from models import MLP

import nbmodelpack


def marked_mlp() -> MLP:
    """An MLP whose first weight row is a distinctive sequence, so plaintext on disk can be found."""
    torch.manual_seed(0)
    model = MLP(hidden=32)
    with torch.no_grad():
        model.net[1].weight[0] = torch.arange(784, dtype=torch.float32) * 1.0e-3 + 0.123456
    return model


def plaintext_marker(model: MLP) -> bytes:
    """64 bytes of the weights as safetensors stores them (little-endian float32)."""
    return model.net[1].weight[0, 100:116].detach().numpy().astype("<f4").tobytes()


def files_containing(roots: list[Path], marker: bytes) -> list[Path]:
    """Every file under ``roots`` whose bytes contain ``marker``."""
    hits = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file() and not path.is_symlink():
                try:
                    if marker in path.read_bytes():
                        hits.append(path)
                except OSError:
                    continue
    return hits


def add_variant(ref: str, *, replace: dict[str, Any] | None = None, drop: str | None = None, add: tuple[str, str, bytes] | None = None, tag: str = "tampered") -> str:
    """A new index entry for ``ref``'s manifest with layers changed (what a hostile registry could serve).

    ``replace`` maps filepath → new bytes (same media type; the summary's record
    of encrypted layers follows) or a descriptor dict from another manifest (not recorded); ``drop`` removes a layer; ``add`` appends
    ``(filepath, media type, bytes)``. Digests are consistent, so only the
    crypto/signature checks can catch it.
    """
    store = nbmodelpack.get_store()
    bundle = store.open(ref)
    doc = json.loads(bundle.manifest.raw)
    layers = []
    for layer in doc["layers"]:
        path = layer["annotations"]["org.cncf.model.filepath"]
        if path == drop:
            continue
        new = (replace or {}).get(path)
        if isinstance(new, bytes):
            desc = store.put_layer(path, layer["mediaType"], new)
            # Keep the summary's record of encrypted layers consistent, as a careful forger would.
            summary = json.loads(doc["annotations"]["dev.nbmodelpack.summary"])
            if layer["digest"] in summary.get("diff_ids", {}):
                summary["diff_ids"][desc.digest] = summary["diff_ids"].pop(layer["digest"])
                doc["annotations"]["dev.nbmodelpack.summary"] = json.dumps(summary, sort_keys=True)
            layer = {**layer, "digest": desc.digest, "size": desc.size}
        elif isinstance(new, dict):
            layer = new
        layers.append(layer)
    if add:
        desc = store.put_layer(add[0], add[1], add[2])
        layers.append({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size, "annotations": {"org.cncf.model.filepath": add[0]}})
    doc["layers"] = layers
    raw = json.dumps(doc).encode()
    store.add_manifest(bundle.name, raw, [tag])
    return f"{bundle.name}:{tag}"


def layer_json(ref: str, filepath: str) -> dict[str, Any]:
    bundle = nbmodelpack.get_store().open(ref)
    for layer in json.loads(bundle.manifest.raw)["layers"]:
        if layer["annotations"]["org.cncf.model.filepath"] == filepath:
            return dict(layer)
    raise KeyError(filepath)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
