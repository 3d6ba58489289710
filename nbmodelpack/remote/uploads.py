"""Chunked, resumable blob uploads over the OCI distribution upload-session model.

A transport with upload sessions (a registry; the in-memory transport) implements
:class:`UploadSessions`; :func:`put_resumable` is the one algorithm over it:

- a blob up to one chunk goes up in one request (open a session, finish it with the data);
- a larger one goes up in chunks; each chunk is a :class:`FileRange`, read from the
  file a block at a time while it is sent (so a large chunk costs no memory, and the
  registry handles fewer requests); after every accepted chunk the session's URL is
  saved under ``$NBMODELPACK_HOME/uploads/``. The next attempt asks the remote where
  that session stands and continues at the remote's offset (never at ours: the
  remote may have accepted a chunk we did not hear back about). A session the remote
  no longer knows (expired, or cancelled after a connection broke inside a chunk,
  as docker-registry 2.8 does) starts the blob again from zero.

Example:
    >>> from nbmodelpack.remote.memory import MemoryTransport
    >>> import tempfile, pathlib, hashlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "b"; _ = p.write_bytes(b"x" * 10)
    >>> from nbmodelpack.bundle.manifest import Descriptor
    >>> d = Descriptor("application/octet-stream", "sha256:" + hashlib.sha256(b"x" * 10).hexdigest(), 10, {})
    >>> put_resumable(MemoryTransport(), "r", d, p, chunk=16)
    10
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .. import paths
from .._files import atomic_write
from ..bundle.manifest import Descriptor
from ..errors import IntegrityError
from .transport import OnBytes

DEFAULT_CHUNK = 128 << 20
READ_BLOCK = 4 << 20  # what a chunk holds in memory while it is sent


class FileRange:
    """``length`` bytes of an open file from ``start``: a request body read block by block, re-readable (an auth retry sends it again).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryFile() as f:
        ...     _ = f.write(b"abcdef"); f.flush()
        ...     bytes(FileRange(f.fileno(), 2, 3))
        b'cde'
    """

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd, self.start, self.length = fd, start, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        done = 0
        while done < self.length:
            block = os.pread(self.fd, min(READ_BLOCK, self.length - done), self.start + done)
            if not block:  # the file shrank while it was sent: the remote would wait for the rest
                raise IntegrityError("a local blob became shorter while it was being sent", hint="the local copy changed; run `modelpack fsck`")
            done += len(block)
            yield block

    def __bytes__(self) -> bytes:
        return b"".join(self)


class UploadSessions(Protocol):
    """Upload sessions as the distribution spec has them: open, ask the offset, append, finish."""

    site: str  # identifies the remote in saved upload states (``HOST`` or ``memory/NAME``)

    def start_upload(self, repo: str) -> str:
        """Open a session; return its location."""
        ...

    def upload_offset(self, repo: str, location: str) -> tuple[str, int] | None:
        """``(location, bytes the remote holds)`` of a session, or None when the remote dropped it."""
        ...

    def append(self, repo: str, location: str, offset: int, data: FileRange) -> str:
        """Append ``data`` at ``offset``; return the session's (possibly new) location."""
        ...

    def finish(self, repo: str, location: str, digest: str, data: FileRange | bytes) -> None:
        """Close the session with the last ``data``; the remote checks ``digest``."""
        ...


class UploadState:
    """Where an interrupted chunked upload stands: ``uploads/<key>.json`` under ``$NBMODELPACK_HOME``.

    Example:
        >>> UploadState("127.0.0.1:5000", "team/x", "sha256:" + "0" * 64).path.parent.name
        'uploads'
    """

    def __init__(self, site: str, repo: str, digest: str) -> None:
        self.site, self.repo, self.digest = site, repo, digest
        key = hashlib.sha256(f"{site}/{repo}@{digest}".encode()).hexdigest()[:32]
        self.path = paths.home() / "uploads" / f"{key}.json"

    def load(self) -> str | None:
        try:
            doc = json.loads(self.path.read_bytes()[:65536])
        except (OSError, ValueError):
            return None
        return str(doc.get("location") or "") or None if isinstance(doc, dict) else None

    def save(self, location: str, offset: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Saved after every chunk without fsync: a lost record only means the blob starts over.
        state = {"host": self.site, "repo": self.repo, "digest": self.digest, "location": location, "offset": offset}
        atomic_write(self.path, json.dumps(state).encode(), fsync=False)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def put_resumable(
    sessions: UploadSessions, repo: str, desc: Descriptor, path: Path, *, chunk: int, on_bytes: OnBytes | None = None
) -> int:
    """Upload the blob in ``path``; resume a saved session where the remote stands. Returns bytes sent."""
    size = desc.size
    with open(path, "rb") as f:
        fd = f.fileno()
        if os.fstat(fd).st_size != size:  # sending it would leave the remote waiting for bytes that never come
            raise IntegrityError(f"{path.name} in the local store is {os.fstat(fd).st_size} bytes, its descriptor says {size}", hint="the local copy changed; run `modelpack fsck`")
        state = UploadState(sessions.site, repo, desc.digest)
        if size <= chunk and state.load() is None:  # (a saved session, even of smaller chunks, is resumed below)
            location = sessions.start_upload(repo)
            sessions.finish(repo, location, desc.digest, FileRange(fd, 0, size))
            if on_bytes:
                on_bytes(size)
            return size
        location, offset = _resume(sessions, state, repo, size)
        if offset and on_bytes:
            on_bytes(offset)
        sent = 0
        while offset < size:
            n = min(chunk, size - offset)
            location = sessions.append(repo, location, offset, FileRange(fd, offset, n))
            offset += n
            sent += n
            state.save(location, offset)
            if on_bytes:
                on_bytes(n)
    sessions.finish(repo, location, desc.digest, b"")
    state.clear()
    return sent


def _resume(sessions: UploadSessions, state: UploadState, repo: str, size: int) -> tuple[str, int]:
    saved = state.load()
    if saved:
        stands = sessions.upload_offset(repo, saved)
        if stands is not None and 0 <= stands[1] <= size:
            return stands
        state.clear()  # expired, cancelled, or nonsense: start again
    location = sessions.start_upload(repo)
    state.save(location, 0)
    return location, 0


def forget(site: str, repo: str, digest: str) -> None:
    """Drop a saved upload state (the blob is on the remote now, however it got there).

    Example:
        >>> forget("127.0.0.1:5000", "team/x", "sha256:" + "0" * 64)
    """
    UploadState(site, repo, digest).clear()
