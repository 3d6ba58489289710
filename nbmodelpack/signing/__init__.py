"""Signing: OpenSSF model-signing signatures over a bundle's files, and the trust policy.

A separate module from :mod:`nbmodelpack.crypto` because the two have different
users and costs: every encrypted load needs ``pyrage`` only, while
``model_signing`` pulls in sigstore (≈1 s to import) and is needed only when
signing, verifying, or when a trust policy is set.

What is signed: every file of the new version as stored (ciphertext when
encrypted), by its ``org.cncf.model.filepath``, the model card ``README.md``
included; only ``model.sig`` itself is left out (recorded in the signature as an
ignored path, so ``model_signing verify key DIR --signature DIR/model.sig``
works on ``modelpack export REF --files DIR``). The card names the version, so
the signature is made while the store commits the version (``Store.commit(signer=…)``).

Keys (ECDSA P-256, PEM): the ``key`` argument, ``$NBMODELPACK_SIGNING_KEY``, or
``$NBMODELPACK_HOME/keys/signing.pem`` (public key next to it as ``….pub``).
Trust policy in ``config.toml``::

    [trust]
    require_signature = true
    keys = ["~/team-signing.pem.pub"]   # paths, or PEM text

The package: :mod:`.keys` (key files, fingerprints), :mod:`.files` (a version's
files by filepath, never writing through a blob; ``export --files``),
:mod:`.policy` (the ``[trust]`` table); signing and verifying are here.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import mediatypes as mt
from ..bundle.draft import Draft
from ..bundle.info import BundleInfo
from ..bundle.manifest import Descriptor
from ..crypto import SIGNATURE_FILE
from ..errors import SignatureError, StoreError
from ..remote import register_pull_check
from ..store import Store, StoredBundle, get_store
from . import cache
from .files import export_files, materialized, safe_filepaths
from .keys import (
    DEFAULT_KEY_FILE,
    SIGNING_ENV,
    find_signing_key,
    fingerprint,
    keygen_signing,
    load_private,
    public_key_pems,
    public_pem,
)
from .policy import trust_policy, trusted_keys


def _default_verify_keys() -> list[str]:
    """Keys ``verify`` uses without ``--key``: the trust policy's, else the public half of your signing key."""
    trusted = trusted_keys()
    if trusted:
        return trusted
    try:
        private = find_signing_key()
    except SignatureError:
        raise SignatureError("no public key to verify with", hint="pass key=PUB, or list trusted keys under [trust] in config.toml") from None
    pub = private.with_name(private.name + ".pub")
    return [str(pub if pub.is_file() else private)]


def _hashing_config() -> Any:
    from model_signing import hashing

    # Only the signature file is left out; git paths are not special in a bundle.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def _signer(store: Store, key_path: Path, name: str) -> Any:
    """The ``Store.commit`` hook: sign the version's files, store the signature as ``model.sig``."""
    from model_signing import signing as ms_signing

    def sign_layers(layers: list[Descriptor]) -> Descriptor:
        files = [d for d in layers if d.filepath != SIGNATURE_FILE]
        with materialized(store, files, name) as model_dir:
            sig_path = model_dir.parent / SIGNATURE_FILE
            try:
                ms_signing.Config().use_elliptic_key_signer(private_key=key_path).set_hashing_config(_hashing_config()).sign(model_dir, sig_path)
            except (ValueError, OSError) as exc:
                raise SignatureError(f"model_signing could not sign {name}: {exc}") from exc
            data = sig_path.read_bytes()
        return store.put_layer(SIGNATURE_FILE, mt.SIGNATURE, data)

    return sign_layers


# ---- sign / verify -------------------------------------------------------------------------
def sign(ref: str, *, key: str | os.PathLike[str] | None = None, tags: Iterable[str] = (), store: Store | str | None = None) -> BundleInfo:
    """Sign ``ref``'s files (as stored) with an ECDSA key via OpenSSF model_signing; return the new version.

    Example:
        >>> nbmodelpack.sign("mnist-mlp:2", key="~/.keys/me.pem").badges  # doctest: +SKIP
        ['encrypted', 'signed']
    """
    key_path = find_signing_key(key)
    private = load_private(key_path)
    target = get_store(store)
    parent = target.open(ref)
    params = {"key": fingerprint(public_pem(private)), "method": "model_signing ecdsa", "ignored": [SIGNATURE_FILE]}
    draft = Draft.from_parent(parent.manifest, name=parent.name, op="sign", params=params)
    draft.layers = [d for d in draft.layers if d.filepath != SIGNATURE_FILE]
    return target.commit(draft, tags=tags, signer=_signer(target, key_path, parent.name))


@dataclass
class VerifyResult:
    """The outcome of checking one version's signature (``ok`` False says why in ``problem``)."""

    ok: bool
    ref: str
    digest: str
    signed: bool = True
    key: str = ""
    fingerprint: str = ""
    files: list[str] = field(default_factory=list)
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"verified: {self.ref} is signed by {self.key} ({self.fingerprint[:19]}…) over {len(self.files)} files"
        return f"FAILED: {self.ref}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.ok else "#cf222e"
        return f'<div style="color:{color};font-family:monospace">{html.escape(str(self))}</div>'


def verify(ref: str, *, key: str | os.PathLike[str] | Sequence[str] | None = None, store: Store | str | None = None) -> VerifyResult:
    """Check ``ref``'s ``model.sig`` against its files and a public key; never raises for a bad signature.

    Without ``key``: the trust policy's keys, else your own (``keys/signing.pem.pub``).

    Example:
        >>> nbmodelpack.verify("mnist-mlp:3", key="colleague.pem.pub").ok  # doctest: +SKIP
        True
    """
    bundle = get_store(store).open(ref)
    if key is None:
        keys = _default_verify_keys()
    elif isinstance(key, str | os.PathLike):
        keys = [str(key)]
    else:
        keys = [str(k) for k in key]
    return verify_bundle(bundle, keys)


# model_signing reports a mismatch as the repr of a list of strings, so quotes may come escaped.
_Q = r"\\?['\"]"
_MISMATCH = re.compile(r"Hash mismatch for " + _Q + r"([^'\"\\]+)" + _Q)
_FILES = re.compile(r"(Extra files found|Missing files) in model " + _Q + r"[^'\"\\]*" + _Q + r": ([^'\"\]\\]+)")


def _problem(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("Key mismatch"):
        return "signed with a different key"
    if text.startswith("Signature mismatch"):
        parts = [f"{m} changed" for m in _MISMATCH.findall(text)]
        for kind, names in _FILES.findall(text):
            parts.append(f"{'files added' if kind.startswith('Extra') else 'files removed'}: {names.strip()}")
        return "files do not match the signature: " + "; ".join(parts or [text[:200]])
    return f"{SIGNATURE_FILE} does not verify ({text.splitlines()[0][:200] if text else type(exc).__name__})"


def verify_bundle(bundle: StoredBundle, keys: Sequence[str | os.PathLike[str]]) -> VerifyResult:
    """Verify an open :class:`~nbmodelpack.store.StoredBundle` against any of ``keys``."""
    from model_signing import verifying

    info = bundle.info
    result = VerifyResult(ok=False, ref=info.ref, digest=bundle.digest)
    sig = bundle.manifest.layer(SIGNATURE_FILE)
    if sig is None:
        result.signed = False
        result.problem = "not signed"
        return result
    pems = public_key_pems(keys)
    if not pems:
        raise SignatureError("no public key to verify with", hint="pass key=PUB")
    files = [d for d in bundle.manifest.layers if d.filepath != SIGNATURE_FILE]
    result.files = [d.filepath for d in files]
    problems: list[str] = []
    try:
        safe_filepaths([*files, sig])
    except SignatureError as exc:
        result.problem = exc.message
        return result
    try:
        with materialized(bundle.store, [*files, sig], bundle.name) as model_dir:
            sig_path = model_dir / SIGNATURE_FILE
            for label, pem in pems:
                pub_path = model_dir.parent / f"key-{uuid.uuid4().hex}.pub"
                pub_path.write_bytes(pem)
                try:
                    verifying.Config().use_elliptic_key_verifier(public_key=pub_path).verify(model_dir, sig_path)
                except Exception as exc:  # model_signing raises ValueError and parser errors alike
                    problems.append(_problem(exc))
                    continue
                result.ok, result.key, result.fingerprint, result.problem = True, label, fingerprint(pem), ""
                return result
    except OSError as exc:
        raise StoreError(f"cannot read the files of {info.ref}: {exc.strerror or exc}") from exc
    # A content problem outranks "different key": report what a user can act on.
    content = [p for p in problems if p != "signed with a different key"]
    result.problem = content[0] if content else ("signed with a key that is not trusted" if len(pems) > 1 else problems[0])
    return result


def enforce_trust_policy(bundle: StoredBundle, *, verify: bool = False) -> VerifyResult | None:
    """Refuse ``bundle`` unless it is signed by a trusted key, when config.toml says ``require_signature = true``.

    ``load``, ``serve`` and ``pull`` call this before using a bundle. Returns the
    :class:`VerifyResult` when a policy applies, ``None`` when none is set. A success
    is remembered (:mod:`.cache`): while the trusted keys and the bundle's blob files
    are unchanged, the next call does not re-verify, unless ``verify=True``.

    Example:
        >>> enforce_trust_policy(store.open("mnist-mlp:3"))  # doctest: +SKIP
    """
    if not trust_policy().get("require_signature"):
        return None
    keys = trusted_keys()
    if not keys:
        raise SignatureError("the trust policy requires signatures but lists no keys", hint="add keys = [\"…pub\"] under [trust] in config.toml")
    policy = cache.policy_fingerprint(public_key_pems(keys))
    if not verify and (note := cache.recall(bundle, policy)) is not None:
        return VerifyResult(
            ok=True, ref=bundle.info.ref, digest=bundle.digest, key=str(note.get("key", "")),
            fingerprint=str(note.get("fingerprint", "")), files=[str(f) for f in note.get("files", [])],
        )
    result = verify_bundle(bundle, keys)
    if not result.ok:
        cache.forget(bundle)
        what = "is not signed" if not result.signed else f"fails verification: {result.problem}"
        raise SignatureError(f"{result.ref} {what}", hint="the trust policy in config.toml requires a trusted signature")
    cache.remember(bundle, policy, {"key": result.key, "fingerprint": result.fingerprint, "files": result.files})
    return result


__all__ = [
    "DEFAULT_KEY_FILE",
    "SIGNING_ENV",
    "VerifyResult",
    "enforce_trust_policy",
    "export_files",
    "find_signing_key",
    "fingerprint",
    "keygen_signing",
    "sign",
    "trust_policy",
    "trusted_keys",
    "verify",
    "verify_bundle",
]


# Pulls check a staged bundle against the trust policy before it enters the store.
register_pull_check(enforce_trust_policy)
