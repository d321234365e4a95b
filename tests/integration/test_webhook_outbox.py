"""Webhook deliveries survive an actor restart: registry events and monitor alerts are queued
while the receiver answers 503, the actor is killed (Ray restarts it), the receiver comes back,
and every delivery recorded before the kill arrives — each id at least once, and a receiver
that de-duplicates by ``X-RayMLP-Delivery`` processes each exactly once."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import ray

from raymlp._private.webhooks import DELIVERY_HEADER, Outbox
from raymlp.config import PlatformConfig
from raymlp.registry.webhooks import SIGNATURE_HEADER, verify_signature
from tests._wait import wait_for

# Set at import (collection), i.e. before the session cluster starts, so the registry actor's
# worker process inherits it: that is where the webhook secret is read.
_SECRET_ENV = "RAYMLP_TEST_OUTBOX_SECRET"
os.environ.setdefault(_SECRET_ENV, "outbox-s3cret")


class _Receiver:
    """A webhook endpoint: 503 while ``down``; de-duplicates by delivery id like a real
    consumer should (``processed`` counts what it acted on, ``attempts`` every POST)."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: Counter[str] = Counter()
        self.processed: Counter[str] = Counter()
        self.bodies: dict[str, bytes] = {}
        self.bad_signatures = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                did = self.headers.get(DELIVERY_HEADER) or ""
                sig = self.headers.get(SIGNATURE_HEADER)
                with outer.lock:
                    outer.attempts[did] += 1
                    if outer.down:
                        code = 503
                    else:
                        code = 200
                        if sig is not None and not verify_signature(
                            os.environ[_SECRET_ENV], body, sig
                        ):
                            outer.bad_signatures += 1
                        if did not in outer.bodies:  # the dedupe: act once per id
                            outer.bodies[did] = body
                            outer.processed[did] += 1
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


@pytest.fixture
def platform_config(tmp_path, receiver) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {
                "webhooks": [
                    {
                        "url": receiver.url,
                        "secret_env": _SECRET_ENV,
                        "events": ["alias_moved"],
                        # retrying through the whole test: only a restart ends the attempts
                        "max_retries": 20,
                        "backoff_s": 0.2,
                    }
                ]
            },
        }
    )


def _pending(platform, *parts: str) -> set[str]:
    return {p.delivery.id or "" for p in Outbox(platform.storage, *parts).load().pending}


def _pending_at_least(platform, n: int, *parts: str) -> set[str] | None:
    ids = _pending(platform, *parts)
    return ids if len(ids) >= n else None


def _register(platform, tmp_path, model: str, versions: int = 1) -> None:
    art = tmp_path / f"art-{model}"
    art.mkdir(exist_ok=True)
    (art / "w").write_text("w")
    for _ in range(versions):
        platform.registry.register(model, art)


def test_registry_webhooks_queued_before_a_kill_arrive_after_the_restart(
    platform, tmp_path, receiver
):
    _register(platform, tmp_path, "churn", versions=3)
    for v in (1, 2, 3, 1):
        platform.registry.set_alias("churn", "canary", v)
    wait_for(lambda: receiver.attempts, timeout=30, message="a first (503) attempt")
    queued = wait_for(
        lambda: _pending_at_least(platform, 4, "registry", "webhook_outbox"),
        timeout=30,
        message="4 deliveries in the outbox",
    )
    assert not receiver.processed  # nothing got through before the kill

    ray.kill(ray.get_actor("registry", namespace="raymlp"), no_restart=False)
    receiver.down = False
    wait_for(
        lambda: set(receiver.processed) >= queued,
        timeout=60,
        interval=0.1,
        message="every queued delivery after the restart",
    )
    assert all(receiver.processed[i] == 1 for i in queued)  # the receiver acted once per id
    assert all(receiver.attempts[i] >= 1 for i in queued)
    assert receiver.bad_signatures == 0  # re-sent deliveries are signed like the first
    afters = sorted(json.loads(receiver.bodies[i])["payload"]["after"] for i in queued)
    assert afters == [1, 1, 2, 3]
    assert {json.loads(receiver.bodies[i])["kind"] for i in queued} == {"alias_moved"}
    wait_for(  # their outcomes are recorded: a later restart re-sends nothing
        lambda: not _pending(platform, "registry", "webhook_outbox"),
        timeout=30,
        message="an empty outbox",
    )
    # the restarted registry still delivers new events
    platform.registry.set_alias("churn", "canary", 2)
    wait_for(lambda: len(receiver.processed) == 5, timeout=30, message="a fifth delivery")


def _errors(n: int, model: str) -> list[dict]:
    return [
        {
            "request_id": uuid.uuid4().hex,
            "model": model,
            "version": 1,
            "route": "primary",
            "features": {"x": 1.0},
            "prediction": None,
            "probability": None,
            "latency_ms": 3.0,
            "error_code": "timeout",
        }
        for _ in range(n)
    ]


def test_alert_webhooks_queued_before_a_monitor_kill_arrive_after_the_restart(
    platform, tmp_path, receiver
):
    mon = platform.monitor
    models = ["m0", "m1", "m2"]
    for m in models:
        _register(platform, tmp_path, m)
    mon.apply_config(
        {
            "rules": [
                {
                    "name": "errors",
                    "metric": "error_rate",
                    "condition": ">=",
                    "threshold": 0.5,
                    "window": "1h",
                    "severity": "critical",
                    "min_count": 5,
                }
            ],
            "webhooks": [
                {"url": receiver.url, "insecure": True, "max_retries": 20, "backoff_s": 0.2}
            ],
        }
    )
    log = mon.logger(source="test", batch_size=50, flush_interval_s=0.05)
    for m in models:
        for r in _errors(20, m):
            assert log.log(r)
    assert log.flush(60)
    log.close()
    fired = [t for t in mon.evaluate()["transitions"] if t["transition"] == "firing"]
    fired += [  # the evaluation loop may have got there first
        a for a in mon.alerts("firing") if a["id"] not in {t["id"] for t in fired}
    ]
    assert {t["labels"]["model"] for t in fired} == set(models)
    mon.resolve_alert(fired[0]["id"])
    queued = wait_for(
        lambda: _pending_at_least(platform, 4, "monitoring", "webhook_outbox"),
        timeout=30,
        message="4 alert deliveries in the outbox",
    )
    wait_for(lambda: receiver.attempts, timeout=30, message="a first (503) attempt")
    assert not receiver.processed

    ray.kill(ray.get_actor("monitor", namespace="raymlp"), no_restart=False)
    receiver.down = False
    wait_for(
        lambda: set(receiver.processed) >= queued,
        timeout=60,
        interval=0.1,
        message="every queued alert delivery after the restart",
    )
    assert all(receiver.processed[i] == 1 for i in queued)
    bodies = [json.loads(receiver.bodies[i]) for i in queued]
    assert {b["type"] for b in bodies} == {"raymlp.alert"}
    seen = {(b["labels"]["model"], b["transition"]) for b in bodies}
    assert {(m, "firing") for m in models} <= seen
    assert (fired[0]["labels"]["model"], "resolved") in seen
    wait_for(
        lambda: not _pending(platform, "monitoring", "webhook_outbox"),
        timeout=30,
        message="an empty outbox",
    )
