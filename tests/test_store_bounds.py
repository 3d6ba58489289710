"""Decoding is bounded: zstd only on weight layers, never past the recorded size; a bomb stops early (no torch)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import pytest
import zstandard

from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.bundle.manifest import layer
from nbmodelpack.errors import BundleFormatError, IntegrityError
from nbmodelpack.store import Store
from nbmodelpack.store.opened import UNRECORDED_RATIO


def _bundle(store: Store, filepath: str, media_type: str, data: bytes, *, plain_size: int | None = None):
    desc = store.put_layer(filepath, media_type, data)
    if plain_size is not None:
        desc = layer(filepath, media_type, desc.digest, desc.size)
        desc.annotations[mt.PLAIN_SIZE] = str(plain_size)
    store.commit(Draft(name="z", layers=[desc]))
    return store.open("z")


def test_zstd_weights_with_a_recorded_size_inflate(tmp_path):
    raw = os.urandom(1 << 16) * 4  # compresses ~4x, as weights do
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(raw), plain_size=len(raw))
    assert bundle.plaintext("model.safetensors") == raw


def test_a_recorded_size_is_no_licence_to_inflate_beyond_the_ratio(tmp_path):
    # The annotation is the packer's word: recording a terabyte must not let a bomb through.
    zeros = bytes(UNRECORDED_RATIO * 100_000)
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(zeros), plain_size=1 << 40)
    with pytest.raises(BundleFormatError, match="inflates to more than"):
        bundle.plaintext("model.safetensors")


def test_zstd_weights_without_a_recorded_size_inflate_only_within_the_ratio(tmp_path):
    raw = os.urandom(50_000) * 4  # compresses ~4x: a plausible weight layer
    store = Store(tmp_path / "s")
    assert _bundle(store, "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(raw)).plaintext("model.safetensors") == raw
    zeros = bytes(UNRECORDED_RATIO * 100_000)  # compresses far beyond the ratio
    bundle = _bundle(store, "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(zeros))
    with pytest.raises(BundleFormatError, match="inflates to more than"):
        bundle.plaintext("model.safetensors")


@pytest.mark.parametrize("filepath", ["architecture.json", "signature.json", "README.md"])
def test_zstd_on_a_non_weight_layer_is_refused(tmp_path, filepath):
    media = mt.DOC if filepath == "README.md" else mt.WEIGHT_CONFIG
    bundle = _bundle(Store(tmp_path / "s"), filepath.replace("README", "NOTES"), media + mt.ZSTD_SUFFIX, zstandard.compress(b"{}"), plain_size=2)
    with pytest.raises(BundleFormatError, match="only weight layers may be"):
        bundle.plaintext(filepath.replace("README", "NOTES"))


def test_zstd_that_inflates_past_its_recorded_size_is_refused(tmp_path):
    raw = b"\0" * (1 << 20)
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(raw), plain_size=1000)
    with pytest.raises(BundleFormatError, match="inflates to more than 1,000 bytes"):
        bundle.plaintext("model.safetensors")


def test_a_frame_header_that_understates_its_size_is_refused(tmp_path):
    packed = bytearray(zstandard.ZstdCompressor(write_checksum=False).compress(b"\0" * (1 << 20)))
    assert packed[4] == 0xA0  # single segment, 4-byte content size right after the header byte
    packed[5:9] = struct.pack("<I", 1000)
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, bytes(packed))
    with pytest.raises(IntegrityError, match="not valid zstd data"):
        bundle.plaintext("model.safetensors")


@pytest.mark.parametrize("cut", [0, 3], ids=["empty", "three-bytes"])
def test_a_zstd_layer_without_a_whole_frame_header_is_refused(tmp_path, cut):
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(b"weights")[:cut])
    with pytest.raises(IntegrityError, match="not valid zstd data"):
        bundle.plaintext("model.safetensors")


def test_zstd_weights_that_inflate_short_of_their_recorded_size_are_refused_in_memory_too(tmp_path):
    # The in-memory path and the streaming load share one inflater, so both hold the manifest to its word.
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(b"w" * 1000), plain_size=1001)
    with pytest.raises(IntegrityError, match="inflates to 1,000 bytes, not the 1,001"):
        bundle.plaintext("model.safetensors")


def test_a_non_numeric_recorded_size_is_a_format_error(tmp_path):
    bundle = _bundle(Store(tmp_path / "s"), "model.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, zstandard.compress(b"x"))
    desc = bundle.descriptor("model.safetensors")
    desc.annotations[mt.PLAIN_SIZE] = "-5"
    with pytest.raises(BundleFormatError, match="not a byte count"):
        bundle.plaintext("model.safetensors")


BOMB = textwrap.dedent(
    """
    import resource, sys, zstandard
    from nbmodelpack.bundle import mediatypes as mt
    from nbmodelpack.bundle.draft import Draft
    from nbmodelpack.errors import ModelPackError
    from nbmodelpack.store import Store

    def bomb(declare):
        # 1 GiB of zeros, compressed in 64 MiB steps: the test never holds the bomb inflated.
        c = zstandard.ZstdCompressor(level=3)
        obj = c.compressobj(size=(1 << 30) if declare else -1)
        zeros = bytes(64 << 20)
        return b"".join([obj.compress(zeros) for _ in range(16)] + [obj.flush()])

    store = Store(sys.argv[1])
    layers = [store.put_layer(f"model-{d}.safetensors", mt.WEIGHT + mt.ZSTD_SUFFIX, bomb(d)) for d in (True, False)]
    store.commit(Draft(name="bomb", layers=layers))
    bundle = store.open("bomb")
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = peak()
    for d in (True, False):
        try:
            bundle.plaintext(f"model-{d}.safetensors")
            print("INFLATED")
        except ModelPackError as exc:
            print("REFUSED", exc)
    print("SIZES", *(layer.size for layer in layers))
    print("GROWTH", peak() - base)
    """
)


def test_a_1_gib_zstd_bomb_stops_with_one_line_and_bounded_memory(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BOMB, str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(refused) == 2 and "INFLATED" not in proc.stdout, proc.stdout
    assert all("inflates to more than" in line for line in refused), refused
    sizes = [int(n) for n in lines[-2].split()[1:]]
    assert max(sizes) < 200_000  # it is a bomb: ~32 KB per GiB
    growth = int(lines[-1].split()[1])
    assert growth < 100 << 20, f"peak memory grew by {growth / 2**20:.0f} MiB"
