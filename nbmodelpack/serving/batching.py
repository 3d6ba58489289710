"""Dynamic batching: requests that arrive together run through the model as one batch.

A request waits at most ``max_delay`` seconds for company, and a batch holds at
most ``max_batch`` rows. The model runs on one dedicated thread (torch releases
the GIL), so the event loop keeps reading and parsing requests meanwhile and
the next batch fills up while the current one runs. A model so small that the
hop to that thread costs more than the model itself runs on the loop (``inline``). asyncio has no batcher of
this shape in a well-kept library, so it is written here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Arrays = dict[str, np.ndarray]


class Batching(Protocol):
    """What the app needs of a batcher: start on the loop, take requests, close."""

    def start(self) -> None: ...

    async def submit(self, inputs: Arrays) -> Arrays: ...

    async def close(self) -> None: ...


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Arrays] = field(repr=False)


class Batcher:
    """Collect requests into batches for ``run(inputs) -> outputs`` (numpy in, numpy out).

    Example:
        >>> b = Batcher(lambda x: {"y": x["x"] * 2}, max_batch=8, max_delay=0.002)  # doctest: +SKIP
        >>> await b.submit({"x": np.ones((1, 3), np.float32)})  # doctest: +SKIP
    """

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        *,
        max_batch: int = 32,
        max_delay: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
        thread_init: Callable[[], None] | None = None,
        inline: bool = False,
    ) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay)
        self.on_batch = on_batch
        self.inline = inline
        self._pending: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake: asyncio.Future[None] | None = None
        self._waiting_for_first = False
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelpack-model", initializer=thread_init)

    def start(self) -> None:
        """Start the batch loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the batch loop and the model thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: Arrays) -> Arrays:
        """Queue one request (every array shares its first, batch, dimension); await its outputs."""
        first = next(iter(inputs.values()))
        key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items())
        item = _Item(inputs, int(first.shape[0]) if first.ndim else 1, key, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self._queued_rows += item.rows
        wake = self._wake
        if wake is not None and not wake.done() and (self._waiting_for_first or self._queued_rows >= self.max_batch):
            wake.set_result(None)
        return await item.future

    async def _sleep(self, seconds: float | None) -> None:
        """Wait until ``submit`` wakes us (first item, or a full batch) or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, self._wake) if seconds is not None else None
        try:
            await self._wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> list[_Item]:
        """Pop the longest run of compatible queued items that fits in one batch."""
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        while self._pending and rows < self.max_batch:
            nxt = self._pending[0]
            if nxt.key != first.key or rows + nxt.rows > self.max_batch:
                break
            batch.append(self._pending.popleft())
            rows += nxt.rows
        self._queued_rows -= rows
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._waiting_for_first = True
                await self._sleep(None)
                self._waiting_for_first = False
            if self._queued_rows < self.max_batch and self.max_delay > 0:
                await self._sleep(self.max_delay)
            else:
                await asyncio.sleep(0)  # let requests already read off the sockets join this batch
            batch = self._take()
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        live = [i for i in batch if not i.future.done()]  # a client that went away cancels its future
        if not live:
            return
        if len(live) == 1:
            inputs = live[0].inputs
        else:
            inputs = {k: np.concatenate([i.inputs[k] for i in live]) for k in live[0].inputs}
        try:
            # A model that answers in well under a millisecond costs less on the loop than a thread hop.
            outputs = self.run(inputs) if self.inline else await loop.run_in_executor(self._pool, self.run, inputs)
            if self.on_batch is not None:
                self.on_batch(sum(i.rows for i in live))  # rows that ran (a failed batch reruns one by one)
        except Exception as exc:
            if len(live) > 1:
                # One bad request must not fail its neighbours: run each alone to find it.
                for item in live:
                    await self._run_batch(loop, [item])
                return
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        start = 0
        for item in live:
            part = {k: v[start : start + item.rows] for k, v in outputs.items()}
            start += item.rows
            if not item.future.done():
                item.future.set_result(part)


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
