"""Writable streams for unwrapping layers: a size cap, zstd inflation, hashing while writing.

A layer is unwrapped by chaining these in front of the file that receives the
plaintext (an in-memory ``memfd`` for loads): a decoder (age) writes into an
:class:`InflatingWriter` (zstd), which writes into a :class:`CappedWriter`,
which writes into the file. Nothing holds more than one chunk.

Example:
    >>> import io
    >>> out = io.BytesIO()
    >>> capped = CappedWriter(out, 4, ValueError("too big"))
    >>> capped.write(b"abc")
    3
    >>> capped.write(b"de")
    Traceback (most recent call last):
    ValueError: too big
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from typing import IO, Any, cast

from ..errors import IntegrityError

# Handed to the hashing thread in blocks this large: hashlib releases the GIL for the
# whole block, so the hash runs on the other core while the producer fills the next one.
HASH_BLOCK = 4 << 20


class CappedWriter(io.RawIOBase):
    """Pass writes through to ``out``, raising ``error`` before the total would pass ``limit`` bytes."""

    def __init__(self, out: IO[bytes] | io.RawIOBase, limit: int, error: Exception) -> None:
        self.out = out
        self.limit = limit
        self.error = error
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        size = memoryview(b).nbytes
        if self.total + size > self.limit:
            raise self.error
        self.out.write(b)
        self.total += size
        return size


class InflatingWriter(io.RawIOBase):
    """Inflate zstd frames written to it into ``out``; :meth:`finish` refuses a cut-off stream.

    ``out`` should cap what it accepts (:class:`CappedWriter`): zstd hands it the
    output in small pieces, so a bomb stops at the cap, never allocating more.
    ``expected`` is the inflated size the manifest records, if any.
    """

    def __init__(self, out: CappedWriter, *, what: str, expected: int | None = None) -> None:
        import zstandard

        self.out = out
        self.what = what
        self.expected = expected
        self.declared: int | None = None
        self.head = b""
        self._zstd = zstandard
        self._writer = zstandard.ZstdDecompressor().stream_writer(cast("IO[bytes]", out), write_return_read=True, closefd=False)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.declared is None and len(self.head) < 18:
            # The first frame header (at most 18 bytes) declares the frame's size, if the packer wrote it.
            self.head += bytes(b[: 18 - len(self.head)])
            try:
                size = self._zstd.frame_content_size(self.head)
                self.declared = size if size >= 0 else -1
            except self._zstd.ZstdError:
                pass
        try:
            return int(self._writer.write(b))
        except self._zstd.ZstdError as exc:
            raise IntegrityError(f"{self.what} is not valid zstd data ({exc})") from exc

    def finish(self) -> None:
        """Flush, then refuse output shorter than what the manifest or the frame declared."""
        try:
            self._writer.flush()
        except self._zstd.ZstdError as exc:
            raise IntegrityError(f"{self.what} is not valid zstd data ({exc})") from exc
        if self.declared is None:  # not even one whole frame header arrived
            raise IntegrityError(f"{self.what} is not valid zstd data (no frame)", hint="the layer is truncated or damaged; it was not loaded")
        total = self.out.total
        # The manifest's size is the whole layer's; a frame header's only its own (more frames may follow).
        if self.expected is not None and total != self.expected:
            wanted = self.expected
        elif self.declared is not None and 0 <= total < self.declared:
            wanted = self.declared
        else:
            return
        raise IntegrityError(f"{self.what} inflates to {total:,} bytes, not the {wanted:,} it declares", hint="the layer is truncated or damaged; it was not loaded")


class HashingWriter(io.RawIOBase):
    """Write to ``out`` while hashing on a second thread, one :data:`HASH_BLOCK` at a time.

    For producers that push small writes (pyrage writes 64 KiB at a time): writes are
    gathered into blocks; each is written, then queued to one hashing thread, which
    works while the producer fills the next (at most two blocks wait). Call
    :meth:`digest` once at the end, and :meth:`close` in any case (it stops the thread).
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0
        self._hash = hashlib.sha256()
        self._block = bytearray()
        self._queue: queue.Queue[bytearray | None] = queue.Queue(maxsize=2)
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while (block := self._queue.get()) is not None:
            self._hash.update(block)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        size = memoryview(b).nbytes
        self._block += b
        self.size += size
        if len(self._block) >= HASH_BLOCK:
            self._flush_block()
        return size

    def _flush_block(self) -> None:
        block, self._block = self._block, bytearray()
        self.out.write(block)
        self._queue.put(block)

    def digest(self) -> str:
        """Write what is left and return ``sha256:<hex>`` of everything written."""
        if self._block:
            self._flush_block()
        self.close()
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        super().close()
