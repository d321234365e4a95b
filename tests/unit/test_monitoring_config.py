"""Monitoring config: the example YAML, platform.yaml's monitor section, the Grafana dashboard
(every series it queries exists), and the CLI's parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from raymlp.cli import build_parser
from raymlp.config import (
    MonitorSettings,
    PlatformConfig,
    load_monitoring_config,
    load_platform_config,
)
from raymlp.errors import ConfigError
from raymlp.monitoring.prometheus import GAUGES, MonitorMetrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_monitoring_config_loads():
    cfg = load_monitoring_config(ROOT / "configs/monitoring/churn.yaml")
    assert cfg.canary.steps == [5, 25, 50, 100]
    assert {r.metric for r in cfg.rules} >= {
        "error_rate",
        "feature_drifted",
        "accuracy",
        "prediction_log_dropped",
    }
    assert cfg.models["customer-churn"].fairness_attribute == "contract"


def test_platform_yaml_reads_the_monitoring_file_once_and_round_trips(tmp_path, monkeypatch):
    (tmp_path / "mon.yaml").write_text(
        "rules:\n  - {name: e, metric: error_rate, threshold: 0.1, for: 1m}\n"
    )
    (tmp_path / "platform.yaml").write_text(
        "monitor:\n  config_file: mon.yaml\n  metrics_port: 9464\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_platform_config("platform.yaml")
    assert cfg.monitor.monitoring.rules[0].for_.total_seconds() == 60
    assert cfg.monitor.config_file == str(tmp_path / "mon.yaml")
    # what actors receive: the content travels, the file is not read again
    (tmp_path / "mon.yaml").unlink()
    again = PlatformConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.monitor.monitoring == cfg.monitor.monitoring
    assert again.monitor.metrics_port == 9464


def test_a_broken_monitoring_file_names_file_and_field(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("rules:\n  - {name: e, metric: error_rate, threshold: 0.1, window: 0s}\n")
    with pytest.raises(ConfigError) as ei:
        load_monitoring_config(bad)
    assert str(bad) in str(ei.value) and "rules.0.window" in str(ei.value)
    with pytest.raises(ConfigError, match="metrics_port"):
        load_platform_config_from(tmp_path, "monitor:\n  metrics_port: 70000\n")


def load_platform_config_from(tmp_path, text):
    p = tmp_path / "platform.yaml"
    p.write_text(text)
    return load_platform_config(p)


def test_monitor_defaults():
    s = MonitorSettings()
    assert s.metrics_port == 0 and s.bucket.total_seconds() == 60 and s.monitoring.rules == []


def test_grafana_dashboard_queries_only_exported_series():
    dash = json.loads((ROOT / "configs/grafana/raymlp.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(raymlp_[a-z0-9_]+)", e)}
    text = MonitorMetrics().exposition().decode()
    exported = set(re.findall(r"^# TYPE (raymlp_[a-z0-9_]+) (\w+)", text, re.M))
    names = set(GAUGES)
    for name, kind in exported:
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    assert used and used <= names, used - names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_cli_monitor_commands_parse():
    ap = build_parser()
    a = ap.parse_args(["monitor", "report", "churn", "--since", "6h", "--html", "x.html"])
    assert (a.model, a.since, a.html) == ("churn", "6h", "x.html")
    assert ap.parse_args(["monitor", "alerts"]).state == "firing"
    assert ap.parse_args(["monitor", "alerts", "--state", "all"]).state == "all"
    with pytest.raises(SystemExit):
        ap.parse_args(["monitor", "alerts", "--state", "bogus"])
