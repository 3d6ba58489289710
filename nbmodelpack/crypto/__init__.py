"""Encryption: age-encrypted layers, decrypted in memory only.

``encrypt`` turns the layers that hold weights or code (``model.safetensors`` or
its shards and their index, which names every tensor; ``model.pt2``,
``model_src.py``: media types ``…weight.v1.raw`` and ``…code.v1.raw``) into
standard age files (media type kept, ``mt.ENCODING`` gains ``age``, the title
``.age``), so
anyone with the key can open them with the ``age`` tool. Everything else stays
readable so that an encrypted bundle still lists with its card and badges:
``README.md``, ``architecture.json`` (class name and init arguments, which the
manifest summary already carries), ``signature.json``, ``processing.json``.

Decryption only ever produces plaintext in memory. Weights are streamed:
``StoredBundle.plain_file`` calls the ``+age`` stream codec, which decrypts
from the blob file straight into an in-memory file (``memfd``) that safetensors
maps, while the store hashes the ciphertext on another thread. Small layers
(code, JSON) and ``decrypt`` use the bytes codec (:func:`decrypt_layer`).
Either is capped: by the layer's ``mt.PLAIN_SIZE`` annotation (written by
``encrypt``) and always by the ciphertext's own size (age only adds bytes).
Where the ``age`` command is installed and the identities are ``age1`` keys,
it does the work (``age.age_cli``: ~25 % less CPU than pyrage, in its own
process, so several layers can decrypt at once; pyrage holds the GIL), else pyrage.

The package: :mod:`.keys` (identities, recipients, passphrases), :mod:`.age`
(streaming, size-capped age); the encrypt/decrypt transforms and the ``+age``
store codec are here.

Identities (what opens a layer), in lookup order: the ``identity`` argument (an
identity file, an ``AGE-SECRET-KEY-1…`` string, a pyrage identity, a
:class:`Passphrase`, or a list of these); ``$NBMODELPACK_AGE_IDENTITY`` (file or
string); every ``*.txt`` identity file in ``$NBMODELPACK_HOME/keys/``; for
passphrase-encrypted layers ``$NBMODELPACK_PASSPHRASE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..bundle import mediatypes as mt
from ..bundle.draft import Draft
from ..bundle.info import BundleInfo
from ..bundle.manifest import Descriptor, Manifest
from ..bundle.shards import INDEX
from ..errors import IntegrityError, ModelPackError, UsageError
from ..store import Store, StoredBundle, get_store, register_codec
from ..store.maintenance import drop_unreferenced
from .age import cli_encrypts, decrypt_layer, decrypt_stream, encrypt_bytes, encrypt_stream
from .keys import (
    DEFAULT_IDENTITY_FILE,
    IDENTITY_ENV,
    PASSPHRASE_ENV,
    Passphrase,
    find_identities,
    keygen_age,
    parse_recipients,
    recipient_of,
    write_private,
)

ENCRYPTED_TYPES = (mt.WEIGHT, mt.CODE)
SIGNATURE_FILE = "model.sig"


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
        raise UsageError("give recipients or a passphrase (exactly one)", hint='recipients=["age1…"] or identity=nbmodelpack.Passphrase(...)')
    parsed = parse_recipients(recipient_list) if recipient_list else []
    secret = passphrase if isinstance(passphrase, Passphrase) or passphrase is None else Passphrase(passphrase)
    target = get_store(store)
    parent = target.open(ref)
    if parent.info.encrypted:
        raise UsageError(f"{parent.info.ref} is already encrypted", hint="encrypt its plaintext parent, or decrypt it first")
    chosen = [d for d in parent.manifest.layers if mt.base_media_type(d.media_type) in ENCRYPTED_TYPES or d.filepath == INDEX]
    params: dict[str, Any] = {"layers": [d.filepath for d in chosen]}
    if parsed:
        params["recipients"] = [str(r) for r in parsed]
    else:
        params["passphrase"] = "scrypt"
    draft = Draft.from_parent(parent.manifest, name=parent.name, op="encrypt", params=params)
    draft.layers = [d for d in draft.layers if d.filepath != SIGNATURE_FILE]
    for desc in chosen:
        # The plaintext's digest (before any compression) binds the ciphertext to this bundle:
        # a raw layer's own digest, or the diffId compression recorded for a zstd one.
        diff_id = draft.diff_ids.get(desc.digest, desc.digest)
        wrapped = _encrypt_layer(target, desc, recipients=parsed, passphrase=secret)
        # The unwrapped size: a zstd layer's inflated size (as compression recorded it), else the plaintext's.
        plain_size = desc.annotations.get(mt.PLAIN_SIZE) if mt.ZSTD in desc.encodings else str(desc.size)
        if plain_size is not None:
            wrapped = dataclasses.replace(wrapped, annotations={**wrapped.annotations, mt.PLAIN_SIZE: plain_size})
        draft.replace_layer(wrapped, diff_id=diff_id)
    return target.commit(draft, tags=tags)


def _encrypt_layer(target: Store, desc: Descriptor, *, recipients: list[Any], passphrase: Passphrase | None) -> Descriptor:
    """Stream one stored layer through age into a new blob: read, encrypted and hashed chunk by chunk.

    The plain blob is verified on another thread meanwhile; a mismatch refuses the
    layer before the new blob is kept.
    """

    def write(out: IO[bytes]) -> None:
        with target.reading_blob(desc.digest, what=desc.filepath) as source:  # no hash while its record matches
            encrypt_stream(source, out, recipients=recipients, passphrase=passphrase, limit=desc.size)

    base, encodings = mt.base_media_type(desc.media_type), (*desc.encodings, mt.AGE)
    if cli_encrypts(recipients, passphrase) is not None:
        # The age command writes the blob file itself; it is hashed from the page cache after.
        return target.put_written(desc.filepath, base, functools.partial(_write_file, write=write), encodings=encodings)
    return target.put_streamed(desc.filepath, base, write, encodings=encodings)


def _write_file(path: Path, *, write: Callable[[IO[bytes]], None]) -> None:
    with open(path, "wb") as out:
        write(out)


def decrypt(ref: str, *, identity: Any = None, tags: Iterable[str] = (), store: Store | str | None = None) -> BundleInfo:
    """Make an explicit plaintext version of an encrypted bundle (its layers written to the store).

    Each layer is streamed from its ciphertext into the store (memory stays bounded
    whatever the model's size); if any fails, no version is made and the plaintext
    blobs already written are removed again.

    Example:
        >>> nbmodelpack.decrypt("mnist-mlp:2", identity="~/.age/me.txt").badges  # doctest: +SKIP
        []
    """
    target = get_store(store)
    parent = target.open(ref)
    encrypted = [d for d in parent.manifest.layers if mt.AGE in d.encodings]
    if not encrypted:
        raise UsageError(f"{parent.info.ref} is not encrypted")
    params = {"layers": [d.filepath for d in encrypted]}
    draft = Draft.from_parent(parent.manifest, name=parent.name, op="decrypt", params=params)
    draft.layers = [d for d in draft.layers if d.filepath != SIGNATURE_FILE]
    written: list[str] = []
    try:
        for desc in encrypted:
            diff_id = draft.diff_ids.get(desc.digest)
            inner = tuple(e for e in desc.encodings if e != mt.AGE)

            def unwrap(out: IO[bytes], filepath: str = desc.filepath) -> None:
                parent.unwrap_into(filepath, out, identity=identity, inflate=False)

            plain = target.put_streamed(desc.filepath, mt.base_media_type(desc.media_type), unwrap, encodings=inner)
            written.append(plain.digest)
            if mt.ZSTD in inner and mt.PLAIN_SIZE in desc.annotations:
                plain = dataclasses.replace(plain, annotations={**plain.annotations, mt.PLAIN_SIZE: desc.annotations[mt.PLAIN_SIZE]})
            draft.replace_layer(plain, diff_id=diff_id)
        return target.commit(draft, tags=tags)
    except BaseException:
        with contextlib.suppress(ModelPackError, OSError):  # the failure is the error to show; gc removes what stays
            drop_unreferenced(target, written)  # no version: none of its plaintext stays
        raise


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


def plain_size_limit(desc: Descriptor) -> int | None:
    """The ``mt.PLAIN_SIZE`` a layer records for its age plaintext (``None``: absent, or the plaintext is zstd).

    Example:
        >>> plain_size_limit(Descriptor("x+age", "sha256:0", 9, {mt.PLAIN_SIZE: "5"}))
        5
    """
    text = desc.annotations.get(mt.PLAIN_SIZE, "")
    if mt.ZSTD in desc.encodings or not text:
        return None
    if not text.isdigit() or len(text) > 15:
        raise IntegrityError(f"{desc.filepath}: its {mt.PLAIN_SIZE} annotation is not a byte count", hint="the bundle was not written by nbmodelpack")
    return int(text)


def _decrypt_codec(bundle: StoredBundle, desc: Descriptor, data: bytes, identity: Any) -> bytes:
    check_binding(bundle.manifest, desc)
    return decrypt_layer(data, identity=identity, filepath=desc.filepath, limit=plain_size_limit(desc))


def _decrypt_stream_codec(bundle: StoredBundle, desc: Descriptor, source: IO[bytes], sink: IO[bytes], identity: Any) -> None:
    check_binding(bundle.manifest, desc)
    decrypt_stream(source, sink, size=desc.size, identity=identity, filepath=desc.filepath, limit=plain_size_limit(desc))


register_codec(mt.AGE_SUFFIX, _decrypt_codec, stream=_decrypt_stream_codec)

__all__ = [
    "DEFAULT_IDENTITY_FILE",
    "ENCRYPTED_TYPES",
    "IDENTITY_ENV",
    "PASSPHRASE_ENV",
    "SIGNATURE_FILE",
    "Passphrase",
    "check_binding",
    "decrypt",
    "decrypt_layer",
    "decrypt_stream",
    "encrypt",
    "encrypt_bytes",
    "encrypt_stream",
    "find_identities",
    "keygen_age",
    "parse_recipients",
    "plain_size_limit",
    "recipient_of",
    "write_private",
]
