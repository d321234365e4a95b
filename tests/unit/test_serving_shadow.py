"""Shadow traffic: started beside the live call, never awaited by it, bounded, compared."""

from __future__ import annotations

import asyncio

from raymlp.config import ServeShadowSettings
from raymlp.serving.shadow import ShadowRunner


def test_shadow_never_delays_the_caller_and_is_compared_later():
    records = []

    async def main():
        runner = ShadowRunner(ServeShadowSettings(timeout_s=2), report=records.append)

        gate = asyncio.Event()

        async def slow_shadow():
            await gate.wait()
            return {"prediction": "a", "probability": 0.4}

        live = asyncio.get_running_loop().create_future()
        assert runner.start("m", 5, slow_shadow, live, {"request_id": "r1", "model": "m"})
        live.set_result({"prediction": "a", "probability": 0.5})
        # the request path returned while the shadow is still running (the cost of start():
        # bench/request_path.py)
        await asyncio.sleep(0)  # let the shadow task start and block on the gate
        assert records == [] and runner.stats("m")["compared"] == 0
        gate.set()
        await runner.drain()
        return runner.stats("m")

    stats = asyncio.run(main())
    assert stats["compared"] == 1 and stats["agreement"] == 1.0
    assert abs(stats["mean_abs_diff"] - 0.1) < 1e-9
    assert records and records[0]["route"] == "shadow" and records[0]["version"] == 5
    assert records[0]["status"] == "ok"


def test_failures_are_recorded_and_inflight_is_bounded():
    records = []

    async def main():
        runner = ShadowRunner(
            ServeShadowSettings(max_inflight=2, timeout_s=0.2), report=records.append
        )
        gate = asyncio.Event()

        async def stuck():
            await gate.wait()
            return {"prediction": "x", "probability": 0.1}

        async def broken():
            raise RuntimeError("shadow model down")

        live = asyncio.get_running_loop().create_future()
        live.set_result({"prediction": "y", "probability": 0.9})
        started = [runner.start("m", 2, stuck, live, {"request_id": f"r{i}"}) for i in range(5)]
        assert started == [True, True, False, False, False]
        await runner.drain()
        runner.start("m", 2, broken, live, {"request_id": "rb"})
        await runner.drain()
        return runner.stats("m")

    stats = asyncio.run(main())
    assert stats["skipped"] == 3 and stats["failed"] == 3  # 2 timeouts + 1 error
    assert {r["error_code"] for r in records} == {"timeout", "RuntimeError"}


def test_sampling_and_version_change_reset():
    async def main():
        runner = ShadowRunner(ServeShadowSettings(sample_percent=0))
        live = asyncio.get_running_loop().create_future()

        async def never():
            raise AssertionError("not sampled")

        assert not runner.start("m", 1, never, live, {})
        assert runner.stats("m")["started"] == 0

    asyncio.run(main())
