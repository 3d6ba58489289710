"""Signing: OpenSSF model_signing over the stored files, its own CLI, tampering, the trust policy."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crypto_helpers import add_variant, flip_byte, layer_json, marked_mlp

import nbmodelpack
from nbmodelpack import paths
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.config import edit_config
from nbmodelpack.errors import BundleFormatError, IntegrityError, SignatureError
from nbmodelpack.signing.files import materialized

EXAMPLE = torch.zeros(1, 1, 28, 28)
MODEL_SIGNING = str(Path(sys.executable).with_name("model_signing"))


@pytest.fixture
def model():
    return marked_mlp()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return nbmodelpack.keygen_signing(tmp_path / "me.pem")


@pytest.fixture
def signed(model, keys) -> str:
    packed = nbmodelpack.pack(model, "signed-mlp", example=EXAMPLE, labels=range(10))
    return nbmodelpack.sign(packed.ref, key=keys[0]).ref


def _trust(*keys: Path | str) -> None:
    with edit_config() as cfg:
        cfg.setdefault("trust", {}).update(require_signature=True, keys=[str(k) for k in keys])


def _cli_verify(files: Path, public: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MODEL_SIGNING, "verify", "key", str(files), "--signature", str(files / "model.sig"), "--public_key", str(public)],
        capture_output=True, text=True, timeout=120,
    )


def test_keygen_signing_writes_a_0600_private_key_and_a_public_key(cli, tmp_path: Path, home: Path) -> None:
    out = tmp_path / "sig.pem"
    proc = cli("keygen", "--signing", str(out), check=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "sig.pem.pub").read_bytes()
    assert "sig.pem.pub" in proc.stdout
    # openssl agrees it is a P-256 key.
    text = subprocess.run(["openssl", "pkey", "-in", str(out), "-noout", "-text"], check=True, capture_output=True, text=True).stdout
    assert "prime256v1" in text or "P-256" in text


def test_sign_makes_a_new_version_that_verifies_and_covers_every_file(signed, keys) -> None:
    info = nbmodelpack.show(signed)
    assert "signed" in info.badges and info.recipe["op"] == "sign"
    assert info.recipe["params"]["key"].startswith("sha256:")
    result = nbmodelpack.verify(signed, key=keys[1])
    assert result.ok, result.problem
    assert sorted(result.files) == ["README.md", "architecture.json", "model.safetensors", "processing.json", "signature.json"]
    assert not nbmodelpack.verify("signed-mlp:1", key=keys[1]).ok  # the parent is unsigned


def test_a_different_key_does_not_verify(signed, tmp_path: Path) -> None:
    _, other = nbmodelpack.keygen_signing(tmp_path / "other.pem")
    result = nbmodelpack.verify(signed, key=other)
    assert not result.ok and result.problem == "signed with a different key"


def test_model_signing_cli_verifies_the_exported_files_and_catches_tampering(signed, keys, tmp_path: Path, cli) -> None:
    files = tmp_path / "files"
    cli("export", signed, "--files", str(files), check=True)
    ok = _cli_verify(files, keys[1])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for tamper in ("byte", "added", "removed"):
        copy = tmp_path / f"files-{tamper}"
        shutil.copytree(files, copy)
        if tamper == "byte":
            flip_byte(copy / "model.safetensors", 1000)
        elif tamper == "added":
            (copy / "extra.py").write_text("print('hi')\n")
        else:
            (copy / "processing.json").unlink()
        bad = _cli_verify(copy, keys[1])
        assert bad.returncode != 0, tamper
        assert "Verification failed" in bad.stdout + bad.stderr


def test_encrypted_bundles_are_signed_as_ciphertext_and_load_under_the_trust_policy(model, keys, tmp_path: Path) -> None:
    identity, recipient = nbmodelpack.keygen_age(tmp_path / "id.txt")
    packed = nbmodelpack.pack(model, "sealed-mlp", example=EXAMPLE)
    sealed = nbmodelpack.encrypt(packed.ref, recipients=[recipient])
    signed = nbmodelpack.sign(sealed.ref, key=keys[0])
    assert signed.badges == ["encrypted", "signed"]
    files = nbmodelpack.export_files(signed.ref, tmp_path / "files")
    assert (files / "model.safetensors").read_bytes().startswith(b"age-encryption.org/v1")
    assert _cli_verify(files, keys[1]).returncode == 0  # verifiable without the decryption key
    _trust(keys[1])
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(nbmodelpack.load(signed.ref, identity=identity)(x), model(x))
    with pytest.raises(SignatureError, match=r"sealed-mlp:2 is not signed"):
        nbmodelpack.load(sealed.ref, identity=identity)
    # Decrypting drops the signature: it covered other bytes.
    assert "signed" not in nbmodelpack.decrypt(signed.ref, identity=identity).badges


def test_tampering_after_signing_fails_verify_and_a_trusted_load(signed, keys, model, tmp_path: Path) -> None:
    _trust(keys[1])
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(nbmodelpack.load(signed)(x), model(x))  # the untouched bundle loads

    weights = nbmodelpack.get_store().open(signed).read("model.safetensors")
    changed = bytearray(weights)
    changed[-3] ^= 0x01
    card = nbmodelpack.get_store().open(signed).read("README.md").replace(b"signed-mlp", b"signed-MLP")
    variants = {
        "weights byte": add_variant(signed, replace={"model.safetensors": bytes(changed)}, tag="t1"),
        "card byte": add_variant(signed, replace={"README.md": card}, tag="t2"),
        "file added": add_variant(signed, add=("extra.py", "application/vnd.cncf.model.code.v1.raw", b"print(1)\n"), tag="t3"),
        "file removed": add_variant(signed, drop="processing.json", tag="t4"),
    }
    expected = {"weights byte": "model.safetensors changed", "card byte": "README.md changed", "file added": "files added: extra.py", "file removed": "files removed: processing.json"}
    for what, ref in variants.items():
        result = nbmodelpack.verify(ref, key=keys[1])
        assert not result.ok and expected[what] in result.problem, (what, result.problem)
        with pytest.raises(SignatureError, match=f"fails verification: .*{expected[what]}"):
            nbmodelpack.load(ref)

    # A byte changed in the stored blob itself: verify and the trusted load both refuse.
    blob = nbmodelpack.get_store().blob_path(layer_json(signed, "model.safetensors")["digest"])
    flip_byte(blob, 200)
    result = nbmodelpack.verify(signed, key=keys[1])
    assert not result.ok and "model.safetensors changed" in result.problem
    with pytest.raises(SignatureError, match="model.safetensors changed"):
        nbmodelpack.load(signed)
    with edit_config() as cfg:
        cfg["trust"]["require_signature"] = False
    with pytest.raises(IntegrityError, match="model.safetensors is corrupted"):
        nbmodelpack.load(signed)  # the digest check still catches it without a policy


def test_trust_policy_refuses_unsigned_and_untrusted_bundles(model, keys, tmp_path: Path) -> None:
    packed = nbmodelpack.pack(model, "plain-mlp", example=EXAMPLE)
    nbmodelpack.load(packed.ref)  # no policy: loads
    _, stranger = nbmodelpack.keygen_signing(tmp_path / "stranger.pem")
    signed = nbmodelpack.sign(packed.ref, key=keys[0])
    _trust(stranger)
    with pytest.raises(SignatureError, match="plain-mlp:1 is not signed"):
        nbmodelpack.load(packed.ref)
    with pytest.raises(SignatureError, match="plain-mlp:2 fails verification: signed with a different key"):
        nbmodelpack.load(signed.ref)
    _trust(stranger, keys[1])
    nbmodelpack.load(signed.ref)
    paths.keys_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(keys[1], paths.keys_dir() / "team.pub")
    _trust(Path("keys/team.pub"))  # relative to $NBMODELPACK_HOME
    nbmodelpack.load(signed.ref)
    _trust(keys[1].read_text())  # inline PEM text works too
    nbmodelpack.load(signed.ref)
    with edit_config() as cfg:
        cfg["trust"]["keys"] = []
    with pytest.raises(SignatureError, match="lists no keys"):
        nbmodelpack.load(signed.ref)


def test_serve_refuses_an_unsigned_bundle_under_the_trust_policy(model, keys, cli) -> None:
    packed = nbmodelpack.pack(model, "unsigned-served", example=EXAMPLE)
    _trust(keys[1])
    proc = cli("serve", packed.ref, "--port", "0")
    assert proc.returncode != 0
    assert "unsigned-served:1 is not signed" in proc.stderr and "Traceback" not in proc.stderr
    assert nbmodelpack.servers() == []


def test_cli_sign_and_verify_with_default_keys(model, cli, home: Path, tmp_path: Path) -> None:
    packed = nbmodelpack.pack(model, "cli-mlp", example=EXAMPLE)
    assert cli("sign", packed.ref).returncode == 1  # no key yet: one error line
    cli("keygen", "--signing", check=True)
    proc = cli("sign", packed.ref, check=True)
    assert "cli-mlp:2" in proc.stdout and "signed" in proc.stdout
    ok = cli("verify", "cli-mlp:2", check=True)
    assert ok.stdout.startswith("verified: cli-mlp:2")
    _, other = nbmodelpack.keygen_signing(tmp_path / "other.pem")
    bad = cli("verify", "cli-mlp:2", "--key", str(other))
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED: cli-mlp:2: signed with a different key")
    unsigned = cli("verify", packed.ref, "--json")
    assert unsigned.returncode == 1 and '"signed": false' in unsigned.stdout


def test_pull_under_the_trust_policy_refuses_unsigned_bundles_and_writes_nothing(model, keys, tmp_path: Path) -> None:
    from nbmodelpack import remote
    from nbmodelpack.store import Store

    remote.add_remote("share", f"file://{tmp_path / 'share'}")
    plain = nbmodelpack.pack(model, "shared-mlp", example=EXAMPLE)
    signed = nbmodelpack.sign(plain.ref, key=keys[0])
    remote.publish(plain.ref, "share")
    remote.publish(signed.ref, "share")
    _trust(keys[1])
    fresh = Store(tmp_path / "fresh")
    before = sorted(str(p.relative_to(fresh.root)) for p in fresh.root.rglob("*") if p.is_file() and p.name != ".lock")
    with pytest.raises(SignatureError, match="shared-mlp:1 is not signed"):
        remote.pull("share/shared-mlp:1", store=fresh)
    assert sorted(str(p.relative_to(fresh.root)) for p in fresh.root.rglob("*") if p.is_file() and p.name != ".lock") == before
    # The signed version pulls (its signature checked before it is indexed) and loads under the policy.
    assert remote.pull("share/shared-mlp:2", store=fresh).badges == ["signed"]
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(nbmodelpack.load("shared-mlp:2", store=fresh)(x), model(x))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("""Signature mismatch: ["Hash mismatch for 'README.md': Expected 'Digest(a)', Actual 'Digest(b)'"]""", "README.md changed"),
        ("""Signature mismatch: ['Hash mismatch for \\'README.md\\': Expected \\'Digest(b"\\'x)\\''"]""", "README.md changed"),
        ("""Signature mismatch: ["Extra files found in model 'm': extra.py"]""", "files added: extra.py"),
        ("""Signature mismatch: ["Missing files in model 'm': processing.json"]""", "files removed: processing.json"),
    ],
)
def test_model_signing_mismatches_become_one_readable_line_whatever_the_quoting(message: str, expected: str) -> None:
    from nbmodelpack.signing import _problem

    assert _problem(ValueError(message)) == f"files do not match the signature: {expected}"


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_verifying_a_manifest_with_two_architecture_layers_leaves_every_blob_intact(signed, keys, monkeypatch, hard_links) -> None:
    if not hard_links:
        def no_link(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, "no hard links here")

        monkeypatch.setattr(os, "link", no_link)
    store = nbmodelpack.get_store()
    blobs = store.root / "blobs" / "sha256"
    before = {p.name: p.read_bytes() for p in blobs.iterdir()}
    # The store refuses such a manifest when it is parsed (pull, import, index) ...
    with pytest.raises(BundleFormatError, match="two layers have the filepath 'architecture.json'"):
        add_variant(signed, add=("architecture.json", mt.WEIGHT_CONFIG, b'{"strategy": "class", "class": "subprocess:run"}'))
    # ... and the signature check refuses the same layer list on its own, writing through nothing.
    layers = list(store.open(signed).manifest.layers)
    evil = store.put_layer("architecture.json", mt.WEIGHT_CONFIG, b'{"strategy": "class", "class": "subprocess:run"}')
    with pytest.raises(SignatureError, match="two layers have the filepath 'architecture.json'"), materialized(store, [*layers, evil], "evil"):
        pass
    assert {p.name: p.read_bytes() for p in blobs.iterdir() if p.name in before} == before
    assert nbmodelpack.fsck() == []
    assert nbmodelpack.verify(signed, key=keys[1]).ok
    assert isinstance(nbmodelpack.load(signed), torch.nn.Module)
