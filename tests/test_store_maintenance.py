"""gc, staging and the cached listing: the store's small races and leftovers (no torch)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import StoreError, UsageError
from nbmodelpack.store import Store

HOUR = 3600


def _age(path, seconds: float = 2 * HOUR) -> None:
    old = time.time() - seconds
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (old, old))
    os.utime(path, (old, old))


def test_commit_refuses_a_layer_that_gc_deleted_while_it_waited_for_the_lock(tmp_path):
    store = Store(tmp_path / "s")
    desc = store.put_layer("model.safetensors", mt.WEIGHT, b"weights")
    outcome: list[object] = []

    def commit() -> None:
        try:
            outcome.append(store.commit(Draft(name="m", layers=[desc])))
        except StoreError as exc:
            outcome.append(exc)

    with store.lock():
        worker = threading.Thread(target=commit)
        worker.start()
        time.sleep(0.5)  # the commit is now waiting for the lock, its blobs already checked once
        store.blob_path(desc.digest).unlink()  # what a concurrent gc does under the lock
    worker.join(30)
    assert isinstance(outcome[0], StoreError) and "model.safetensors of m is not in the store" in str(outcome[0])
    assert store.refs() == {} and store.fsck() == []


def test_add_manifest_refuses_a_blob_deleted_while_it_waited_for_the_lock(tmp_path):
    store = Store(tmp_path / "s")
    info = store.commit(Draft(name="m", layers=[store.put_layer("model.safetensors", mt.WEIGHT, b"w")]))
    raw = store.open("m").manifest.raw
    target = Store(tmp_path / "t")
    for digest in (store.manifest(info.digest).config.digest, *(d["digest"] for d in info.layers)):
        target.put_chunks(store.iter_blob(digest), expected=digest)
    outcome: list[object] = []

    def add() -> None:
        try:
            outcome.append(target.add_manifest("m", raw, ["1"]))
        except StoreError as exc:
            outcome.append(exc)

    with target.lock():
        worker = threading.Thread(target=add)
        worker.start()
        time.sleep(0.5)
        target.blob_path(info.layers[0]["digest"]).unlink()
    worker.join(30)
    assert isinstance(outcome[0], StoreError) and target.refs() == {}


def test_rewriting_an_old_unreferenced_blob_makes_gc_spare_it(tmp_path):
    store = Store(tmp_path / "s")
    digest, _ = store.put_bytes(b"left over by a killed pack")
    _age(store.blob_path(digest))
    store.put_bytes(b"left over by a killed pack")  # a new pack writes the same layer again
    assert store.gc() == (0, 0) and store.has_blob(digest)


def test_gc_removes_stale_staging_and_legacy_pull_dirs_and_keeps_fresh_ones(tmp_path):
    store = Store(tmp_path / "s")
    stale = store.new_staging("pull")
    (stale / "blob").write_bytes(b"x" * 1000)
    _age(stale)
    legacy = store.root / ".pull-1234"
    (legacy / "blobs").mkdir(parents=True)
    _age(legacy)
    fresh = store.new_staging("import")
    busy = store.new_staging("pull")
    (busy / "part").write_bytes(b"still downloading")
    _age(busy)
    (busy / "part").write_bytes(b"still downloading, more")  # a live pull keeps touching its files
    store.gc()
    assert not stale.exists() and not legacy.exists()
    assert fresh.is_dir() and busy.is_dir()


def test_staging_is_under_the_store_and_removed_when_done(tmp_path):
    store = Store(tmp_path / "s")
    with store.staging("pull") as path:
        assert path.parent == store.root / "staging" and path.name.startswith("pull-")
        (path / "x").write_bytes(b"1")
    assert not path.exists()
    with pytest.raises(UsageError):
        store.new_staging("../up")


def test_listing_reads_each_manifest_once_and_follows_index_changes(tmp_path, monkeypatch):
    store = Store(tmp_path / "s")
    layers = [store.put_layer("model.safetensors", mt.WEIGHT, b"w")]
    for _ in range(3):
        store.commit(Draft(name="m", layers=layers))
    reads: list[str] = []
    real = Store.manifest
    monkeypatch.setattr(Store, "manifest", lambda self, digest: reads.append(digest) or real(self, digest))
    assert [i.version for i in store.list()] == [3, 2, 1]
    assert len(reads) == 3
    assert [i.version for i in Store(store.root).list("m")] == [3, 2, 1] and len(reads) == 3
    store.tag("m:1", "prod")
    store.commit(Draft(name="m", layers=layers))
    reads.clear()
    listed = store.list()
    assert [i.version for i in listed] == [4, 3, 2, 1] and len(reads) == 1  # only the new version
    assert listed[-1].tags == ["1", "prod"] and listed[0].tags == ["4", "latest"]
    store.remove("m:2")
    assert [i.version for i in store.list()] == [4, 3, 1]


def test_listing_copies_are_independent(tmp_path):
    store = Store(tmp_path / "s")
    store.commit(Draft(name="m", layers=[store.put_layer("model.safetensors", mt.WEIGHT, b"w")]))
    first = store.list()[0]
    first.published.append("team/m:1")
    first.tags.append("mutated")
    again = store.list()[0]
    assert again.published == [] and again.tags == ["1", "latest"]


def test_gc_keeps_the_blobs_of_a_manifest_it_cannot_parse(tmp_path):
    store = Store(tmp_path / "s")
    info = store.commit(Draft(name="m", layers=[store.put_layer("model.safetensors", mt.WEIGHT, b"w")]))
    manifest = store.blob_path(info.digest)
    for path in store.blob_dir.iterdir():
        _age(path)
    raw = manifest.read_bytes()
    manifest.unlink()
    manifest.write_bytes(raw.replace(b'"schemaVersion"', b'"schemaVersion" [broken'))
    _age(manifest)
    store.gc()
    assert all(store.has_blob(layer["digest"]) for layer in info.layers)


def test_opening_a_store_never_replaces_an_index_another_process_just_wrote(tmp_path, monkeypatch):
    # Two processes open a new store at once: both see no index.json; the first commits a
    # version before the second gets to write its empty index. That empty index must not win.
    first = Store(tmp_path / "s")
    first.commit(Draft(name="raced", layers=[first.put_layer("model.safetensors", mt.WEIGHT, b"weights")]))
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self.name == "index.json" else real_exists(self))
    second = Store(tmp_path / "s")  # saw "no index.json", as the second process did
    monkeypatch.undo()
    assert [i.ref for i in second.list()] == ["raced:1"]
