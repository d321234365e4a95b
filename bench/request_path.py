"""Request-path costs of the side channels that must never make a caller wait (no Ray, seconds).

    python -m bench.request_path [--quick]

The unit tests prove these paths do not *wait* (causally: the caller returns while the slow
side is still held); this bench measures how long the caller's part takes:

1. **Fallback under a primary timeout** (``raymlp.serving.chain.run_chain``): a primary that
   never answers, a 100 ms step budget, a fast fallback. Anchor: the budget itself; the ratio
   (budget / p50) is 1.0 when the chain adds nothing to it. Goal: p99 < 1 s.
2. **Shadow start** (``ShadowRunner.start``) with a shadow that is still running: p99 < 50 ms.
3. **Prediction log** (``PredictionLogger.log``) while the monitor hangs and the buffer is full:
   100 calls < 0.5 s.
4. **Webhook publish** (``WebhookDispatcher.publish`` of 3 events) with one endpoint that takes
   0.5 s to answer: p99 < 50 ms.

Last line: ``{"bench": "request_path", "ours": p50 ms of (1), "anchor": the budget in ms,
"ratio": anchor/ours, "unit": "ms", "goals": {...}, ...}``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench._common import emit, parser, percentiles

PRIMARY_TIMEOUT_S = 0.1
SLOW_ENDPOINT_S = 0.5


def chain_fallback(n: int) -> list[float]:
    from raymlp.config import DefaultResponse, ServeBreakerSettings
    from raymlp.serving.breaker import BreakerBoard
    from raymlp.serving.chain import Step, run_chain

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def fallback() -> dict[str, Any]:
        return {"prediction": "no", "probability": 0.3}

    steps = [
        Step("primary", "m:1", never, PRIMARY_TIMEOUT_S, "1", 1),
        Step("fallback", "fb:1", fallback, PRIMARY_TIMEOUT_S, "fb:1", None),
    ]
    default = DefaultResponse(prediction="no", probability=0.5)

    async def main() -> list[float]:
        out = []
        for _ in range(n):
            # a fresh board per call: an open breaker would skip the primary (and its timeout)
            board = BreakerBoard(ServeBreakerSettings(consecutive_failures=2, min_calls=100))
            t = time.perf_counter()
            ans = await run_chain(steps, board, [], {}, default)
            out.append(time.perf_counter() - t)
            if ans.route != "fallback":
                raise RuntimeError(f"expected the fallback route, got {ans.route!r}")
        return out

    return asyncio.run(main())


def shadow_start(n: int) -> list[float]:
    from raymlp.config import ServeShadowSettings
    from raymlp.serving.shadow import ShadowRunner

    async def main() -> list[float]:
        runner = ShadowRunner(ServeShadowSettings(timeout_s=2))
        out = []
        for i in range(n):
            gate = asyncio.Event()

            async def slow_shadow(gate: asyncio.Event = gate) -> dict[str, Any]:
                await gate.wait()
                return {"prediction": "a", "probability": 0.4}

            live = asyncio.get_running_loop().create_future()
            t = time.perf_counter()
            runner.start("m", 1, slow_shadow, live, {"request_id": f"r{i}", "model": "m"})
            live.set_result({"prediction": "a", "probability": 0.5})
            out.append(time.perf_counter() - t)
            gate.set()
            await runner.drain()
        return out

    return asyncio.run(main())


def prediction_log(rounds: int) -> list[float]:
    """Seconds per round of 100 ``log`` calls while the monitor hangs."""
    from raymlp.client import PredictionLogger

    out = []
    for _ in range(rounds):
        gate = threading.Event()

        def hung_monitor(kind: str, records: list[dict], dropped: int, gate=gate) -> None:
            gate.wait(10)

        log = PredictionLogger(send=hung_monitor, capacity=20, batch_size=5, flush_interval_s=0.01)
        t = time.perf_counter()
        for i in range(100):
            log.log({"request_id": f"r{i}", "model": "m", "version": 1, "latency_ms": 1.0})
        out.append(time.perf_counter() - t)
        gate.set()
        log.close()
    return out


class _Endpoint:
    """A webhook receiver on loopback that takes ``delay_s`` to answer each POST."""

    def __init__(self, delay_s: float) -> None:
        delay = delay_s

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def webhook_publish(n: int) -> list[float]:
    from raymlp.config import RegistryWebhook
    from raymlp.registry.events import Event
    from raymlp.registry.webhooks import WebhookDispatcher

    slow, fast = _Endpoint(SLOW_ENDPOINT_S), _Endpoint(0.0)
    hooks = [
        RegistryWebhook.model_validate({"url": slow.url, "timeout_s": 5, "backoff_s": 0.05}),
        RegistryWebhook.model_validate({"url": fast.url, "backoff_s": 0.05}),
    ]
    d = WebhookDispatcher(hooks)
    out = []
    seq = 0
    try:
        for _ in range(n):
            events = []
            for _ in range(3):
                seq += 1
                events.append(
                    Event(
                        kind="alias_moved",
                        entity="model:churn",
                        principal="bench",
                        tenant="default",
                        payload={"name": "churn", "alias": "production", "before": 1, "after": 2},
                        seq=seq,
                    )
                )
            t = time.perf_counter()
            d.publish(events)
            out.append(time.perf_counter() - t)
    finally:
        d.close()
        slow.close()
        fast.close()
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n = 30 if args.quick else 200

    print(f"1. fallback under a {PRIMARY_TIMEOUT_S * 1000:.0f} ms primary timeout", flush=True)
    chain = percentiles(chain_fallback(n))
    print(f"   {chain}", flush=True)
    print("2. shadow start with a running shadow", flush=True)
    shadow = percentiles(shadow_start(n * 10))
    print(f"   {shadow}", flush=True)
    print("3. 100 prediction-log calls while the monitor hangs", flush=True)
    plog = percentiles(prediction_log(max(5, n // 5)))
    print(f"   {plog}", flush=True)
    print(f"4. webhook publish with a {SLOW_ENDPOINT_S} s endpoint", flush=True)
    hook = percentiles(webhook_publish(max(5, n // 5)))
    print(f"   {hook}", flush=True)

    budget_ms = PRIMARY_TIMEOUT_S * 1000
    emit(
        {
            "bench": "request_path",
            "unit": "ms",
            "quick": bool(args.quick),
            "ours": chain["p50_ms"],
            "anchor": budget_ms,
            "ratio": budget_ms / chain["p50_ms"],
            "chain_fallback": chain,
            "shadow_start": shadow,
            "prediction_log_100_calls": plog,
            "webhook_publish": hook,
            # the thresholds the unit tests used to assert, now measured here
            "goals": {
                "chain_fallback_p99_ms<1000": chain["p99_ms"] < 1000,
                "shadow_start_p99_ms<50": shadow["p99_ms"] < 50,
                "prediction_log_100_calls_p99_ms<500": plog["p99_ms"] < 500,
                "webhook_publish_p99_ms<50": hook["p99_ms"] < 50,
            },
        }
    )


if __name__ == "__main__":
    main()
