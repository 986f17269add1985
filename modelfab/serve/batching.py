"""Dynamic micro-batching: one asyncio queue and one worker task per model.

Each submitted input gets a future. The worker takes the first waiting input, then collects more
until ``max_batch`` inputs or ``max_wait_ms`` have passed, runs the whole batch once (in the
inference executor, off the event loop) and resolves every future with its own row. With
``concurrency`` > 1, up to that many batches run at once (the executor needs as many threads): the
worker starts collecting the next batch as soon as a slot is free, so a single-threaded runtime can
keep every core busy without intra-op synchronisation. When the batch
function raises, every future of that batch gets the exception and the worker goes on; a batch
function may also return an exception in place of one row to fail only that input.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

BatchFn = Callable[[list[Any]], Any]  # inputs -> one row per input (a sequence or an (N, ...) array)


@dataclass
class BatchStats:
    """What the last batches looked like (tests and metrics read it)."""

    batches: int = 0
    inputs: int = 0
    largest: int = 0


class MicroBatcher:
    """Batches inputs submitted from many requests into calls of ``fn``."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be >= 1 and max_wait_ms >= 0")
        self.fn = fn
        self.concurrency = concurrency
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor
        self.on_batch = on_batch  # (batch size, seconds) after every batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Inputs waiting in the queue."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running event loop."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        """Stop the worker; inputs still queued fail with CancelledError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()

    async def submit(self, item: Any) -> Any:
        """Queue one input and wait for its result row."""
        if self._queue is None:
            self.start()
        assert self._queue is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Queue several inputs (one request's batch); results in order."""
        return list(await asyncio.gather(*(self.submit(i) for i in items)))

    async def _collect(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()  # collect only when a batch can start: waiting inputs pile up meanwhile
                batch = await self._collect()
                live = [(item, fut) for item, fut in batch if not fut.done()]  # cancelled clients drop out
                if not live:
                    slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._run(live))
                running.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    running.discard(t)
                    slots.release()

                task.add_done_callback(done)
        finally:
            for task in running:
                task.cancel()

    async def _run(self, live: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        started = time.perf_counter()
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, [item for item, _ in live])
            if len(rows) != len(live):
                raise RuntimeError(f"batch function returned {len(rows)} rows for {len(live)} inputs")
        except asyncio.CancelledError:  # the batcher stops: nobody will answer these inputs
            for _, fut in live:
                fut.cancel()
            raise
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), row in zip(live, rows, strict=True):
                if fut.done():
                    continue
                if isinstance(row, BaseException):
                    fut.set_exception(row)
                else:
                    fut.set_result(row)
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.inputs += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        if self.on_batch is not None:
            self.on_batch(len(live), elapsed)


class DirectRunner:
    """Batching off: every request's inputs run as their own call of ``fn`` (the naive baseline)."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        executor: Executor | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.fn = fn
        self.executor = executor
        self.on_batch = on_batch
        self.stats = BatchStats()
        self.depth = 0

    def start(self) -> None:
        """Nothing to start (same interface as :class:`MicroBatcher`)."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Run ``items`` as one call; a row that is an exception is raised."""
        started = time.perf_counter()
        rows = list(await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, list(items)))
        self.stats.batches += 1
        self.stats.inputs += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - started)
        for row in rows:
            if isinstance(row, BaseException):
                raise row
        return rows
