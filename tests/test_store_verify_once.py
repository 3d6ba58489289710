"""Verify once, at the door: blobs are hashed when they enter the store, loads trust an unchanged file's record.

Each test counts the hashes of the weight blob (``hash_file`` is the only way a blob file
is hashed for a load), so "no re-hash" is a count that can be wrong.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from models import MLP

import nbmodelpack
from nbmodelpack.config import edit_config
from nbmodelpack.errors import IntegrityError, SignatureError
from nbmodelpack.store import Store, blobs, maintenance
from nbmodelpack.store.records import RECORD_DIR, key_path


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Blob file names hashed since the fixture started (by any reader of the store)."""
    counts: Counter[str] = Counter()
    real = blobs.hash_file

    def counting(path: Path) -> str:
        counts[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(blobs, "hash_file", counting)
    monkeypatch.setattr(maintenance, "hash_file", counting)
    return counts


def _weights(ref: str) -> Path:
    store = nbmodelpack.get_store()
    return store.blob_path(store.open(ref).descriptor("model.safetensors").digest)


def _flip_in_place(path: Path, *, keep_mtime: bool) -> None:
    """Flip one byte through the existing inode (same size, same inode: only the times can tell)."""
    before = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(before.st_size // 2)
        byte = f.read(1)
        f.seek(before.st_size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_load_after_pack_does_not_rehash_the_weights(home: Path, hashed: Counter[str]) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "once")
    weights = _weights(info.ref)
    hashed.clear()
    model = nbmodelpack.load("once")
    nbmodelpack.load("once")
    assert hashed[weights.name] == 0
    assert isinstance(model, torch.nn.Module)


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["plain-write", "mtime-restored"])
def test_a_byte_flipped_in_a_stored_blob_is_caught_by_the_next_load_and_by_fsck(home: Path, keep_mtime: bool) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "flip")
    nbmodelpack.load("flip")  # a trusted record is in place
    _flip_in_place(_weights(info.ref), keep_mtime=keep_mtime)
    with pytest.raises(IntegrityError, match="model.safetensors is corrupted"):
        nbmodelpack.load("flip")
    with pytest.raises(IntegrityError, match="model.safetensors is corrupted"):
        nbmodelpack.load("flip")  # the damaged blob's record is gone: still refused
    assert [p.filepath for p in nbmodelpack.fsck()] == ["model.safetensors"]


@pytest.mark.parametrize("damage", ["deleted", "garbled", "forged"])
def test_a_missing_or_unbelievable_record_costs_one_rehash(home: Path, hashed: Counter[str], damage: str) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "rec")
    weights = _weights(info.ref)
    record = nbmodelpack.get_store().root / RECORD_DIR / weights.name
    assert record.is_file()
    if damage == "deleted":
        record.unlink()
    elif damage == "garbled":
        record.write_bytes(b"\x00{not json")
    else:  # a record that matches the file but was not made with this user's key
        doc = json.loads(record.read_text())
        doc["mac"] = "0" * 64
        record.write_text(json.dumps(doc))
    hashed.clear()
    nbmodelpack.load("rec")
    assert hashed[weights.name] == 1
    nbmodelpack.load("rec")
    assert hashed[weights.name] == 1  # the re-hash renewed the record


def test_records_made_under_another_key_are_not_believed(home: Path, hashed: Counter[str]) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "key")
    weights = _weights(info.ref)
    key_path().write_text("f" * 64)  # as if the store had been written by someone else
    from nbmodelpack.store import records

    records._KEYS.clear()
    hashed.clear()
    nbmodelpack.load("key")
    assert hashed[weights.name] == 1


def test_verify_true_and_fsck_always_rehash(home: Path, hashed: Counter[str]) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "again")
    weights = _weights(info.ref)
    hashed.clear()
    nbmodelpack.load("again", verify=True)
    assert hashed[weights.name] == 1
    assert nbmodelpack.fsck() == []
    assert hashed[weights.name] == 2


def test_gc_and_fsck_drop_the_records_of_blobs_that_are_gone(home: Path) -> None:
    info = nbmodelpack.pack(MLP(hidden=4), "gone")
    store = nbmodelpack.get_store()
    record = store.root / RECORD_DIR / _weights(info.ref).name
    assert record.is_file()
    store.remove("gone:1")
    store.gc(grace_seconds=0)
    assert not record.exists()
    orphan = store.root / RECORD_DIR / ("ab" * 32)
    orphan.write_text("{}")
    note = store.root / RECORD_DIR / "signatures" / ("cd" * 32)
    note.parent.mkdir()
    note.write_text("{}")
    nbmodelpack.fsck()
    assert not orphan.exists() and not note.exists()


def test_exports_and_shares_get_no_records(home: Path, tmp_path: Path) -> None:
    nbmodelpack.pack(MLP(hidden=4), "out")
    nbmodelpack.export("out:1", tmp_path / "layout", format="dir")
    with edit_config() as cfg:
        cfg.setdefault("remotes", {})["share"] = {"url": f"file://{tmp_path / 'share'}"}
    nbmodelpack.publish("out:1", "share")
    assert (tmp_path / "layout" / "index.json").is_file() and (tmp_path / "share" / "index.json").is_file()
    assert not (tmp_path / "layout" / RECORD_DIR).exists() and not (tmp_path / "share" / RECORD_DIR).exists()


def test_a_layout_opened_to_read_others_content_neither_writes_nor_trusts_records(home: Path, tmp_path: Path) -> None:
    own = Store(tmp_path / "own")
    digest, _ = own.put_bytes(os.urandom(2 << 20))
    assert (own.root / RECORD_DIR / digest.split(":")[1]).is_file()
    foreign = Store(own.root, create=False)
    assert not foreign.blob_verified(digest) and own.blob_verified(digest)
    foreign.read_blob(digest)
    assert foreign.blobs.records is None


def test_a_blob_pulled_from_a_remote_keeps_its_record(home: Path, tmp_path: Path, hashed: Counter[str]) -> None:
    nbmodelpack.pack(MLP(hidden=4), "travel")
    with edit_config() as cfg:
        cfg.setdefault("remotes", {})["share"] = {"url": f"file://{tmp_path / 'share'}"}
    nbmodelpack.publish("travel:1", "share")
    other = Store(tmp_path / "other")
    nbmodelpack.pull("share/travel:1", store=other)
    weights = other.blob_path(other.open("travel:1").descriptor("model.safetensors").digest)
    assert other.blob_verified("sha256:" + weights.name)
    hashed.clear()
    nbmodelpack.load("travel:1", store=other)
    assert hashed[weights.name] == 0


def test_the_signature_check_is_remembered_until_the_policy_or_a_file_changes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: Counter[str]
) -> None:
    from nbmodelpack import signing

    private, public = nbmodelpack.keygen_signing(tmp_path / "me.pem")
    ref = nbmodelpack.sign(nbmodelpack.pack(MLP(hidden=4), "signed").ref, key=private).ref
    with edit_config() as cfg:
        cfg.setdefault("trust", {}).update(require_signature=True, keys=[str(public)])
    calls: list[str] = []
    real = signing.verify_bundle

    def counting(bundle, keys):  # type: ignore[no-untyped-def]
        calls.append(bundle.digest)
        return real(bundle, keys)

    monkeypatch.setattr(signing, "verify_bundle", counting)
    hashed.clear()
    nbmodelpack.load(ref)
    nbmodelpack.load(ref)
    assert len(calls) == 1
    assert hashed[_weights(ref).name] == 0  # the check hard-links the blobs: their records survive it
    nbmodelpack.load(ref, verify=True)
    assert len(calls) == 2
    _, other_public = nbmodelpack.keygen_signing(tmp_path / "colleague.pem")
    with edit_config() as cfg:
        cfg["trust"]["keys"] = [str(public), str(other_public)]
    nbmodelpack.load(ref)
    assert len(calls) == 3  # a changed policy verifies again
    store = nbmodelpack.get_store()
    card = store.blob_path(store.open(ref).descriptor("README.md").digest)
    _flip_in_place(card, keep_mtime=True)
    with pytest.raises(SignatureError):
        nbmodelpack.load(ref)  # a changed file verifies again, and fails
    assert len(calls) == 4


def test_modelpack_load_verify_rehashes_and_serve_passes_verify_to_its_workers(
    home: Path, hashed: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from nbmodelpack.serving.options import ServeOptions
    from nbmodelpack.serving.runner import _cli_args

    info = nbmodelpack.pack(MLP(hidden=4), "magic")
    weights = _weights(info.ref)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmodelpack")
    hashed.clear()
    assert shell.run_cell("%modelpack load magic as plain").success
    assert hashed[weights.name] == 0
    assert shell.run_cell("%modelpack load magic as checked --verify").success
    assert hashed[weights.name] == 1
    assert "--verify" in _cli_args(ServeOptions(ref="magic:1", verify=True))
    assert "--verify" not in _cli_args(ServeOptions(ref="magic:1"))
    for name, value in ServeOptions(ref="magic:1", verify=True).to_env().items():
        monkeypatch.setenv(name, value)
    assert ServeOptions.from_env().verify
