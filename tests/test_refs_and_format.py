"""References, manifest and config format (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.card import Card
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.bundle.refs import parse
from nbmodelpack.errors import InvalidReference
from nbmodelpack.store import Store

SCHEMA = json.loads((Path(__file__).parent / "data" / "modelpack-config-schema.json").read_text())


@pytest.mark.parametrize(
    ("text", "name", "tag", "digest", "remote"),
    [
        ("mnist-mlp", "mnist-mlp", "latest", None, None),
        ("mnist-mlp:3", "mnist-mlp", "3", None, None),
        ("mnist-mlp@sha256:" + "a" * 64, "mnist-mlp", None, "sha256:" + "a" * 64, None),
        ("team/mnist:2", "mnist", "2", None, "team"),
        ("127.0.0.1:5000/team/mnist-mlp:3", "team/mnist-mlp", "3", None, "127.0.0.1:5000"),
        ("registry.example/a/b", "a/b", "latest", None, "registry.example"),
        ("localhost/m:1", "m", "1", None, "localhost"),
    ],
)
def test_references_parse_into_name_tag_digest_and_remote(text, name, tag, digest, remote):
    ref = parse(text)
    assert (ref.name, ref.tag, ref.digest, ref.remote) == (name, tag, digest, remote)


@pytest.mark.parametrize("text", ["", "Mnist", "a b", "m:", "m@sha256:xyz", "../etc/passwd", "m:bad/tag", "-m", "m::1"])
def test_bad_references_are_refused_with_a_hint(text):
    with pytest.raises(InvalidReference) as err:
        parse(text)
    assert str(err.value).startswith("bad reference")
    assert "\n" not in str(err.value)


def _commit(store: Store, name: str = "m") -> str:
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"weights")
    info = store.commit(Draft(name=name, layers=[desc], recipe={"op": "pack", "parent": None}, parameters=1234, architecture={"strategy": "class", "class": "x:Y"}))
    return info.digest


def test_manifest_is_a_modelpack_artifact_and_config_validates_against_schema(tmp_path):
    store = Store(tmp_path / "s")
    digest = _commit(store)
    manifest = store.manifest(digest)
    raw = json.loads(manifest.raw)
    assert raw["mediaType"] == mt.MANIFEST and raw["artifactType"] == mt.ARTIFACT
    assert raw["config"]["mediaType"] == mt.CONFIG
    assert all(layer["annotations"][mt.FILEPATH] for layer in raw["layers"])
    assert [layer["annotations"][mt.FILEPATH] for layer in raw["layers"]] == ["model.safetensors", "README.md"]
    config = json.loads(store.read_blob(manifest.config.digest))
    jsonschema.validate(config, SCHEMA)
    assert config["config"]["format"] == "safetensors"
    assert config["modelfs"]["diffIds"] == [d.digest for d in manifest.layers]
    assert json.loads(raw["annotations"][mt.RECIPE])["op"] == "pack"


def test_card_has_front_matter_with_version_and_lineage(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    card = store.open("m:1").card()
    assert card.front["name"] == "m" and card.front["version"] == 1
    assert card.front["parameters"] == 1234
    assert card.front["lineage"][-1]["op"] == "pack"
    assert Card.parse(card.render()).front == card.front


def test_versions_number_themselves_and_latest_moves(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    store.put_layer("x", mt.WEIGHT, b"other")
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"weights-2")
    store.commit(Draft(name="m", layers=[desc], recipe={"op": "pack"}))
    assert [i.version for i in store.list("m")] == [2, 1]
    assert store.info("m:latest").version == 2
    assert store.info("m").version == 2


def test_removed_version_numbers_are_not_reused(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    store.remove("m:1")
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"w2")
    info = store.commit(Draft(name="m", layers=[desc], recipe={"op": "pack"}))
    assert info.version == 2


def test_tag_moves_and_numeric_tags_are_reserved(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    assert "prod" in store.tag("m:1", "prod").tags
    with pytest.raises(InvalidReference):
        store.tag("m:1", "7")


def test_gc_removes_only_unreferenced_blobs(tmp_path):
    store = Store(tmp_path / "s")
    digest = _commit(store)
    orphan, _ = store.put_bytes(b"orphan")
    assert store.gc(grace_seconds=0)[0] == 1
    assert not store.has_blob(orphan)
    assert store.has_blob(digest)
    store.remove("m:1")
    count, _ = store.gc(grace_seconds=0)
    assert count == 4  # manifest, config, weights, card
