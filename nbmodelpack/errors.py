"""The one exception tree of nbmodelpack.

Every error a user can cause is a :class:`ModelPackError`. Its ``str()`` is one
short line that says what went wrong and what to do; the front doors (CLI,
``%modelpack``, REST, sidebar) print exactly that line and no traceback.

    ModelPackError
    ├── UsageError            bad arguments to a verb (CLI, magic)
    ├── ReferenceError_       a bundle reference that does not parse
    ├── BundleNotFound        a well-formed reference that names nothing
    ├── IntegrityError        a blob whose bytes do not match its digest
    ├── BundleFormatError     a manifest, config or layer we cannot read
    ├── StoreError            the local store cannot be written (disk full, permissions)
    ├── UnsafeFileError       a pickle file that would run code when loaded
    ├── ArchitectureError     a module we cannot capture or rebuild
    ├── CompressionError      a compression request that cannot be done
    ├── CryptoError           wrong key or passphrase, damaged ciphertext
    ├── SignatureError        missing, bad or untrusted signature
    ├── RemoteError           a registry or remote that fails
    │   ├── AuthError         login needed or refused
    │   └── RemoteUnavailable the remote cannot be reached
    └── ServingError          the model server cannot start or answer

Example:
    >>> from nbmodelpack.errors import BundleNotFound
    >>> str(BundleNotFound("mnist:9", hint="run `modelpack ls` to see what exists"))
    'bundle not found: mnist:9 (run `modelpack ls` to see what exists)'
"""

from __future__ import annotations


class ModelPackError(Exception):
    """Base class: a one-line message plus an optional hint on what to do."""

    prefix = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.prefix}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(ModelPackError):
    """Arguments to a verb that do not parse or do not fit together."""


class ReferenceError_(ModelPackError):  # noqa: N801 - avoid shadowing builtins.ReferenceError
    """A bundle reference that is not of the form ``name[:tag|@sha256:…]``."""

    prefix = "bad reference: "


class BundleNotFound(ModelPackError):
    """A reference that parses but names no bundle."""

    prefix = "bundle not found: "


class IntegrityError(ModelPackError):
    """Bytes that do not hash to the digest that names them."""

    prefix = "integrity check failed: "


class BundleFormatError(ModelPackError):
    """A manifest, config, card or layer that is not what we wrote."""

    prefix = "unreadable bundle: "


class StoreError(ModelPackError):
    """The store cannot be written: disk full, permissions, a stale lock."""

    prefix = "store error: "


class UnsafeFileError(ModelPackError):
    """A file that can only be loaded by running code from it (pickle)."""

    prefix = "refused unsafe file: "


class ArchitectureError(ModelPackError):
    """A module we cannot capture in any of the three ways, or cannot rebuild."""

    prefix = "architecture: "


class CompressionError(ModelPackError):
    """A compression scheme or parameter that does not apply."""

    prefix = "compression: "


class CryptoError(ModelPackError):
    """Wrong identity or passphrase, or damaged ciphertext."""

    prefix = "decryption: "


class SignatureError(ModelPackError):
    """A signature that is missing, does not verify, or is not trusted."""

    prefix = "signature: "


class RemoteError(ModelPackError):
    """A remote (OCI registry or layout directory) that fails a request."""

    prefix = "remote: "


class AuthError(RemoteError):
    """The remote wants credentials, or refused the ones it got."""


class RemoteUnavailable(RemoteError):
    """The remote cannot be reached at all."""


class ServingError(ModelPackError):
    """The model server cannot start, or a request to it fails."""

    prefix = "serve: "


__all__ = [
    "ArchitectureError",
    "AuthError",
    "BundleFormatError",
    "BundleNotFound",
    "CompressionError",
    "CryptoError",
    "IntegrityError",
    "ModelPackError",
    "ReferenceError_",
    "RemoteError",
    "RemoteUnavailable",
    "ServingError",
    "SignatureError",
    "StoreError",
    "UnsafeFileError",
    "UsageError",
]
