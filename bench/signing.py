"""Signing and verification throughput on a 1 GiB encrypted bundle, against hashing the same files.

    python bench/signing.py            # 1 GiB of weights (BENCH_GIB=0.25 for a quick run)

model_signing hashes every byte, so ``sha256sum`` (and Python's OpenSSL ``hashlib``,
faster here: SHA-NI) of the files a signature covers is the floor for any verification.
Goal: verify within 1.5× of hashing.
"""

from __future__ import annotations

import hashlib
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


def main() -> None:
    gib = float(os.environ.get("BENCH_GIB", "1"))
    work = Path(tempfile.mkdtemp(prefix="nbmodelpack-bench-signing-"))
    os.environ["NBMODELPACK_HOME"] = str(work / "home")
    os.environ["NBMODELPACK_NO_PROGRESS"] = "1"
    try:
        run(gib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(gib: float, work: Path) -> None:

    from _nets import pack_square_linear

    import nbmodelpack

    info = pack_square_linear(gib)
    store = nbmodelpack.get_store()
    mib = store.open(info.ref).descriptor("model.safetensors").size / (1 << 20)
    _, recipient = nbmodelpack.keygen_age(work / "key.txt")
    sealed = nbmodelpack.encrypt(info.ref, recipients=[recipient]).ref
    priv, pub = nbmodelpack.keygen_signing(work / "sign.pem")
    signed: list[str] = []
    sign_t = timed(lambda: signed.append(nbmodelpack.sign(sealed, key=priv).ref), repeat=1)
    verify_t = timed(lambda: nbmodelpack.verify(signed[-1], key=pub))
    assert nbmodelpack.verify(signed[-1], key=pub).ok
    blobs = [str(store.blob_path(d.digest)) for d in store.open(signed[-1]).manifest.layers]
    hash_t = timed(lambda: subprocess.run(["sha256sum", *blobs], check=True, stdout=subprocess.DEVNULL))
    hashlib_t = timed(lambda: [_hash_file(b) for b in blobs])

    def row(name: str, secs: float, base: float | None = None) -> str:
        ratio = f"{base / secs:5.2f}x" if base else ""
        return f"  {name:44} {secs:7.2f} s {mib / secs:8.0f} MiB/s  {ratio}"

    print(f"model.safetensors {mib:,.0f} MiB (encrypted)")
    print("sign / verify (ratio = fastest hashing time / ours; goal: verify within 1.5x of hashing)")
    floor = min(hash_t, hashlib_t)
    print(row("sha256sum of the signed files (coreutils)", hash_t))
    print(row("hashlib.sha256 of the same files (OpenSSL)", hashlib_t))
    print(row("nbmodelpack.sign (model_signing, new version)", sign_t, floor))
    print(row("nbmodelpack.verify (model_signing)", verify_t, floor))
    print(f"  verify / fastest hashing = {verify_t / floor:.2f} ({'goal met' if verify_t / floor <= 1.5 else 'goal MISSED'})")


def _hash_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


if __name__ == "__main__":
    sys.exit(main())
