"""Sharded weights: Hugging Face style shards + index, through pack, load, compress, encrypt, sign and export."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import safetensors
import torch
from crypto_helpers import files_containing, marked_mlp, plaintext_marker
from models import CNN, MLP

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.shards import INDEX, WEIGHTS
from nbmodelpack.config import edit_config
from nbmodelpack.errors import ArchitectureError, UsageError
from nbmodelpack.pytorch import capture, verify

X = torch.randn(3, 1, 28, 28)
SHARD = 50_000  # the MLP's first weight (100 KB) gets a shard of its own, the rest share one


def _weights(ref: str) -> list[str]:
    return nbmodelpack.get_store().open(ref).weight_files()


def test_weights_above_the_shard_size_are_hf_shards_with_an_index_and_load_exactly() -> None:
    torch.manual_seed(0)
    model = MLP(hidden=32).eval()
    info = nbmodelpack.pack(model, "sharded", example=X, shard_size=SHARD)
    bundle = nbmodelpack.get_store().open(info.ref)
    shards = bundle.weight_files()
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert not bundle.has(WEIGHTS)
    assert bundle.descriptor(INDEX).media_type == mt.WEIGHT_CONFIG
    index = bundle.read_json(INDEX)
    state = model.state_dict()
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in state.values())
    assert index["weight_map"]["net.1.weight"] == shards[0]
    assert set(index["weight_map"]) == set(state)
    for shard in shards:  # each shard is a plain safetensors file safetensors itself reads
        with safetensors.safe_open(str(bundle.store.blob_path(bundle.descriptor(shard).digest)), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                assert index["weight_map"][name] == shard
                assert torch.equal(f.get_tensor(name), state[name])
    assert torch.equal(nbmodelpack.load(info.ref)(X), model(X))
    assert info.size == sum(d.size for d in bundle.manifest.layers) + bundle.manifest.config.size + len(bundle.manifest.raw)


def test_weights_at_or_below_the_shard_size_stay_one_model_safetensors_with_mixed_dtypes() -> None:
    torch.manual_seed(1)
    model = CNN().eval()  # float weights and an int64 batch-norm counter
    info = nbmodelpack.pack(model, "one-file", example=X)
    assert _weights(info.ref) == [WEIGHTS]
    assert not nbmodelpack.get_store().open(info.ref).has(INDEX)
    assert torch.equal(nbmodelpack.load(info.ref)(X), model(X))


def test_a_bad_shard_size_is_one_line_and_config_toml_sets_the_default() -> None:
    with pytest.raises(UsageError, match="shard_size: 'lots' is not a size"):
        nbmodelpack.pack(MLP(hidden=32), "bad", shard_size="lots")
    assert nbmodelpack.get_store().list() == []
    with edit_config() as cfg:
        cfg["pack"] = {"shard_size": "50kB"}
    assert len(_weights(nbmodelpack.pack(MLP(hidden=32), "by-config").ref)) == 2


def test_a_big_model_is_checked_without_reading_its_weights_back_or_running_it() -> None:
    def no_read_back(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the weights were read back")

    torch.manual_seed(2)
    model = MLP(hidden=32).eval()
    want = model(X)
    calls: list[str] = []
    forward = MLP.forward

    def counted(self: MLP, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.device.type)
        return forward(self, x)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MLP, "forward", counted)
        mp.setattr(verify, "FULL_CHECK_BYTES", 0)
        mp.setattr(capture, "META_SIGNATURE_BYTES", 0)
        mp.setattr(verify, "load_state", no_read_back)
        info = nbmodelpack.pack(model, "big-check", example=X, shard_size=SHARD)
    assert calls == ["meta"]  # the signature came from the meta device, the check from the structure
    assert info.architecture["class"] == "models:MLP"
    assert nbmodelpack.get_store().open(info.ref).read_json("signature.json")["outputs"][0]["shape"] == [-1, 10]
    assert torch.equal(nbmodelpack.load(info.ref)(X), want)


def test_a_big_model_whose_rebuild_differs_is_still_run_and_refused() -> None:
    torch.manual_seed(2)
    model = MLP(hidden=32).eval()
    model.register_forward_hook(lambda _m, _i, out: out * 2)  # the rebuilt class will not double its output
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify, "FULL_CHECK_BYTES", 0)
        with pytest.raises(ArchitectureError, match="would not load back faithfully"):
            nbmodelpack.pack(model, "differs", example=X, shard_size=SHARD)
    assert nbmodelpack.get_store().list() == []
    assert not list(nbmodelpack.get_store().blob_dir.glob(".tmp-*"))  # no half-written weights left behind


def _sealed_shards(tmp_path: Path) -> tuple[Any, nbmodelpack.BundleInfo, nbmodelpack.BundleInfo, Path]:
    """The marked MLP packed as shards, and its version encrypted to a new key: (model, packed, sealed, key file)."""
    model = marked_mlp().eval()
    packed = nbmodelpack.pack(model, "sealed", example=X, shard_size=SHARD)
    key = tmp_path / "key.txt"
    _, recipient = nbmodelpack.keygen_age(key)
    return model, packed, nbmodelpack.encrypt(packed.ref, recipients=[recipient]), key


def test_encrypt_covers_every_shard_and_the_index_and_the_key_loads_it(tmp_path: Path, home: Path) -> None:
    model, packed, sealed, key = _sealed_shards(tmp_path)
    bundle = nbmodelpack.get_store().open(sealed.ref)
    for filepath in [*bundle.weight_files(), INDEX]:
        desc = bundle.descriptor(filepath)
        assert mt.AGE in mt.encodings(desc.media_type, desc.annotations), filepath
    assert torch.equal(nbmodelpack.load(sealed.ref, identity=key)(X), model(X))
    opened = nbmodelpack.decrypt(sealed.ref, identity=key)
    assert torch.equal(nbmodelpack.load(opened.ref)(X), model(X))
    nbmodelpack.rm(packed.ref)
    nbmodelpack.rm(opened.ref)
    nbmodelpack.gc(grace_seconds=0)
    assert files_containing([home], plaintext_marker(model)) == []


def test_encrypted_shards_are_decrypted_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from nbmodelpack.store import opened

    model, packed, sealed, key = _sealed_shards(tmp_path)
    assert len(nbmodelpack.get_store().open(sealed.ref).weight_files()) >= 2
    decode = opened._STREAM_CODECS[mt.AGE_SUFFIX]
    active, most, lock = [0], [0], threading.Lock()

    def watched(*args: Any) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.3)  # long enough for a second shard to start beside this one
            decode(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setitem(opened._STREAM_CODECS, mt.AGE_SUFFIX, watched)
    assert torch.equal(nbmodelpack.load(sealed.ref, identity=key)(X), model(X))
    assert most[0] >= 2


def test_a_decrypt_that_fails_on_a_later_shard_makes_no_version_and_leaves_no_plaintext(tmp_path: Path, home: Path) -> None:
    model, packed, sealed, key = _sealed_shards(tmp_path)
    nbmodelpack.rm(packed.ref)
    nbmodelpack.gc(grace_seconds=0)  # only the ciphertext is left
    store = nbmodelpack.get_store()
    bundle = store.open(sealed.ref)
    first, last = bundle.weight_files()[0], bundle.weight_files()[-1]
    assert files_containing([home], plaintext_marker(model)) == []
    damaged = store.blob_path(bundle.descriptor(last).digest)
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(data))
    with pytest.raises(nbmodelpack.ModelPackError, match=last):
        nbmodelpack.decrypt(sealed.ref, identity=key)
    # The first shard was decrypted into the store before the last one failed; it is gone again.
    assert [i.ref for i in nbmodelpack.ls()] == [sealed.ref]
    assert files_containing([home], plaintext_marker(model)) == [], first


def test_compress_of_a_sharded_parent_writes_a_sharded_child_that_loads() -> None:
    with edit_config() as cfg:
        cfg["pack"] = {"shard_size": "20kB"}
    torch.manual_seed(3)
    model = MLP(hidden=32).eval()
    parent = nbmodelpack.pack(model, "squeeze", example=X)
    assert len(_weights(parent.ref)) == 2
    report = nbmodelpack.compress(parent.ref, quantize="fp16")
    child = nbmodelpack.get_store().open(report.info.ref)
    assert len(child.weight_files()) == 2
    assert child.read_json(INDEX)["metadata"]["total_size"] * 2 == nbmodelpack.get_store().open(parent.ref).read_json(INDEX)["metadata"]["total_size"]
    assert report.child.weight_bytes < report.parent.weight_bytes
    loaded = nbmodelpack.load(report.info.ref)
    assert torch.allclose(loaded(X), model(X), atol=1e-2)
    int8 = nbmodelpack.compress(parent.ref, quantize="int8", name="squeeze-int8")
    assert len(nbmodelpack.get_store().open(int8.info.ref).weight_files()) >= 2
    assert torch.allclose(nbmodelpack.load(int8.info.ref, dequantize=True)(X), model(X), atol=5e-2)


def test_signing_covers_every_shard_and_export_writes_them_all(tmp_path: Path) -> None:
    model = MLP(hidden=32).eval()
    packed = nbmodelpack.pack(model, "signed-shards", example=X, shard_size=SHARD)
    private, public = nbmodelpack.keygen_signing(tmp_path / "me.pem")
    signed = nbmodelpack.sign(packed.ref, key=private)
    assert nbmodelpack.verify(signed.ref, key=public).ok
    out = nbmodelpack.export(signed.ref, tmp_path / "files", format="files")
    names = {p.name for p in Path(out).iterdir()}
    assert {*_weights(packed.ref), INDEX, "model.sig"} <= names
    index = json.loads((Path(out) / INDEX).read_text())
    assert set(index["weight_map"].values()) == set(_weights(packed.ref))
    tar = nbmodelpack.export(signed.ref, tmp_path / "b.tar")
    with tarfile.open(tar) as t:
        assert len(t.getnames()) > 3


def test_loading_onto_cuda_without_a_gpu_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the GPU test below covers it")
    ref = nbmodelpack.pack(MLP(hidden=32), "no-gpu", shard_size=SHARD).ref
    with pytest.raises(UsageError, match="torch sees no CUDA GPU"):
        nbmodelpack.load(ref, device="cuda")
    with pytest.raises(UsageError, match="is not a torch device"):
        nbmodelpack.load(ref, device="quantum")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
def test_load_maps_every_shard_straight_onto_the_gpu() -> None:
    model = MLP(hidden=32).eval()
    ref = nbmodelpack.pack(model, "gpu", example=X, shard_size=SHARD).ref
    loaded = nbmodelpack.load(ref, device="cuda")
    assert all(p.device.type == "cuda" for p in loaded.parameters())
    assert torch.allclose(loaded(X.cuda()).cpu(), model(X), atol=1e-5)


def test_a_sharded_bundle_serves_the_same_predictions() -> None:
    from nbmodelpack.serving.model import LoadedModel
    from nbmodelpack.serving.options import ServeOptions

    model = MLP(hidden=32).eval()
    ref = nbmodelpack.pack(model, "served", example=X[:1], shard_size=SHARD).ref
    threads = torch.get_num_threads()
    try:
        out = LoadedModel(ServeOptions(ref=ref, port=0, threads=1)).run({"input": X.numpy()})
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(torch.from_numpy(out["output"]), model(X), atol=1e-6)
