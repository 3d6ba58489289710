"""Bundle references: ``name``, ``name:tag``, ``name@sha256:…`` and remote forms.

A local name has no slash. A reference whose first path component looks like a
host (has a dot or a colon, or is ``localhost``) names a registry; any other
reference with a slash names a configured remote (``team/mnist:3``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidReference

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}$")
REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$")


def _looks_like_host(text: str) -> bool:
    # The Docker convention: a first component with a dot or a port, or localhost.
    return bool(_HOST_RE.match(text)) and ("." in text or ":" in text or text == "localhost")


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``remote`` is a registry host or a remote name, or None."""

    name: str
    tag: str | None = None
    digest: str | None = None
    remote: str | None = None
    remote_is_host: bool = False

    @property
    def is_local(self) -> bool:
        return self.remote is None

    def __str__(self) -> str:
        text = self.name
        if self.remote:
            text = f"{self.remote}/{text}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def validate_name(name: str) -> str:
    """Check a local bundle name (lowercase, digits, ``._-``; no slash).

    Example:
        >>> validate_name("mnist-mlp")
        'mnist-mlp'
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidReference(
            f"{name!r:.80}",
            hint="a bundle name is lowercase letters, digits and . _ - (e.g. mnist-mlp)",
        )
    return name


def validate_tag(tag: str) -> str:
    """Check a tag (``1``, ``latest``, ``prod-2024``)."""
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise InvalidReference(f"{tag!r:.80}", hint="a tag is letters, digits and . _ - (up to 128)")
    return tag


def parse(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse a reference string.

    Example:
        >>> parse("mnist-mlp:3")
        Reference(name='mnist-mlp', tag='3', digest=None, remote=None, remote_is_host=False)
        >>> parse("127.0.0.1:5000/team/mnist").remote
        '127.0.0.1:5000'
    """
    if not isinstance(text, str):
        raise InvalidReference(f"{text!r:.60}", hint="a reference is text like NAME, NAME:VERSION or NAME@sha256:…")
    if not text.strip():
        raise InvalidReference("empty reference", hint="use NAME, NAME:VERSION or NAME@sha256:…")
    raw = text.strip()
    if any(c.isspace() for c in raw):
        raise InvalidReference(repr(raw), hint="references contain no spaces")
    rest, digest = raw, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidReference(repr(raw), hint="a digest is sha256: followed by 64 hex digits")
    remote: str | None = None
    is_host = False
    if "/" in rest:
        first, remainder = rest.split("/", 1)
        if _looks_like_host(first):
            remote, is_host, rest = first, True, remainder
        elif NAME_RE.match(first):
            remote, rest = first, remainder
        else:
            raise InvalidReference(repr(raw), hint="use REMOTE/NAME:TAG or HOST[:PORT]/REPO:TAG")
    tag = None
    if ":" in rest:
        rest, tag = rest.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise InvalidReference(repr(raw), hint="a tag is letters, digits and . _ -")
    name_ok = REPO_RE.match(rest) if remote else NAME_RE.match(rest)
    if not name_ok:
        raise InvalidReference(
            repr(raw),
            hint="a bundle name is lowercase letters, digits and . _ - (e.g. mnist-mlp:2)",
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(name=rest, tag=tag, digest=digest, remote=remote, remote_is_host=is_host)
