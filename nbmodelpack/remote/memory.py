"""A remote held in dicts: a real :class:`~.transport.Transport` for fast offline tests.

It keeps repositories, tags, blobs and upload sessions the way a registry does
(blobs are per repository, so mounts mean something; sessions have offsets), and
it logs every operation in ``log``. Two knobs reproduce what real registries do
under failure: ``break_after`` drops the "connection" once that many more bytes
arrived in an append (the chunk is cut short), and ``cancel_broken`` makes the
remote then cancel that session, as docker-registry 2.8 does.

Example:
    >>> t = MemoryTransport()
    >>> t.put_manifest("ns/x", b"{}", "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", ["1"])
    >>> t.tags("ns/x")
    ['1']
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..bundle.manifest import Descriptor
from ..errors import BundleNotFound, IntegrityError, RemoteError, RemoteUnavailable
from .transport import MANIFEST_CAP, OnBytes, Transport, read_capped, read_exactly
from .uploads import FileRange, UploadSessions, put_resumable


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemoryTransport:
    """Repositories in dicts (see the module docstring)."""

    def __init__(self, name: str = "memory", *, chunk: int = 1 << 20, cancel_broken: bool = False) -> None:
        self.name = name
        self.site = f"memory/{name}"
        self.chunk = chunk
        self.cancel_broken = cancel_broken
        self.break_after: int | None = None
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = {}
        self.manifests: dict[str, dict[str, bytes]] = {}  # repo -> tag or digest -> raw
        self.sessions: dict[str, tuple[str, bytearray]] = {}  # location -> (repo, bytes so far)
        self.catalog = True
        self.log: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    # ---- manifests and listings ----------------------------------------------------------
    def where(self, repo: str) -> str:
        return f"{self.site}/{repo}"

    def ping(self) -> None:
        self.log.append(("ping", ""))

    def repositories(self) -> list[str] | None:
        return sorted(self.manifests) if self.catalog else None

    def tags(self, repo: str) -> list[str]:
        return sorted(t for t in self.manifests.get(repo, {}) if not t.startswith("sha256:"))

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        self.log.append(("get_manifest", f"{repo}:{reference}"))
        raw = self.manifests.get(repo, {}).get(reference)
        if raw is None:
            raise BundleNotFound(f"{self.name}/{repo}:{reference}")
        raw = read_capped(io.BytesIO(raw).read, MANIFEST_CAP, what="a manifest", where=self.where(repo))
        if reference.startswith("sha256:") and _sha(raw) != reference:
            raise IntegrityError(f"manifest of {repo}@{reference[:19]}… from {self.name} does not match its digest")
        return raw, _sha(raw)

    def put_manifest(self, repo: str, raw: bytes, digest: str, tags: list[str]) -> None:
        if _sha(raw) != digest:
            raise IntegrityError(f"manifest for {repo} does not match {digest[:19]}…")
        entry = self.manifests.setdefault(repo, {})
        for ref in [*tags, digest]:
            self.log.append(("put_manifest", f"{repo}:{ref}"))
            entry[ref] = raw

    # ---- blobs ----------------------------------------------------------------------------
    def has_blob(self, repo: str, digest: str) -> bool:
        self.log.append(("has_blob", digest))
        return digest in self.repo_blobs.get(repo, set())

    def mount(self, repo: str, digest: str, from_repo: str) -> bool:
        self.log.append(("mount", f"{from_repo}->{repo}"))
        if digest not in self.repo_blobs.get(from_repo, set()):
            return False
        self.repo_blobs.setdefault(repo, set()).add(digest)
        return True

    def get_blob(self, repo: str, desc: Descriptor, on_bytes: OnBytes) -> Iterator[bytes]:
        self.log.append(("get_blob", desc.digest))
        if desc.digest not in self.repo_blobs.get(repo, set()):
            raise IntegrityError(f"{desc.filepath or 'config'} is missing from {self.where(repo)}")
        return read_exactly(io.BytesIO(self.blobs[desc.digest]).read, desc.size, what=desc.filepath or "config", where=self.where(repo), on_bytes=on_bytes)

    def put_blob(self, repo: str, desc: Descriptor, path: Path, on_bytes: OnBytes) -> int:
        return put_resumable(self, repo, desc, path, chunk=self.chunk, on_bytes=on_bytes)

    # ---- upload sessions ------------------------------------------------------------------
    def start_upload(self, repo: str) -> str:
        location = f"/uploads/{next(self._ids)}"
        self.log.append(("start_upload", location))
        self.sessions[location] = (repo, bytearray())
        return location

    def upload_offset(self, repo: str, location: str) -> tuple[str, int] | None:
        self.log.append(("upload_offset", location))
        session = self.sessions.get(location)
        return (location, len(session[1])) if session and session[0] == repo else None

    def append(self, repo: str, location: str, offset: int, body: FileRange) -> str:
        data = bytes(body)
        self.log.append(("append", f"{location}@{offset}+{len(data)}"))
        session = self.sessions.get(location)
        if session is None or session[0] != repo:
            raise RemoteError(f"{self.name} has no upload session {location}")
        if offset != len(session[1]):
            raise RemoteError(f"{self.name} holds {len(session[1])} bytes of {location}, not {offset}")
        if self.break_after is not None and len(data) > self.break_after:
            session[1].extend(data[: self.break_after])
            self.break_after = None
            if self.cancel_broken:
                del self.sessions[location]
            raise RemoteUnavailable(f"lost the connection to {self.name}")
        if self.break_after is not None:
            self.break_after -= len(data)
        session[1].extend(data)
        return location

    def finish(self, repo: str, location: str, digest: str, body: FileRange | bytes) -> None:
        data = bytes(body)
        self.log.append(("finish", digest))
        session = self.sessions.pop(location, None)
        if session is None or session[0] != repo:
            raise RemoteError(f"{self.name} has no upload session {location}")
        blob = bytes(session[1] + data)
        if _sha(blob) != digest:
            raise IntegrityError(f"{self.name} received {_sha(blob)[:19]}…, expected {digest[:19]}…")
        self.blobs[digest] = blob
        self.repo_blobs.setdefault(repo, set()).add(digest)


if TYPE_CHECKING:  # mypy checks that this is a whole transport with upload sessions
    _transport: Transport = MemoryTransport()
    _sessions: UploadSessions = MemoryTransport()
