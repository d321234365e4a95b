"""The one webhook sender: signatures, retries with backoff, bounded queue, outcomes (a real
local HTTP server on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from raymlp._private.webhooks import (
    SIGNATURE_HEADER,
    Delivery,
    Outcome,
    WebhookSender,
    sign,
    verify_signature,
)


class _Server:
    """Answers POSTs with the queued statuses (then 200); ``gate`` holds every answer."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received: list[tuple[float, Any, bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((time.monotonic(), self.headers, body))
                outer.arrived.set()
                outer.gate.wait(10)
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made: list[_Server] = []

    def make(statuses=()):
        made.append(_Server(statuses))
        return made[-1]

    yield make
    for s in made:
        s.close()


def target(url, **kw):
    base = {"url": url, "secret_env": None, "timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.05}
    return SimpleNamespace(**{**base, **kw})


def test_sign_and_verify():
    body = b'{"a": 1}'
    sig = sign("k", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature("k", body, sig) and verify_signature(b"k", body, sig)
    assert not verify_signature("other", body, sig)
    assert not verify_signature("k", body + b" ", sig)
    assert not verify_signature("k", body, None)


def test_signed_delivery_retried_with_backoff_then_delivered(server):
    srv = server(statuses=[500, 429, 200])
    outcomes: list[Outcome] = []
    s = WebhookSender(
        target(srv.url, secret_env="HOOK_SECRET"),
        on_outcome=outcomes.append,
        env={"HOOK_SECRET": "s3cret"},
    )
    s.put(Delivery(b'{"x": 1}', {"Content-Type": "application/json", "X-Mine": "1"}, meta=7))
    assert s.wait_idle(10)
    assert len(srv.received) == 3
    times = [t for t, _, _ in srv.received]
    assert times[1] - times[0] >= 0.05 and times[2] - times[1] >= 0.1  # doubling backoff
    _, headers, body = srv.received[-1]
    assert body == b'{"x": 1}' and headers["X-Mine"] == "1"  # the caller's wire format
    assert verify_signature("s3cret", body, headers[SIGNATURE_HEADER])
    assert [(o.status, o.attempts, o.delivery.meta) for o in outcomes] == [("delivered", 3, 7)]
    s.close()


def test_gives_up_after_max_retries_and_at_once_on_client_errors(server):
    srv = server(statuses=[503] * 10)
    outcomes: list[Outcome] = []
    s = WebhookSender(target(srv.url, max_retries=2), on_outcome=outcomes.append)
    s.put(Delivery(b"{}"))
    assert s.wait_idle(10)
    assert len(srv.received) == 3
    bad = server(statuses=[404])
    s2 = WebhookSender(target(bad.url, max_retries=5), on_outcome=outcomes.append)
    s2.put(Delivery(b"{}"))
    assert s2.wait_idle(10)
    assert len(bad.received) == 1  # a 4xx will not get better
    assert [(o.status, o.attempts, o.reason) for o in outcomes] == [
        ("failed", 3, "HTTP 503"),
        ("failed", 1, "HTTP 404"),
    ]
    s.close()
    s2.close()


def test_missing_secret_fails_or_goes_unsigned_as_the_caller_chooses(server):
    srv = server()
    outcomes: list[Outcome] = []
    strict = WebhookSender(target(srv.url, secret_env="UNSET"), on_outcome=outcomes.append, env={})
    strict.put(Delivery(b"{}"))
    assert strict.wait_idle(5)
    assert srv.received == [] and outcomes[0].status == "failed" and outcomes[0].attempts == 0
    lax = WebhookSender(
        target(srv.url, secret_env="UNSET"),
        on_outcome=outcomes.append,
        env={},
        require_secret=False,
    )
    lax.put(Delivery(b"{}"))
    assert lax.wait_idle(5)
    assert len(srv.received) == 1 and SIGNATURE_HEADER not in srv.received[0][1]
    assert outcomes[1].status == "delivered"
    strict.close()
    lax.close()


@pytest.mark.parametrize(("overflow", "dropped"), [("oldest", [1]), ("newest", [3])])
def test_bounded_queue_drops_and_reports_overflow(server, overflow, dropped):
    srv = server()
    srv.gate.clear()  # the endpoint holds its answer: deliveries pile up
    outcomes: list[Outcome] = []
    s = WebhookSender(target(srv.url), on_outcome=outcomes.append, queue_size=2, overflow=overflow)
    s.put(Delivery(b"0", meta=0))
    assert srv.arrived.wait(5)  # delivery 0 is in flight, the queue is empty
    for i in (1, 2, 3):
        s.put(Delivery(str(i).encode(), meta=i))  # only two fit
    assert [o.delivery.meta for o in outcomes if o.status == "dropped"] == dropped
    assert not s.idle()
    srv.gate.set()
    assert s.wait_idle(10)
    sent = [int(b) for _, _, b in srv.received]
    assert sent == [i for i in range(4) if i not in dropped]  # in order
    assert sorted(o.delivery.meta for o in outcomes if o.status == "delivered") == sent
    s.close()


def test_close_with_drain_delivers_what_is_queued(server):
    srv = server()
    srv.gate.clear()
    outcomes: list[Outcome] = []
    s = WebhookSender(target(srv.url), on_outcome=outcomes.append)
    s.put(Delivery(b"0"))
    assert srv.arrived.wait(5)
    s.put(Delivery(b"1"))
    s.close(drain=True)
    srv.gate.set()
    s._thread.join(10)
    assert not s._thread.is_alive()
    assert [o.status for o in outcomes] == ["delivered", "delivered"]
