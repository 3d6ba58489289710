"""Hostile manifests and bad input to the store: refused at parse time with one line (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nbmodelpack._files import load_json_limited
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.bundle.manifest import build_manifest, parse_manifest, sha256_digest
from nbmodelpack.errors import (
    BundleFormatError,
    IntegrityError,
    InvalidReference,
    ModelPackError,
    StoreError,
    UsageError,
)
from nbmodelpack.store import Store, get_store

ZERO = "sha256:" + "0" * 64


def _manifest(filepaths: list[str], *, digest: str = ZERO, config_digest: str = ZERO) -> bytes:
    config = {"mediaType": mt.CONFIG, "digest": config_digest, "size": 2}
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.MANIFEST,
        "artifactType": mt.ARTIFACT,
        "config": config,
        "layers": [{"mediaType": mt.WEIGHT_CONFIG, "digest": digest, "size": 2, "annotations": {mt.FILEPATH: p}} for p in filepaths],
    }
    return json.dumps(doc).encode()


def _commit(store: Store, name: str = "good") -> str:
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"weights of " + name.encode())
    arch = store.put_layer("architecture.json", mt.WEIGHT_CONFIG, b'{"strategy": "export"}')
    return store.commit(Draft(name=name, layers=[desc, arch], recipe={"op": "pack"})).digest


def test_parse_manifest_refuses_duplicate_filepaths():
    with pytest.raises(BundleFormatError, match="two layers have the filepath 'architecture.json'"):
        parse_manifest(_manifest(["architecture.json", "model.safetensors", "architecture.json"]))


def test_parse_manifest_refuses_filepaths_that_differ_only_in_case():
    with pytest.raises(BundleFormatError, match="two layers"):
        parse_manifest(_manifest(["README.md", "readme.md"]))


@pytest.mark.parametrize(
    "filepath",
    ["a/../b", "./x", "x//y", "x/", "..", "/etc/passwd", "a\\b", "x\0y", "", "line\nbreak", "rtl\u202egnp.exe"],
)
def test_parse_manifest_refuses_non_normalised_or_absolute_filepaths(filepath):
    with pytest.raises(BundleFormatError) as err:
        parse_manifest(_manifest(["model.safetensors", filepath]))
    assert "not a plain relative path" in str(err.value) and "\n" not in str(err.value)


def test_parse_manifest_refuses_a_filepath_inside_another_layers_file():
    with pytest.raises(BundleFormatError, match="lies inside another layer"):
        parse_manifest(_manifest(["weights", "weights/model.safetensors"]))


@pytest.mark.parametrize("bad", ["sha512:" + "0" * 128, "sha256:" + "A" * 64, "sha256:../../../etc/passwd", "sha256:" + "0" * 63, 5])
def test_parse_manifest_refuses_digests_that_are_not_sha256_hex(bad):
    with pytest.raises(BundleFormatError, match="not sha256:<64 hex>|bad descriptor"):
        parse_manifest(_manifest(["model.safetensors"], digest=bad))
    with pytest.raises(BundleFormatError, match="not sha256:<64 hex>|bad descriptor"):
        parse_manifest(_manifest(["model.safetensors"], config_digest=bad))


@pytest.mark.parametrize(
    "doc",
    [{"mediaType": mt.MANIFEST}, {"config": "x", "layers": []}, {"config": {"mediaType": mt.CONFIG}, "layers": {}}, {"artifactType": "x", "config": 3}],
)
def test_parse_manifest_refuses_malformed_structure_with_one_line(doc):
    with pytest.raises(BundleFormatError) as err:
        parse_manifest(json.dumps(doc).encode())
    assert "\n" not in str(err.value)


def test_parse_manifest_refuses_more_than_4_mib():
    raw = _manifest(["model.safetensors"])[:-1] + b', "annotations": {"pad": "' + b"x" * (4 << 20) + b'"}}'
    with pytest.raises(BundleFormatError, match="more than the 4,194,304 allowed"):
        parse_manifest(raw)


def test_deeply_nested_json_is_refused_not_a_recursion_traceback():
    with pytest.raises(BundleFormatError, match="nests deeper"):
        load_json_limited(b"[" * 100_000 + b"]" * 100_000, what="x", max_bytes=1 << 20)
    with pytest.raises(UsageError, match="body is not valid JSON"):
        load_json_limited(b"{", what="body", error=UsageError)


def test_pulling_a_duplicate_filepath_manifest_leaves_every_bundle_intact(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    before = store.refs()
    good = store.open("good:1")
    arch = good.descriptor("architecture.json")
    weights = good.descriptor("model.safetensors")
    evil = store.put_layer("architecture.json", mt.WEIGHT_CONFIG, b'{"strategy": "class", "class": "os:system"}')
    raw = build_manifest(good.manifest.config, [weights, arch, evil], {})
    with pytest.raises(BundleFormatError, match="two layers have the filepath 'architecture.json'"):
        store.add_manifest("evil", raw, ["1"])
    assert store.refs() == before and store.fsck() == []
    assert not store.has_blob(sha256_digest(raw))


def test_a_json_layer_too_deep_is_refused_with_one_line(tmp_path):
    store = Store(tmp_path / "s")
    deep = store.put_layer("signature.json", mt.WEIGHT_CONFIG, b"[" * 5000 + b"]" * 5000)
    store.commit(Draft(name="deep", layers=[deep]))
    with pytest.raises(BundleFormatError, match="signature.json nests deeper than 64 levels"):
        store.open("deep").read_json("signature.json")


@pytest.mark.parametrize("ref", [5, None, "", "   ", 3.5, b"m:1", ["m"]])
def test_store_methods_refuse_non_reference_input_with_one_line(tmp_path, ref):
    store = Store(tmp_path / "s")
    for method in (store.open, store.info, store.resolve, store.remove):
        with pytest.raises(InvalidReference) as err:
            method(ref)
        assert "\n" not in str(err.value)


def test_blob_path_refuses_a_non_digest(tmp_path):
    store = Store(tmp_path / "s")
    for bad in (None, 5, "sha256:../../x", ""):
        with pytest.raises(InvalidReference):
            store.blob_path(bad)  # type: ignore[arg-type]


def test_a_blob_replaced_by_a_symlink_is_refused_not_followed(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    bundle = store.open("good")
    desc = bundle.descriptor("model.safetensors")
    outside = tmp_path / "outside"
    outside.write_bytes(b"weights of good")  # same bytes: only the link itself is wrong
    path = store.blob_path(desc.digest)
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(IntegrityError, match="symbolic link"):
        bundle.read("model.safetensors")
    assert any("symbolic link" in p.problem for p in store.fsck())


def test_writing_an_existing_blob_never_writes_through_it(tmp_path):
    store = Store(tmp_path / "s")
    digest, _ = store.put_bytes(b"content")
    elsewhere = tmp_path / "hardlink"
    os.link(store.blob_path(digest), elsewhere)
    store.put_bytes(b"content")
    store.put_chunks([b"con", b"tent"], expected=digest)
    with pytest.raises(IntegrityError):
        store.put_chunks([b"other"], expected=digest)
    assert elsewhere.read_bytes() == b"content" and store.read_blob(digest) == b"content"


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    store = Store(tmp_path / "s")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (store.root / ".lock").symlink_to(victim)
    with pytest.raises(ModelPackError, match="symbolic link"):
        _commit(store)
    assert victim.read_text() == "keep me"


def test_card_library_name_comes_from_the_draft(tmp_path):
    store = Store(tmp_path / "s")
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"w")
    plain = store.commit(Draft(name="plain", layers=[desc]))
    torchy = store.commit(Draft(name="torchy", layers=[desc], library="pytorch"))
    assert "library_name" not in store.open(plain.ref).card().front
    assert store.open(torchy.ref).card().front["library_name"] == "pytorch"
    child = Draft.from_parent(store.open(torchy.ref).manifest, name="child", op="compress")
    assert child.library == "pytorch"


def test_commit_refuses_a_draft_whose_filepaths_a_manifest_could_not_hold(tmp_path: Path):
    store = Store(tmp_path / "s")
    with pytest.raises(BundleFormatError, match="not a plain relative path"):
        store.commit(Draft(name="bad", layers=[store.put_layer("../escape", mt.WEIGHT, b"x")]))
    with pytest.raises(BundleFormatError, match="two layers"):
        store.commit(Draft(name="bad", layers=[store.put_layer("a", mt.WEIGHT, b"x"), store.put_layer("a", mt.WEIGHT, b"y")]))
    assert store.refs() == {}


@pytest.mark.parametrize(
    "index",
    [b"[" * 200_000 + b"]" * 200_000, b'{"manifests": ' + b"[" * 100 + b"]" * 100 + b"}", b'{"manifests": {}}', b"\xff\xfe", b" " * (33 << 20)],
)
def test_a_hostile_layout_index_is_one_store_error_line(tmp_path, index):
    root = tmp_path / "layout"
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "index.json").write_bytes(index)
    layout = Store(root, create=False)
    with pytest.raises(StoreError) as err:
        layout.entries()
    assert "\n" not in str(err.value)


def test_hostile_index_entries_are_skipped_not_crashed_on(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    doc = json.loads(store.index.path.read_bytes())
    doc["manifests"] += [5, {"digest": 7, "annotations": {mt.REF_NAME: "x:1"}}, {"annotations": []}, {"digest": "sha256:zz", "annotations": {mt.REF_NAME: "y:1"}}]
    store.index.path.write_text(json.dumps(doc))
    assert [i.ref for i in store.list()] == ["good:1"]
    with pytest.raises(InvalidReference):
        store.open("y:1")


def test_get_store_refuses_what_is_not_a_store_or_path():
    with pytest.raises(UsageError, match="neither a Store nor a path"):
        get_store(5)  # type: ignore[arg-type]


def test_a_fifo_in_place_of_a_blob_is_refused_without_blocking(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    bundle = store.open("good")
    path = store.blob_path(bundle.descriptor("model.safetensors").digest)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(IntegrityError, match="not a regular file"):
        bundle.read("model.safetensors")
    with pytest.raises(IntegrityError, match="not a regular file"):
        list(store.iter_blob(bundle.descriptor("model.safetensors").digest))


@pytest.mark.parametrize("bad", [5, None, "", "../x", "a b", ["x"]])
def test_names_and_tags_that_are_not_text_are_one_reference_line(tmp_path, bad):
    store = Store(tmp_path / "s")
    _commit(store)
    with pytest.raises(InvalidReference):
        store.tag("good:1", bad)
    with pytest.raises(InvalidReference):
        store.commit(Draft(name=bad, layers=[]))
    with pytest.raises(InvalidReference):
        store.commit(Draft(name="good", layers=[]), tags=[bad])
    assert [i.ref for i in store.list()] == ["good:1"]


def test_a_tag_given_twice_is_indexed_once(tmp_path):
    store = Store(tmp_path / "s")
    info = store.commit(Draft(name="m", layers=[]), tags=["prod", "prod"])
    assert info.tags == ["1", "latest", "prod"] and len(store.entries()) == 3
