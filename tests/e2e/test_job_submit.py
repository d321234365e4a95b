"""`ray job submit --working-dir . -- python -m jobs.<name>` against `ray start --head`: every
job of `jobs/` submitted the way a user does, waited for, and its result checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from deltalake import DeltaTable

from tests.e2e.conftest import BIN, REPO, HeadNode

pytestmark = pytest.mark.slow

EXCLUDES = [".venv", ".git", ".gpu", ".gpu-delta", ".raymlp", "data", "**/__pycache__",
            ".pytest_cache", ".ruff_cache", ".hypothesis", "bench/.venv-*"]


def submit(head: HeadNode, *entrypoint: str, timeout_s: float = 400) -> str:
    """Submit a job, poll until it ends; returns its logs (asserts SUCCEEDED)."""
    job_id = f"raymlp-test-{uuid.uuid4().hex[:8]}"
    sub = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--no-wait",
         "--submission-id", job_id,
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
         "--", *entrypoint],
        env=head.env, text=True, capture_output=True, timeout=300, cwd=REPO,
    )
    assert sub.returncode == 0, sub.stderr + sub.stdout
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        st = subprocess.run([str(BIN / "ray"), "job", "status", "--address", head.dashboard,
                             job_id], env=head.env, text=True, capture_output=True, timeout=60)
        status = st.stdout + st.stderr
        # `ray job status` prints "Job '<id>' succeeded|failed|was stopped" once it has ended.
        if any(f"' {word}" in status for word in ("succeeded", "failed", "was stopped")):
            break
        time.sleep(1)  # polling interval of an external process; not a synchronisation sleep
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", head.dashboard, job_id],
                          env=head.env, text=True, capture_output=True, timeout=60)
    logs = logs.stdout + logs.stderr
    assert f"Job '{job_id}' succeeded" in status, f"{status}\n{logs[-3000:]}"
    return logs


def test_ingest_and_materialize_jobs_under_ray_job_submit(head_node, tmp_path):
    data = tmp_path / "data"
    gen = subprocess.run([sys.executable, "-m", "raymlp.training.synthetic", "--out", str(data),
                          "--customers", "200", "--months", "2"],
                         text=True, capture_output=True, timeout=120, cwd=REPO)
    assert gen.returncode == 0, gen.stderr
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text(
        f"features: configs/features/churn.yaml\n"
        f"sources:\n"
        f"  - {{view: customer_profile, path: {data / 'customer_profile.parquet'}}}\n"
        f"  - {{view: customer_usage, path: {data / 'customer_usage.parquet'}}}\n"
        f"materialize: true\n"
    )
    logs = submit(head_node, "python", "-m", "jobs.ingest", "--config", str(cfg))
    assert "ingest: done" in logs
    assert "materialized customer_profile: 200 rows" in logs

    # The job wrote under the platform's storage root, not the job's temp working dir.
    table = DeltaTable(str(head_node.root / "features" / "customer_profile"))
    assert table.to_pyarrow_table().num_rows == 400

    logs = submit(head_node, "python", "-m", "jobs.materialize")
    assert "materialize: done" in logs
    assert "materialized customer_profile: 0 rows" in logs  # incremental: nothing new


def last_json(logs: str) -> dict:
    """The job's last line that is a JSON object (its summary)."""
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise AssertionError(f"no JSON summary in the job's logs:\n{logs[-3000:]}")


TINY = ["--set", "tune.num_samples=1", "--set", "tune.max_concurrent_trials=1",
        "--set", "training.epochs=1", "--set", "scaling.num_workers=1", "--set", "fallback.epochs=1"]


@pytest.fixture(scope="module")
def quickstart(head_node) -> dict:
    """`jobs.quickstart` once: data, features, a trained + promoted model, the churn app."""
    logs = submit(head_node, "python", "-m", "jobs.quickstart", "--customers", "300",
                  "--months", "2", "--set", "training.epochs=1", "--approver", "e2e-approver",
                  timeout_s=900)
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert f"quickstart: {stage}" in logs, logs[-3000:]
    return last_json(logs)


def test_quickstart_job_trains_serves_and_scores(head_node, quickstart):
    s = quickstart
    assert s["version"] >= 1 and s["production_version"] == s["version"]
    assert s["promotion"]["status"] == "pending" and s["approved_by"] == "e2e-approver"
    assert s["predictions"] == 4
    labels = head_node.root / "quickstart" / "data" / "labels.parquet"
    assert labels.exists()
    import pyarrow.parquet as pq

    n_labels = pq.read_metadata(labels).num_rows
    assert s["scored_rows"] == n_labels == 600
    scores = DeltaTable(str(head_node.root / "predictions" / "quickstart_scores"))
    table = scores.to_pyarrow_table()
    assert table.num_rows == n_labels
    assert set(table.column("model_version").to_pylist()) == {s["version"]}

    # The Serve HTTP endpoint the job printed answers real requests by entity, each from that
    # entity's (fresh) online features.
    probabilities = set()
    for cid in ("c000001", "c000002", "c000003"):
        r = httpx.post(f"{s['url']}/v1/predictions", timeout=30,
                       json={"model_id": "customer-churn", "entity": {"customer_id": cid}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0.0 <= body["probability"] <= 1.0 and body["route"] == "primary"
        assert str(body["model_version"]) == str(s["version"])
        probabilities.add(round(body["probability"], 6))
    assert len(probabilities) > 1


def test_train_deploy_batch_and_stream_jobs(head_node, quickstart, tmp_path):
    root = head_node.root
    labels = str(root / "quickstart" / "data" / "labels.parquet")

    # train: a new version of the model, registered with its fallback.
    logs = submit(head_node, "python", "-m", "jobs.train", "--config", "configs/train/churn.yaml",
                  "--set", f"dataset.entity_table={labels}", *TINY, timeout_s=600)
    trained = int(re.search(r"model +customer-churn v(\d+)", logs).group(1))
    assert trained == quickstart["version"] + 1
    assert re.search(r"fallback +customer-churn-fallback v\d+", logs), logs[-2000:]

    # deploy: the app is updated in place and reports its routes.
    logs = submit(head_node, "python", "-m", "jobs.deploy", "--config", "configs/serve/churn.yaml")
    assert f"application 'churn' is RUNNING at {quickstart['url']}" in logs, logs[-2000:]

    # batch_predict: the new version, pinned, over the labelled table.
    cfg = tmp_path / "batch.yaml"
    cfg.write_text(
        (REPO / "configs/jobs/batch_predict_churn.yaml").read_text()
        .replace("data/churn/labels.parquet", labels)
        .replace("concurrency: 2 ", "concurrency: 1 ")
    )
    logs = submit(head_node, "python", "-m", "jobs.batch_predict", "--config", str(cfg),
                  "--model-version", str(trained), "--output", "e2e_scores")
    lineage = last_json(logs)
    assert lineage["model"]["version"] == trained and lineage["rows"] == quickstart["scored_rows"]
    scores = DeltaTable(str(root / "predictions" / "e2e_scores")).to_pyarrow_table()
    assert scores.num_rows == quickstart["scored_rows"]
    assert set(scores.column("model_version").to_pylist()) == {trained}

    # stream_predict: two submissions over a growing events table; every event scored once.
    from raymlp.training.synthetic import append_usage_events

    events_path = str(tmp_path / "usage_events")
    ids = []
    for n in (25, 15):
        ids += append_usage_events(events_path, 300, n).column("event_id").to_pylist()
    stream_cfg = tmp_path / "stream.yaml"
    stream_cfg.write_text(
        (REPO / "configs/jobs/stream_predict_churn.yaml").read_text()
        .replace("path: data/churn/usage_events", f"path: {events_path}")
        .replace("poll_interval: 2s", "poll_interval: 0.2s")
    )
    logs = submit(head_node, "python", "-m", "jobs.stream_predict", "--config", str(stream_cfg),
                  "--until-idle")
    assert last_json(logs)["events"] == 40
    ids += append_usage_events(events_path, 300, 10).column("event_id").to_pylist()
    logs = submit(head_node, "python", "-m", "jobs.stream_predict", "--config", str(stream_cfg),
                  "--until-idle")
    assert last_json(logs)["events"] == 10  # resumed after the committed offset
    out = DeltaTable(str(root / "predictions" / "churn_stream")).to_pyarrow_table()
    scored = out.column("event_id").to_pylist()
    assert sorted(scored) == sorted(ids)  # each event exactly once: none lost, none twice
    assert set(out.column("model_version").to_pylist()) <= {quickstart["version"], trained}
