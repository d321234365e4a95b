"""`ray job submit --working-dir . -- python -m jobs.<name>` against `ray start --head`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

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
    from deltalake import DeltaTable

    table = DeltaTable(str(head_node.root / "features" / "customer_profile"))
    assert table.to_pyarrow_table().num_rows == 400

    logs = submit(head_node, "python", "-m", "jobs.materialize")
    assert "materialize: done" in logs
    assert "materialized customer_profile: 0 rows" in logs  # incremental: nothing new
