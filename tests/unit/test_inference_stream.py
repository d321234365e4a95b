"""The streaming loop on real Delta tables: exactly one output per event across crashes.

The platform here only provides storage (no push views, so no feature store); the scorer is a
small deterministic implementation of the Scorer interface. The integration tests run the same
loop against the live platform (push, online features, registered model).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from raymlp.config import StreamPredictJobConfig
from raymlp.errors import ConflictError, ValidationError
from raymlp.inference import predictions_table as ptable
from raymlp.inference.stream import Scorer, Scores, StreamProcessor, app_id_for
from raymlp.storage import Storage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(ids: range) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{i}" for i in ids],
            "customer_id": [f"c{i % 4}" for i in ids],
            "event_timestamp": pa.array(
                [T0 + timedelta(minutes=i) for i in ids], pa.timestamp("us", tz="UTC")
            ),
            "calls": pa.array(list(ids), pa.int64()),
        }
    )


class CallsScorer(Scorer):
    """probability = calls / 100; raises once ``fail_after`` events were scored (a crash)."""

    kind = "test"

    def __init__(self, fail_after: int | None = None, failures: int = 1) -> None:
        self.scored = 0
        self.fail_after, self.failures = fail_after, failures

    def score(self, batch: pa.Table) -> Scores:
        if self.fail_after is not None and self.scored + batch.num_rows > self.fail_after:
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError("scorer crashed")
        self.scored += batch.num_rows
        calls = batch.column("calls").to_pylist()
        n = len(calls)
        probs = [c / 100 for c in calls]
        return Scores(
            probs, ["yes" if p >= 0.5 else "no" for p in probs], [1] * n, ["test"] * n, [None] * n
        )


@pytest.fixture
def env(tmp_path):
    src = str(tmp_path / "events")
    write_deltalake(src, events(range(0, 5)))  # round 1: versions 0, 1
    write_deltalake(src, events(range(5, 8)), mode="append")
    platform = SimpleNamespace(storage=Storage(str(tmp_path / "root")))
    cfg = StreamPredictJobConfig.model_validate(
        {
            "name": "test-stream",
            "source": {"path": src, "max_records": 4},
            "entity_keys": ["customer_id"],
            "event_id_column": "event_id",
            "passthrough_columns": ["calls"],
            "model": {"name": "m", "version": 1},
            "max_retries": 0,
            "poll_interval": "10ms",
        }
    )
    return SimpleNamespace(src=src, p=platform, cfg=cfg)


def output(env) -> pa.Table:
    return ptable.read(env.p.storage, env.cfg.output_table)


def counts(env) -> Counter:
    return Counter(output(env).column("event_id").to_pylist())


def proc(env, scorer=None, **kw) -> StreamProcessor:
    return StreamProcessor(env.p, env.cfg, scorer=scorer or CallsScorer(), say=lambda m: None, **kw)


def test_two_rounds_each_event_once(env):
    s = proc(env).run(until_idle=True)
    assert (s.batches, s.events, s.last_batch, s.offset) == (2, 8, 2, 1)
    write_deltalake(env.src, events(range(8, 11)), mode="append")  # round 2
    s = proc(env).run(until_idle=True)  # a new process resumes from the table
    assert (s.batches, s.events, s.offset) == (1, 3, 2)
    c = counts(env)
    assert c == Counter({f"e{i}": 1 for i in range(11)})
    t = output(env).sort_by("calls")
    assert t.column("probability").to_pylist() == [i / 100 for i in range(11)]
    assert set(t.column("route").to_pylist()) == {"test"}
    assert t.column("customer_id").to_pylist()[:4] == ["c0", "c1", "c2", "c3"]
    lineage = [h["lineage"] for h in ptable.history(env.p.storage, "test-stream") if h["lineage"]]
    assert [x["batch"] for x in lineage] == [3, 2, 1]
    assert lineage[0]["offset"] == 2 and lineage[0]["source"]["kind"] == "delta"


def test_crash_before_commit_reprocesses_without_duplicates(env):
    crashing = CallsScorer(fail_after=6)  # batch 1 (5 events) commits, batch 2 crashes
    with pytest.raises(RuntimeError):
        proc(env, crashing).run(until_idle=True)
    assert counts(env) == Counter({f"e{i}": 1 for i in range(5)})
    restarted = proc(env)
    assert (restarted.batch, restarted.offset) == (1, 0)
    restarted.run(until_idle=True)
    assert counts(env) == Counter({f"e{i}": 1 for i in range(8)})


def test_crash_after_commit_does_not_reprocess(env):
    class DiesAfterCommit(StreamProcessor):
        def _commit(self, out, batch, offset, lineage):
            version = super()._commit(out, batch, offset, lineage)
            raise SystemExit("killed right after the commit")
            return version  # pragma: no cover

    with pytest.raises(SystemExit):
        DiesAfterCommit(env.p, env.cfg, scorer=CallsScorer(), say=lambda m: None).run()
    assert sum(counts(env).values()) == 5
    scorer = CallsScorer()
    proc(env, scorer).run(until_idle=True)
    assert scorer.scored == 3  # only the second commit's events were scored again
    assert counts(env) == Counter({f"e{i}": 1 for i in range(8)})


def test_transient_failures_are_retried(env):
    env.cfg.max_retries = 1
    flaky = CallsScorer(fail_after=0, failures=1)
    summary = proc(env, flaky).run(until_idle=True)
    assert summary.events == 8 and counts(env) == Counter({f"e{i}": 1 for i in range(8)})


def test_fatal_errors_are_not_retried(env):
    env.cfg.max_retries = 5
    env.cfg.event_id_column = "no_such_column"
    with pytest.raises(ValidationError) as e:
        proc(env).run(until_idle=True)
    assert e.value.field == "event_id_column"
    assert ptable.open_table(env.p.storage, env.cfg.output_table) is None


def test_default_event_ids_come_from_the_source(env):
    env.cfg.event_id_column = None
    proc(env).run(until_idle=True)
    assert sorted(counts(env)) == sorted(
        [f"0:0:{i}" for i in range(5)] + ["1:0:0", "1:0:1", "1:0:2"]
    )


def test_a_second_instance_cannot_commit_the_same_batch(env):
    a, b = proc(env), proc(env)
    assert a.step() == 5
    with pytest.raises(ConflictError):
        b.step()  # it also believed batch 1 was next
    assert counts(env) == Counter({f"e{i}": 1 for i in range(5)})


def test_max_batches_and_stop(env):
    s = proc(env).run(max_batches=1)
    assert s.batches == 1 and sum(counts(env).values()) == 5
    stop = threading.Event()
    stop.set()
    assert proc(env).run(stop=stop).batches == 0
    batch, meta = ptable.app_version(env.p.storage, "test-stream", app_id_for("test-stream"))
    assert batch == 1 and meta["raymlp.offset"] == "0"
