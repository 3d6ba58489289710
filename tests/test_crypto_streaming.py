"""Streaming age and zstd: layers are unwrapped chunk by chunk into memory, never copied whole."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest
import torch
import zstandard
from crypto_helpers import marked_mlp

import nbmodelpack
import nbmodelpack.crypto
from nbmodelpack.errors import BundleFormatError, CryptoError, IntegrityError
from nbmodelpack.store.streams import HASH_BLOCK, CappedWriter, HashingWriter, InflatingWriter

SIDE = 4608  # an 81 MiB float32 weight: a whole-layer copy is twice the bound, the streaming buffers a tenth of it


def _big_bundle() -> tuple[str, torch.nn.Linear]:
    torch.manual_seed(0)
    model = torch.nn.Linear(SIDE, SIDE, bias=False)
    info = nbmodelpack.pack(model, "big-linear", arch="torch.nn:Linear", arch_kwargs={"in_features": SIDE, "out_features": SIDE, "bias": False}, metrics={})
    return info.ref, model


def _python_peak(fn):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_encrypting_streams_the_weights_into_the_store_without_a_copy_in_memory(tmp_path: Path) -> None:
    ref, _ = _big_bundle()
    store = nbmodelpack.get_store()
    size = store.open(ref).descriptor("model.safetensors").size
    _, recipient = nbmodelpack.keygen_age(tmp_path / "key.txt")
    info, peak = _python_peak(lambda: nbmodelpack.encrypt(ref, recipients=[recipient]))
    assert peak < size / 2, f"encrypt allocated {peak >> 20} MiB for a {size >> 20} MiB layer"
    desc = store.open(info.ref).descriptor("model.safetensors")
    # The digest computed while writing is the file's.
    with open(store.blob_path(desc.digest), "rb") as f:
        assert "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == desc.digest
    assert nbmodelpack.fsck() == []


def test_loading_encrypted_weights_holds_no_python_copy_of_the_plaintext(tmp_path: Path) -> None:
    ref, model = _big_bundle()
    size = nbmodelpack.get_store().open(ref).descriptor("model.safetensors").size
    key, recipient = nbmodelpack.keygen_age(tmp_path / "key.txt")
    sealed = nbmodelpack.encrypt(ref, recipients=[recipient]).ref
    loaded, peak = _python_peak(lambda: nbmodelpack.load(sealed, identity=key))
    assert peak < size / 2, f"load allocated {peak >> 20} MiB for a {size >> 20} MiB layer"
    assert torch.equal(loaded.weight, model.weight)


def test_compressed_then_encrypted_weights_load_like_the_compressed_version(tmp_path: Path) -> None:
    model = marked_mlp()
    ref = nbmodelpack.pack(model, "small-mlp", example=torch.zeros(1, 1, 28, 28)).ref
    small = nbmodelpack.compress(ref, quantize="int8").info.ref
    key, recipient = nbmodelpack.keygen_age(tmp_path / "key.txt")
    sealed = nbmodelpack.encrypt(small, recipients=[recipient]).ref
    assert nbmodelpack.get_store().open(sealed).descriptor("model.safetensors").encodings == ("zstd", "age")
    want = nbmodelpack.load(small).state_dict()
    got = nbmodelpack.load(sealed, identity=key).state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def _inflate(frames: bytes, *, limit: int, expected: int | None = None, piece: int = 8192) -> bytes:
    out = io.BytesIO()
    writer = InflatingWriter(CappedWriter(out, limit, BundleFormatError("too big")), what="w", expected=expected)
    for start in range(0, len(frames), piece):
        writer.write(frames[start : start + piece])
    writer.finish()
    return out.getvalue()


def test_streamed_zstd_inflates_exactly_and_refuses_bombs_cut_frames_and_trailing_bytes() -> None:
    plain = bytes(range(256)) * 4096
    frame = zstandard.ZstdCompressor().compress(plain)
    assert _inflate(frame, limit=len(plain), expected=len(plain)) == plain
    assert _inflate(frame + frame, limit=2 * len(plain)) == plain * 2
    with pytest.raises(BundleFormatError, match="too big"):
        _inflate(zstandard.ZstdCompressor().compress(bytes(64 << 20)), limit=1 << 20)
    with pytest.raises(IntegrityError, match="inflates to .* not the"):
        _inflate(frame[: len(frame) // 2], limit=len(plain))
    with pytest.raises(IntegrityError, match="not the 5 it declares"):
        _inflate(frame, limit=len(plain), expected=5)
    with pytest.raises(IntegrityError, match="not valid zstd"):
        _inflate(frame + b"trailing garbage", limit=2 * len(plain))


def test_the_hashing_writer_digests_everything_across_block_boundaries() -> None:
    data = bytes(range(251)) * (3 * HASH_BLOCK // 251 + 7)
    out = io.BytesIO()
    writer = HashingWriter(out)
    for start in range(0, len(data), 8192):
        writer.write(data[start : start + 8192])
    assert writer.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert out.getvalue() == data and writer.size == len(data)


def test_encrypting_a_damaged_blob_is_refused_and_keeps_no_new_blob(tmp_path: Path) -> None:
    model = marked_mlp()
    ref = nbmodelpack.pack(model, "small-mlp", example=torch.zeros(1, 1, 28, 28)).ref
    store = nbmodelpack.get_store()
    blob = store.blob_path(store.open(ref).descriptor("model.safetensors").digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    before = sorted(p.name for p in blob.parent.iterdir())
    _, recipient = nbmodelpack.keygen_age(tmp_path / "key.txt")
    with pytest.raises(IntegrityError, match="model.safetensors is corrupted"):
        nbmodelpack.encrypt(ref, recipients=[recipient])
    assert sorted(p.name for p in blob.parent.iterdir()) == before


@pytest.mark.parametrize("use_cli", ["1", "0"], ids=["age-command", "pyrage"])
def test_the_age_command_and_pyrage_both_round_trip_and_give_the_same_one_line_errors(use_cli, monkeypatch, tmp_path: Path) -> None:
    from nbmodelpack.crypto import age

    monkeypatch.setenv(age.AGE_CLI_ENV, use_cli)
    if use_cli == "1" and age.age_cli() is None:
        pytest.skip("the age command is not installed")
    assert (age.age_cli() is not None) == (use_cli == "1")
    key, recipient = nbmodelpack.keygen_age(tmp_path / "key.txt")
    wrong, _ = nbmodelpack.keygen_age(tmp_path / "wrong.txt")
    plain = os.urandom(300_000)
    sealed = age.encrypt_bytes(plain, recipients=nbmodelpack.crypto.parse_recipients([recipient]))
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 0x01

    def run(data: bytes, identity: Path = key, limit: int | None = None) -> bytes:
        path = tmp_path / "layer.age"
        path.write_bytes(data)
        out = io.BytesIO()
        with open(path, "rb") as source:
            age.decrypt_stream(source, out, size=len(data), identity=identity, filepath="f", limit=limit)
        return out.getvalue()

    assert run(sealed) == plain
    source = tmp_path / "plain.bin"
    source.write_bytes(plain)
    streamed = io.BytesIO()
    with open(source, "rb") as f:
        age.encrypt_stream(f, streamed, recipients=nbmodelpack.crypto.parse_recipients([recipient]), limit=len(plain))
    assert streamed.getvalue() != sealed and run(streamed.getvalue()) == plain
    with pytest.raises(CryptoError, match="^decryption: f: none of the given identities can open it"):
        run(sealed, wrong)
    for damaged in (bytes(flipped), sealed[:-100]):
        with pytest.raises(CryptoError, match="^decryption: f: the ciphertext is damaged or truncated"):
            run(damaged)
    with pytest.raises(IntegrityError, match="f decrypts to more than the 1000 bytes"):
        run(sealed, limit=1000)
