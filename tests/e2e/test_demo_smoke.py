"""`raymlp demo --smoke`: the whole platform end to end with a tiny budget (what `make demo` runs,
checked)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests._net import free_port
from tests.e2e.conftest import REPO, base_env

pytestmark = pytest.mark.slow


def test_smoke_demo_runs_every_stage_and_checks_the_answers(tmp_path):
    env = base_env(tmp_path)
    env.pop("RAYMLP_CONFIG")  # the demo builds its own platform config (auth on)
    proc = subprocess.run(
        [sys.executable, "-m", "raymlp", "demo", "--smoke", "--root", str(tmp_path / "demo"),
         "--port", str(free_port())],
        env=env, text=True, capture_output=True, timeout=1500, cwd=REPO,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    for stage in range(1, 10):
        assert f"[{stage}/9]" in out
    assert "production -> v1 (approved by bob)" in out
    assert "smoke demo: all checks passed" in out
    assert "curl -s -X POST" in out and "X-API-Key: demo-api-key" in out
    # The report waited for the logged predictions, which carry the online features fetched
    # for entity requests (fresh data: no feature is mostly missing).
    report = out[out.index("] monitor report"):]
    assert "TRAFFIC" in report and "requests 0 " not in report
    missing = [float(m) for m in re.findall(r" (\d+\.\d)% +\d+\.\d%", report)]
    assert missing and max(missing) < 50.0, report[:3000]
