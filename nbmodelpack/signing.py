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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import paths
from ._files import atomic_write
from .bundle import mediatypes as mt
from .bundle.draft import Draft
from .bundle.info import BundleInfo
from .bundle.manifest import Descriptor
from .crypto import SIGNATURE_FILE, write_private
from .errors import SignatureError, StoreError, UsageError
from .store import Store, StoredBundle, get_store

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
        raise UsageError(f"{public_path} already exists", hint="pick another path or pass --force")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(private_path, private_pem, force=force)
    atomic_write(public_path, _public_pem(key))
    return private_path, public_path


def _public_pem(key: Any) -> bytes:
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
            raise SignatureError("no signing key", hint=f"pass --key PEM, set {SIGNING_ENV}, or run `modelpack keygen --signing`")
    if not path.is_file():
        raise SignatureError(f"no signing key at {path}", hint="make one with `modelpack keygen --signing FILE`")
    return path


def _load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key", hint="make one with `modelpack keygen --signing`") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignatureError(f"{path} is not an ECDSA key", hint="model_signing keys are ECDSA P-256 (`modelpack keygen --signing`)")
    return key


def _public_key_pems(keys: Sequence[str | os.PathLike[str]]) -> list[tuple[str, bytes]]:
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
                pem = _public_pem(serialization.load_pem_private_key(data, password=None))
            else:
                pem = _public_pem(serialization.load_pem_public_key(data))
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"{label} is not a PEM key") from exc
        out.append((label, pem))
    return out


def _default_verify_keys() -> list[str]:
    """Keys ``verify`` uses without ``--key``: the trust policy's, else the public half of your signing key."""
    trusted = trusted_keys()
    if trusted:
        return trusted
    try:
        private = find_signing_key()
    except SignatureError:
        raise SignatureError("no public key to verify with", hint="pass --key PUB, or list trusted keys under [trust] in config.toml") from None
    pub = private.with_name(private.name + ".pub")
    return [str(pub if pub.is_file() else private)]


# ---- files of a version --------------------------------------------------------------------
def _safe_filepaths(layers: Iterable[Descriptor]) -> list[tuple[Descriptor, PurePosixPath]]:
    """Each layer with its filepath, refusing absolute, non-normalised or repeated ones.

    Two layers with one filepath would make the second file land on the first.
    """
    out: list[tuple[Descriptor, PurePosixPath]] = []
    seen: set[str] = set()
    for desc in layers:
        filepath = desc.filepath
        p = PurePosixPath(filepath)
        if not filepath or p.is_absolute() or str(p) != filepath or any(part in (".", "..") for part in p.parts) or "\0" in filepath:
            raise SignatureError(f"layer filepath {filepath[:80]!r} is not a plain relative path", hint="the manifest was not written by nbmodelpack")
        if filepath in seen:
            raise SignatureError(f"two layers are named {filepath[:80]!r}", hint="the manifest was not written by nbmodelpack")
        seen.add(filepath)
        out.append((desc, p))
    return out


def _copy_new(src: Path, target: Path) -> None:
    """Copy ``src`` to a file that must not exist yet (never writes through an existing path or link)."""
    with open(src, "rb") as fin, open(target, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


@contextlib.contextmanager
def _materialized(store: Store, layers: Iterable[Descriptor], name: str) -> Iterator[Path]:
    """The layers as files named by filepath in a fresh temp dir, hard-linked to the blobs where possible.

    model_signing hashes a directory, so the stored blobs appear there under
    their file names: hard links when the temp dir is on the store's device
    (nothing ever writes to them: every name is new and unique), else fresh
    copies made with exclusive creation (read-only share, other device).
    Encrypted layers stay ciphertext.
    """
    checked = _safe_filepaths(layers)
    try:
        (Path(store.root) / "staging").mkdir(exist_ok=True)
        root = Path(store.root) / "staging" / f"sign-{uuid.uuid4().hex}"
        root.mkdir()
    except OSError:
        root = Path(tempfile.mkdtemp(prefix="nbmodelpack-sign-"))
    try:
        files = root / name
        files.mkdir()
        for desc, rel in checked:
            target = files / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = store.blob_path(desc.digest)
            if not blob.is_file():
                raise SignatureError(f"{desc.filepath} is missing from the store", hint="run `modelpack fsck`")
            try:
                os.link(blob, target)
            except FileExistsError as exc:  # cannot happen with unique names; never fall back to writing
                raise SignatureError(f"{desc.filepath} collides with another layer", hint="the manifest was not written by nbmodelpack") from exc
            except OSError:
                _copy_new(blob, target)
        yield files
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _hashing_config() -> Any:
    from model_signing import hashing

    # Only the signature file is left out; git paths are not special in a bundle.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def _signer(store: Store, key_path: Path, name: str) -> Any:
    """The ``Store.commit`` hook: sign the version's files, store the signature as ``model.sig``."""
    from model_signing import signing as ms_signing

    def sign_layers(layers: list[Descriptor]) -> Descriptor:
        files = [d for d in layers if d.filepath != SIGNATURE_FILE]
        with _materialized(store, files, name) as model_dir:
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
    private = _load_private(key_path)
    target = get_store(store)
    parent = target.open(ref)
    params = {"key": fingerprint(_public_pem(private)), "method": "model_signing ecdsa", "ignored": [SIGNATURE_FILE]}
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
    pems = _public_key_pems(keys)
    if not pems:
        raise SignatureError("no public key to verify with", hint="pass --key PUB")
    files = [d for d in bundle.manifest.layers if d.filepath != SIGNATURE_FILE]
    result.files = [d.filepath for d in files]
    problems: list[str] = []
    try:
        _safe_filepaths([*files, sig])
    except SignatureError as exc:
        result.problem = exc.message
        return result
    try:
        with _materialized(bundle.store, [*files, sig], bundle.name) as model_dir:
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


# ---- trust policy --------------------------------------------------------------------------
def trust_policy() -> dict[str, Any]:
    """The ``[trust]`` table of config.toml (empty when none)."""
    from .config import load_config

    trust = load_config().get("trust", {})
    if not isinstance(trust, dict):
        raise UsageError("[trust] in config.toml is not a table")
    return trust


def trusted_keys() -> list[str]:
    """Public keys (paths or PEM text) the trust policy lists; relative paths are under ``$NBMODELPACK_HOME``."""
    keys = trust_policy().get("keys", [])
    if isinstance(keys, str):
        keys = [keys]
    out = []
    for k in map(str, keys):
        if "-----BEGIN" not in k and not Path(k).expanduser().is_absolute():
            k = str(paths.home() / k)
        out.append(k)
    return out


def enforce_trust_policy(bundle: StoredBundle) -> VerifyResult | None:
    """Refuse ``bundle`` unless it is signed by a trusted key, when config.toml says ``require_signature = true``.

    ``load``, ``serve`` and ``pull`` call this before using a bundle. Returns the
    :class:`VerifyResult` when a policy applies, ``None`` when none is set.

    Example:
        >>> enforce_trust_policy(store.open("mnist-mlp:3"))  # doctest: +SKIP
    """
    if not trust_policy().get("require_signature"):
        return None
    keys = trusted_keys()
    if not keys:
        raise SignatureError("the trust policy requires signatures but lists no keys", hint="add keys = [\"…pub\"] under [trust] in config.toml")
    result = verify_bundle(bundle, keys)
    if not result.ok:
        what = "is not signed" if not result.signed else f"fails verification: {result.problem}"
        raise SignatureError(f"{result.ref} {what}", hint="the trust policy in config.toml requires a trusted signature")
    return result


# ---- export as plain files -----------------------------------------------------------------
def export_files(ref: str, out: str | os.PathLike[str], *, store: Store | str | None = None) -> Path:
    """Write a version's files by filepath (as stored: ciphertext stays ciphertext) into directory ``out``.

    The result is what ``model_signing verify key OUT --signature OUT/model.sig
    --public_key KEY.pub`` checks.

    Example:
        >>> export_files("mnist-mlp:3", "mnist-files")  # doctest: +SKIP
    """
    bundle = get_store(store).open(ref)
    checked = _safe_filepaths(bundle.manifest.layers)
    target = Path(out).expanduser()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty", hint="export into a new or empty directory")
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        for desc, rel in checked:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as f:
                f.write(bundle.read(desc.filepath))
    except BaseException as exc:
        # A refused export leaves no partial directory.
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in list(target.iterdir()):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write into {target}: {exc.strerror or exc}") from exc
        raise
    return target


__all__ = [
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
