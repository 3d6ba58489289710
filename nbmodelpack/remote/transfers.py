"""Moving several blobs at once: the bounded worker pool publish and pull share, and pull's receive pipeline.

- :func:`in_parallel` runs one transfer per blob on :func:`workers` threads
  (``NBMODELPACK_TRANSFERS``, default 4); callers order the blobs biggest first,
  so small ones fill in beside the big ones. The first failure (or Ctrl-C) stops
  every other transfer at its next block, and that failure is what is raised.
- :func:`receive` writes one arriving blob into a store through
  :meth:`Store.put_chunks`, which hashes each block as it passes (one pass over the
  bytes) and renames the file into place only when the digest matches. A blob is
  therefore in the store only when whole and verified, which is what lets an
  interrupted pull keep what it finished.

Example:
    >>> in_parallel(lambda d, on_bytes: d.size, [], print)
    []
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from ..bundle.manifest import Descriptor
from ..store import Store

DEFAULT_WORKERS = 4
T = TypeVar("T")
OnBytes = Callable[[int], None]


def workers() -> int:
    """How many blobs move at once (``NBMODELPACK_TRANSFERS``, 1 to 32; default 4).

    Example:
        >>> 1 <= workers() <= 32
        True
    """
    text = os.environ.get("NBMODELPACK_TRANSFERS", "")
    return min(int(text), 32) if text.isdigit() and int(text) > 0 else DEFAULT_WORKERS


class Stopped(Exception):
    """Raised in a transfer worker at a block boundary once the whole transfer is being abandoned."""


def in_parallel(work: Callable[[Descriptor, OnBytes], T], items: list[Descriptor], update: Callable[[int], Any]) -> list[T]:
    """``work(item, on_bytes)`` for every item on a few threads; on any failure or Ctrl-C, every worker stops at its next block.

    ``on_bytes`` runs after an upload chunk was accepted (and its session saved), so
    raising there leaves each upload session where the remote can resume it (a
    connection cut inside a chunk makes docker-registry 2.8 cancel the session).

    Example:
        >>> in_parallel(lambda d, on_bytes: d.size, descriptors, bar.update)  # doctest: +SKIP
        [1048576, 418]
    """
    stop = threading.Event()
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:  # one bar, many threads: tqdm's counter is not atomic
            update(n)
        if stop.is_set():
            raise Stopped

    pool = ThreadPoolExecutor(workers())
    futures = [pool.submit(work, item, on_bytes) for item in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:  # the first real failure, not a worker we stopped because of it
            if f.done() and not f.cancelled() and f.exception() is not None and not isinstance(f.exception(), Stopped):
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)  # the workers stop at their next block


def receive(store: Store, chunks: Iterator[bytes], *, expected: str, what: str) -> None:
    """Write the blob ``chunks`` yields into ``store``, each block hashed and written as it arrives.

    Receiving, hashing and writing one block run on this thread, one after the other:
    the block is still in the core's cache for the hash and the write (bench/publish.py:
    a quarter less time and CPU than a receiver thread handing blocks to a writer), the
    kernel's socket buffer keeps the connection flowing meanwhile, and the blobs moving
    at once (:func:`in_parallel`) keep every core busy. Raises what the remote or the
    write raised (a short or long blob, a lost connection, a stop, a digest mismatch, a
    full disk); nothing is left behind but a complete, verified blob.

    Example:
        >>> receive(store, transport.get_blob(repo, desc, bar.update), expected=desc.digest, what="model.safetensors")  # doctest: +SKIP
    """
    try:
        store.put_chunks(chunks, expected=expected, what=what)
    finally:
        close = getattr(chunks, "close", None)  # a generator: closes the HTTP response, however it ended
        if close is not None:
            close()
