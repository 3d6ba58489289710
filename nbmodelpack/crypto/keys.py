"""age keys: identities (files, strings, passphrases) and recipients.

Identities (what opens a layer), in lookup order: the ``identity`` argument (an
identity file, an ``AGE-SECRET-KEY-1…`` string, a pyrage identity, a
:class:`Passphrase`, or a list of these); ``$NBMODELPACK_AGE_IDENTITY`` (file or
string); every ``*.txt`` identity file in ``$NBMODELPACK_HOME/keys/``; for
passphrase-encrypted layers ``$NBMODELPACK_PASSPHRASE``.

Example:
    >>> find_identities("~/.age/me.txt")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import paths
from .._files import atomic_write
from ..errors import CryptoError, UsageError

IDENTITY_ENV = "NBMODELPACK_AGE_IDENTITY"
PASSPHRASE_ENV = "NBMODELPACK_PASSPHRASE"
DEFAULT_IDENTITY_FILE = "age-identity.txt"


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
        raise UsageError(f"{path} already exists", hint="pick another path or pass force=True")
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


def own_identity_file() -> Path | None:
    """The user's own identity file: ``$NBMODELPACK_AGE_IDENTITY`` (when it names a file), else ``keys/age-identity.txt``.

    ``None`` when neither exists (``keygen --age`` makes the second).

    Example:
        >>> own_identity_file()  # doctest: +SKIP
        PosixPath('/home/me/.local/share/nbmodelpack/keys/age-identity.txt')
    """
    env = os.environ.get(IDENTITY_ENV)
    if env and "AGE-SECRET-KEY-" not in env and Path(env).expanduser().is_file():
        return Path(env).expanduser()
    default = paths.keys_dir() / DEFAULT_IDENTITY_FILE
    return default if default.is_file() else None


def own_recipient() -> tuple[Path, str]:
    """``(identity file, age1… recipient)`` of the user's own identity: what "encrypt to me" encrypts to.

    Example:
        >>> own_recipient()[1][:4]  # doctest: +SKIP
        'age1'
    """
    path = own_identity_file()
    if path is None:
        raise UsageError("you have no age identity to encrypt to", hint='make one with `modelpack keygen --age`, or give recipients=["age1…"]')
    return path, recipient_of(path)


def next_to_notebooks(out: str | os.PathLike[str]) -> Path | None:
    """The folder a relative key path puts a private key in, if that folder holds notebooks (else ``None``).

    A private key beside notebooks gets shared, committed and uploaded with them.

    Example:
        >>> next_to_notebooks("/abs/key.txt") is None
        True
    """
    text = os.fspath(out)
    if os.path.isabs(text) or text.startswith("~"):
        return None
    folder = Path(text).resolve().parent
    try:
        return folder if any(folder.glob("*.ipynb")) else None
    except OSError:
        return None


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


def identity_arg(value: Any) -> list[Any]:
    """Turn what a user passed as ``identity`` into pyrage identities (or a Passphrase)."""
    from pyrage import ssh, x25519

    if isinstance(value, Passphrase | x25519.Identity | ssh.Identity):
        return [value]
    if isinstance(value, list | tuple):
        return [i for v in value for i in identity_arg(v)]
    if isinstance(value, str) and ("AGE-SECRET-KEY-" in value or "PRIVATE KEY-----" in value):
        return _identities_from_text(value, "the identity string")
    if isinstance(value, str | os.PathLike):
        path = Path(value).expanduser()
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            # Do not echo a string that may be a secret passed in the wrong place.
            shown = str(path) if (os.sep in str(value) or path.suffix) else "(given string)"
            raise CryptoError(f"no identity file {shown}", hint="pass identity=FILE, or identity=nbmodelpack.Passphrase(...) for a passphrase") from exc
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
        return identity_arg(identity)
    env = os.environ.get(IDENTITY_ENV)
    if env:
        return identity_arg(env)
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
        raise UsageError("no recipients given", hint='pass recipients=["age1…"] (or identity=nbmodelpack.Passphrase(...))')
    return out
