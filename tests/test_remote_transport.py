"""Publish, pull and list over the in-memory transport: resume, mount and refusal logic, offline and fast."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.config import edit_config
from nbmodelpack.errors import (
    BundleFormatError,
    BundleNotFound,
    IntegrityError,
    RemoteError,
    RemoteUnavailable,
    SignatureError,
    StoreError,
)
from nbmodelpack.progress import observe
from nbmodelpack.remote import published, sync, transfers
from nbmodelpack.remote.layout import LayoutTransport
from nbmodelpack.remote.listing import list_versions
from nbmodelpack.remote.memory import MemoryTransport
from nbmodelpack.remote.sync import publish_to, pull_from
from nbmodelpack.remote.transport import MANIFEST_CAP
from nbmodelpack.store import Store, StoredBundle

CHUNK = 64 << 10
REPO = "team/blobby"


def make_bundle(store: Store, name: str = "blobby", size: int = 10 * CHUNK) -> StoredBundle:
    """A bundle whose weights are ``size`` random bytes (no torch)."""
    weights = store.put_layer("model.safetensors", mt.WEIGHT, os.urandom(size))
    extra = store.put_layer("signature.json", mt.WEIGHT_CONFIG, json.dumps({"inputs": [name]}).encode())
    ref = store.commit(Draft(name=name, layers=[weights, extra], recipe={"op": "pack"}, description="test")).ref
    return store.open(ref)


def files(store: Store) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() and p.name != ".lock")


def publish(t: MemoryTransport, store: Store, bundle: StoredBundle, repo: str = REPO, **kw: object) -> sync.PublishResult:
    return publish_to(t, store, bundle.manifest, repo, ["1", "latest"], **kw)  # type: ignore[arg-type]


def weights_of(bundle: StoredBundle) -> tuple[str, int]:
    d = bundle.descriptor("model.safetensors")
    return d.digest, d.size


@pytest.fixture(autouse=True)
def one_upload_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The in-memory remote's break_after counts bytes across every upload: one at a time keeps
    # "the connection broke after N bytes" about the biggest blob, as the resume tests mean it.
    monkeypatch.setattr(transfers, "DEFAULT_WORKERS", 1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "local")


@pytest.fixture
def fresh(tmp_path: Path) -> Store:
    return Store(tmp_path / "fresh")


# ---- publish, resume, mount ----------------------------------------------------------------
def test_publish_then_pull_round_trips_the_exact_manifest(store: Store, fresh: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    result = publish(t, store, bundle)
    assert (result.blobs_sent, result.blobs_skipped) == (4, 0)
    assert t.manifests[REPO]["latest"] == bundle.manifest.raw
    info = pull_from(t, fresh, REPO, "latest", name="blobby", tag="latest")
    assert (info.ref, info.digest) == ("blobby:1", bundle.digest)
    assert fresh.fsck() == []
    assert not (fresh.root / "staging").exists()


def test_republishing_sends_no_blob(store: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    t.log.clear()
    again = publish(t, store, bundle)
    assert (again.blobs_sent, again.bytes_sent, again.blobs_skipped) == (0, 0, 4)
    assert not [op for op, _ in t.log if op in ("start_upload", "append", "finish")]


def test_blobs_published_under_another_repository_are_mounted_not_sent(store: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle, "team/first")
    weights, _ = weights_of(bundle)
    result = publish(t, store, bundle, "team/second", mount_from={weights: "team/first"})
    assert (result.blobs_mounted, result.blobs_sent) == (1, 3)
    assert weights in t.repo_blobs["team/second"]
    assert ("mount", "team/first->team/second") in t.log


def test_an_upload_interrupted_between_chunks_resumes_at_the_remote_offset(store: Store) -> None:
    bundle = make_bundle(store)
    digest, size = weights_of(bundle)
    t = MemoryTransport(chunk=CHUNK)
    calls: list[int] = []

    def interrupt_after_three(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C after the third chunk was accepted
    with pytest.raises(KeyboardInterrupt):
        t.put_blob(REPO, bundle.descriptor("model.safetensors"), store.blob_path(digest), interrupt_after_three)
    t.log.clear()
    result = publish(t, store, bundle)
    others = sum(d.size for d in [bundle.manifest.config, *bundle.manifest.layers] if d.digest != digest)
    assert result.bytes_sent == size - 3 * CHUNK + others
    appends = [x for op, x in t.log if op == "append"]
    assert appends[0].endswith(f"@{3 * CHUNK}+{CHUNK}") and len(appends) == 7
    assert [op for op, _ in t.log].count("start_upload") == 3  # config, card, signature.json; not the weights
    assert t.blobs[digest] == store.blob_path(digest).read_bytes()
    assert not list((Path(os.environ["NBMODELPACK_HOME"]) / "uploads").glob("*.json"))


def test_a_session_the_remote_cancelled_restarts_only_that_blob(store: Store) -> None:
    bundle = make_bundle(store)
    digest, size = weights_of(bundle)
    t = MemoryTransport(chunk=CHUNK, cancel_broken=True)  # like docker-registry 2.8
    t.break_after = 4 * CHUNK + 100  # the connection breaks inside the fifth chunk
    with pytest.raises(RemoteUnavailable):
        publish(t, store, bundle)
    finished = set(t.blobs)
    assert digest not in finished
    t.log.clear()
    result = publish(t, store, bundle)
    unfinished = [d for d in [bundle.manifest.config, *bundle.manifest.layers] if d.digest not in finished]
    assert (result.blobs_sent, result.blobs_skipped) == (len(unfinished), len(finished))
    assert result.bytes_sent == sum(d.size for d in unfinished)  # the weights from zero, nothing twice
    assert [op for op, _ in t.log].count("upload_offset") == 1  # asked, found it gone, started over
    assert t.blobs[digest] == store.blob_path(digest).read_bytes()


def test_a_session_that_survived_a_broken_chunk_resumes_at_the_bytes_the_remote_kept(store: Store) -> None:
    bundle = make_bundle(store)
    digest, size = weights_of(bundle)
    t = MemoryTransport(chunk=CHUNK, cancel_broken=False)
    t.break_after = 4 * CHUNK + 100
    with pytest.raises(RemoteUnavailable):
        publish(t, store, bundle)
    t.log.clear()
    # Small blobs the aborted publish never reached go whole; the weights resume at the kept bytes.
    others = sum(d.size for d in (bundle.manifest.config, *bundle.manifest.layers) if d.digest != digest and d.digest not in t.blobs)
    result = publish(t, store, bundle)
    assert result.bytes_sent == size - (4 * CHUNK + 100) + others
    assert [x for op, x in t.log if op == "append"][0].endswith(f"@{4 * CHUNK + 100}+{CHUNK}")
    assert t.blobs[digest] == store.blob_path(digest).read_bytes()


# ---- pull refusals ------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "message"), [(b"x", "longer than its descriptor"), (None, "ended after")])
def test_pull_refuses_a_blob_of_the_wrong_length_and_writes_nothing(store: Store, fresh: Store, change: bytes | None, message: str) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    digest, _ = weights_of(bundle)
    t.blobs[digest] = t.blobs[digest] + change if change else t.blobs[digest][:-1]
    before = files(fresh)
    with pytest.raises(IntegrityError, match=f"model.safetensors from .* {message}"):
        pull_from(t, fresh, REPO, "1", name="blobby")
    assert files(fresh) == before


def test_pull_refuses_a_blob_with_other_content_and_writes_nothing(store: Store, fresh: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    digest, size = weights_of(bundle)
    t.blobs[digest] = os.urandom(size)
    before = files(fresh)
    with pytest.raises(IntegrityError, match="model.safetensors"):
        pull_from(t, fresh, REPO, "1", name="blobby")
    assert files(fresh) == before


def test_pull_refuses_a_manifest_over_4_mib_before_parsing_it(fresh: Store) -> None:
    t = MemoryTransport()
    t.manifests[REPO] = {"1": b'{"a": "' + b"x" * MANIFEST_CAP + b'"}'}
    with pytest.raises(RemoteError, match="larger than 4096 KiB"):
        pull_from(t, fresh, REPO, "1", name="blobby")
    assert not [op for op, _ in t.log if op == "get_blob"]


def test_pull_refuses_a_deeply_nested_manifest_in_one_line(fresh: Store) -> None:
    t = MemoryTransport()
    t.manifests[REPO] = {"1": b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}", "2": b"[" * 100_000}
    with pytest.raises(RemoteError, match="nests deeper than 64 levels"):
        pull_from(t, fresh, REPO, "1", name="blobby")
    with pytest.raises(RemoteError, match="not a JSON object") as exc:
        pull_from(t, fresh, REPO, "2", name="blobby")
    assert "\n" not in str(exc.value)


def test_a_manifest_pull_refuses_is_refused_before_any_blob_is_fetched(store: Store, fresh: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    doc = json.loads(bundle.manifest.raw)
    doc["layers"][0].pop("digest")
    t.manifests[REPO]["bad"] = json.dumps(doc).encode()
    t.log.clear()
    before = files(fresh)
    with pytest.raises(BundleFormatError):
        pull_from(t, fresh, REPO, "bad", name="blobby")
    assert [op for op, _ in t.log] == ["get_manifest"]
    assert files(fresh) == before


def test_a_missing_tag_is_bundle_not_found_naming_the_reference(fresh: Store) -> None:
    with pytest.raises(BundleNotFound, match="memory/team/blobby:7"):
        pull_from(MemoryTransport(), fresh, REPO, "7", name="blobby")


def test_a_refusing_pull_check_leaves_no_staging_and_no_blob(store: Store, fresh: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    seen: list[list[str]] = []

    def refuse(staged: StoredBundle) -> None:
        seen.append(sorted(p.name for p in (staged.store.root / "blobs" / "sha256").iterdir()))
        raise SignatureError("not signed")

    monkeypatch.setattr(sync, "_pull_checks", [refuse])
    before = files(fresh)
    with pytest.raises(SignatureError):
        pull_from(t, fresh, REPO, "1", name="blobby")
    assert len(seen[0]) == 4  # the check saw the whole staged bundle
    assert files(fresh) == before


def test_a_trust_policy_without_a_loaded_signature_check_refuses_the_pull(store: Store, fresh: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    with edit_config() as cfg:
        cfg["trust"] = {"require_signature": True, "keys": ["k.pub"]}
    monkeypatch.setattr(sync, "_pull_checks", [])
    with pytest.raises(SignatureError, match="signature checking is not loaded"):
        pull_from(t, fresh, REPO, "1", name="blobby")
    assert fresh.list() == []


# ---- listing and published tracking ----------------------------------------------------------
def test_listing_skips_an_oversized_manifest_and_shows_the_rest(store: Store) -> None:
    bundle = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, bundle)
    t.manifests["team/huge"] = {"1": b" " * (MANIFEST_CAP + 1)}
    infos = list_versions(t, t.repositories() or [], prefix="team/")
    assert [(i.ref, sorted(i.tags)) for i in infos] == [("memory/blobby:1", ["1", "latest"])]


def test_published_places_are_recorded_once_each(store: Store) -> None:
    published.record(store, "sha256:" + "a" * 64, "team/x:1")
    published.record(store, "sha256:" + "a" * 64, "team/x:1")
    published.record(store, "sha256:" + "a" * 64, "share/x:1")
    assert published.places(store) == {"sha256:" + "a" * 64: ["team/x:1", "share/x:1"]}
    (store.root / "published.json").write_text("[not json")
    assert published.places(store) == {}


def test_a_layout_blob_longer_than_its_descriptor_is_refused(store: Store, fresh: Store, tmp_path: Path) -> None:
    bundle = make_bundle(store)
    share = LayoutTransport("share", tmp_path / "share")
    publish_to(share, store, bundle.manifest, "blobby", ["1", "latest"])
    digest, _ = weights_of(bundle)
    path = Store(tmp_path / "share").blob_path(digest)
    path.write_bytes(path.read_bytes() + b"more")
    before = files(fresh)
    with pytest.raises(IntegrityError, match="longer than its descriptor"):
        pull_from(share, fresh, "blobby", "1", name="blobby")
    assert files(fresh) == before


def test_a_share_with_an_oversized_index_is_refused_unread(tmp_path: Path) -> None:
    share = tmp_path / "share"
    Store(share)
    with open(share / "index.json", "r+b") as f:
        f.truncate(65 << 20)  # sparse: costs no disk
    with pytest.raises(RemoteError, match="index.json is larger than 64 MiB"):
        LayoutTransport("share", share).tags("blobby")


def test_a_pull_check_sees_blobs_the_store_already_had_without_touching_them(store: Store, fresh: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_bundle(store)
    t = MemoryTransport(chunk=CHUNK)
    publish(t, store, first)
    pull_from(t, fresh, REPO, "1", name="blobby")
    weights = first.descriptor("model.safetensors")
    second = store.open(store.commit(Draft(name="blobby", layers=[weights], recipe={"op": "pack"})).ref)
    publish_to(t, store, second.manifest, REPO, ["2"])
    kept = fresh.blob_path(weights.digest)
    before = (kept.read_bytes(), kept.stat().st_ino, kept.stat().st_nlink)
    seen: list[bytes] = []

    def refuse(staged: StoredBundle) -> None:
        seen.append(staged.read("model.safetensors"))
        raise SignatureError("not signed")

    monkeypatch.setattr(sync, "_pull_checks", [refuse])
    with pytest.raises(SignatureError):
        pull_from(t, fresh, REPO, "2", name="blobby")
    assert seen == [before[0]]
    assert (kept.read_bytes(), kept.stat().st_ino, kept.stat().st_nlink) == before
    assert [i.ref for i in fresh.list()] == ["blobby:1"]


def test_two_files_with_the_same_content_pull_as_one_blob(store: Store, fresh: Store) -> None:
    data = os.urandom(3 * CHUNK)
    a = store.put_layer("model.safetensors", mt.WEIGHT, data)
    b = store.put_layer("copy.safetensors", mt.WEIGHT, data)
    bundle = store.open(store.commit(Draft(name="twins", layers=[a, b], recipe={"op": "pack"})).ref)
    t = MemoryTransport(chunk=CHUNK)
    publish_to(t, store, bundle.manifest, "twins", ["1"])
    info = pull_from(t, fresh, "twins", "1", name="twins")
    assert info.digest == bundle.digest and fresh.fsck() == []
    assert [op for op, x in t.log if op == "get_blob" and x == a.digest] == ["get_blob"]


# ---- files a hostile share plants instead of its own ------------------------------------------
def _share_with(store: Store, tmp_path: Path) -> tuple[LayoutTransport, StoredBundle]:
    bundle = make_bundle(store)
    share = LayoutTransport("share", tmp_path / "share")
    publish_to(share, store, bundle.manifest, "blobby", ["1", "latest"])
    return share, bundle


def test_a_share_index_that_links_to_an_endless_device_is_refused_at_once(store: Store, tmp_path: Path) -> None:
    _, bundle = _share_with(store, tmp_path)
    index = tmp_path / "share" / "index.json"
    index.unlink()
    index.symlink_to("/dev/zero")  # stat says 0 bytes; reading never ends
    with pytest.raises((RemoteError, StoreError), match="index.json must be a regular file"):
        LayoutTransport("share", tmp_path / "share").tags("blobby")


def test_a_fifo_planted_as_a_share_manifest_is_refused_without_blocking(store: Store, fresh: Store, tmp_path: Path) -> None:
    share, bundle = _share_with(store, tmp_path)
    path = tmp_path / "share" / "blobs" / "sha256" / bundle.digest.split(":")[1]
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(IntegrityError, match="not a regular file"):
        pull_from(LayoutTransport("share", tmp_path / "share"), fresh, "blobby", "1", name="blobby")


# ---- several blobs at once, interrupted pulls, progress ----------------------------------------
def sharded_bundle(store: Store, sizes: list[int], name: str = "shards") -> StoredBundle:
    """A bundle whose weights are split over shard layers of ``sizes`` random bytes."""
    n = len(sizes)
    layers = [store.put_layer(f"model-{i + 1:05d}-of-{n:05d}.safetensors", mt.WEIGHT, os.urandom(s)) for i, s in enumerate(sizes)]
    return store.open(store.commit(Draft(name=name, layers=layers, recipe={"op": "pack"})).ref)


def breaking(t: MemoryTransport, digest: str, after: int) -> None:
    """Make ``t`` lose the connection after ``after`` bytes of blob ``digest`` were sent to a puller."""
    original = t.get_blob

    def get_blob(repo: str, desc: object, on_bytes: transfers.OnBytes) -> object:
        chunks = original(repo, desc, on_bytes)  # type: ignore[arg-type]
        if desc.digest != digest:  # type: ignore[attr-defined]
            return chunks

        def cut() -> object:
            sent = 0
            for piece in chunks:
                if sent + len(piece) > after:
                    raise RemoteUnavailable("lost the connection to memory")
                sent += len(piece)
                yield piece

        return cut()

    t.get_blob = get_blob  # type: ignore[method-assign]


def test_an_interrupted_pull_keeps_the_verified_shards_and_the_next_one_fetches_only_the_rest(store: Store, fresh: Store) -> None:
    bundle = sharded_bundle(store, [24 * CHUNK, 12 * CHUNK])
    first, second = (bundle.descriptor(f"model-0000{i}-of-00002.safetensors") for i in (1, 2))
    t = MemoryTransport(chunk=CHUNK)
    publish_to(t, store, bundle.manifest, "shards", ["1"])
    breaking(t, second.digest, after=5 * CHUNK)  # one at a time, biggest first: the first shard is in
    with pytest.raises(RemoteUnavailable):
        pull_from(t, fresh, "shards", "1", name="shards")
    assert fresh.list() == [] and fresh.has_blob(first.digest) and not fresh.has_blob(second.digest)
    assert not list(fresh.blob_dir.glob(".tmp-*"))
    t2 = MemoryTransport(chunk=CHUNK)
    t2.blobs, t2.repo_blobs, t2.manifests = t.blobs, t.repo_blobs, t.manifests
    missing = [d.digest for d in (bundle.manifest.config, *bundle.manifest.layers) if not fresh.has_blob(d.digest)]
    info = pull_from(t2, fresh, "shards", "1", name="shards")
    assert info.digest == bundle.digest and fresh.fsck() == []
    fetched = [x for op, x in t2.log if op == "get_blob"]
    assert fetched[0] == second.digest and sorted(fetched) == sorted(missing)


def test_a_pull_refused_after_one_shard_verified_removes_that_shard_too(store: Store, fresh: Store) -> None:
    bundle = sharded_bundle(store, [24 * CHUNK, 12 * CHUNK])
    t = MemoryTransport(chunk=CHUNK)
    publish_to(t, store, bundle.manifest, "shards", ["1"])
    second = bundle.descriptor("model-00002-of-00002.safetensors")
    t.blobs[second.digest] = os.urandom(second.size)  # damaged on the remote
    before = files(fresh)
    with pytest.raises(IntegrityError, match="model-00002-of-00002.safetensors"):
        pull_from(t, fresh, "shards", "1", name="shards")
    assert files(fresh) == before


def test_a_failing_transfer_stops_the_others_at_their_next_block_and_is_what_is_raised(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfers, "DEFAULT_WORKERS", 2)
    bundle = sharded_bundle(store, [4 * CHUNK, CHUNK])
    big, small = (bundle.descriptor(f"model-0000{i}-of-00002.safetensors") for i in (1, 2))
    blocks: list[int] = []

    def work(d: object, on_bytes: transfers.OnBytes) -> None:
        if d is small:
            time.sleep(0.05)
            raise IntegrityError("model-00002-of-00002.safetensors is damaged")
        for _ in range(10_000):  # a long upload: only the stop ends it early
            time.sleep(0.001)
            blocks.append(1)
            on_bytes(1)

    started = time.perf_counter()
    with pytest.raises(IntegrityError, match="00002"):
        transfers.in_parallel(work, [big, small], lambda n: None)
    assert time.perf_counter() - started < 5 and len(blocks) < 10_000


def test_pulling_moves_several_blobs_at_once(store: Store, fresh: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfers, "DEFAULT_WORKERS", 3)
    bundle = sharded_bundle(store, [8 * CHUNK, 8 * CHUNK, 8 * CHUNK])
    t = MemoryTransport(chunk=CHUNK)
    publish_to(t, store, bundle.manifest, "shards", ["1"])
    original, active, most = t.get_blob, [0], [0]
    lock = threading.Lock()

    def slow(repo: str, desc: object, on_bytes: transfers.OnBytes) -> object:
        def chunks() -> object:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            try:
                for piece in original(repo, desc, on_bytes):  # type: ignore[arg-type]
                    time.sleep(0.01)
                    yield piece
            finally:
                with lock:
                    active[0] -= 1

        return chunks()

    t.get_blob = slow  # type: ignore[method-assign]
    assert pull_from(t, fresh, "shards", "1", name="shards").digest == bundle.digest
    assert most[0] == 3


def test_publish_and_pull_count_progress_in_bytes_of_the_whole_transfer(store: Store, fresh: Store) -> None:
    bundle = sharded_bundle(store, [6 * CHUNK, 3 * CHUNK])
    total = sum(d.size for d in (bundle.manifest.config, *bundle.manifest.layers))
    t = MemoryTransport(chunk=CHUNK)
    seen: list[tuple[str, float, float | None]] = []
    with observe(lambda desc, n, of: seen.append((desc, n, of))):
        publish_to(t, store, bundle.manifest, "shards", ["1"], label="shards")
        pull_from(t, fresh, "shards", "1", name="shards")
    for what in ("publish shards", "pull shards"):
        mine = [(n, of) for desc, n, of in seen if desc == what]
        assert mine[-1] == (total, total), what


def test_publishing_a_blob_that_changed_in_the_local_store_is_one_integrity_line(store: Store) -> None:
    bundle = sharded_bundle(store, [6 * CHUNK])
    shard = bundle.descriptor("model-00001-of-00001.safetensors")
    path = store.blob_path(shard.digest)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        publish_to(MemoryTransport(chunk=CHUNK), store, bundle.manifest, "shards", ["1"])
    assert str(info.value).startswith("integrity check failed: model-00001-of-00001.safetensors in the local store does not match")
    assert "fsck" in (info.value.hint or "")


def test_publishing_a_blob_that_shrank_in_the_local_store_is_refused_before_sending(store: Store) -> None:
    bundle = sharded_bundle(store, [6 * CHUNK])
    path = store.blob_path(bundle.descriptor("model-00001-of-00001.safetensors").digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10])
    t = MemoryTransport(chunk=CHUNK)
    with pytest.raises(IntegrityError, match="in the local store does not match"):
        publish_to(t, store, bundle.manifest, "shards", ["1"])
    assert not [x for op, x in t.log if op == "append"]


def test_a_saved_session_resumes_even_when_the_blob_now_fits_in_one_chunk(store: Store) -> None:
    bundle = sharded_bundle(store, [6 * CHUNK])
    shard = bundle.descriptor("model-00001-of-00001.safetensors")
    t = MemoryTransport(chunk=CHUNK)
    calls: list[int] = []

    def interrupt_after_two(n: int) -> None:
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        t.put_blob("shards", shard, store.blob_path(shard.digest), interrupt_after_two)
    t.chunk = 64 * CHUNK  # the next run sends larger chunks
    assert t.put_blob("shards", shard, store.blob_path(shard.digest), lambda n: None) == 4 * CHUNK
    assert t.blobs[shard.digest] == store.blob_path(shard.digest).read_bytes()
