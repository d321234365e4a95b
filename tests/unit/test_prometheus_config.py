"""configs/prometheus.yml: a valid Prometheus config with the monitor's static target and the
file_sd job for Ray's service-discovery file (what docs/monitoring.md tells users to run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "prometheus.yml"


def test_the_shipped_scrape_config_has_both_jobs():
    cfg = yaml.safe_load(CONFIG.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["raymlp-monitor"]["static_configs"][0]["targets"] == ["MONITOR_HOST:9464"]
    assert jobs["raymlp-monitor"]["metrics_path"] == "/metrics"
    assert jobs["ray"]["file_sd_configs"][0]["files"] == [
        "/tmp/ray/prom_metrics_service_discovery.json"
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) not installed")
def test_promtool_accepts_the_shipped_scrape_config():
    res = subprocess.run(
        ["promtool", "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
