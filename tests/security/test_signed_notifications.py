"""Threat: forged or unsigned notifications. Registry webhooks and monitor alert webhooks are
always HMAC-signed; an unsigned target must say ``insecure: true``, else the config is refused
(naming the field and the rule); a signed target whose secret is missing is never sent
unsigned. Attacked through the public surfaces: the YAML files a platform is started from, and
the senders the registry and the monitor deliver with."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from raymlp.config import (
    AlertWebhook,
    RegistryWebhook,
    load_monitoring_config,
    load_platform_config,
)
from raymlp.errors import ConfigError
from raymlp.monitoring.notify import Notifier
from raymlp.registry.events import Event
from raymlp.registry.webhooks import SIGNATURE_HEADER, WebhookDispatcher, verify_signature
from tests._wait import wait_for


class Receiver:
    """A local HTTP endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[Any, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.headers, body))  # case-insensitive
                self.send_response(200)
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
    r = Receiver()
    yield r
    r.close()


def _event(seq: int = 1) -> Event:
    return Event(
        kind="alias_moved",
        entity="model:churn",
        principal="bob",
        tenant="default",
        payload={"name": "churn", "alias": "production", "before": 1, "after": 2},
        seq=seq,
    )


def _alert() -> dict:
    return {"id": "a1", "transition": "firing", "severity": "critical", "summary": "drift"}


def test_an_unsigned_registry_webhook_in_platform_yaml_is_refused(tmp_path):
    path = tmp_path / "platform.yaml"
    path.write_text(
        f"storage: {{root: {tmp_path / 'root'}}}\n"
        "registry:\n  webhooks:\n    - {url: 'https://ci.example.com/hook'}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_platform_config(path)
    msg = str(e.value)
    assert "registry.webhooks" in msg and "secret_env" in msg and "insecure: true" in msg
    assert "rule: notifications are signed" in msg
    # the explicit opt-out is accepted, and so is a signed target
    path.write_text(
        f"storage: {{root: {tmp_path / 'root'}}}\n"
        "registry:\n  webhooks:\n"
        "    - {url: 'http://localhost:9000/dev', insecure: true}\n"
        "    - {url: 'https://ci.example.com/hook', secret_env: CI_HOOK_SECRET}\n"
    )
    hooks = load_platform_config(path).registry.webhooks
    assert [(h.insecure, h.secret_env) for h in hooks] == [(True, None), (False, "CI_HOOK_SECRET")]


def test_an_unsigned_alert_webhook_in_monitoring_yaml_is_refused(tmp_path):
    path = tmp_path / "monitoring.yaml"
    path.write_text("webhooks:\n  - {url: 'https://pager.example.com/a', min_severity: critical}\n")
    with pytest.raises(ConfigError) as e:
        load_monitoring_config(path)
    assert "webhooks" in str(e.value) and "secret_env" in str(e.value)
    assert "rule: notifications are signed" in str(e.value)


def test_a_target_cannot_be_both_signed_and_insecure():
    for cls in (RegistryWebhook, AlertWebhook):
        with pytest.raises(ValueError, match="one or the other"):
            cls(url="https://x.example.com", secret_env="S", insecure=True)


def test_registry_webhook_bodies_are_signed_and_never_sent_unsigned(receiver):
    signed = RegistryWebhook(url=receiver.url, secret_env="HOOK_SECRET", backoff_s=0.05)
    d = WebhookDispatcher([signed], env={"HOOK_SECRET": "s3cret"})
    d.publish([_event(1)])
    wait_for(lambda: len(receiver.received) == 1, timeout=10, message="one delivery")
    headers, body = receiver.received[0]
    assert verify_signature("s3cret", body, headers[SIGNATURE_HEADER])
    assert not verify_signature("guess", body, headers[SIGNATURE_HEADER])
    d.close()
    # the secret is missing in the sending process: the delivery fails, nothing goes out
    missing = WebhookDispatcher([signed], env={})
    missing.publish([_event(2)])
    assert missing.wait_idle(10)
    assert missing.snapshot()["failed"] == 1 and len(receiver.received) == 1
    missing.close()


def test_alert_webhook_bodies_are_signed_and_never_sent_unsigned(receiver, monkeypatch):
    monkeypatch.delenv("ALERT_SECRET", raising=False)
    hook = AlertWebhook(url=receiver.url, secret_env="ALERT_SECRET", backoff_s=0.05)
    outcomes: list[tuple[str, str]] = []
    n = Notifier([hook], on_outcome=lambda ch, out: outcomes.append((ch, out)))
    n.notify(_alert())
    wait_for(lambda: ("webhook", "failed") in outcomes, timeout=10, message="a failed delivery")
    assert receiver.received == []  # not sent unsigned
    monkeypatch.setenv("ALERT_SECRET", "pager-key")
    n.notify({**_alert(), "id": "a2"})
    wait_for(lambda: len(receiver.received) == 1, timeout=10, message="one delivery")
    headers, body = receiver.received[0]
    assert verify_signature("pager-key", body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["id"] == "a2"


def test_an_insecure_target_is_sent_unsigned_only_because_it_said_so(receiver):
    d = WebhookDispatcher([RegistryWebhook(url=receiver.url, insecure=True)], env={})
    d.publish([_event(3)])
    wait_for(lambda: len(receiver.received) == 1, timeout=10, message="one delivery")
    assert SIGNATURE_HEADER not in receiver.received[0][0]
    d.close()
