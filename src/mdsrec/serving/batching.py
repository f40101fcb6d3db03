"""Server-side micro-batching: requests that arrive together are ranked by one ``score_all`` call.

The HTTP service runs on one asyncio event loop. Each request to rank becomes a *row* in a queue; a collector task
takes the first waiting row, then more until ``max_batch`` rows or until ``max_wait`` seconds have passed since it
took the first, and hands them to :meth:`Recommender.rank` on ONE worker thread (so the event loop keeps parsing
and answering while the model runs, and the model never runs twice at once). Rows that arrive while a batch runs
wait for the next one, so under load batches fill up by themselves and throughput grows with the load; alone, a
request waits at most ``max_wait``.

A row's list does not depend on the batch it lands in (see :meth:`Recommender.rank`). When a batch fails, its rows
are ranked again one by one, so one bad row (say, a model that returns NaN for one history) fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mdsrec.serving.recommender import Options, Request

log = logging.getLogger(__name__)

T = TypeVar("T")

Result = dict[str, Any]
RankFn = Callable[[Sequence[Request], Sequence[Options]], list[Result]]


@dataclass
class _Row:
    request: Request
    options: Options
    future: asyncio.Future[Result]


class MicroBatcher:
    """Gathers rows into batches of at most ``max_batch`` rows, waiting at most ``max_wait`` seconds for a batch
    to fill, and ranks each batch with ``rank`` on a single worker thread. ``on_batch(rows, seconds)`` is told
    about every batch and ``on_queue(depth)`` about the number of rows waiting (the service's metrics)."""

    def __init__(
        self,
        rank: RankFn,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int, float], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch ({max_batch}) must be >= 1")
        if max_wait < 0:
            raise ValueError(f"max_wait ({max_wait}) must be >= 0 seconds")
        self._rank = rank
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._queue: asyncio.Queue[_Row | None] | None = None  # None: stop
        self._task: asyncio.Task[None] | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collector on the running event loop and the worker thread."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdsrec-model")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="mdsrec-batcher")

    async def stop(self) -> None:
        """Rank every row queued so far, then stop the collector and the worker thread."""
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(None)  # the last item: rows before it are ranked first
            await self._task
            self._task = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread, in turn with the batches (the warm-up pass uses it)."""
        if self._worker is None:
            raise RuntimeError("the batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def rank(self, requests: Sequence[Request], options: Sequence[Options]) -> list[Result | Exception]:
        """Each request's result, in order, or the exception its ranking raised (in place, the others unaffected)."""
        if self._queue is None or not self.running:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        rows = [_Row(r, o, loop.create_future()) for r, o in zip(requests, options, strict=True)]
        for row in rows:
            self._queue.put_nowait(row)
        self._queue_changed()
        out: list[Result | Exception] = []
        for row in rows:
            try:
                out.append(await row.future)
            except Exception as e:  # noqa: BLE001 - reported in place; the caller decides what is fatal
                out.append(e)
        return out

    def _queue_changed(self) -> None:
        if self._on_queue is not None and self._queue is not None:
            self._on_queue(self._queue.qsize())

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if self._queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        row = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                else:
                    row = self._queue.get_nowait()
                if row is None:
                    stopping = True
                    break
                batch.append(row)
            self._queue_changed()
            await self._run(batch)

    async def _run(self, batch: list[_Row]) -> None:
        assert self._worker is not None
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._worker, self._rank_rows, batch)
        except Exception:  # noqa: BLE001 - set on the rows below; never kills the collector
            log.exception("ranking a batch of %d rows failed unexpectedly", len(batch))
            results = [RuntimeError("ranking failed") for _ in batch]
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - t0)
        for row, result in zip(batch, results, strict=True):
            if row.future.done():  # cancelled by its caller
                continue
            if isinstance(result, Exception):
                row.future.set_exception(result)
            else:
                row.future.set_result(result)

    def _rank_rows(self, batch: list[_Row]) -> list[Result | Exception]:
        """On the worker thread: the batch in one call; if it fails, each row alone (its own result or error)."""
        try:
            return list(self._rank([r.request for r in batch], [r.options for r in batch]))
        except Exception as e:  # noqa: BLE001
            if len(batch) == 1:
                return [e]
        out: list[Result | Exception] = []
        for row in batch:
            try:
                out.append(self._rank([row.request], [row.options])[0])
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out
