"""Content-addressed blob files: ``blobs/sha256/<hex>``, written once, never written through.

Two writers: :meth:`Blobs.write_chunks` (bytes or a stream of chunks) and
:meth:`Blobs.write_with` (a function such as ``safetensors.save_file`` writes the
file). Both write a fresh temp file and rename it into place, so an existing
blob (which may be hard-linked or mapped elsewhere) is never opened for writing.
Reads refuse a blob that is a symbolic link: a store only ever holds files.

Every writer hashes what it writes, and then leaves a verification record
(:mod:`.records`); readers skip the re-hash of a large blob while its record still
matches the file, and re-hash (refreshing the record) when it does not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, cast

from ..bundle.refs import DIGEST_RE
from ..errors import IntegrityError, InvalidReference, StoreError
from .records import Identity, Records, file_identity, identity
from .streams import HashingWriter

CHUNK = 8 << 20
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Like git, blobs are not fsynced by default (a killed process still leaves no half
# bundle: the rename and the index update come after the write). index.json always is.
# NBMODELPACK_FSYNC=1 also syncs blobs, for power-loss safety at the cost of disk speed.
FSYNC_BLOBS = os.environ.get("NBMODELPACK_FSYNC", "") not in ("", "0")
TEMP_PREFIX = ".tmp-"
# Reads below this size always re-hash (manifests, configs, JSON layers: microseconds);
# larger ones trust a matching verification record.
RECORDED_READ_BYTES = 1 << 20


def store_error(exc: OSError, what: str) -> StoreError:
    """One line for an OS error while writing ``what`` (disk full, permissions, ...)."""
    if exc.errno in DISK_ERRNOS:
        return StoreError(f"disk full while writing {what}; nothing was saved", hint="free some space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot write {what}: {exc.strerror}", hint="check NBMODELPACK_HOME permissions")
    return StoreError(f"cannot write {what}: {exc.strerror or exc}")


def corrupted(name: str, digest: str) -> IntegrityError:
    return IntegrityError(
        f"{name} is corrupted (content does not match {digest[:19]}…)",
        hint="re-pull or re-pack it; `modelpack fsck` lists every damaged blob",
    )


class NotARegularFile(OSError):
    """A FIFO, device or directory where a blob file should be."""


def open_blob(path: Path) -> IO[bytes]:
    """Open a blob file read-only, refusing a symbolic link (ELOOP) or anything but a regular file.

    ``O_NONBLOCK`` keeps a FIFO planted in a shared layout from blocking the open.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def read_regular(path: Path, limit: int) -> bytes:
    """A small file's bytes, refusing links, FIFOs and devices, and more than ``limit`` bytes.

    For files a shared layout or an import holds (``index.json``, manifests): ``stat``
    follows links and reports 0 bytes for ``/dev/zero``, so the cap is applied while reading.
    Raises ``ValueError`` past the cap, ``OSError`` for the rest.
    """
    with open_blob(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than {limit:,} bytes")
    return data


def hash_file(path: Path) -> str:
    """sha256 of a blob file, read in 8 MiB blocks into one reused buffer (hashlib drops the GIL).

    Not a map of the whole file: mapped pages count in the process's memory, so hashing a
    big blob that way would add its whole size to the peak memory of a load.
    """
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open_blob(path) as f:
        while n := os.readv(f.fileno(), [buf]):
            h.update(view[:n])
    return "sha256:" + h.hexdigest()


# Pieces this large are hashed on a second thread while they are written (hashlib drops
# the GIL); smaller ones are hashed, then written, on this thread, while still in the
# core's cache (measured faster for the 1 MiB blocks a pull receives).
THREADED_HASH_BYTES = 8 << 20


def _hash_and_write(chunks: Iterable[bytes | memoryview], out: IO[bytes]) -> tuple[str, int]:
    """Write chunks while hashing them; done with each before the next is asked for (a source may reuse its buffer)."""
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        if len(chunk) >= THREADED_HASH_BYTES:
            hashing = threading.Thread(target=h.update, args=(chunk,))
            hashing.start()
            try:
                out.write(chunk)
            finally:
                hashing.join()
        else:
            h.update(chunk)
            out.write(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def split(data: bytes | memoryview, step: int = 64 << 20) -> Iterator[memoryview]:
    """Views of ``data`` in ``step``-sized pieces (no copies)."""
    view = memoryview(data)
    for start in range(0, len(view), step):
        yield view[start : start + step]


def _os_error_in_text(exc: Exception) -> OSError | None:
    # Writers in other languages (safetensors is Rust) report OS errors as text.
    code = re.search(r"(?:os error|code:) (\d+)", str(exc))
    if code and int(code.group(1)) in DISK_ERRNOS:
        return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    return None


class Blobs:
    """The blob directory of one store.

    Example:
        >>> import tempfile
        >>> blobs = Blobs(Path(tempfile.mkdtemp()))
        >>> digest, size = blobs.write_chunks([b"hello"])
        >>> blobs.read(digest)
        b'hello'

    ``records`` (the store's :class:`~.records.Records`) lets reads skip re-hashing
    blobs this user's process hashed before and that have not changed since.
    """

    def __init__(self, directory: Path, records: Records | None = None) -> None:
        self.dir = directory
        self.records = records

    def path(self, digest: str) -> Path:
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise InvalidReference(repr(digest), hint="a digest is sha256: followed by 64 hex digits")
        return self.dir / digest.split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def _temp(self) -> Path:
        return self.dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"

    def write_chunks(
        self, chunks: Iterable[bytes | memoryview], *, expected: str | None = None, what: str = "a blob"
    ) -> tuple[str, int]:
        """Stream chunks into a blob, hashing as they go; refuse if ``expected`` does not match."""
        tmp = self._temp()
        try:
            try:
                with open(tmp, "xb") as f:
                    digest, size = _hash_and_write(chunks, f)
                    if FSYNC_BLOBS:
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as exc:
                raise store_error(exc, what) from exc
            if expected is not None and digest != expected:
                raise IntegrityError(f"{what} has digest {digest[:19]}…, expected {expected[:19]}…")
            self._settle(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def write_with(self, write: Callable[[Path], None], *, what: str) -> tuple[str, int]:
        """Let ``write(path)`` produce the file (e.g. ``safetensors.save_file``), then hash it.

        Saves building the whole file in memory first: for large weights this is
        the fast path (one write, one hashing read from the page cache).
        """
        tmp = self._temp()
        try:
            try:
                write(tmp)
                if FSYNC_BLOBS:
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
            except OSError as exc:
                raise store_error(exc, what) from exc
            except Exception as exc:
                os_error = _os_error_in_text(exc)
                if os_error is not None:
                    raise store_error(os_error, what) from exc
                raise
            size = tmp.stat().st_size
            digest = hash_file(tmp)
            self._settle(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def write_streamed(self, write: Callable[[IO[bytes]], None], *, what: str) -> tuple[str, int]:
        """Let ``write(stream)`` push the content (e.g. ``pyrage.encrypt_io``); it is hashed as it is written.

        Unlike :meth:`write_with` there is no second pass over the file: blocks are
        hashed on another thread while the writer produces the next.
        """
        tmp = self._temp()
        try:
            try:
                with open(tmp, "xb") as f:
                    sink = HashingWriter(f)
                    try:
                        write(cast(IO[bytes], sink))
                        digest = sink.digest()
                    finally:
                        sink.close()
                    if FSYNC_BLOBS:
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as exc:
                raise store_error(exc, what) from exc
            self._settle(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest, sink.size

    def _settle(self, tmp: Path, digest: str) -> None:
        """Move a hashed temp file into place and record it as verified."""
        final = self.path(digest)
        if final.is_file() and not final.is_symlink():
            # Same content is already there: keep it (replacing a large file costs a
            # truncate), and mark it fresh so `gc` gives the writer its grace period.
            # A read-only or foreign-owned blob cannot be touched: commit's re-check under the lock still protects it.
            # Touching it changes its ctime: a record that held before the touch is renewed (our touch changed no byte).
            known = self.is_recorded(digest)
            with contextlib.suppress(OSError):
                os.utime(final, follow_symlinks=False)
            if known:
                self.record(digest)
            return
        os.replace(tmp, final)
        self.record(digest)

    def record(self, digest: str, ident: Identity | None = None) -> None:
        """Record that the blob (as it is now, or as `ident` says) was just hashed by us and matched."""
        if self.records is not None:
            self.records.record(digest, ident if ident is not None else file_identity(self.path(digest)))

    def is_recorded(self, digest: str, ident: Identity | None = None) -> bool:
        """Whether the blob file (as it is now, or as ``ident`` says) is unchanged since this user last hashed it."""
        ident = ident if ident is not None else file_identity(self.path(digest))
        return self.records is not None and self.records.matches(digest, ident)

    @contextlib.contextmanager
    def linking(self, digests: Iterable[str]) -> Iterator[None]:
        """For a block that only adds and removes hard links to blobs (signature checks hash a directory of them).

        A link changes a file's ctime but not a byte: a record that held before the block is
        renewed after it, provided size, inode and mtime are still the recorded ones.
        """
        known = {}
        for digest in set(digests):
            ident = file_identity(self.path(digest))
            if ident is not None and self.is_recorded(digest, ident):
                known[digest] = ident
        try:
            yield
        finally:
            for digest, ident in known.items():
                now = file_identity(self.path(digest))
                if now is not None and now[:4] == ident[:4]:
                    self.record(digest, now)

    @contextlib.contextmanager
    def _open(self, digest: str, what: str) -> Iterator[IO[bytes]]:
        """Open a blob for reading; OS errors become one line naming ``what``."""
        name = what or digest
        try:
            f = open_blob(self.path(digest))
        except FileNotFoundError as exc:
            raise IntegrityError(f"{name} is missing from the store", hint="run `modelpack fsck`") from exc
        except NotARegularFile as exc:
            raise IntegrityError(f"{name} is not a regular file", hint="run `modelpack fsck`") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IntegrityError(f"{name} is a symbolic link, not a blob", hint="run `modelpack fsck`") from exc
            raise StoreError(f"cannot read {name}: {exc.strerror}") from exc
        with f:
            yield f

    def read(self, digest: str, *, what: str = "", limit: int | None = None, verify: bool = False) -> bytes:
        """Read a blob and check it against its digest (the error names ``what``).

        ``limit`` refuses a larger file before reading it (manifests, configs).
        Large blobs whose verification record matches the opened file are not re-hashed
        (``verify=True`` re-hashes anyway); small ones always are.
        """
        name = what or digest
        with self._open(digest, name) as f:
            before = identity(os.fstat(f.fileno()))
            if limit is not None and before[0] > limit:
                raise IntegrityError(f"{name} is larger than {limit:,} bytes", hint="it was not written by a ModelPack tool")
            try:
                data = f.read()
            except OSError as exc:
                raise StoreError(f"cannot read {name}: {exc.strerror}") from exc
            unchanged = identity(os.fstat(f.fileno())) == before
        recordable = self.records is not None and unchanged and len(data) >= RECORDED_READ_BYTES
        if recordable and not verify and self.is_recorded(digest, before):
            return data
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            self.forget_record(digest)
            raise corrupted(name, digest)
        if recordable:
            self.record(digest, before)
        return data

    def remove(self, digest: str) -> None:
        """Delete a blob file and its verification record (callers hold the store lock)."""
        self.path(digest).unlink(missing_ok=True)
        self.forget_record(digest)

    def forget_record(self, digest: str) -> None:
        """Drop the blob's verification record (damaged, or removed)."""
        if self.records is not None:
            self.records.forget(digest)

    def verify_in_background(self, digest: str, *, what: str = "") -> Callable[[], None]:
        """Start hashing a blob file on a second thread; the returned ``check()`` waits and raises on a mismatch.

        Lets a caller map and parse a large blob while it is verified (hashlib
        releases the GIL); nothing may be handed to the user before ``check()``.
        """
        result: list[str | BaseException] = []
        path = self.path(digest)

        def work() -> None:
            try:
                before = file_identity(path)
                result.append(hash_file(path))
                if result[0] == digest and before == file_identity(path):
                    self.record(digest, before)  # the file did not change while we hashed it
            except OSError as exc:
                result.append(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()

        def check() -> None:
            worker.join()
            if isinstance(result[0], BaseException):
                raise IntegrityError(f"{what or digest} cannot be read: {result[0]}", hint="run `modelpack fsck`")
            if result[0] != digest:
                self.forget_record(digest)
                raise corrupted(what or digest, digest)

        return check

    def check_in_background(self, digest: str, *, what: str = "", verify: bool = False) -> Callable[[], None]:
        """Like :meth:`verify_in_background`, but skips the hash while the blob's record matches.

        The returned ``check()`` also notices a file that changed while it was in use
        (its identity at ``check()`` differs from the one at the start) and re-hashes it then.
        ``verify=True`` always hashes.

        Example:
            >>> check = blobs.check_in_background(digest)  # doctest: +SKIP
            >>> check()  # raises IntegrityError if the blob was damaged  # doctest: +SKIP
        """
        path = self.path(digest)
        before = file_identity(path)
        if verify or not self.is_recorded(digest, before):
            return self.verify_in_background(digest, what=what)

        def check() -> None:
            if file_identity(path) != before:
                self.verify_in_background(digest, what=what)()

        return check

    def iter(self, digest: str, chunk: int = CHUNK, *, what: str = "") -> Iterator[bytes]:
        """Yield a blob's raw bytes (unverified: callers that stream verify as they go)."""
        with self._open(digest, what) as f:
            while block := f.read(chunk):
                yield block
