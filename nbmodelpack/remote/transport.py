"""The one protocol publish, pull and list speak, and the limits every answer is held to.

A :class:`Transport` is one remote place holding repositories of manifests and
blobs: an OCI layout directory (:mod:`.layout`), a registry (:mod:`.registry`)
or a set of dicts (:mod:`.memory`, for tests). Whatever a remote sends is read
under a cap: a blob stops at its descriptor's size (and is refused if the
remote sends more or less), a manifest at 4 MiB (what OCI distribution
registries accept), other JSON answers at the caps below, and JSON nesting at
:data:`MAX_JSON_DEPTH`, so a hostile remote can exhaust neither memory nor the
Python stack.

Example:
    >>> import io
    >>> b"".join(read_exactly(io.BytesIO(b"abc").read, 3, what="x", where="here"))
    b'abc'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..bundle.manifest import Descriptor
from ..errors import IntegrityError, RemoteError

MANIFEST_CAP = 4 << 20  # the OCI distribution spec's manifest limit
CONFIG_CAP = 4 << 20
LISTING_CAP = 4 << 20  # one page of tags or catalog
LISTING_MAX = 100_000  # tags of one repository, or repositories in a catalog
PAGES_MAX = 1_000  # pages of one paginated listing
ERROR_CAP = 64 << 10  # an error body (only its first words are shown)
TOKEN_CAP = 1 << 20  # a token service's answer
BLOCK = 1 << 20  # the most of a blob held in memory at once
MAX_JSON_DEPTH = 64

OnBytes = Callable[[int], Any]


class Transport(Protocol):
    """One remote place: repositories of manifests (by tag or digest) and blobs.

    ``name`` is the remote's name, for messages. Every ``get_*`` answer is bounded
    (see the module docstring); ``get_manifest`` returns the raw bytes with their
    sha256 digest, already checked against the digest the remote claims.
    """

    name: str

    def where(self, repo: str) -> str:
        """Where ``repo`` is, for people (``HOST/REPO`` or a directory)."""
        ...

    def ping(self) -> None:
        """Check the remote answers (and accepts our login)."""
        ...

    def repositories(self) -> list[str] | None:
        """Every repository, or None when the remote does not say (a registry without catalog)."""
        ...

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (empty when the repository does not exist)."""
        ...

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """``(raw, digest)`` of a manifest by tag or digest; :class:`BundleNotFound` if absent."""
        ...

    def put_manifest(self, repo: str, raw: bytes, digest: str, tags: list[str]) -> None:
        """Store the exact manifest bytes under each tag."""
        ...

    def has_blob(self, repo: str, digest: str) -> bool:
        ...

    def mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Link a blob from another repository of the same remote; False when that was not done."""
        ...

    def get_blob(self, repo: str, desc: Descriptor, on_bytes: OnBytes) -> Iterator[bytes]:
        """Yield exactly ``desc.size`` bytes, at most :data:`BLOCK` at a time, or raise."""
        ...

    def put_blob(self, repo: str, desc: Descriptor, path: Path, on_bytes: OnBytes) -> int:
        """Send the blob in local file ``path``; return how many bytes went over (resumed uploads send less)."""
        ...


def read_exactly(
    read: Callable[[int], bytes], size: int, *, what: str, where: str, on_bytes: OnBytes | None = None
) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes from ``read(n)``; refuse a source that sends more or fewer.

    At most one byte past ``size`` is ever asked for (to tell "more"), and never more
    than :data:`BLOCK` at a time.

    Example:
        >>> import io
        >>> list(read_exactly(io.BytesIO(b"abcd").read, 3, what="x", where="here"))
        Traceback (most recent call last):
        ...
        nbmodelpack.errors.IntegrityError: integrity check failed: x from here is longer than its descriptor's 3 bytes (...)
    """
    if size < 0:
        raise IntegrityError(f"{what} from {where} has a negative size in its descriptor", hint="the remote copy is damaged or hostile; nothing was written")
    done = 0
    while True:
        piece = read(min(BLOCK, size - done + 1))
        if not piece:
            break
        if done + len(piece) > size:
            raise IntegrityError(f"{what} from {where} is longer than its descriptor's {size} bytes", hint="the remote copy is damaged or hostile; nothing was written")
        done += len(piece)
        if on_bytes is not None:
            on_bytes(len(piece))
        yield piece
    if done != size:
        raise IntegrityError(f"{what} from {where} ended after {done} of {size} bytes", hint="pull again; if it repeats, the remote copy is damaged")


def read_capped(read: Callable[[int], bytes], cap: int, *, what: str, where: str) -> bytes:
    """All bytes of ``read(n)`` up to ``cap``; a longer answer is a :class:`RemoteError`.

    Example:
        >>> import io
        >>> read_capped(io.BytesIO(b"{}").read, 10, what="an answer", where="here")
        b'{}'
    """
    parts: list[bytes] = []
    got = 0
    while got <= cap:
        piece = read(min(BLOCK, cap + 1 - got))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        got += len(piece)
    raise RemoteError(f"{what} from {where} is larger than {cap >> 10} KiB", hint="the remote is not a well-behaved registry; nothing was written")


def json_depth(doc: Any) -> int:
    """How deeply ``doc`` nests lists and dicts (iteratively: a deep document cannot overflow the stack).

    Example:
        >>> json_depth({"a": [1, {"b": []}]})
        4
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node)
    return deepest


def loads_answer(raw: bytes, *, what: str, where: str) -> dict[str, Any]:
    """A remote's JSON object answer, refused (one line) when it is not JSON, not an object, or nests too deep.

    Example:
        >>> loads_answer(b'{"tags": ["1"]}', what="tags", where="here")
        {'tags': ['1']}
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise RemoteError(f"{where} sent {what} that is not a JSON object", hint="is the URL a registry, not a web page or proxy?")
    if json_depth(doc) > MAX_JSON_DEPTH:
        raise RemoteError(f"{what} from {where} nests deeper than {MAX_JSON_DEPTH} levels", hint="the remote is not a well-behaved registry")
    return doc


def check_manifest_bytes(raw: bytes, *, where: str) -> None:
    """Refuse manifest bytes over :data:`MANIFEST_CAP` or nested too deep, before anything parses them.

    Example:
        >>> check_manifest_bytes(b'{"schemaVersion": 2}', where="here")
    """
    if len(raw) > MANIFEST_CAP:
        raise RemoteError(f"a manifest from {where} is larger than {MANIFEST_CAP >> 20} MiB", hint="nothing was written")
    loads_answer(raw, what="a manifest", where=where)


def str_list(doc: dict[str, Any], key: str, *, what: str, where: str) -> list[str]:
    """``doc[key]`` as a list of strings (absent or null: empty); anything else is refused.

    Example:
        >>> str_list({"tags": ["1", "latest"]}, "tags", what="tags", where="here")
        ['1', 'latest']
    """
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise RemoteError(f"{what} from {where} is not a list of names", hint="the remote is not a well-behaved registry")
    return value
