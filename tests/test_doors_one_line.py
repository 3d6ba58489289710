"""Refused input at every door (API, CLI, ``%modelpack``): one line, no traceback, nothing left behind."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from models import MLP

import nbmodelpack
from nbmodelpack import api, exchange
from nbmodelpack.errors import UsageError

NAME_KEY = "org.cncf.model.filepath"


@pytest.fixture
def packed(home: Path) -> nbmodelpack.BundleInfo:
    torch.manual_seed(0)
    return nbmodelpack.pack(MLP(hidden=4), "tiny", example=torch.randn(1, 1, 28, 28), metrics={})


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbmodelpack")
    return sh


def _magic(shell: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str) -> tuple[bool, list[str]]:
    capsys.readouterr()
    ok = shell.run_cell(line).success
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return ok, [ln for ln in text.splitlines() if ln.strip()]


def _cli_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode in (1, 2), proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


def _with_filepath(info: nbmodelpack.BundleInfo, old: str, new: str, *, name: str = "odd") -> str:
    """Index a copy of ``info``'s manifest whose layer ``old`` is named ``new``; return its reference.

    The manifest goes into the store as an attacker's copy would (blob plus
    index entry, bypassing any check ``add_manifest`` makes), so the door under
    test is the first to read it.
    """
    store = nbmodelpack.get_store()
    doc = json.loads(store.read_blob(info.digest, what="manifest"))
    for layer in doc["layers"]:
        for key in (NAME_KEY, "org.opencontainers.image.title"):
            if layer.get("annotations", {}).get(key) == old:
                layer["annotations"][key] = new
    raw = json.dumps(doc).encode()
    digest, size = store.put_bytes(raw, what="manifest")
    index_path = store.root / "index.json"
    index = json.loads(index_path.read_text())
    entry = json.loads(json.dumps(index["manifests"][0]))
    entry.update(digest=digest, size=size)
    entry["annotations"] = {k: (f"{name}:1" if k.endswith("ref.name") else name) for k in entry["annotations"]}
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))
    return f"{name}:1"


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if name in p.name)


# ---- load ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", [5, None, b"tiny:1", ["tiny:1"]])
def test_load_of_a_non_reference_is_one_line_usage_error(ref: object) -> None:
    with pytest.raises(UsageError) as err:
        nbmodelpack.load(ref)  # type: ignore[arg-type]
    assert str(err.value).startswith("load needs a bundle reference such as 'mnist-mlp:1', got ")
    assert "\n" not in str(err.value)


def test_show_tag_rm_of_a_non_reference_are_usage_errors() -> None:
    for call in (lambda: nbmodelpack.show(3), lambda: nbmodelpack.tag(None, "x"), lambda: nbmodelpack.rm(1.5)):  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="needs a bundle reference"):
            call()


# ---- export -------------------------------------------------------------------------------------
def test_export_files_with_a_nul_in_a_filepath_is_one_line_and_leaves_no_directory(cli, packed, tmp_path: Path) -> None:
    odd = _with_filepath(packed, "README.md", "READ\x00ME.md")
    out = tmp_path / "deep" / "files"
    line = _cli_error(cli("export", odd, "--files", str(out)))
    assert "odd:1" in line or "filepath" in line
    assert not (tmp_path / "deep").exists()
    with pytest.raises(nbmodelpack.ModelPackError):
        nbmodelpack.export(odd, out, format="files")
    assert not (tmp_path / "deep").exists()


def test_export_files_refused_in_the_magic_is_one_line_and_leaves_nothing(shell, capsys, packed, tmp_path: Path) -> None:
    out = tmp_path / "files"
    ok, lines = _magic(shell, capsys, f"%modelpack export tiny:9 --files {out}")
    assert not ok and len(lines) == 1 and lines[0].startswith("error: bundle not found: tiny:9")
    assert not out.exists() and _leftovers(tmp_path, "files") == []


def test_export_files_into_a_non_empty_directory_is_refused_and_keeps_it(cli, packed, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert "is not empty" in _cli_error(cli("export", packed.ref, "--files", str(out)))
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_export_files_writes_every_layer_by_filepath(packed, tmp_path: Path) -> None:
    out = nbmodelpack.export(packed.ref, tmp_path / "plain", format="files")
    assert sorted(p.name for p in out.iterdir()) == sorted(layer["filepath"] for layer in packed.layers)
    assert _leftovers(tmp_path, ".tmp-") == []


def test_export_format_is_explicit(packed, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        nbmodelpack.export(packed.ref, str(tmp_path) + "/")
    layout = nbmodelpack.export(packed.ref, tmp_path / "layout", format="dir")
    assert (layout / "index.json").is_file() and (layout / "oci-layout").is_file()
    tar = nbmodelpack.export(packed.ref, tmp_path / "t.tar")
    assert tarfile.is_tarfile(tar)
    with pytest.raises(UsageError, match="format='zip'"):
        nbmodelpack.export(packed.ref, tmp_path / "x", format="zip")  # type: ignore[arg-type]


# ---- import -------------------------------------------------------------------------------------
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info


_INDEX = (_member("index.json"), b'{"schemaVersion":2,"manifests":[]}')
HOSTILE_TARS = {
    "dotdot": [_INDEX, (_member("../escaped"), b"x")],
    "absolute": [_INDEX, (_member("/tmp/absolute-nbmp"), b"x")],
    "symlink": [_INDEX, (_member("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE, linkname="/etc/passwd"), b"")],
    "hardlink": [_INDEX, (_member("blobs/sha256/" + "b" * 64, tarfile.LNKTYPE, linkname="index.json"), b"")],
    "device": [_INDEX, (_member("blobs/sha256/" + "c" * 64, tarfile.CHRTYPE, devmajor=1, devminor=3), b"")],
    "stray file": [_INDEX, (_member("run.sh"), b"echo hi")],
    "twice": [_INDEX, _INDEX],
    "no index": [(_member("oci-layout"), b"{}")],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TARS))
def test_import_of_a_hostile_tar_is_one_line_and_writes_nothing(cli, home: Path, tmp_path: Path, kind: str) -> None:
    tar = _tar(tmp_path / "hostile.tar", HOSTILE_TARS[kind])
    line = _cli_error(cli("import", str(tar)))
    assert line.startswith("error: not an OCI layout")
    assert nbmodelpack.ls() == []
    assert not any((home / "store" / "staging").glob("*"))
    assert not Path("/tmp/absolute-nbmp").exists() and not (tmp_path / "escaped").exists()


def test_import_of_a_non_tar_is_one_line_at_every_door(cli, shell, capsys, home: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file\n" * 100)
    assert _cli_error(cli("import", str(junk))).startswith("error: junk.tar is not an OCI layout tar: not a plain tar file")
    ok, lines = _magic(shell, capsys, f"%modelpack import {junk}")
    assert not ok and len(lines) == 1 and lines[0].startswith("error: junk.tar is not an OCI layout tar: not a plain tar file")
    assert nbmodelpack.ls() == [] and not any((home / "store" / "staging").glob("*"))


def test_import_caps_the_member_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(exchange, "_MAX_MEMBERS", 3)
    tar = _tar(tmp_path / "many.tar", [_INDEX, *[(_member(f"blobs/sha256/{i:064x}"), b"") for i in range(5)]])
    with pytest.raises(UsageError, match="more than 3 members"):
        nbmodelpack.import_(tar)


def test_import_refuses_more_bytes_than_the_disk_has_free(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "big.tar", [_INDEX, (_member("blobs/sha256/" + "d" * 64), b"0" * 4096)])
    with tarfile.open(tar) as t, pytest.raises(UsageError, match="bytes free"):
        api.layout_members(t, free_bytes=1000)


def test_import_round_trips_an_exported_tar_and_leaves_no_staging(packed, home: Path, tmp_path: Path) -> None:
    tar = nbmodelpack.export(packed.ref, tmp_path / "x.tar")
    nbmodelpack.rm(packed.ref)
    assert [i.digest for i in nbmodelpack.import_(tar)] == [packed.digest]
    assert not any((home / "store" / "staging").glob("*"))


# ---- load of a bundle that cannot be rebuilt ----------------------------------------------------
def test_magic_load_of_a_bundle_with_a_foreign_class_is_one_line(shell, capsys, packed) -> None:
    store = nbmodelpack.get_store()
    doc = json.loads(store.read_blob(packed.digest, what="manifest"))
    arch = next(layer for layer in doc["layers"] if layer["annotations"][NAME_KEY] == "architecture.json")
    hostile = {"strategy": "class", "class": "os:getcwd", "kwargs": {}}
    desc = store.put_layer("architecture.json", arch["mediaType"], json.dumps(hostile).encode())
    arch["digest"], arch["size"] = desc.digest, desc.size
    bad = store.add_manifest("foreign", json.dumps(doc).encode(), ["1"])
    shell.user_ns.pop("foreign", None)
    ok, lines = _magic(shell, capsys, f"%modelpack load {bad.ref}")
    assert not ok and len(lines) == 1 and lines[0].startswith("error: ")
    assert "foreign" not in shell.user_ns


def test_magic_load_of_a_non_reference_is_one_line(shell, capsys, packed) -> None:
    ok, lines = _magic(shell, capsys, "%modelpack load 5 as five")
    assert not ok and len(lines) == 1 and lines[0].startswith("error: bundle not found: 5:latest")
    assert "five" not in shell.user_ns


def test_magic_export_files_with_a_nul_in_a_filepath_is_one_line_and_leaves_nothing(shell, capsys, packed, tmp_path: Path) -> None:
    odd = _with_filepath(packed, "README.md", "READ\x00ME.md")
    ok, lines = _magic(shell, capsys, f"%modelpack export {odd} --files {tmp_path / 'deep' / 'files'}")
    assert not ok and len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "deep").exists()


def test_magic_import_of_a_tar_with_a_symlink_is_one_line_and_writes_nothing(shell, capsys, home: Path, tmp_path: Path) -> None:
    tar = _tar(tmp_path / "link.tar", HOSTILE_TARS["symlink"])
    ok, lines = _magic(shell, capsys, f"%modelpack import {tar}")
    assert not ok and lines == ["error: not an OCI layout: the tar holds a link or device 'blobs/sha256/" + "a" * 64 + "' (an OCI layout holds oci-layout, index.json and blobs/sha256/ only)"]
    assert nbmodelpack.ls() == [] and not any((home / "store" / "staging").glob("*"))


def test_import_of_a_layout_directory_with_a_blob_linked_to_dev_zero_is_one_line(cli, packed, home: Path, tmp_path: Path) -> None:
    layout = nbmodelpack.export(packed.ref, tmp_path / "layout", format="dir")
    weights = next(layer["digest"] for layer in packed.layers if layer["filepath"] == "model.safetensors")
    blob = layout / "blobs" / "sha256" / weights.split(":", 1)[1]
    blob.unlink()
    blob.symlink_to("/dev/zero")
    nbmodelpack.rm(packed.ref)
    line = _cli_error(cli("import", str(layout), timeout=60))
    assert line.startswith("error: not an OCI layout: model.safetensors") and "not a regular file" in line
    assert nbmodelpack.ls() == []


def test_import_refuses_a_layout_that_tags_one_manifest_a_thousand_times(packed, tmp_path: Path) -> None:
    layout = nbmodelpack.export(packed.ref, tmp_path / "layout", format="dir")
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    index["manifests"] = [{**entry, "annotations": {"org.opencontainers.image.ref.name": f"tiny:t{i}"}} for i in range(1001)]
    (layout / "index.json").write_text(json.dumps(index))
    nbmodelpack.rm(packed.ref)
    with pytest.raises(UsageError, match=r"1,00\d tags on one manifest \(at most 1000\)"):
        nbmodelpack.import_(layout)
    assert nbmodelpack.ls() == []


def test_export_files_into_an_existing_empty_directory_fills_it(packed, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = nbmodelpack.export(packed.ref, tmp_path / "empty", format="files")
    assert (out / "model.safetensors").is_file() and _leftovers(tmp_path, ".tmp-") == []


# ---- a verb that needs an extra the install lacks ----------------------------------------------
def test_cli_names_the_missing_extra_in_one_line(run_py, tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["pyrage"] = None  # as in an install without the crypto extra
from nbmodelpack.cli import main
sys.exit(main(["keygen", "--age", {str(tmp_path / "id.txt")!r}]))
"""
    proc = run_py(code, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["error: this needs the 'crypto' extra: module 'pyrage' is not installed (pip install 'nbmodelpack[crypto]')"]
    assert not (tmp_path / "id.txt").exists()


def test_magic_names_the_missing_extra_in_one_line(shell, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyrage", None)
    ok, lines = _magic(shell, capsys, f"%modelpack keygen --age {tmp_path / 'id.txt'}")
    assert not ok and lines == ["error: this needs the 'crypto' extra: module 'pyrage' is not installed (pip install 'nbmodelpack[crypto]')"]
    assert not (tmp_path / "id.txt").exists()


def test_import_never_replaces_a_local_version_with_another_bundle(packed, tmp_path: Path) -> None:
    tar = nbmodelpack.export(packed.ref, tmp_path / "theirs.tar")
    mine = nbmodelpack.get_store(str(tmp_path / "mine"))
    torch.manual_seed(1)
    local = nbmodelpack.pack(MLP(hidden=4), "tiny", example=torch.randn(1, 1, 28, 28), metrics={}, store=mine)
    assert local.ref == "tiny:1" and local.digest != packed.digest
    with pytest.raises(UsageError, match=r"local tiny:1 is a different bundle than the one imported \(import it under another name with name=NAME\)"):
        nbmodelpack.import_(tar, store=mine)
    assert [(i.ref, i.digest) for i in nbmodelpack.ls(store=mine)] == [("tiny:1", local.digest)]
    renamed = nbmodelpack.import_(tar, name="theirs", store=mine)
    assert [(i.ref, i.digest) for i in renamed] == [("theirs:1", packed.digest)]


def test_import_of_a_compressed_tar_is_refused_before_any_header_is_inflated(cli, tmp_path) -> None:
    # A few KB of gzip can declare a multi-GB long-name header that tarfile would inflate first.
    import gzip

    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 4096))
    proc = cli("import", str(bomb))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "not a plain tar file" in lines[0], proc.stderr
