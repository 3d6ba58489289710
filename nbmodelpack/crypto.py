"""Encryption: age-encrypted layers, decrypted in memory only.

``encrypt`` turns the layers that hold weights or code (``model.safetensors``,
``model.pt2``, ``model_src.py``: media types ``…weight.v1.raw`` and
``…code.v1.raw``) into standard age files (media type suffix ``+age``), so
anyone with the key can open them with the ``age`` tool. Everything else stays
readable so that an encrypted bundle still lists with its card and badges:
``README.md``, ``architecture.json`` (class name and init arguments, which the
manifest summary already carries), ``signature.json``, ``processing.json``.

Decryption only ever produces bytes in memory: ``StoredBundle.plaintext`` calls
:func:`decrypt_layer`, and ``safetensors``/``torch.export`` load from bytes.
It is capped: by the layer's ``mt.PLAIN_SIZE`` annotation (written by
``encrypt``) and always by the ciphertext's own size (age only adds bytes).

Identities (what opens a layer), in lookup order: the ``identity`` argument (an
identity file, an ``AGE-SECRET-KEY-1…`` string, a pyrage identity, a
:class:`Passphrase`, or a list of these); ``$NBMODELPACK_AGE_IDENTITY`` (file or
string); every ``*.txt`` identity file in ``$NBMODELPACK_HOME/keys/``; for
passphrase-encrypted layers ``$NBMODELPACK_PASSPHRASE``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import paths
from ._files import atomic_write
from .bundle import mediatypes as mt
from .bundle.draft import Draft
from .bundle.info import BundleInfo
from .bundle.manifest import Descriptor, Manifest
from .errors import CryptoError, IntegrityError, UsageError
from .store import Store, StoredBundle, get_store, register_codec

IDENTITY_ENV = "NBMODELPACK_AGE_IDENTITY"
PASSPHRASE_ENV = "NBMODELPACK_PASSPHRASE"
DEFAULT_IDENTITY_FILE = "age-identity.txt"
# Layers whose bytes are weights or code: these are encrypted, the rest stays readable.
ENCRYPTED_TYPES = (mt.WEIGHT, mt.CODE)
SIGNATURE_FILE = "model.sig"


class Passphrase:
    """A passphrase for age's scrypt recipient; its ``repr`` never shows the secret.

    Example:
        >>> Passphrase("correct horse battery staple")
        Passphrase(***)
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        if not secret:
            raise UsageError("the passphrase is empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "Passphrase(***)"

    __str__ = __repr__

    def reveal(self) -> str:
        """The secret itself (only for handing to age)."""
        return self._secret


# ---- keys ----------------------------------------------------------------------------------
def write_private(path: Path, data: bytes, *, force: bool = False) -> None:
    """Create ``path`` with mode 0600 (never briefly world-readable); refuse to overwrite unless ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", hint="pick another path or pass --force")
    atomic_write(path, data, mode=0o600)


def keygen_age(out: str | os.PathLike[str] | None = None, *, force: bool = False) -> tuple[Path, str]:
    """Write a new X25519 age identity (file mode 0600, ``age-keygen`` format); return ``(path, recipient)``.

    Without ``out`` the identity goes to ``$NBMODELPACK_HOME/keys/age-identity.txt``,
    where decryption finds it by itself.

    Example:
        >>> path, recipient = keygen_age("/tmp/me.txt")  # doctest: +SKIP
        >>> recipient[:4]  # doctest: +SKIP
        'age1'
    """
    from datetime import UTC, datetime

    from pyrage import x25519

    path = Path(out).expanduser() if out else paths.keys_dir() / DEFAULT_IDENTITY_FILE
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    write_private(path, text.encode(), force=force)
    return path, recipient


def recipient_of(identity_file: str | os.PathLike[str]) -> str:
    """The ``age1…`` recipient of an identity file (like ``age-keygen -y``)."""
    ids = _identities_from_text(Path(identity_file).read_text(), str(identity_file))
    return str(ids[0].to_public())


def _identities_from_text(text: str, where: str) -> list[Any]:
    from pyrage import IdentityError, ssh, x25519

    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        try:
            return [ssh.Identity.from_buffer(text.encode())]
        except IdentityError as exc:
            raise CryptoError(f"{where} is not a usable SSH identity: {exc}") from exc
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                out.append(x25519.Identity.from_str(line))
            except IdentityError as exc:
                raise CryptoError(f"{where} holds a malformed age identity: {exc}") from exc
    if not out:
        raise CryptoError(f"{where} holds no age identity", hint="make one with `modelpack keygen --age FILE`")
    return out


def _identity_arg(value: Any) -> list[Any]:
    """Turn what a user passed as ``identity`` into pyrage identities (or a Passphrase)."""
    from pyrage import ssh, x25519

    if isinstance(value, Passphrase | x25519.Identity | ssh.Identity):
        return [value]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _identity_arg(v)]
    if isinstance(value, str) and ("AGE-SECRET-KEY-" in value or "PRIVATE KEY-----" in value):
        return _identities_from_text(value, "the identity string")
    if isinstance(value, str | os.PathLike):
        path = Path(value).expanduser()
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            # Do not echo a string that may be a secret passed in the wrong place.
            shown = str(path) if (os.sep in str(value) or path.suffix) else "(given string)"
            raise CryptoError(f"no identity file {shown}", hint="pass an identity file, or nbmodelpack.Passphrase(...) for a passphrase") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CryptoError(f"cannot read identity file {path}: {exc}") from exc
        return _identities_from_text(text, str(path))
    raise UsageError(f"identity={value!r}: pass an identity file, an AGE-SECRET-KEY string or nbmodelpack.Passphrase(...)")


def find_identities(identity: Any = None) -> list[Any]:
    """The identities to try, in lookup order: argument, ``$NBMODELPACK_AGE_IDENTITY``, the keys directory.

    Example:
        >>> find_identities("AGE-SECRET-KEY-1...")  # doctest: +SKIP
    """
    if identity is not None:
        return _identity_arg(identity)
    env = os.environ.get(IDENTITY_ENV)
    if env:
        return _identity_arg(env)
    found: list[Any] = []
    keys = paths.keys_dir()
    if keys.is_dir():
        for file in sorted(keys.glob("*.txt")):
            try:
                found += _identities_from_text(file.read_text(), str(file))
            except (CryptoError, OSError, UnicodeDecodeError):
                continue  # not every file in keys/ is an age identity
    return found


def parse_recipients(recipients: Iterable[str]) -> list[Any]:
    """``age1…`` / ``ssh-ed25519 …`` strings, or files listing them (like ``age -R``), as pyrage recipients."""
    from pyrage import RecipientError, ssh, x25519

    out: list[Any] = []
    for item in recipients:
        text = str(item).strip()
        if not text.startswith(("age1", "ssh-")) and Path(text).expanduser().is_file():
            try:
                lines = [ln.strip() for ln in Path(text).expanduser().read_text().splitlines()]
            except UnicodeDecodeError as exc:
                raise UsageError(f"{text} is not a recipients file (one age1… per line)") from exc
            out += parse_recipients([ln for ln in lines if ln and not ln.startswith("#")])
            continue
        try:
            out.append(ssh.Recipient.from_str(text) if text.startswith("ssh-") else x25519.Recipient.from_str(text))
        except RecipientError as exc:
            raise UsageError(f"{text[:24]!r} is not an age recipient ({exc})", hint="a recipient looks like age1… (print yours with `modelpack keygen --age`)") from exc
    if not out:
        raise UsageError("no recipients given", hint="pass --to age1… (or --passphrase)")
    return out


# ---- in-memory age -------------------------------------------------------------------------
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
        chosen = [i for i in (_identity_arg(identity) if identity is not None else []) if isinstance(i, Passphrase)]
        if not chosen and identity is None and os.environ.get(PASSPHRASE_ENV):
            chosen = [Passphrase(os.environ[PASSPHRASE_ENV])]
        if not chosen:
            raise CryptoError(f"{filepath} is passphrase-encrypted", hint="pass identity=nbmodelpack.Passphrase(...) or --passphrase")
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
            f"pass identity=FILE (--identity), set {IDENTITY_ENV}, or put your identity in {paths.keys_dir()}")
        raise CryptoError(f"{filepath} is encrypted and no age identity was found", hint=hint)
    out = _CappedSink(limit)
    try:
        pyrage.decrypt_io(io.BytesIO(data), out, identities)
    except _TooLarge as exc:
        raise _too_large(filepath, limit) from exc
    except (pyrage.DecryptError, OSError) as exc:  # decrypt_io reports a failed chunk as OSError
        if "No matching keys" in str(exc):
            raise CryptoError(f"{filepath}: none of the given identities can open it", hint="it was encrypted for other recipients; pass the right identity") from exc
        raise _damaged(filepath, exc) from exc
    return out.buffer.getvalue()


def _damaged(filepath: str, exc: Exception) -> CryptoError:
    return CryptoError(f"{filepath}: the ciphertext is damaged or truncated ({exc})", hint="re-pull or re-encrypt it; nothing was decrypted")


# ---- transforms ----------------------------------------------------------------------------
def encrypt(
    ref: str,
    *,
    recipients: Iterable[str] | None = None,
    passphrase: str | Passphrase | None = None,
    tags: Iterable[str] = (),
    store: Store | str | None = None,
) -> BundleInfo:
    """Encrypt the weights and code layers of ``ref`` with age; return the new version.

    Give either ``recipients`` (``age1…`` public keys, or files of them) or a
    ``passphrase`` (age's scrypt). The recipe records the recipients, never a
    secret. A signature of the parent is dropped (it covered the plaintext files):
    sign the encrypted version.

    Example:
        >>> nbmodelpack.encrypt("mnist-mlp:1", recipients=["age1…"]).badges  # doctest: +SKIP
        ['encrypted']
    """
    recipient_list = list(recipients or [])
    if bool(recipient_list) == (passphrase is not None):
        raise UsageError("give recipients or a passphrase (exactly one)", hint="--to age1… [--to …] or --passphrase")
    parsed = parse_recipients(recipient_list) if recipient_list else []
    secret = passphrase if isinstance(passphrase, Passphrase) or passphrase is None else Passphrase(passphrase)
    target = get_store(store)
    parent = target.open(ref)
    if parent.info.encrypted:
        raise UsageError(f"{parent.info.ref} is already encrypted", hint="encrypt its plaintext parent, or decrypt it first")
    chosen = [d for d in parent.manifest.layers if mt.base_media_type(d.media_type) in ENCRYPTED_TYPES]
    params: dict[str, Any] = {"layers": [d.filepath for d in chosen]}
    if parsed:
        params["recipients"] = [str(r) for r in parsed]
    else:
        params["passphrase"] = "scrypt"
    draft = Draft.from_parent(parent.manifest, name=parent.name, op="encrypt", params=params)
    draft.layers = [d for d in draft.layers if d.filepath != SIGNATURE_FILE]
    for desc in chosen:
        stored = parent.read(desc.filepath)
        # The plaintext's digest (before any compression) binds the ciphertext to this bundle:
        # a raw layer's own digest, or the diffId compression recorded for a zstd one.
        diff_id = draft.diff_ids.get(desc.digest, desc.digest)
        # age writes the ciphertext straight into the store (no second in-memory copy).
        write = functools.partial(encrypt_to_file, stored, recipients=parsed, passphrase=secret)
        wrapped = target.put_written(desc.filepath, desc.media_type + mt.AGE_SUFFIX, write)
        # The unwrapped size: a zstd layer's inflated size (as compression recorded it), else the plaintext's.
        plain_size = desc.annotations.get(mt.PLAIN_SIZE) if desc.media_type.endswith(mt.ZSTD_SUFFIX) else str(len(stored))
        if plain_size is not None:
            wrapped = dataclasses.replace(wrapped, annotations={**wrapped.annotations, mt.PLAIN_SIZE: plain_size})
        draft.replace_layer(wrapped, diff_id=diff_id)
    return target.commit(draft, tags=tags)


def decrypt(ref: str, *, identity: Any = None, tags: Iterable[str] = (), store: Store | str | None = None) -> BundleInfo:
    """Make an explicit plaintext version of an encrypted bundle (its layers written to the store).

    Every layer is decrypted in memory first; if any fails, nothing is written.

    Example:
        >>> nbmodelpack.decrypt("mnist-mlp:2", identity="~/.age/me.txt").badges  # doctest: +SKIP
        []
    """
    target = get_store(store)
    parent = target.open(ref)
    encrypted = [d for d in parent.manifest.layers if d.media_type.endswith(mt.AGE_SUFFIX)]
    if not encrypted:
        raise UsageError(f"{parent.info.ref} is not encrypted")
    params = {"layers": [d.filepath for d in encrypted]}
    draft = Draft.from_parent(parent.manifest, name=parent.name, op="decrypt", params=params)
    draft.layers = [d for d in draft.layers if d.filepath != SIGNATURE_FILE]
    opened = {d.filepath: parent.plaintext(d.filepath, identity=identity, inflate=False) for d in encrypted}
    for desc in encrypted:
        diff_id = draft.diff_ids.get(desc.digest)
        media_type = desc.media_type[: -len(mt.AGE_SUFFIX)]
        plain = target.put_layer(desc.filepath, media_type, opened[desc.filepath])
        if media_type.endswith(mt.ZSTD_SUFFIX) and mt.PLAIN_SIZE in desc.annotations:
            plain = dataclasses.replace(plain, annotations={**plain.annotations, mt.PLAIN_SIZE: desc.annotations[mt.PLAIN_SIZE]})
        draft.replace_layer(plain, diff_id=diff_id)
    return target.commit(draft, tags=tags)


def check_binding(manifest: Manifest, desc: Descriptor) -> None:
    """Refuse an encrypted layer that this bundle's ``encrypt`` did not record (swapped in from another bundle).

    age binds no context to a file, so a layer from another bundle encrypted for
    the same key decrypts fine. ``encrypt`` records every ciphertext it makes in
    the manifest summary (ciphertext digest → plaintext digest, the ModelPack
    diffId), so a descriptor swapped into the layer list is caught before any
    decryption. (Re-hashing the plaintext would add nothing: age's AEAD already
    guarantees it is what was encrypted, and whoever can rewrite the summary can
    rewrite the plaintext digest too; the signature covers that case.)
    """
    if desc.digest not in dict(manifest.summary.get("diff_ids", {})):
        raise IntegrityError(
            f"{desc.filepath}: the encrypted layer does not belong to this bundle",
            hint="a layer was swapped in from another bundle; nothing was decrypted",
        )


__all__ = [
    "Passphrase",
    "check_binding",
    "decrypt",
    "decrypt_layer",
    "encrypt",
    "encrypt_bytes",
    "find_identities",
    "keygen_age",
    "parse_recipients",
    "plain_size_limit",
    "recipient_of",
]


def plain_size_limit(desc: Descriptor) -> int | None:
    """The ``mt.PLAIN_SIZE`` a layer records for its age plaintext (``None``: absent, or the plaintext is zstd).

    Example:
        >>> plain_size_limit(Descriptor("x+age", "sha256:0", 9, {mt.PLAIN_SIZE: "5"}))
        5
    """
    inner = desc.media_type.removesuffix(mt.AGE_SUFFIX)
    text = desc.annotations.get(mt.PLAIN_SIZE, "")
    if inner.endswith(mt.ZSTD_SUFFIX) or not text:
        return None
    if not text.isdigit() or len(text) > 15:
        raise IntegrityError(f"{desc.filepath}: its {mt.PLAIN_SIZE} annotation is not a byte count", hint="the bundle was not written by nbmodelpack")
    return int(text)


def _decrypt_codec(bundle: StoredBundle, desc: Descriptor, data: bytes, identity: Any) -> bytes:
    check_binding(bundle.manifest, desc)
    return decrypt_layer(data, identity=identity, filepath=desc.filepath, limit=plain_size_limit(desc))


register_codec(mt.AGE_SUFFIX, _decrypt_codec)
