"""The micro-batcher: batches fill while the model is busy, a lone request waits at most the
timeout, errors reach every caller of their batch, a cancelled caller is skipped."""

from __future__ import annotations

import asyncio
import time

import pytest

from raymlp.serving.batcher import MicroBatcher


def test_batches_fill_while_the_model_is_busy():
    sizes: list[int] = []

    async def run(items):
        sizes.append(len(items))
        await asyncio.sleep(0.02)  # the model is busy: requests pile up meanwhile
        return [i * 2 for i in items]

    async def main():
        b = MicroBatcher(run, max_batch_size=16, batch_wait_timeout_s=0.001)

        async def client(k):  # 40 clients, each sending again as soon as it is answered
            return [await b(k * 100 + j) for j in range(5)]

        results = await asyncio.gather(*(client(k) for k in range(40)))
        b.close()
        return results

    results = asyncio.run(main())
    assert results == [[(k * 100 + j) * 2 for j in range(5)] for k in range(40)]
    assert sum(sizes) == 200 and max(sizes) == 16
    # Once saturated, batches are full: 200 requests in few more than 200 / 16 batches.
    assert len(sizes) <= 200 // 16 + 4, sizes


def test_a_lone_request_waits_at_most_the_timeout():
    async def run(items):
        return items

    async def main():
        b = MicroBatcher(run, max_batch_size=64, batch_wait_timeout_s=0.05)
        t = time.monotonic()
        assert await b("x") == "x"
        waited = time.monotonic() - t
        b.set_batch_wait_timeout_s(0.0)
        t = time.monotonic()
        assert await b("y") == "y"
        b.close()
        return waited, time.monotonic() - t

    waited, immediate = asyncio.run(main())
    assert 0.04 <= waited < 1.0 and immediate < 0.04


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs():
    calls = []

    async def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("model broke")
        return items

    async def main():
        b = MicroBatcher(run, max_batch_size=2, batch_wait_timeout_s=0.01)
        first = await asyncio.gather(b("bad"), b("ok"), return_exceptions=True)
        second = await b("later")
        b.close()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in first) and second == "later"


def test_a_cancelled_caller_is_skipped_and_close_cancels_the_queue():
    seen = []

    async def run(items):
        seen.extend(items)
        return items

    async def main():
        b = MicroBatcher(run, max_batch_size=8, batch_wait_timeout_s=0.05)
        gone = asyncio.ensure_future(b("gone"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await b("kept") == "kept"
        waiting = asyncio.ensure_future(
            MicroBatcher(run, max_batch_size=8, batch_wait_timeout_s=5)(0)
        )
        await asyncio.sleep(0.01)
        closing = MicroBatcher(run, max_batch_size=8, batch_wait_timeout_s=5)
        queued = asyncio.ensure_future(closing("q"))
        await asyncio.sleep(0.01)
        closing.close()
        with pytest.raises(asyncio.CancelledError):
            await queued
        waiting.cancel()

    asyncio.run(main())
    assert seen == ["kept"]
