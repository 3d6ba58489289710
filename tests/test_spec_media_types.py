"""Our bundles as a spec-only ModelPack reader sees them; bundles written with the older suffix media types still load."""

from __future__ import annotations

import json

import pytest
import torch
from modctl_layout import CONFIG_TYPE, SPEC_TYPES
from models import MLP

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.manifest import Descriptor, build_manifest
from nbmodelpack.store import get_store

TITLE = "org.opencontainers.image.title"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
AGE_MAGIC = b"age-encryption.org/v1\n"


def spec_reader(manifest: dict, blob) -> dict[str, tuple[str, bytes]]:  # noqa: ANN001 - blob: digest -> bytes
    """What a consumer that knows only the model-spec media types makes of a manifest: title -> (media type, bytes).

    It refuses a layer whose media type it does not know or that has no title, as such a tool would.
    """
    # The config has no title (a file tool would write it out beside the layers); the manifest's names the artifact.
    assert manifest["config"]["mediaType"] == CONFIG_TYPE and TITLE not in manifest["config"].get("annotations", {})
    out = {}
    for layer in manifest["layers"]:
        assert layer["mediaType"] in SPEC_TYPES, f"unknown layer type {layer['mediaType']}"
        title = layer["annotations"][TITLE]
        out[title] = (layer["mediaType"], blob(layer["digest"]))
    return out


@pytest.fixture
def variants(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (refs, model, input, key)
    torch.manual_seed(0)
    model = MLP(hidden=32).eval()
    x = torch.randn(3, 1, 28, 28)
    plain = nbmodelpack.pack(model, "spec", example=x[:1]).ref
    int8 = nbmodelpack.compress(plain, quantize="int8", prune=0.5).info.ref
    key, recipient = nbmodelpack.keygen_age(tmp_path_factory.mktemp("keys") / "me.txt")
    encrypted = nbmodelpack.encrypt(plain, recipients=[recipient]).ref
    encrypted_int8 = nbmodelpack.encrypt(int8, recipients=[recipient]).ref
    return {"plain": plain, "int8": int8, "encrypted": encrypted, "encrypted int8": encrypted_int8}, model, x, key


def _read(ref: str) -> dict[str, tuple[str, bytes]]:
    bundle = get_store().open(ref)
    return spec_reader(json.loads(bundle.manifest.raw), lambda digest: get_store().read_blob(digest))


WEIGHT_TITLES = {
    "plain": ("model.safetensors", b""),
    "int8": ("model.safetensors.zst", ZSTD_MAGIC),
    "encrypted": ("model.safetensors.age", AGE_MAGIC),
    "encrypted int8": ("model.safetensors.zst.age", AGE_MAGIC),
}


def test_a_spec_only_reader_recognises_every_layer_and_the_weights_title_says_how_they_are_wrapped(variants) -> None:
    for variant, (title, magic) in WEIGHT_TITLES.items():
        files = _read(variants[0][variant])
        assert files[title][0] == mt.WEIGHT and files[title][1].startswith(magic), variant
        assert "model.safetensors" not in files or variant == "plain", variant  # never ciphertext or zstd under the plaintext's name
        assert {"README.md", "architecture.json"} <= set(files), variant


def test_wrapping_is_recorded_in_our_layer_annotation() -> None:
    desc = Descriptor(mt.WEIGHT, "sha256:" + "0" * 64, 1, {mt.ENCODING: "zstd,age"})
    assert desc.encodings == ("zstd", "age")


def _legacy(ref: str, name: str) -> str:
    """The same bundle as the previous version wrote it: wrapping as ``+zstd``/``+age`` media-type suffixes, no titles."""
    store = get_store()
    bundle = store.open(ref)
    layers = []
    for d in bundle.manifest.layers:
        suffix = "".join("+" + e for e in d.encodings)
        kept = {k: v for k, v in d.annotations.items() if k not in (mt.ENCODING, mt.TITLE)}
        layers.append(Descriptor(d.media_type + suffix, d.digest, d.size, kept))
    raw = build_manifest(bundle.manifest.config, layers, bundle.manifest.annotations)
    return store.add_manifest(name, raw, [str(bundle.info.version)]).ref  # the version its summary records


def test_bundles_written_with_suffix_media_types_still_load_decrypt_and_list(variants) -> None:
    refs, model, x, key = variants
    legacy = _legacy(refs["encrypted int8"], "legacy")
    bundle = get_store().open(legacy)
    weights = bundle.descriptor("model.safetensors")
    assert weights.media_type == mt.WEIGHT + "+zstd+age" and weights.encodings == ("zstd", "age")
    assert nbmodelpack.show(legacy).badges == ["compressed", "encrypted"]
    new = nbmodelpack.load(refs["encrypted int8"], identity=str(key))
    assert torch.equal(nbmodelpack.load(legacy, identity=str(key))(x), new(x))
    child = nbmodelpack.decrypt(legacy, identity=str(key))
    desc = get_store().open(child.ref).descriptor("model.safetensors")
    assert (desc.media_type, desc.encodings, desc.annotations[mt.TITLE]) == (mt.WEIGHT, ("zstd",), "model.safetensors.zst")
    assert torch.equal(nbmodelpack.load(child.ref)(x), new(x))
