"""The typed monitoring report: what MonitorCore builds, its wire dict, and the round trip."""

from __future__ import annotations

import json

from raymlp.monitoring.html import render_html
from raymlp.monitoring.report import render_text
from raymlp.monitoring.report_model import MonitorReport, PerfStats, VersionRoutePerf
from tests.unit.test_monitoring_core import NOW, _core, _records


def _report() -> MonitorReport:
    core = _core()
    core.ingest_predictions(_records(300, shift=0.6, seed=17))
    core.evaluate(NOW)
    return core.monitor_report("churn", NOW - 3600, NOW)


def test_core_builds_a_typed_report():
    rep = _report()
    assert isinstance(rep.traffic, PerfStats) and rep.traffic.requests == 300
    assert all(isinstance(r, VersionRoutePerf) for r in rep.by_version_route)
    assert rep.drift is not None and rep.drift["drifted"] == ["tenure"]
    assert rep.source is None and rep.thresholds.min_samples > 0


def test_wire_dict_is_json_and_reads_back_equal():
    rep = _report()
    d = rep.to_dict()
    assert "source" not in d and "html_path" not in d  # present only once set
    assert list(d["by_version_route"][0])[:3] == ["version", "route", "requests"]
    assert list(d["timeline"][0])[:2] == ["t", "requests"]
    assert MonitorReport.from_dict(json.loads(json.dumps(d))) == rep
    rep.source = "windows"
    assert list(rep.to_dict())[-1] == "source"


def test_renderers_take_the_report_or_its_dict():
    rep = _report()
    assert render_text(rep) == render_text(rep.to_dict())
    assert render_html(rep) == render_html(rep.to_dict())
