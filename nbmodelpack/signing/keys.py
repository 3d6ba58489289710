"""Signing keys: ECDSA P-256 PEM files, their fingerprints, and where the default key lives.

Example:
    >>> find_signing_key()  # doctest: +SKIP
    PosixPath('/home/me/.local/share/nbmodelpack/keys/signing.pem')
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import paths
from .._files import atomic_write
from ..crypto import write_private
from ..errors import SignatureError, UsageError

SIGNING_ENV = "NBMODELPACK_SIGNING_KEY"
DEFAULT_KEY_FILE = "signing.pem"


# ---- keys ----------------------------------------------------------------------------------
def keygen_signing(out: str | os.PathLike[str] | None = None, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new ECDSA P-256 key pair as PEM: private ``out`` (0600) and public ``out.pub``.

    Without ``out`` the pair goes to ``$NBMODELPACK_HOME/keys/signing.pem(.pub)``.

    Example:
        >>> private, public = keygen_signing("/tmp/me.pem")  # doctest: +SKIP
        >>> public.name  # doctest: +SKIP
        'me.pem.pub'
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path = Path(out).expanduser() if out else paths.keys_dir() / DEFAULT_KEY_FILE
    public_path = private_path.with_name(private_path.name + ".pub")
    if public_path.exists() and not force:
        raise UsageError(f"{public_path} already exists", hint="pick another path or pass force=True")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(private_path, private_pem, force=force)
    atomic_write(public_path, public_pem(key))
    return private_path, public_path


def public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if hasattr(key, "public_key") else key
    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def fingerprint(public_pem: bytes) -> str:
    """``sha256:…`` of a public key's DER encoding (what the recipe and results show)."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(public_pem)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def find_signing_key(key: str | os.PathLike[str] | None = None) -> Path:
    """The private key to sign with: ``key``, ``$NBMODELPACK_SIGNING_KEY``, or ``keys/signing.pem``."""
    if key is not None:
        path = Path(key).expanduser()
    elif os.environ.get(SIGNING_ENV):
        path = Path(os.environ[SIGNING_ENV]).expanduser()
    else:
        path = paths.keys_dir() / DEFAULT_KEY_FILE
        if not path.exists():
            raise SignatureError("no signing key", hint=f"pass key=PEM, set {SIGNING_ENV}, or run `modelpack keygen --signing`")
    if not path.is_file():
        raise SignatureError(f"no signing key at {path}", hint="make one with `modelpack keygen --signing FILE`")
    return path


def load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key", hint="make one with `modelpack keygen --signing`") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignatureError(f"{path} is not an ECDSA key", hint="model_signing keys are ECDSA P-256 (`modelpack keygen --signing`)")
    return key


def public_key_pems(keys: Sequence[str | os.PathLike[str]]) -> list[tuple[str, bytes]]:
    """``(label, public PEM)`` for each key: a public or private PEM file, or PEM text."""
    from cryptography.hazmat.primitives import serialization

    out = []
    for item in keys:
        text = str(item)
        if "-----BEGIN" in text:
            label, data = "inline key", text.encode()
        else:
            path = Path(text).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SignatureError(f"cannot read key {path}: {exc.strerror or exc}") from exc
            label = str(path)
        try:
            if b"PRIVATE KEY" in data:
                pem = public_pem(serialization.load_pem_private_key(data, password=None))
            else:
                pem = public_pem(serialization.load_pem_public_key(data))
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"{label} is not a PEM key") from exc
        out.append((label, pem))
    return out
