"""Webhook delivery: HMAC signatures, retries with backoff, filters, never blocking."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raymlp.config import RegistryWebhook
from raymlp.registry.events import Event
from raymlp.registry.webhooks import SIGNATURE_HEADER, WebhookDispatcher, sign, verify_signature
from tests._wait import wait_for


class _Server:
    def __init__(self, statuses, delay_s=0.0):
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.received: list = []
        self.answered: list = []  # requests whose response has been sent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((time.monotonic(), self.headers, body))
                time.sleep(outer.delay_s)
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.end_headers()
                outer.answered.append(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(statuses=(), delay_s=0.0):
        s = _Server(statuses, delay_s)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _ev(seq, kind="alias_moved", model="churn"):
    return Event(
        kind=kind,
        entity=f"model:{model}",
        principal="alice",
        tenant="default",
        payload={"name": model, "alias": "production", "before": 1, "after": 2},
        seq=seq,
    )


def _hook(url, **kw):
    signing = {} if "secret_env" in kw else {"insecure": True}
    return RegistryWebhook.model_validate({"url": url, "backoff_s": 0.05, **signing, **kw})


def test_sign_and_verify():
    body = b'{"kind":"alias_moved"}'
    sig = sign("s3cret", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature("s3cret", body, sig)
    assert verify_signature(b"s3cret", body, sig)
    assert not verify_signature("other", body, sig)
    assert not verify_signature("s3cret", body + b" ", sig)
    assert not verify_signature("s3cret", body, None)


def test_signed_delivery_retried_with_backoff(server_factory):
    srv = server_factory(statuses=[500, 503, 200])
    d = WebhookDispatcher(
        [_hook(srv.url, secret_env="HOOK_SECRET", max_retries=3)], env={"HOOK_SECRET": "k"}
    )
    d.publish([_ev(7)])
    assert d.wait_idle(10)
    assert len(srv.received) == 3
    times = [t for t, _, _ in srv.received]
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # doubling backoff
    _, headers, body = srv.received[-1]
    assert verify_signature("k", body, headers[SIGNATURE_HEADER])
    assert headers["X-RayMLP-Delivery"] == "7-0"
    assert json.loads(body)["payload"]["after"] == 2
    assert d.snapshot() == {"attempts": 3, "delivered": 1, "failed": 0, "dropped": 0}
    d.close()


def test_gives_up_after_max_retries_and_on_client_errors(server_factory):
    srv = server_factory(statuses=[500] * 10)
    d = WebhookDispatcher([_hook(srv.url, max_retries=2)])
    d.publish([_ev(1)])
    assert d.wait_idle(10)
    assert len(srv.received) == 3 and d.snapshot()["failed"] == 1
    bad = server_factory(statuses=[404])
    d2 = WebhookDispatcher([_hook(bad.url, max_retries=5)])
    d2.publish([_ev(1)])
    assert d2.wait_idle(10)
    assert len(bad.received) == 1 and d2.snapshot()["failed"] == 1  # 4xx: no retry
    d.close()
    d2.close()


def test_missing_secret_is_not_sent_unsigned(server_factory):
    srv = server_factory()
    d = WebhookDispatcher([_hook(srv.url, secret_env="NOT_SET_ANYWHERE")], env={})
    d.publish([_ev(1)])
    assert d.wait_idle(5)
    assert srv.received == [] and d.snapshot()["failed"] == 1
    d.close()


def test_filters_by_kind_and_model(server_factory):
    srv = server_factory()
    d = WebhookDispatcher([_hook(srv.url, events=["alias_moved"], models=["churn"])])
    d.publish([_ev(1), _ev(2, kind="version_registered"), _ev(3, model="other"), _ev(4)])
    assert d.wait_idle(5)
    assert [json.loads(b)["seq"] for _, _, b in srv.received] == [1, 4]  # in order
    d.close()


def test_publish_never_blocks_on_a_slow_endpoint(server_factory):
    slow = server_factory(delay_s=0.5)
    fast = server_factory()
    d = WebhookDispatcher([_hook(slow.url, timeout_s=5), _hook(fast.url)])
    d.publish([_ev(i) for i in range(1, 4)])
    # publish returned before the slow endpoint answered anything: it did not wait for it
    # (how long publish takes is measured by bench/request_path.py)
    assert slow.answered == []
    wait_for(lambda: len(fast.received) >= 3, timeout=2, interval=0.01, message="3 fast deliveries")
    assert len(fast.received) == 3 and len(slow.received) <= 2  # one endpoint cannot stall another
    d.close()


def test_webhook_config_is_validated():
    from raymlp.config import PlatformConfig, load_config
    from raymlp.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(PlatformConfig, {"registry": {"webhooks": [{"url": "ftp://x"}]}}, "p.yaml")
    assert "registry.webhooks.0.url" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(
            PlatformConfig,
            {"registry": {"webhooks": [{"url": "http://x", "secret_env": "A-B"}]}},
            "p.yaml",
        )
    assert "secret_env" in str(e.value)
