"""Dynamic batching: requests that arrive together run through the model as one batch.

A request waits at most ``max_delay`` seconds for company, and a batch holds at
most ``max_batch`` rows. The model runs on one dedicated thread (torch releases
the GIL), so the event loop keeps reading and parsing requests meanwhile and
the next batch fills up while the current one runs. asyncio has no batcher of
this shape in a well-kept library, so it is written here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


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

    def __init__(self, run: Callable[[Arrays], Arrays], *, max_batch: int = 32, max_delay: float = 0.002, on_batch: Callable[[int], None] | None = None) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay)
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelpack-model")

    def start(self) -> None:
        """Start the batch loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the batch loop and the model thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: Arrays) -> Arrays:
        """Queue one request (every array shares its first, batch, dimension); await its outputs."""
        assert self._queue is not None, "Batcher.start() was not called"
        first = next(iter(inputs.values()))
        key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items())
        item = _Item(inputs, int(first.shape[0]) if first.ndim else 1, key, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        return await item.future

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        held: _Item | None = None  # an item that did not fit the previous batch
        while True:
            first = held or await queue.get()
            held = None
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.max_delay
            while rows < self.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                if item.key != first.key or rows + item.rows > self.max_batch:
                    held = item
                    break
                batch.append(item)
                rows += item.rows
            await self._run_batch(loop, batch, rows)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], rows: int) -> None:
        live = [i for i in batch if not i.future.done()]  # a client that went away cancels its future
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(rows)
        if len(live) == 1:
            inputs = live[0].inputs
        else:
            inputs = {k: np.concatenate([i.inputs[k] for i in live]) for k in live[0].inputs}
        try:
            outputs = await loop.run_in_executor(self._pool, self.run, inputs)
        except Exception as exc:
            if len(live) > 1:
                # One bad request must not fail its neighbours: run each alone to find it.
                for item in live:
                    await self._run_batch(loop, [item], item.rows)
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
