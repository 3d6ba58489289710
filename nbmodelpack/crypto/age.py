"""age in memory: encrypt to a file or bytes, decrypt to bytes only, capped in size.

The plaintext may not exceed the size the manifest records (``mt.PLAIN_SIZE``),
and never the ciphertext's own size (age only adds bytes).

Example:
    >>> plain = decrypt_layer(blob, identity="~/.age/me.txt", filepath="model.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import CryptoError, IntegrityError
from .keys import IDENTITY_ENV, PASSPHRASE_ENV, Passphrase, find_identities, identity_arg


def _is_scrypt(data: bytes) -> bool:
    # age header: "age-encryption.org/v1\n-> scrypt SALT N\n…": a passphrase-encrypted file.
    return data.startswith(b"age-encryption.org/v1\n-> scrypt ")


def encrypt_bytes(data: bytes, *, recipients: Sequence[Any] = (), passphrase: Passphrase | None = None) -> bytes:
    """One standard age file (binary) holding ``data``; what ``age -r``/``age -p`` would write."""
    import pyrage

    if passphrase is not None:
        return bytes(pyrage.passphrase.encrypt(data, passphrase.reveal()))
    out = io.BytesIO()
    # The *_io variants stream in 64 KiB chunks; pyrage.encrypt() on bytes is ~3x slower.
    pyrage.encrypt_io(io.BytesIO(data), out, list(recipients))
    return out.getvalue()


def encrypt_to_file(data: bytes, path: Path, *, recipients: Sequence[Any] = (), passphrase: Passphrase | None = None) -> None:
    """Write ``data`` as an age file at ``path`` (what :func:`encrypt_bytes` returns, without the copy)."""
    import pyrage

    if passphrase is not None:
        path.write_bytes(encrypt_bytes(data, passphrase=passphrase))
        return
    with open(path, "wb") as out:
        pyrage.encrypt_io(io.BytesIO(data), out, list(recipients))


class _TooLarge(Exception):
    """Raised inside pyrage's write callback when the plaintext passes its cap."""


class _CappedSink(io.RawIOBase):
    """A write-only buffer that refuses to grow beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.buffer.tell() + len(b) > self.limit:
            raise _TooLarge
        return self.buffer.write(b)


def _too_large(filepath: str, limit: int) -> IntegrityError:
    return IntegrityError(f"{filepath} decrypts to more than the {limit} bytes its manifest records", hint="the bundle was not written by nbmodelpack; nothing was loaded")


def decrypt_layer(data: bytes, *, identity: Any = None, filepath: str, limit: int | None = None) -> bytes:
    """Decrypt one age-encrypted layer in memory; wrong key or damaged data → :class:`CryptoError` naming ``filepath``.

    The plaintext may not exceed ``limit`` bytes (default and at most: the ciphertext's size).

    Example:
        >>> plain = decrypt_layer(blob, identity="~/.age/me.txt", filepath="model.safetensors")  # doctest: +SKIP
    """
    import pyrage

    limit = len(data) if limit is None else min(limit, len(data))

    if _is_scrypt(data):
        chosen = [i for i in (identity_arg(identity) if identity is not None else []) if isinstance(i, Passphrase)]
        if not chosen and identity is None and os.environ.get(PASSPHRASE_ENV):
            chosen = [Passphrase(os.environ[PASSPHRASE_ENV])]
        if not chosen:
            raise CryptoError(f"{filepath} is passphrase-encrypted", hint="pass identity=nbmodelpack.Passphrase(...)")
        try:
            # pyrage has no streaming passphrase decrypt; age's plaintext is smaller than its ciphertext.
            plain = bytes(pyrage.passphrase.decrypt(data, chosen[0].reveal()))
        except (pyrage.DecryptError, OSError) as exc:
            if "Decryption failed" in str(exc) or "No matching keys" in str(exc):
                raise CryptoError(f"{filepath}: wrong passphrase", hint="nothing was decrypted") from exc
            raise _damaged(filepath, exc) from exc
        if len(plain) > limit:
            raise _too_large(filepath, limit)
        return plain
    identities = [i for i in find_identities(identity) if not isinstance(i, Passphrase)]
    if not identities:
        hint = "the layer was encrypted for recipients, not a passphrase" if identity is not None else (
            f"pass identity=FILE, set {IDENTITY_ENV}, or put your identity in {paths.keys_dir()}")
        raise CryptoError(f"{filepath} is encrypted and no age identity was found", hint=hint)
    out = _CappedSink(limit)
    try:
        pyrage.decrypt_io(io.BytesIO(data), out, identities)
    except _TooLarge as exc:
        raise _too_large(filepath, limit) from exc
    except (pyrage.DecryptError, OSError) as exc:  # decrypt_io reports a failed chunk as OSError
        if "No matching keys" in str(exc):
            raise CryptoError(f"{filepath}: none of the given identities can open it", hint="it was encrypted for other recipients; pass the right key: identity=FILE") from exc
        raise _damaged(filepath, exc) from exc
    return out.buffer.getvalue()


def _damaged(filepath: str, exc: Exception) -> CryptoError:
    return CryptoError(f"{filepath}: the ciphertext is damaged or truncated ({exc})", hint="re-pull or re-encrypt it; nothing was decrypted")
