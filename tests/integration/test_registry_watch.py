"""Subscribers: the event-fed alias cache, long-poll callbacks, resync, and signed webhooks."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import ray

from raymlp.config import PlatformConfig
from raymlp.errors import NotFoundError
from raymlp.registry.webhooks import SIGNATURE_HEADER, verify_signature
from tests._wait import wait_for

# Set at import (collection), i.e. before the session cluster starts, so the registry actor's
# worker process inherits it: that is where the webhook secret is read.
_SECRET_ENV = "RAYMLP_TEST_WEBHOOK_SECRET"
os.environ.setdefault(_SECRET_ENV, "s3cret-for-tests")

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    fail_first = 1

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.received.append((self.headers, body))
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    _Hook.received = []
    _Hook.fail_first = 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def platform_config(tmp_path, hook_server) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {
                "event_buffer": 10,
                "webhooks": [
                    {
                        "url": f"http://127.0.0.1:{hook_server.server_port}/hook",
                        "secret_env": _SECRET_ENV,
                        "events": ["alias_moved"],
                        "max_retries": 3,
                        "backoff_s": 0.05,
                    }
                ],
            },
        }
    )


def _setup(platform, tmp_path, n=3):
    art = tmp_path / "art"
    art.mkdir(exist_ok=True)
    (art / "w").write_text("w")
    for _ in range(n):
        platform.registry.register("churn", art, signature=SIG)


def test_alias_moves_reach_every_watcher_within_a_second(platform, tmp_path):
    _setup(platform, tmp_path)
    writer = platform.as_principal(principal="ci").registry
    w1 = platform.registry.watcher()
    gateway = platform.as_principal(principal="gateway").registry
    w2 = gateway.watcher()
    seen: list[dict] = []
    sub = platform.registry.subscribe(seen.append, kinds=["alias_moved"])
    try:
        with pytest.raises(NotFoundError):
            w1.resolve("churn", "canary")
        for v in (1, 2, 3, 1, 2):
            writer.set_alias("churn", "canary", v)  # returns once the move is committed
            wait_for(  # every watcher within a second
                lambda v=v: (
                    w1._aliases.get("churn", {}).get("canary") == v
                    and w2._aliases.get("churn", {}).get("canary") == v
                ),
                timeout=1.0,
                interval=0.002,
                message=f"both watchers to see canary -> {v}",
            )
            assert (
                w1.resolve("churn", "canary") == v == platform.registry.resolve("churn", "canary")
            )
        wait_for(
            lambda: len(seen) == 5, timeout=1.0, interval=0.002, message="5 alias_moved events"
        )
        assert [e["payload"]["after"] for e in seen] == [1, 2, 3, 1, 2]
        assert all(e["kind"] == "alias_moved" for e in seen)
        writer.delete_alias("churn", "canary")
        wait_for(
            lambda: "canary" not in w1.aliases("churn"),
            timeout=1.0,
            interval=0.002,
            message="the canary alias deleted",
        )
        # resolution from memory (its cost per call is measured by bench/registry.py)
        writer.set_alias("churn", "champion", 1)
        wait_for(
            lambda: w1.aliases("churn").get("champion") == 1,
            timeout=1.0,
            interval=0.002,
            message="champion -> 1",
        )
        assert all(w1.resolve("churn", "champion") == 1 for _ in range(10_000))
    finally:
        sub.stop()
        gateway.close()
        platform.registry.close()


def test_a_watcher_that_missed_events_resyncs(platform, tmp_path):
    _setup(platform, tmp_path)
    reg = platform.registry
    w = reg.watcher()
    events: list[dict] = []
    sub = reg.subscribe(events.append)
    reg.set_alias("churn", "canary", 1)
    wait_for(
        lambda: w._aliases.get("churn", {}).get("canary") == 1,
        timeout=1.0,
        interval=0.002,
        message="canary -> 1",
    )
    w.stop(wait=True)
    sub.stop(wait=True)
    for i in range(15):  # more than event_buffer (10): the gap cannot be served from memory
        reg.set_alias("churn", "canary", 1 + (i % 3))
    assert w.resolve("churn", "canary") == 1  # stale while partitioned, but still answering
    w.start()
    sub.start()
    wait_for(
        lambda: w.resyncs == 1 and w.resolve("churn", "canary") == 3,
        timeout=2.0,
        interval=0.002,
        message="one resync",
    )
    wait_for(
        lambda: any(e["kind"] == "resync" for e in events),
        timeout=2.0,
        interval=0.002,
        message="the resync event",
    )
    resync = next(e for e in events if e["kind"] == "resync")
    assert resync["aliases"]["churn"]["canary"] == 3
    reg.set_alias("churn", "canary", 2)  # and live again after the resync
    wait_for(
        lambda: w.resolve("churn", "canary") == 2,
        timeout=1.0,
        interval=0.002,
        message="canary -> 2 after the resync",
    )
    sub.stop()
    reg.close()


def test_watcher_keeps_answering_through_an_actor_restart(platform, tmp_path):
    _setup(platform, tmp_path)
    reg = platform.registry
    reg.set_alias("churn", "canary", 1)
    w = reg.watcher()
    assert w.resolve("churn", "canary") == 1
    handle = ray.get_actor("registry", namespace="raymlp")
    ray.kill(handle, no_restart=False)
    assert w.resolve("churn", "canary") == 1  # served from memory while the actor is down
    reg.set_alias("churn", "canary", 3)  # retried until the restarted actor takes it
    wait_for(
        lambda: w.resolve("churn", "canary") == 3,
        timeout=5.0,
        interval=0.002,
        message="canary -> 3 through the restart",
    )
    assert w.resyncs == 0  # the restarted actor replayed the log: the gap was served
    reg.close()


def test_webhooks_are_signed_and_retried(platform, tmp_path, hook_server):
    _setup(platform, tmp_path, n=2)
    platform.registry.set_alias("churn", "canary", 2)
    wait_for(
        lambda: len(_Hook.received) >= 2, timeout=10.0, interval=0.002, message="a 503 then a retry"
    )
    first, second = _Hook.received[0], _Hook.received[1]
    assert first[1] == second[1]
    headers, body = second
    event = json.loads(body)
    assert event["kind"] == "alias_moved" and event["payload"]["after"] == 2
    assert headers["X-RayMLP-Event"] == "alias_moved"
    assert verify_signature(os.environ[_SECRET_ENV], body, headers[SIGNATURE_HEADER])
    assert not verify_signature("wrong", body, headers[SIGNATURE_HEADER])
    stats = ray.get(ray.get_actor("registry", namespace="raymlp").stats.remote(platform.caller.wire()))
    assert stats["webhooks"]["delivered"] == 1 and stats["webhooks"]["attempts"] == 2
