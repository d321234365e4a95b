"""Alert delivery: log, registry sink and signed webhooks with retries (a real local HTTP
server), never blocking the caller."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from raymlp.config import AlertWebhook
from raymlp.monitoring.notify import SIGNATURE_HEADER, Notifier


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict, dict]] = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _server():
    srv = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _transition(severity="critical"):
    return {
        "id": "abc",
        "rule": "r",
        "severity": severity,
        "transition": "firing",
        "labels": {"model": "m"},
        "summary": "[critical] r",
        "ts": 1.0,
    }


def test_webhook_is_signed_retried_and_filtered_by_severity(monkeypatch):
    _Hook.received.clear()
    _Hook.fail_first = 2
    srv = _server()
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    outcomes = []
    hook = AlertWebhook(
        url=f"http://127.0.0.1:{srv.server_port}/a",
        secret_env="HOOK_SECRET",
        max_retries=3,
        min_severity="warning",
    )
    n = Notifier([hook], on_outcome=lambda ch, out: outcomes.append((ch, out)))
    n.notify(_transition("info"))  # below min_severity: logged only
    n.notify(_transition("critical"))
    assert n.flush(30)
    assert len(_Hook.received) == 1
    headers, body = _Hook.received[0]
    assert body["type"] == "raymlp.alert" and body["id"] == "abc"
    raw = json.dumps({"type": "raymlp.alert", **_transition()}, default=str).encode()
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == expected
    assert ("webhook", "ok") in outcomes and outcomes.count(("log", "ok")) == 2
    n.close()
    srv.shutdown()


def test_registry_sink_gets_transitions_and_failures_are_counted():
    got = []
    outcomes = []

    def sink(t):
        if t["id"] == "boom":
            raise RuntimeError("registry down")
        got.append(t["id"])

    n = Notifier(registry_sink=sink, on_outcome=lambda ch, out: outcomes.append((ch, out)))
    n.notify(_transition())
    n.notify({**_transition(), "id": "boom"})
    assert n.flush(10)
    assert got == ["abc"]
    assert ("registry", "ok") in outcomes and ("registry", "failed") in outcomes
    n.close()
