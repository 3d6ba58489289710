"""Encryption and signing throughput on a 1 GiB bundle, side by side with the standard tools.

    python bench/crypto.py            # 1 GiB of weights (BENCH_GIB=0.25 for a quick run)

Baselines, run on the same bytes in the same run:
- ``age`` CLI (Go): ``age -r`` / ``age -d`` on the exported ``model.safetensors``.
- ``openssl enc -chacha20`` and ``-aes-256-cbc``: raw cipher throughput. ``openssl enc``
  does not do AEAD modes (no ``-aes-256-gcm``), so these are the closest it offers
  and they skip authentication that age does.
- ``sha256sum`` (and Python's OpenSSL ``hashlib``, faster here: SHA-NI) of the files a
  signature covers: the floor for any verification, since model_signing hashes every byte.

Goals: encrypt+decrypt ≥ 0.8× the age CLI; verify within 1.5× of hashing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, repeat: int = int(os.environ.get("BENCH_REPEAT", "2"))) -> float:  # type: ignore[no-untyped-def]
    """Best wall time of ``repeat`` runs (the page cache is warm after the first)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    gib = float(os.environ.get("BENCH_GIB", "1"))
    work = Path(tempfile.mkdtemp(prefix="nbmodelpack-bench-crypto-"))
    os.environ["NBMODELPACK_HOME"] = str(work / "home")
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"
    try:
        run(gib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(gib: float, work: Path) -> None:
    import torch

    import nbmodelpack
    from nbmodelpack import crypto

    side = int((gib * (1 << 30) / 4) ** 0.5)
    model = torch.nn.Linear(side, side, bias=False)
    with torch.no_grad():
        model.weight.normal_()
    info = nbmodelpack.pack(model, "bench-big", arch="torch.nn:Linear", arch_kwargs={"in_features": side, "out_features": side, "bias": False}, metrics={})
    del model
    store = nbmodelpack.get_store()
    size = store.open(info.ref).descriptor("model.safetensors").size
    mib = size / (1 << 20)
    print(f"bundle: {info.ref}, model.safetensors {mib:,.0f} MiB")

    key, recipient = nbmodelpack.keygen_age(work / "key.txt")
    plain = nbmodelpack.export_files(info.ref, work / "plain") / "model.safetensors"
    identity = crypto.find_identities(key)

    # ---- encrypt ------------------------------------------------------------------------------
    age_enc = timed(lambda: sh("age", "-r", recipient, "-o", str(work / "cli.age"), str(plain)))
    refs: list[str] = []
    ours_enc = timed(lambda: refs.append(nbmodelpack.encrypt(info.ref, recipients=[recipient]).ref))
    data = plain.read_bytes()
    rec = crypto.parse_recipients([recipient])
    core_enc = timed(lambda: crypto.encrypt_bytes(data, recipients=rec))
    # ---- decrypt (ours never writes plaintext; age -d writes to /dev/null to match) -------------
    sealed = store.open(refs[-1])
    age_dec = timed(lambda: sh("age", "-d", "-i", str(key), "-o", "/dev/null", str(work / "cli.age")))
    ours_dec = timed(lambda: sealed.plaintext("model.safetensors", identity=identity))
    ciphertext = sealed.read("model.safetensors")
    core_dec = timed(lambda: crypto.decrypt_layer(ciphertext, identity=identity, filepath="model.safetensors"))
    data = ciphertext = b""  # free 2 GiB before the next step
    # ---- openssl enc class ---------------------------------------------------------------------
    hexkey, iv = "00" * 32, "00" * 16
    chacha = timed(lambda: sh("openssl", "enc", "-chacha20", "-K", hexkey, "-iv", iv, "-in", str(plain), "-out", "/dev/null"))
    aes = timed(lambda: sh("openssl", "enc", "-aes-256-cbc", "-K", hexkey, "-iv", iv, "-in", str(plain), "-out", "/dev/null"))

    # ---- sign / verify vs sha256sum ------------------------------------------------------------
    priv, pub = nbmodelpack.keygen_signing(work / "sign.pem")
    signed: list[str] = []
    sign_t = timed(lambda: signed.append(nbmodelpack.sign(refs[-1], key=priv).ref), repeat=1)
    verify_t = timed(lambda: nbmodelpack.verify(signed[-1], key=pub))
    assert nbmodelpack.verify(signed[-1], key=pub).ok
    blobs = [str(store.blob_path(d.digest)) for d in store.open(signed[-1]).manifest.layers]
    hash_t = timed(lambda: sh("sha256sum", *blobs))
    hashlib_t = timed(lambda: [_hash_file(b) for b in blobs])

    def row(name: str, secs: float, base: float | None = None) -> str:
        ratio = f"{base / secs:5.2f}x" if base else ""
        return f"  {name:44} {secs:7.2f} s {mib / secs:8.0f} MiB/s  {ratio}"

    print("\nencrypt (ratio = age CLI time / ours; goal >= 0.80x)")
    print(row("age -r (CLI, Go)", age_enc))
    print(row("nbmodelpack.encrypt (read+verify, age, store)", ours_enc, age_enc))
    print(row("  age in memory only (pyrage encrypt_io)", core_enc, age_enc))
    print("decrypt (ratio = age CLI time / ours)")
    print(row("age -d -o /dev/null (CLI, Go)", age_dec))
    print(row("StoredBundle.plaintext (verify, age, bind)", ours_dec, age_dec))
    print(row("  age in memory only (pyrage decrypt_io)", core_dec, age_dec))
    both_age, both_ours = age_enc + age_dec, ours_enc + ours_dec
    print(f"  encrypt+decrypt: ours {both_ours:.2f} s vs age CLI {both_age:.2f} s -> {both_age / both_ours:.2f}x "
          f"({'goal met' if both_age / both_ours >= 0.8 else 'goal MISSED'})")
    print("openssl enc, same file (no AEAD: enc has no GCM/Poly1305 modes)")
    print(row("openssl enc -chacha20", chacha))
    print(row("openssl enc -aes-256-cbc", aes))
    print("sign / verify (ratio = sha256sum time / ours; goal: verify within 1.5x of hashing)")
    floor = min(hash_t, hashlib_t)
    print(row("sha256sum of the signed files (coreutils)", hash_t))
    print(row("hashlib.sha256 of the same files (OpenSSL)", hashlib_t))
    print(row("nbmodelpack.sign (model_signing, new version)", sign_t, floor))
    print(row("nbmodelpack.verify (model_signing)", verify_t, floor))
    print(f"  verify / fastest hashing = {verify_t / floor:.2f} ({'goal met' if verify_t / floor <= 1.5 else 'goal MISSED'})")


def _hash_file(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


if __name__ == "__main__":
    sys.exit(main())
