"""The durable webhook outbox: what is recorded, what a restart re-sends, compaction, and the
registry dispatcher's and the alert notifier's use of it (a real HTTP receiver on 127.0.0.1;
a "restart" is a new sender/dispatcher/notifier on the same storage root)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from raymlp._private.webhooks import (
    DELIVERY_HEADER,
    Delivery,
    Outbox,
    Outcome,
    WebhookSender,
)
from raymlp.config import AlertWebhook, RegistryWebhook
from raymlp.monitoring.notify import Notifier
from raymlp.registry.events import Event
from raymlp.registry.webhooks import WebhookDispatcher
from raymlp.storage import Storage
from tests._wait import wait_for


class _Receiver:
    """Answers 503 while ``down``, else 200; records (delivery id, body) of every POST."""

    def __init__(self) -> None:
        self.down = False
        self.posts: list[tuple[str | None, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.headers.get(DELIVERY_HEADER), body))
                self.send_response(503 if outer.down else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def delivered_ids(self) -> list[str | None]:
        return [i for i, _ in self.posts]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(str(tmp_path / "root"))


def _target(url: str, **kw: Any) -> SimpleNamespace:
    base = {"url": url, "secret_env": None, "timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.05}
    return SimpleNamespace(**{**base, **kw})


def _d(i: int) -> Delivery:
    return Delivery(body=f'{{"n": {i}}}'.encode(), headers={"X-Mine": str(i)}, meta=[i], id=f"d{i}")


def test_pending_is_queued_without_outcome_oldest_first_and_marks_keep_the_max(storage):
    ob = Outbox(storage, "x", "outbox")
    ob.queue([("http://a", _d(1)), ("http://b", _d(2))], marks={"seq": 5})
    ob.queue([("http://a", _d(3))], marks={"seq": 3})
    ob.finish([Outcome("delivered", _d(2), attempts=1), Outcome("failed", _d(9))])
    state = Outbox(storage, "x", "outbox").load()  # another process reads the same root
    assert [(p.target, p.delivery.id) for p in state.pending] == [("http://a", "d1"), ("http://a", "d3")]
    first = state.pending[0].delivery
    assert (first.body, first.headers, first.meta) == (b'{"n": 1}', {"X-Mine": "1"}, [1])
    assert state.marks == {"seq": 5}
    with pytest.raises(ValueError, match="needs an id"):
        ob.queue([("http://a", Delivery(b"{}"))])


def test_compaction_keeps_only_pending_and_bounds_the_segments(storage):
    ob = Outbox(storage, "o", compact_every=5)
    for i in range(40):
        ob.queue([("http://a", _d(i))], marks={"seq": i})
        if i % 2 == 0:
            ob.finish([Outcome("delivered", _d(i), attempts=1)])
    segments = [n for n in storage.listdir("o") if n.endswith(".jsonl")]
    assert ob.compactions >= 10 and len(segments) <= 5
    state = ob.load()
    assert [p.delivery.id for p in state.pending] == [f"d{i}" for i in range(1, 40, 2)]
    assert state.marks == {"seq": 39}
    ob.finish([Outcome("delivered", p.delivery) for p in state.pending])
    ob.compact()
    assert len(storage.listdir("o")) == 1  # the marks alone: they must outlive compaction
    assert ob.load().pending == [] and ob.load().marks == {"seq": 39}


def test_load_compacts_a_long_outbox_and_ignores_temp_files_and_torn_lines(storage):
    writer = Outbox(storage, "o", compact_every=1000)
    for i in range(30):
        writer.queue([("http://a", _d(i))])
    storage.write_bytes("o/00000000000000000001-zz-0.jsonl.tmp-abc", b"garbage")
    storage.write_bytes("o/00000000000000000002-zz-0.jsonl", b'{"op": "queued", "id"\n')
    reader = Outbox(storage, "o", compact_every=10)
    state = reader.load()
    assert len(state.pending) == 30 and reader.compactions == 1
    assert len([n for n in storage.listdir("o") if n.endswith(".jsonl")]) == 1


def test_a_restarted_sender_resends_what_had_no_outcome_with_the_same_id(storage, receiver):
    receiver.down = True
    ob = Outbox(storage, "o")
    outcomes: list[Outcome] = []
    s = WebhookSender(_target(receiver.url, max_retries=20, backoff_s=0.2), outbox=ob)
    for i in range(3):
        ob.queue([(receiver.url, _d(i))])
        s.put(_d(i))
    wait_for(lambda: receiver.posts, timeout=10, message="a first attempt")
    s.close()  # the process dies: the queue is gone, the outbox is not
    assert [p.delivery.id for p in Outbox(storage, "o").load().pending] == ["d0", "d1", "d2"]

    receiver.down = False
    ob2 = Outbox(storage, "o")
    s2 = WebhookSender(_target(receiver.url), outbox=ob2, on_outcome=outcomes.append)
    for p in ob2.load().pending:
        s2.put(p.delivery)
    assert s2.wait_idle(10)
    assert [o.status for o in outcomes] == ["delivered"] * 3
    ok = [i for i, _ in receiver.posts[-3:]]
    assert ok == ["d0", "d1", "d2"]  # the id of the first attempt, sent again
    assert set(receiver.delivered_ids()) == {"d0", "d1", "d2"}
    assert Outbox(storage, "o").load().pending == []  # outcomes recorded before idle
    s2.close()


def test_a_delivery_that_gave_up_is_not_resent(storage, receiver):
    receiver.down = True
    ob = Outbox(storage, "o")
    s = WebhookSender(_target(receiver.url, max_retries=1), outbox=ob)
    ob.queue([(receiver.url, _d(1))])
    s.put(_d(1))
    assert s.wait_idle(10) and len(receiver.posts) == 2
    s.close()
    assert Outbox(storage, "o").load().pending == []


def _event(seq: int, kind: str = "alias_moved") -> Event:
    return Event(
        kind=kind,
        entity="model:churn",
        principal="bob",
        tenant="default",
        payload={"name": "churn", "alias": "production", "after": seq},
        seq=seq,
    )


def test_dispatcher_resends_pending_and_catches_up_events_after_its_mark(storage, receiver):
    hook = RegistryWebhook(
        url=receiver.url, insecure=True, events=["alias_moved"], max_retries=20, backoff_s=0.2
    )
    log = [_event(i) for i in range(1, 11)]

    def after(seq: int) -> list[Event]:
        return [e for e in log if e.seq > seq]

    first = WebhookDispatcher([hook], env={})
    # a first start with an outbox: history (events 1-10) is not sent, only marked
    assert first.open_outbox(storage, 10, after) == {"requeued": 0, "caught_up": 0}
    assert first.wait_idle(10) and receiver.posts == []
    receiver.down = True
    log += [_event(11), _event(12, kind="model_registered"), _event(13)]
    first.publish(log[10:])  # 12 is not for this hook: it still moves the mark
    wait_for(lambda: receiver.posts, timeout=10, message="a first attempt")
    first.close()  # killed while the receiver is down
    log += [_event(14)]  # committed, but the process died before the outbox had it

    receiver.down = False
    second = WebhookDispatcher([hook], env={})
    got = second.open_outbox(storage, 14, after)
    assert got == {"requeued": 2, "caught_up": 1}
    assert second.wait_idle(10)
    assert set(receiver.delivered_ids()) == {"11-0", "13-0", "14-0"}
    assert second.snapshot()["delivered"] == 3
    second.close()
    third = WebhookDispatcher([hook], env={})
    assert third.open_outbox(storage, 14, after) == {"requeued": 0, "caught_up": 0}
    third.close()


def test_dispatcher_drops_pending_for_an_endpoint_no_longer_configured(storage, receiver):
    gone = RegistryWebhook(url="http://127.0.0.1:9/gone", insecure=True, backoff_s=5, max_retries=5)
    d = WebhookDispatcher([gone], env={})
    d.open_outbox(storage, 0, lambda seq: [])
    d.publish([_event(1)])
    wait_for(
        lambda: d.outbox is not None and d.outbox.segments_written >= 2,
        timeout=10,
        message="the delivery recorded",
    )
    d.close()
    other = WebhookDispatcher([RegistryWebhook(url=receiver.url, insecure=True)], env={})
    assert other.open_outbox(storage, 1, lambda seq: []) == {"requeued": 0, "caught_up": 0}
    assert other.outbox is not None and other.outbox.load().pending == []
    other.close()


def test_notifier_recovers_pending_alerts_once(storage, receiver):
    receiver.down = True
    hook = AlertWebhook(url=receiver.url, insecure=True, max_retries=20, backoff_s=0.2)
    ob = Outbox(storage, "monitoring", "webhook_outbox")
    n = Notifier([hook], outbox=ob, recover=True)
    t = {"id": "a1", "rule": "r", "severity": "critical", "transition": "firing", "ts": 1.0}
    n.notify(t)
    n.notify({**t, "transition": "resolved", "ts": 2.0})
    wait_for(lambda: receiver.posts, timeout=10, message="a first attempt")
    n.close()
    n._senders[0].close()  # killed: stop retrying now
    ids = {p.delivery.id for p in Outbox(storage, "monitoring", "webhook_outbox").load().pending}
    assert len(ids) == 2 and all(i.startswith("alert-") for i in ids)

    receiver.down = False
    ob2 = Outbox(storage, "monitoring", "webhook_outbox")
    n2 = Notifier([hook], outbox=ob2, recover=True)
    assert n2.requeued == 2 and n2.flush(10)
    assert {json.loads(b)["transition"] for i, b in receiver.posts if i in ids} == {
        "firing",
        "resolved",
    }
    assert ("webhook", "a1", "resolved") in n2.delivered
    n3 = Notifier([hook], outbox=ob2, recover=False)  # a notifier swapped in: re-sends nothing
    assert n3.requeued == 0
    assert ob2.load().pending == []
    n2.close()
    n3.close()
