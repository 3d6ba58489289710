"""The one exception tree of nbmodelpack.

Every error a user can cause is a :class:`ModelPackError`. Its ``str()`` is one
short line that says what went wrong and what to do; the front doors (CLI,
``%modelpack``, REST, sidebar) print exactly that line and no traceback.

    ModelPackError
    ├── UsageError            bad arguments to a verb (CLI, magic)
    ├── InvalidReference      a bundle reference that does not parse
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

Each class carries the HTTP status the REST API and the model server answer with
(``http_status``) and the CLI's exit code (``exit_code``: 2 for a command line that does
not parse, 1 for everything else). No door maps exceptions by hand.

Example:
    >>> from nbmodelpack.errors import BundleNotFound
    >>> str(BundleNotFound("mnist:9", hint="run `modelpack ls` to see what exists"))
    'bundle not found: mnist:9 (run `modelpack ls` to see what exists)'
"""

from __future__ import annotations


class ModelPackError(Exception):
    """Base class: a one-line message plus an optional hint on what to do."""

    prefix = ""
    http_status = 500
    exit_code = 1

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

    http_status = 400
    exit_code = 2


class InvalidReference(ModelPackError):
    """A bundle reference that is not of the form ``name[:tag|@sha256:…]``."""

    prefix = "bad reference: "
    http_status = 400
    exit_code = 2


class BundleNotFound(ModelPackError):
    """A reference that parses but names no bundle."""

    prefix = "bundle not found: "
    http_status = 404
    exit_code = 1


class IntegrityError(ModelPackError):
    """Bytes that do not hash to the digest that names them."""

    prefix = "integrity check failed: "
    http_status = 422
    exit_code = 1


class BundleFormatError(ModelPackError):
    """A manifest, config, card or layer that is not what we wrote."""

    prefix = "unreadable bundle: "
    http_status = 422
    exit_code = 1


class StoreError(ModelPackError):
    """The store cannot be written: disk full, permissions, a stale lock."""

    prefix = "store error: "
    http_status = 507
    exit_code = 1


class UnsafeFileError(ModelPackError):
    """A file that can only be loaded by running code from it (pickle)."""

    prefix = "refused unsafe file: "
    http_status = 422
    exit_code = 1


class ArchitectureError(ModelPackError):
    """A module we cannot capture in any of the three ways, or cannot rebuild."""

    prefix = "architecture: "
    http_status = 422
    exit_code = 1


class CompressionError(ModelPackError):
    """A compression scheme or parameter that does not apply."""

    prefix = "compression: "
    http_status = 400
    exit_code = 1


class CryptoError(ModelPackError):
    """Wrong identity or passphrase, or damaged ciphertext."""

    prefix = "decryption: "
    http_status = 403
    exit_code = 1


class SignatureError(ModelPackError):
    """A signature that is missing, does not verify, or is not trusted."""

    prefix = "signature: "
    http_status = 403
    exit_code = 1


class RemoteError(ModelPackError):
    """A remote (OCI registry or layout directory) that fails a request."""

    prefix = "remote: "
    http_status = 502
    exit_code = 1


class AuthError(RemoteError):
    """The remote wants credentials, or refused the ones it got."""

    http_status = 401
    exit_code = 1


class RemoteUnavailable(RemoteError):
    """The remote cannot be reached at all."""

    http_status = 503
    exit_code = 1


class ServingError(ModelPackError):
    """The model server cannot start, or a request to it fails."""

    prefix = "serve: "
    http_status = 503
    exit_code = 1


__all__ = [
    "ArchitectureError",
    "AuthError",
    "BundleFormatError",
    "BundleNotFound",
    "CompressionError",
    "CryptoError",
    "IntegrityError",
    "ModelPackError",
    "InvalidReference",
    "RemoteError",
    "RemoteUnavailable",
    "ServingError",
    "SignatureError",
    "StoreError",
    "UnsafeFileError",
    "UsageError",
]
