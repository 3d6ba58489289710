"""Bad input and bad luck: each gets one clear line, and the store keeps what it had."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import subprocess_env
from models import MLP

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.bundle.draft import Draft
from nbmodelpack.errors import (
    BundleFormatError,
    BundleNotFound,
    IntegrityError,
    InvalidReference,
    StoreError,
    UnsafeFileError,
)


def _index(home: Path) -> bytes:
    return (home / "store" / "index.json").read_bytes()


def _blob(info, filepath: str) -> Path:
    digest = next(layer["digest"] for layer in info.layers if layer["filepath"] == filepath)
    return nbmodelpack.get_store().blob_path(digest)


def test_unknown_reference_names_what_exists(home):
    nbmodelpack.pack(MLP(hidden=4), "known")
    with pytest.raises(BundleNotFound) as err:
        nbmodelpack.load("known:7")
    assert str(err.value) == "bundle not found: known:7 (versions of known: `modelpack ls known`)"
    with pytest.raises(BundleNotFound):
        nbmodelpack.show("other")


def test_bad_reference_syntax_is_refused(home):
    with pytest.raises(InvalidReference):
        nbmodelpack.load("Not A Ref")


def test_flipped_byte_is_found_by_fsck_and_load_names_the_file(home):
    info = nbmodelpack.pack(MLP(hidden=4), "flip")
    path = _blob(info, "model.safetensors")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = nbmodelpack.fsck()
    assert [p.filepath for p in problems] == ["model.safetensors"]
    with pytest.raises(IntegrityError) as err:
        nbmodelpack.load("flip")
    assert "model.safetensors is corrupted" in str(err.value)


def test_truncated_safetensors_is_a_clear_format_error(home):
    info = nbmodelpack.pack(MLP(hidden=4), "trunc")
    store = nbmodelpack.get_store()
    parent = store.open(info.ref)
    draft = Draft.from_parent(parent.manifest, name="trunc", op="pack")
    data = parent.read("model.safetensors")
    draft.replace_layer(store.put_layer("model.safetensors", mt.WEIGHT, data[: len(data) // 3]))
    store.commit(draft)
    with pytest.raises(BundleFormatError) as err:
        nbmodelpack.load("trunc:2")
    assert "model.safetensors cannot be read" in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['NBMODELPACK_HOME']) / 'pwned'}",))


def test_malicious_pickle_is_refused_naming_its_globals_and_never_runs(home, tmp_path):
    home.mkdir(parents=True, exist_ok=True)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        torch.save({"weight": torch.zeros(2), "payload": _Evil()}, f)
    before = _index(home) if (home / "store" / "index.json").exists() else b""
    with pytest.raises(UnsafeFileError) as err:
        nbmodelpack.import_pth(evil, "evil", arch="models:MLP")
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert not (home / "pwned").exists()
    assert nbmodelpack.ls() == []
    assert before in (b"", _index(home))


def test_plain_state_dict_pth_imports_and_loads(home, tmp_path):
    torch.manual_seed(0)
    model = MLP(hidden=16).eval()
    torch.save(model.state_dict(), tmp_path / "ok.pth")
    info = nbmodelpack.import_pth(tmp_path / "ok.pth", "legacy", arch="models:MLP", arch_kwargs={"hidden": 16})
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(nbmodelpack.load(info.ref)(x), model(x))


def test_pickled_whole_module_is_refused(home, tmp_path):
    torch.save(MLP(hidden=4), tmp_path / "module.pt")
    with pytest.raises(UnsafeFileError) as err:
        nbmodelpack.import_pth(tmp_path / "module.pt", "whole", arch="models:MLP")
    assert "models.MLP" in str(err.value)


def _pack_script(name: str, size_mb: int) -> str:
    return textwrap.dedent(f"""
        import torch, nbmodelpack
        n = int(({size_mb} * 2**20 / 4) ** 0.5)
        m = torch.nn.Linear(n, n)  # importable class, {size_mb} MB of weights
        nbmodelpack.pack(m, {name!r})
        print("packed")
    """)


def test_disk_full_during_pack_leaves_nothing_and_says_so(home):
    nbmodelpack.pack(MLP(hidden=4), "keep")
    before = _index(home)
    # RLIMIT_FSIZE makes writes past 8 MB fail (EFBIG) as a full disk would.
    code = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))\n" + _pack_script("big", 32)
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "disk full while writing model.safetensors; nothing was saved" in proc.stderr
    assert _index(home) == before
    assert [i.ref for i in nbmodelpack.ls()] == ["keep:1"]
    assert not [p for p in (home / "store" / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp-")]


def test_kill_9_during_pack_leaves_no_half_version(home):
    nbmodelpack.pack(MLP(hidden=4), "keep")
    blobs = home / "store" / "blobs" / "sha256"
    proc = subprocess.Popen([sys.executable, "-c", _pack_script("killed", 400)], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".tmp-") for p in blobs.iterdir()):
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [i.ref for i in nbmodelpack.ls()] == ["keep:1"]
    assert nbmodelpack.fsck() == []
    with pytest.raises(BundleNotFound):
        nbmodelpack.show("killed")
    assert nbmodelpack.pack(MLP(hidden=4), "killed").version == 1


def test_eight_concurrent_packs_give_eight_versions(home):
    code = "import torch, nbmodelpack\nfrom models import MLP\ntorch.manual_seed({seed})\nprint(nbmodelpack.pack(MLP(hidden=8), 'race').version)"
    procs = [subprocess.Popen([sys.executable, "-c", code.format(seed=i)], env=subprocess_env(), stdout=subprocess.PIPE, text=True) for i in range(8)]
    versions = sorted(int(p.communicate(timeout=300)[0].strip()) for p in procs)
    assert versions == list(range(1, 9))
    infos = nbmodelpack.ls("race")
    assert len({i.digest for i in infos}) == 8
    assert nbmodelpack.show("race:latest").version in versions


def test_unwritable_store_is_a_store_error(home):
    if os.geteuid() == 0:
        home.mkdir(parents=True, exist_ok=True)
        (home / "store").write_text("not a directory")
    else:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o500)
    with pytest.raises(StoreError):
        nbmodelpack.pack(MLP(hidden=4), "nowhere")


def test_damaged_index_json_is_reported_not_overwritten(home):
    nbmodelpack.pack(MLP(hidden=4), "idx")
    (home / "store" / "index.json").write_text("{not json")
    with pytest.raises(StoreError) as err:
        nbmodelpack.ls()
    assert "index.json is not valid JSON" in str(err.value)
    with pytest.raises(StoreError):
        nbmodelpack.pack(MLP(hidden=4), "idx")
    assert (home / "store" / "index.json").read_text() == "{not json"


def test_importing_nbmodelpack_does_not_import_torch():
    code = "import sys, nbmodelpack, nbmodelpack.commands, nbmodelpack.cli; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'IPython', 'numpy'))))"
    proc = subprocess.run([sys.executable, "-c", "import json;" + code], env=subprocess_env(), capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []


def test_pack_refuses_a_non_module_with_one_line(home):
    with pytest.raises(nbmodelpack.errors.UsageError) as err:
        nbmodelpack.pack(42, "x")  # type: ignore[arg-type]
    assert str(err.value) == "pack needs a torch.nn.Module, got int"
    assert pickle  # keeps the import used for the malicious-pickle test readable
