"""The prediction logger's node-local spool: what a killed process had accepted but not shipped
is claimed and shipped by another logger on the node; what was shipped leaves no file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from raymlp._private.log_spool import LogSpool
from raymlp._private.prediction_logger import PredictionLogger
from raymlp.config import PlatformConfig
from raymlp.serving._platform import ReplicaMonitor
from tests._wait import wait_for
from tests.unit.test_prediction_logger import Sink


def rec(i: int) -> dict:
    return {"request_id": f"r{i}", "model": "m", "version": 1, "latency_ms": 1.0}




def test_shipped_records_leave_no_spool_files(tmp_path):
    sink = Sink()
    spool = LogSpool(tmp_path, segment_records=7)
    log = PredictionLogger(send=sink, batch_size=5, flush_interval_s=0.02, spool=spool)
    for i in range(30):
        log.log(rec(i))
    log.feedback({"request_id": "r3", "label": 1})
    assert log.flush(5)
    assert sink.ids[:30] == [f"p:r{i}" for i in range(30)] and sink.ids[30] == "f:r3"
    wait_for(lambda: spool.files() == [], timeout=5, message="spool segments deleted")
    assert spool.written == 31 and log.stats()["spooled"]
    log.close()
    assert list(tmp_path.iterdir()) == []  # a clean close leaves nothing, not even the lock


def test_unshipped_records_stay_spooled_until_the_monitor_takes_them(tmp_path):
    sink = Sink()
    sink.fail = 3  # the monitor is restarting: three shipments fail
    spool = LogSpool(tmp_path, segment_records=4)
    log = PredictionLogger(send=sink, batch_size=100, flush_interval_s=0.02, spool=spool)
    for i in range(10):
        log.log(rec(i))
    lines = [json.loads(x) for p in spool.files() for x in p.read_text().splitlines()]
    assert [r["r"]["request_id"] for r in lines] == [f"r{i}" for i in range(10)]
    assert log.flush(10)
    assert sink.ids == [f"p:r{i}" for i in range(10)]  # retried, in order, once
    wait_for(lambda: spool.files() == [], timeout=5, message="spool segments deleted")
    log.close()


_CHILD = """
import os, signal, sys, threading
from raymlp._private.log_spool import LogSpool
from raymlp._private.prediction_logger import PredictionLogger
hang = threading.Event()
log = PredictionLogger(send=lambda *a: hang.wait(), batch_size=1000, flush_interval_s=30,
                       spool=LogSpool(sys.argv[1], segment_records=3))
for i in range(int(sys.argv[2])):
    assert log.log({"request_id": f"k{i}", "model": "m", "version": 1, "latency_ms": 1.0})
log.feedback({"request_id": "k0", "label": 1})
print("logged", flush=True)
signal.pause()
"""


def test_a_killed_process_records_are_shipped_by_another_logger(tmp_path):
    """A real SIGKILL of a process that accepted 8 records and shipped none: a logger started
    afterwards on the same spool ships all of them (and the feedback) once, then deletes the
    dead owner's files."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), "8"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout.readline().strip() == "logged"
        live = LogSpool(tmp_path)
        # its owner is alive: nothing is claimed
        assert list(live.claim_orphans()) == []
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        live.close()
    finally:
        child.kill()
    sink = Sink()
    log = PredictionLogger(send=sink, flush_interval_s=0.02, spool=LogSpool(tmp_path),
                           spool_scan_s=0.05)
    wait_for(lambda: len(sink.ids) == 9, timeout=10, message="the dead logger's records shipped")
    assert sorted(sink.ids) == sorted([f"p:k{i}" for i in range(8)] + ["f:k0"])
    assert log.stats()["recovered"] == 9
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_a_live_owner_is_never_claimed_and_a_torn_line_is_skipped(tmp_path):
    a = LogSpool(tmp_path, owner="a")
    a.append(1, "predictions", rec(1))
    b = LogSpool(tmp_path, owner="b")
    assert list(b.claim_orphans()) == []  # a holds its lock
    a.close(keep=True)  # a dies with a record not shipped ...
    seg = next(tmp_path.glob("a.*.jsonl"))
    with seg.open("ab") as f:
        f.write(b'{"k":"p","r":{"request_id"')  # ... and a line it never finished
    claimed = list(b.claim_orphans())
    assert [o.records for o in claimed] == [[("predictions", rec(1))]]
    assert list(tmp_path.glob("a.*.jsonl")), "kept until the consumer is done"
    claimed[0].done()
    assert not list(tmp_path.glob("a.*")) and b.claimed == 1
    b.close()


def test_an_orphan_not_done_is_claimed_again(tmp_path):
    a = LogSpool(tmp_path, owner="a")
    a.append(1, "predictions", rec(1))
    a.close(keep=True)
    b = LogSpool(tmp_path, owner="b")
    first = list(b.claim_orphans())  # handled without done(): e.g. no room in the buffer
    again = list(b.claim_orphans())
    assert [o.records for o in again] == [o.records for o in first] == [[("predictions", rec(1))]]
    again[0].done()
    assert list(b.claim_orphans()) == []
    b.close()


def test_orphans_that_do_not_fit_the_buffer_stay_for_a_later_scan(tmp_path):
    a = LogSpool(tmp_path, owner="a")
    for i in range(5):
        a.append(i + 1, "predictions", rec(i))
    a.close(keep=True)
    sink = Sink()
    log = PredictionLogger(send=sink, capacity=3, flush_interval_s=60, spool=LogSpool(tmp_path),
                           spool_scan_s=3600, start=False)
    log._claim_orphans()  # 5 records, room for 3: none queued, the files stay
    assert log.stats()["recovered"] == 0 and list(tmp_path.glob("a.*.jsonl"))
    log.capacity = 10
    log._claim_orphans()
    assert log.stats()["recovered"] == 5 and not list(tmp_path.glob("a.*"))
    log.close(timeout_s=0)


def test_an_unwritable_spool_directory_leaves_the_log_in_memory(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cfg = PlatformConfig.model_validate({"storage": {"root": str(tmp_path / "root")}})
    log = ReplicaMonitor(lambda *a: None, None, cfg).logger(
        capacity=10, flush_interval_s=60, spool=True, spool_dir=str(blocked)
    )
    try:
        assert log._spool is None  # memory only, and still logging
        assert log.log(rec(1))
    finally:
        log.close(timeout_s=0)


def test_each_platform_has_its_own_spool_directory(tmp_path):
    def spool_dir(root: str, ns: str = "raymlp") -> Path:
        cfg = PlatformConfig.model_validate({"storage": {"root": root}, "ray": {"namespace": ns}})
        return ReplicaMonitor(None, None, cfg).spool_dir(str(tmp_path))

    assert spool_dir("/a") == spool_dir("/a")
    assert len({spool_dir("/a"), spool_dir("/b"), spool_dir("/a", "other")}) == 3
    assert spool_dir("/a").parent == tmp_path
