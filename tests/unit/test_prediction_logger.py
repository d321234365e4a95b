"""The client-side PredictionLogger: bounded, non-blocking, counted overflow, retries."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from raymlp.client._monitor import PredictionLogger, parse_time
from raymlp.errors import UnavailableError, ValidationError
from raymlp.monitoring.logtable import RecentKeys


def rec(i: int) -> dict:
    return {"request_id": f"r{i}", "model": "m", "version": 1, "latency_ms": 1.0}


class Sink:
    """Collects what the logger ships; can be blocked or made to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[dict], int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = 0

    def __call__(self, kind, records, dropped):
        self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise UnavailableError("monitor restarting", actor="monitor")
        self.batches.append((kind, list(records), dropped))

    @property
    def predictions(self) -> list[str]:
        return [r["request_id"] for k, b, _ in self.batches if k == "predictions" for r in b]

    @property
    def ids(self) -> list[str]:
        """``p:<id>`` / ``f:<id>`` of everything shipped, in order."""
        return [f"{k[0]}:{r['request_id']}" for k, b, _ in self.batches for r in b]


def test_batches_ship_in_order_and_flush_waits():
    sink = Sink()
    log = PredictionLogger(send=sink, batch_size=10, flush_interval_s=0.05)
    for i in range(35):
        assert log.log(rec(i))
    assert log.feedback({"request_id": "r3", "label": 1})
    assert log.flush(5)
    assert sink.predictions == [f"r{i}" for i in range(35)]
    assert max(len(b) for _, b, _ in sink.batches) <= 10
    assert [b for k, b, _ in sink.batches if k == "feedback"][0][0]["label"] == 1
    s = log.stats()
    assert s["sent"] == 36 and s["dropped"] == 0 and s["queued"] == 0
    log.close()


def test_full_buffer_drops_counts_and_never_blocks():
    sink = Sink()
    sink.gate.clear()  # the monitor hangs
    log = PredictionLogger(send=sink, capacity=20, batch_size=5, flush_interval_s=0.01)
    accepted = sum(log.log(rec(i)) for i in range(100))
    # the request path never waits for the monitor: every call returned while it still hangs
    # (the cost of a call is measured by bench/request_path.py)
    assert sink.batches == [] and not sink.gate.is_set()
    assert accepted <= 25 and log.stats()["dropped"] == 100 - accepted
    sink.gate.set()
    assert log.flush(5)
    # the drop count travels to the monitor with the next batch (raymlp_..._dropped_total)
    assert sum(d for _, _, d in sink.batches) == 100 - accepted
    log.close()


def test_failed_shipments_are_retried_without_loss():
    sink = Sink()
    sink.fail = 3
    log = PredictionLogger(send=sink, batch_size=4, flush_interval_s=0.01)
    for i in range(10):
        log.log(rec(i))
    assert log.flush(10)
    assert sink.predictions == [f"r{i}" for i in range(10)]
    assert log.stats()["failed_batches"] == 3 and log.stats()["dropped"] == 0
    log.close()


def test_invalid_records_are_rejected_and_counted_not_raised():
    sink = Sink()
    log = PredictionLogger(send=sink, flush_interval_s=0.01)
    assert log.log({"request_id": "r", "model": "m", "route": "nowhere"}) is False
    assert log.feedback({"request_id": "r"}) is False
    assert log.stats()["rejected"] == 2
    log.close()


def test_close_ships_what_is_queued_then_refuses():
    sink = Sink()
    log = PredictionLogger(send=sink, batch_size=100, flush_interval_s=10)
    for i in range(7):
        log.log(rec(i))
    assert log.close(5)
    assert len(sink.predictions) == 7
    assert log.log(rec(99)) is False and log.stats()["dropped"] == 1


def test_parse_time_forms():
    now = 1000.0
    assert parse_time("15m", now) == 100.0
    assert parse_time(5, now) == 5.0
    assert parse_time(None, now) is None
    assert parse_time("1970-01-01T00:01:00Z", now) == 60.0
    with pytest.raises(ValidationError, match="duration"):
        parse_time("last tuesday", now)


class _TimedOutMonitor:
    """The monitor actor's drop bookkeeping (the real ``MonitorActor._report_dropped`` on a
    stub, no Ray) behind a link whose first answers are lost: the monitor did the work, the
    logger saw a timeout and re-sends."""

    def __init__(self, lost_answers: int) -> None:
        from actors.monitor import MonitorActor

        self.lost_answers = lost_answers
        self.calls: list[tuple[int, str | None]] = []
        self.counted: list[int] = []
        self.appended: list[dict] = []
        self.stub = SimpleNamespace(
            _drops_lock=threading.Lock(),
            _lock=threading.RLock(),
            _seen_drops=RecentKeys(100),
            events=SimpleNamespace(append=lambda evs: self.appended.extend(p for _, _, p in evs)),
            core=SimpleNamespace(note_dropped=lambda src, n, now: self.counted.append(n)),
        )
        self.report = MonitorActor._report_dropped

    def remote(self, method, cred, records, source, dropped=0, drop_id=None):
        return (method, records, source, dropped, drop_id)

    def call(self, ref, timeout=None, actor=None):
        method, records, source, dropped, drop_id = ref
        assert method == "log_predictions"
        self.calls.append((dropped, drop_id))
        if dropped:
            self.report(self.stub, source, dropped, drop_id)
        if self.lost_answers:
            self.lost_answers -= 1
            raise UnavailableError("monitor call timed out", actor="monitor")


def test_a_drop_report_resent_after_a_timeout_is_counted_once(monkeypatch):
    from raymlp._private import prediction_logger

    monitor = _TimedOutMonitor(lost_answers=2)
    monkeypatch.setattr(prediction_logger, "call", monitor.call)
    log = PredictionLogger(monitor, capacity=3, batch_size=10, flush_interval_s=0.01, start=False)
    accepted = [log.log(rec(i)) for i in range(5)]
    assert accepted == [True] * 3 + [False] * 2  # two dropped on the full buffer
    log.start()
    assert log.flush(10)
    # the report was sent three times (two answers lost), always as the same report...
    assert len(monitor.calls) == 3 and len({c for c in monitor.calls}) == 1
    assert monitor.calls[0][0] == 2 and monitor.calls[0][1] is not None
    # ...and counted once
    assert monitor.counted == [2] and len(monitor.appended) == 1
    assert monitor.appended[0]["drop_id"] == monitor.calls[0][1]
    # what is dropped later is a new report, with a new id
    log.close()
    assert log.log(rec(9)) is False  # closed: dropped and counted
    log.start()
    assert log.flush(10)
    assert monitor.counted == [2, 1] and monitor.calls[-1][1] != monitor.calls[0][1]
    log.close()
