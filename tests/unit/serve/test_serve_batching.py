"""Micro-batching: batches form under load, the wait bound holds, errors reach the right futures."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelfab.serve.batching import DirectRunner, MicroBatcher


def test_batches_form_under_load() -> None:
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.02)  # a slow model: requests pile up while it runs
        return [i * 10 for i in items]

    async def main() -> list[int]:
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=50, executor=ThreadPoolExecutor(1))
        b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(40)))
        await b.stop()
        return list(out)

    assert asyncio.run(main()) == [i * 10 for i in range(40)]  # each future got its own row
    assert sum(sizes) == 40 and max(sizes) == 8 and len(sizes) <= 6, sizes


def test_max_wait_is_respected() -> None:
    async def main() -> tuple[float, int]:
        b = MicroBatcher(lambda xs: xs, max_batch=32, max_wait_ms=30)
        b.start()
        t = time.perf_counter()
        out = await b.submit(7)  # alone: it must not wait for 31 companions
        waited = time.perf_counter() - t
        await b.stop()
        return waited, out

    waited, out = asyncio.run(main())
    assert out == 7
    assert 0.025 <= waited < 0.5, waited


def test_zero_wait_runs_at_once_and_requests_keep_order() -> None:
    async def main() -> list[list[int]]:
        b = MicroBatcher(lambda xs: [x + 1 for x in xs], max_batch=4, max_wait_ms=0)
        b.start()
        res = await asyncio.gather(b.submit_many([1, 2, 3]), b.submit_many([10, 20, 30, 40, 50]))
        await b.stop()
        return list(res)

    assert asyncio.run(main()) == [[2, 3, 4], [11, 21, 31, 41, 51]]


def test_errors_reach_only_their_batch_and_row() -> None:
    calls = threading.Event()

    def fn(items: list[int]) -> list[object]:
        calls.set()
        if 13 in items:
            raise RuntimeError("bad batch")
        return [ValueError(f"bad item {i}") if i < 0 else i for i in items]

    async def main() -> None:
        b = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
        b.start()
        r = await asyncio.gather(b.submit(1), b.submit(-2), b.submit(3), return_exceptions=True)
        assert r[0] == 1 and r[2] == 3 and isinstance(r[1], ValueError) and "bad item -2" in str(r[1])
        with pytest.raises(RuntimeError, match="bad batch"):
            await b.submit(13)
        assert await b.submit(5) == 5  # the worker survived the failing batch
        await b.stop()

    asyncio.run(main())
    assert calls.is_set()


def test_wrong_row_count_fails_the_batch() -> None:
    async def main() -> None:
        b = MicroBatcher(lambda xs: xs[:-1], max_batch=2, max_wait_ms=10)
        with pytest.raises(RuntimeError, match="rows for"):
            await asyncio.gather(b.submit(1), b.submit(2))
        await b.stop()

    asyncio.run(main())


def test_direct_runner_runs_each_request_alone() -> None:
    sizes: list[int] = []

    def fn(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return xs

    async def main() -> None:
        d = DirectRunner(fn)
        await asyncio.gather(d.submit_many([1, 2]), d.submit_many([3]))

    asyncio.run(main())
    assert sorted(sizes) == [1, 2]


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda xs: xs, max_batch=0)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrent_batches_overlap_only_when_allowed(concurrency: int) -> None:
    """Two batches meet at a barrier inside ``fn``: only with two slots can both be running at once."""
    barrier = threading.Barrier(2, timeout=1.0)
    running = 0
    most = 0
    lock = threading.Lock()

    def fn(items: list[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            barrier.wait()
            return [i + 1 for i in items]
        except threading.BrokenBarrierError:
            return [-1 for _ in items]
        finally:
            with lock:
                running -= 1

    async def main() -> list[int]:
        b = MicroBatcher(fn, max_batch=2, max_wait_ms=0, executor=ThreadPoolExecutor(2), concurrency=concurrency)
        b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(4)))
        await b.stop()
        return list(out)

    out = asyncio.run(main())
    if concurrency == 2:
        assert out == [1, 2, 3, 4] and most == 2  # the batches met at the barrier
    else:
        assert most == 1 and -1 in out  # one batch at a time: the first waited alone and broke the barrier


def test_stop_cancels_inputs_of_running_batches() -> None:
    release = threading.Event()

    def fn(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    async def main() -> list[BaseException | int]:
        b = MicroBatcher(fn, max_batch=1, max_wait_ms=0, executor=ThreadPoolExecutor(2), concurrency=2)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        await asyncio.sleep(0.1)  # both batches are running
        await b.stop()
        release.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    out = asyncio.run(main())
    assert all(isinstance(o, asyncio.CancelledError) for o in out), out
