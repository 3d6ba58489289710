"""Encryption: standard age files, in-memory decryption, refusals that name the file and write nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import subprocess_env
from crypto_helpers import add_variant, files_containing, layer_json, marked_mlp, plaintext_marker

import nbmodelpack
from nbmodelpack.bundle import mediatypes as mt
from nbmodelpack.errors import CryptoError, IntegrityError, ModelPackError

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture
def model():
    return marked_mlp()


@pytest.fixture
def packed(model) -> str:
    return nbmodelpack.pack(model, "secret-mlp", example=EXAMPLE).ref


@pytest.fixture
def age_key(tmp_path: Path) -> tuple[Path, str]:
    """An identity made by the Debian age-keygen (not by us), and its recipient."""
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    return key, recipient


def test_keygen_age_writes_a_0600_identity_and_prints_its_recipient(cli, tmp_path: Path, home: Path) -> None:
    out = tmp_path / "me.txt"
    proc = cli("keygen", "--age", str(out), check=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    recipient = proc.stdout.split("recipient: ")[1].strip()
    assert recipient.startswith("age1")
    # age-keygen agrees on the recipient, so the file is a standard identity.
    assert subprocess.run(["age-keygen", "-y", str(out)], check=True, capture_output=True, text=True).stdout.strip() == recipient
    again = cli("keygen", "--age", str(out), check=True)  # never overwrites: shows the key it has
    assert again.stdout.split("recipient: ")[1].strip() == recipient and "already" in again.stdout
    assert subprocess.run(["age-keygen", "-y", str(out)], check=True, capture_output=True, text=True).stdout.strip() == recipient
    cli("keygen", "--age", check=True)
    assert stat.S_IMODE((home / "keys" / "age-identity.txt").stat().st_mode) == 0o600


def test_encrypted_weights_decrypt_with_the_age_cli_to_loadable_safetensors(packed, model, age_key, tmp_path: Path) -> None:
    key, recipient = age_key
    info = nbmodelpack.encrypt(packed, recipients=[recipient])
    assert info.badges == ["encrypted"] and info.recipe["op"] == "encrypt"
    assert info.recipe["parent"] == nbmodelpack.show(packed).digest
    assert info.recipe["params"]["recipients"] == [recipient]
    wrapped = {layer["filepath"]: layer["encoding"] for layer in info.layers}
    assert wrapped["model.safetensors"] == "age" and {layer["mediaType"] for layer in info.layers} <= mt.SPEC_LAYER_TYPES
    assert wrapped["architecture.json"] == wrapped["README.md"] == ""
    assert "secret-mlp" in nbmodelpack.card(info.ref)  # metadata stays readable

    files = nbmodelpack.export_files(info.ref, tmp_path / "files")
    sealed = files / "model.safetensors"
    assert sealed.read_bytes().startswith(b"age-encryption.org/v1\n")
    plain = tmp_path / "plain.safetensors"
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(plain), str(sealed)], check=True)
    tensors = safetensors.torch.load_file(str(plain))
    for name, value in model.state_dict().items():
        assert torch.equal(tensors[name], value)


def test_load_with_identity_gives_the_same_model(packed, model, age_key, monkeypatch, home: Path) -> None:
    key, recipient = age_key
    ref = nbmodelpack.encrypt(packed, recipients=[recipient]).ref
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(nbmodelpack.load(ref, identity=key)(x), model(x))
    assert torch.equal(nbmodelpack.load(ref, identity=key.read_text())(x), model(x))  # identity string
    with pytest.raises(CryptoError, match="model.safetensors is encrypted and no age identity"):
        nbmodelpack.load(ref)
    monkeypatch.setenv("NBMODELPACK_AGE_IDENTITY", str(key))
    assert torch.equal(nbmodelpack.load(ref)(x), model(x))
    monkeypatch.delenv("NBMODELPACK_AGE_IDENTITY")
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "work.txt").write_text(key.read_text())
    assert torch.equal(nbmodelpack.load(ref)(x), model(x))


def test_several_recipients_can_each_open_it(packed, model, tmp_path: Path) -> None:
    me, mine = nbmodelpack.keygen_age(tmp_path / "me.txt")
    colleague, theirs = nbmodelpack.keygen_age(tmp_path / "colleague.txt")
    ref = nbmodelpack.encrypt(packed, recipients=[mine, theirs]).ref
    x = torch.randn(2, 1, 28, 28)
    for identity in (me, colleague):
        assert torch.equal(nbmodelpack.load(ref, identity=identity)(x), model(x))


def test_passphrase_encryption_round_trips_and_a_wrong_passphrase_is_refused(packed, model, tmp_path: Path) -> None:
    info = nbmodelpack.encrypt(packed, passphrase="correct horse battery staple")
    assert "correct horse" not in str(info.recipe) and info.recipe["params"]["passphrase"] == "scrypt"
    x = torch.randn(2, 1, 28, 28)
    good = nbmodelpack.Passphrase("correct horse battery staple")
    assert "correct" not in repr(good)
    assert torch.equal(nbmodelpack.load(info.ref, identity=good)(x), model(x))
    with pytest.raises(CryptoError, match="model.safetensors: wrong passphrase"):
        nbmodelpack.load(info.ref, identity=nbmodelpack.Passphrase("wrong"))
    with pytest.raises(CryptoError, match="model.safetensors is passphrase-encrypted"):
        nbmodelpack.load(info.ref, identity=nbmodelpack.keygen_age(tmp_path / "k.txt")[0])


def test_explicit_decrypt_makes_a_plaintext_version(packed, model, age_key) -> None:
    key, recipient = age_key
    sealed = nbmodelpack.encrypt(packed, recipients=[recipient])
    plain = nbmodelpack.decrypt(sealed.ref, identity=key)
    assert plain.badges == [] and plain.recipe["op"] == "decrypt" and plain.recipe["parent"] == sealed.digest
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(nbmodelpack.load(plain.ref)(x), model(x))
    # The plaintext is byte-identical to what was packed.
    assert layer_json(plain.ref, "model.safetensors")["digest"] == layer_json(packed, "model.safetensors")["digest"]


_ATTEMPTS = r"""
import json, sys, nbmodelpack
from nbmodelpack.errors import ModelPackError
for kind, ref, identity in json.loads(sys.argv[1]):
    if identity.startswith("passphrase:"):
        identity = nbmodelpack.Passphrase(identity.split(":", 1)[1])
    try:
        if kind == "load":
            nbmodelpack.load(ref, identity=identity)
        else:
            nbmodelpack.decrypt(ref, identity=identity)
    except ModelPackError as exc:
        print(type(exc).__name__ + ": " + str(exc))
    else:
        print("OK")
"""


def test_bad_keys_and_damaged_or_swapped_layers_are_refused_naming_the_file_with_no_plaintext_on_disk(
    packed, model, age_key, tmp_path: Path, home: Path
) -> None:
    key, recipient = age_key
    wrong, _ = nbmodelpack.keygen_age(tmp_path / "wrong.txt")
    marker = plaintext_marker(model)
    store_root = nbmodelpack.get_store().root
    assert files_containing([store_root], marker), "the marker must be findable in a plaintext blob"

    sealed = nbmodelpack.encrypt(packed, recipients=[recipient]).ref
    by_passphrase = nbmodelpack.encrypt(packed, passphrase="right one").ref
    with torch.no_grad():
        swapped_model = marked_mlp()
        swapped_model.net[3].bias += 1.0
    other = nbmodelpack.pack(swapped_model, "other-mlp", example=EXAMPLE)
    other_sealed = nbmodelpack.encrypt(other.ref, recipients=[recipient]).ref  # same key: decrypts fine alone
    ciphertext = nbmodelpack.get_store().open(sealed).read("model.safetensors")
    truncated = add_variant(sealed, replace={"model.safetensors": ciphertext[: len(ciphertext) - 100]}, tag="truncated")
    flipped_bytes = bytearray(ciphertext)
    flipped_bytes[len(ciphertext) // 2] ^= 0x01
    flipped = add_variant(sealed, replace={"model.safetensors": bytes(flipped_bytes)}, tag="flipped")
    swapped = add_variant(sealed, replace={"model.safetensors": layer_json(other_sealed, "model.safetensors")}, tag="swapped")
    # Remove every plaintext version, so that any copy of the marker found later was written by a load.
    for ref in (packed, other.ref):
        nbmodelpack.rm(ref)
    nbmodelpack.gc(grace_seconds=0)
    assert not files_containing([store_root], marker)

    tmp = tmp_path / "proc-tmp"
    tmp.mkdir()
    env = subprocess_env(TMPDIR=str(tmp))

    cases = {
        (sealed, key): "OK",
        (sealed, wrong): "CryptoError: decryption: model.safetensors: none of the given identities can open it",
        (truncated, key): "CryptoError: decryption: model.safetensors: the ciphertext is damaged or truncated",
        (flipped, key): "CryptoError: decryption: model.safetensors: the ciphertext is damaged or truncated",
        (by_passphrase, Path("passphrase:wrong one")): "CryptoError: decryption: model.safetensors: wrong passphrase",
        (swapped, key): "IntegrityError: integrity check failed: model.safetensors: the encrypted layer does not belong to this bundle",
    }
    # Every case through load and decrypt (but a good decrypt, which writes a version by design).
    attempts = [(kind, ref, str(identity)) for (ref, identity), want in cases.items() for kind in ("load", "decrypt") if not (kind == "decrypt" and want == "OK")]
    blobs_before = sorted(p.name for p in (store_root / "blobs" / "sha256").iterdir())
    versions_before = [i.ref for i in nbmodelpack.ls()]
    # One fresh process (its TMPDIR watched) tries every case: one line of outcome each.
    proc = subprocess.run([sys.executable, "-c", _ATTEMPTS, json.dumps(attempts)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout, proc.stderr[-2000:]
    outcomes = proc.stdout.strip().splitlines()
    assert len(outcomes) == len(attempts)
    for (kind, ref, identity), outcome in zip(attempts, outcomes, strict=True):
        expected = cases[(ref, Path(identity))]
        assert outcome.startswith(expected), (kind, ref, outcome)
    # Refused: nothing written (no new blob, no new version).
    assert sorted(p.name for p in (store_root / "blobs" / "sha256").iterdir()) == blobs_before
    assert [i.ref for i in nbmodelpack.ls()] == versions_before
    assert not files_containing([store_root, tmp], marker), "plaintext weights reached the disk"


def test_a_damaged_ciphertext_blob_in_the_store_is_refused_naming_the_file(packed, age_key) -> None:
    key, recipient = age_key
    ref = nbmodelpack.encrypt(packed, recipients=[recipient]).ref
    blob = nbmodelpack.get_store().blob_path(layer_json(ref, "model.safetensors")["digest"])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors is corrupted"):
        nbmodelpack.load(ref, identity=key)


def test_bad_recipient_or_both_modes_are_usage_errors(packed, cli) -> None:
    with pytest.raises(ModelPackError, match="not an age recipient"):
        nbmodelpack.encrypt(packed, recipients=["age1notakey"])
    with pytest.raises(ModelPackError, match="exactly one"):
        nbmodelpack.encrypt(packed, recipients=["age1x"], passphrase="p")
    proc = cli("encrypt", packed)
    assert proc.returncode == 2 and "--to" in proc.stderr and "Traceback" not in proc.stderr
    assert [i.ref for i in nbmodelpack.ls()] == [packed]


def test_cli_encrypt_with_passphrase_from_env_then_decrypt(packed, model, cli) -> None:
    env_secret = {"NBMODELPACK_PASSPHRASE": "s3cret-for-ci"}
    os.environ.update(env_secret)
    try:
        proc = cli("encrypt", packed, "--passphrase", check=True)
        assert "secret-mlp:2" in proc.stdout and "encrypted" in proc.stdout
        assert "s3cret" not in nbmodelpack.get_store().root.joinpath("index.json").read_text()
        cli("decrypt", "secret-mlp:2", "--passphrase", check=True)
    finally:
        os.environ.pop("NBMODELPACK_PASSPHRASE")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(nbmodelpack.load("secret-mlp:3")(x), model(x))


def test_a_passphrase_passed_as_a_plain_string_is_not_echoed(packed) -> None:
    ref = nbmodelpack.encrypt(packed, passphrase="hunter2 is my secret").ref
    with pytest.raises(CryptoError) as info:
        nbmodelpack.load(ref, identity="hunter2 is my secret")
    assert "hunter2" not in str(info.value) and "Passphrase" in str(info.value)


def test_compressing_an_encrypted_bundle_is_refused_so_no_plaintext_child_appears(packed, age_key) -> None:
    from nbmodelpack.errors import CompressionError

    sealed = nbmodelpack.encrypt(packed, recipients=[age_key[1]])
    before = [i.ref for i in nbmodelpack.ls()]
    with pytest.raises(CompressionError, match="is encrypted"):
        nbmodelpack.compress(sealed.ref, quantize="int8")
    assert [i.ref for i in nbmodelpack.ls()] == before


def test_a_recipients_file_that_is_not_text_is_one_line(cli, packed, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    proc = cli("encrypt", packed, "--to", str(junk))
    assert proc.returncode == 2 and "is not a recipients file" in proc.stderr and "Traceback" not in proc.stderr


def test_paths_that_cannot_be_written_are_one_line(cli, packed, tmp_path: Path) -> None:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for args in (["export", packed, "--files", str(a_file)], ["keygen", "--signing", str(a_file / "k.pem")]):
        proc = cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_encrypted_layers_record_their_plaintext_size_and_decryption_is_capped_by_it(packed, age_key) -> None:
    import dataclasses

    from nbmodelpack.bundle import mediatypes as mt
    from nbmodelpack.bundle.draft import Draft
    from nbmodelpack.crypto import decrypt_layer, encrypt_bytes, parse_recipients

    key, recipient = age_key
    store = nbmodelpack.get_store()
    plain_size = store.open(packed).descriptor("model.safetensors").size
    info = nbmodelpack.encrypt(packed, recipients=[recipient])
    sealed = store.open(info.ref)
    desc = sealed.descriptor("model.safetensors")
    assert desc.annotations[mt.PLAIN_SIZE] == str(plain_size)
    # A manifest that understates the size (digests and binding all valid) is refused before anything is loaded.
    draft = Draft.from_parent(sealed.manifest, name="secret-mlp", op="encrypt")
    draft.replace_layer(dataclasses.replace(desc, annotations={**desc.annotations, mt.PLAIN_SIZE: "1000"}), diff_id=draft.diff_ids.get(desc.digest))
    lying = store.commit(draft).ref
    with pytest.raises(IntegrityError, match="decrypts to more than the 1000 bytes"):
        nbmodelpack.load(lying, identity=str(key))
    # Without the annotation the ciphertext's own size caps it; a smaller explicit cap refuses.
    ciphertext = encrypt_bytes(b"x" * 100_000, recipients=parse_recipients([recipient]))
    assert decrypt_layer(ciphertext, identity=str(key), filepath="f") == b"x" * 100_000
    with pytest.raises(IntegrityError, match="f decrypts to more than the 99999 bytes"):
        decrypt_layer(ciphertext, identity=str(key), filepath="f", limit=99_999)
