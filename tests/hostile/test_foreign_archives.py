"""Tar layers of another tool's artifact, crafted to escape or explode: ``export --files`` refuses them and writes nothing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import zstandard
from modctl_layout import MODEL, Artifact, add_to_store, tar_bytes

import nbmodelpack
from nbmodelpack.errors import BundleFormatError
from nbmodelpack.store import archives, get_store

DOC_TAR = f"{MODEL}.doc.v1.tar"


def _tar(*members: tuple[str, bytes, bytes]) -> bytes:
    """A tar of (name, type, content) members, in order (duplicates and any type allowed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.linkname = "docs/a" if kind in (tarfile.LNKTYPE, tarfile.SYMTYPE) else ""
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _export(layers: list[tuple[str, str, bytes]], out: Path) -> Path:
    add_to_store(get_store(), "crafted", Artifact(b'{"config": {}}', layers))
    return nbmodelpack.export("crafted:v1", out, format="files")


CASES = {
    "symlink": ([("docs", DOC_TAR, tar_bytes({}, links={"docs/passwd": "/etc/passwd"}))], "link or special file"),
    "hardlink": ([("docs", DOC_TAR, _tar(("docs/a", tarfile.REGTYPE, b"a"), ("docs/b", tarfile.LNKTYPE, b"")))], "link or special file"),
    "device": ([("docs", DOC_TAR, _tar(("docs/null", tarfile.CHRTYPE, b"")))], "link or special file"),
    "fifo": ([("docs", DOC_TAR, _tar(("docs/pipe", tarfile.FIFOTYPE, b"")))], "link or special file"),
    "dotdot": ([("docs", DOC_TAR, tar_bytes({"docs/../../escape.txt": b"x"}))], "not a plain relative path inside docs"),
    "absolute": ([("docs", DOC_TAR, tar_bytes({"/tmp/escape.txt": b"x"}))], "not a plain relative path inside docs"),
    "outside its filepath": ([("docs", DOC_TAR, tar_bytes({"model.safetensors": b"x"})), ("model.safetensors", f"{MODEL}.weight.v1.raw", b"w")], "inside docs"),
    "written twice": ([("docs", DOC_TAR, _tar(("docs/a", tarfile.REGTYPE, b"1"), ("docs/a", tarfile.REGTYPE, b"2")))], "written twice"),
    "gzip bomb": ([("docs", f"{MODEL}.doc.v1.tar+gzip", tar_bytes({"docs/zeros": bytes(16 << 20)}, mode="w:gz"))], "decompression bomb|unpacks to more than"),
    "zstd bomb": ([("docs", f"{MODEL}.doc.v1.tar+zstd", zstandard.compress(tar_bytes({"docs/zeros": bytes(16 << 20)})))], "unpacks to more than"),
    "not a tar": ([("docs", f"{MODEL}.doc.v1.tar+gzip", b"\x1f\x8b garbage")], "not a valid"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_tar_layer_is_refused_in_one_line_and_nothing_is_exported(case: str, tmp_path: Path) -> None:
    layers, message = CASES[case]
    out = tmp_path / "out"
    with pytest.raises(BundleFormatError, match=message) as caught:
        _export(layers, out)
    assert "\n" not in str(caught.value)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir()), "nothing left behind"
    assert not Path("/tmp/escape.txt").exists()


def test_more_entries_than_the_cap_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_ENTRIES", 10)
    with pytest.raises(BundleFormatError, match="more than 10 entries"):
        _export([("docs", DOC_TAR, tar_bytes({f"docs/{i}": b"" for i in range(11)}))], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tar_zstd_layer_with_directories_unpacks(tmp_path: Path) -> None:
    data = zstandard.compress(tar_bytes({"./data/a.txt": b"a", "data/sub/b.txt": b"b"}, dirs=("data", "data/sub/")))
    out = _export([("data", f"{MODEL}.dataset.v1.tar+zstd", data)], tmp_path / "out")
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == {"data/a.txt": b"a", "data/sub/b.txt": b"b"}
