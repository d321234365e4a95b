"""Threat: unbounded monitor state from made-up names (issue 13 item 6).

The issue: 10,000 requests with unknown model ids grew the monitor's ``/metrics`` from 16 KB to
21 MB, a series per made-up name, never pruned. Here the gateway's own service principal ships
2,000 records naming models, versions and tenants the platform does not have (what an HTTP
client controls): ``/metrics`` grows by less than 2 KB, nothing is stored or windowed, one
aggregate counter says how many were dropped, and the registry is asked a handful of times.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from raymlp.errors import NotFoundError
from tests.security._monitor import as_, auth_config, records, register


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"))


def _scrape(url: str) -> str:
    return httpx.get(url, timeout=10).text


def test_made_up_names_do_not_grow_metrics_or_state(platform, tmp_path):
    admin, gateway = platform, as_(platform, "serving")
    register(as_(platform, "alice"), tmp_path, "churn")
    assert gateway.monitor.log_predictions(records(20, "churn"))["accepted"] == 20
    admin.monitor.evaluate()
    url = admin.monitor.metrics_url()
    before_text, before = _scrape(url), admin.monitor.stats()

    made_up = [records(1, f"made-up-{uuid.uuid4().hex}")[0] for _ in range(1000)]
    # a registered model, but versions and tenants that do not exist
    versions = [{**r, "version": 10 + i} for i, r in enumerate(records(500, "churn"))]
    tenants = [{**r, "tenant": f"t{i}"} for i, r in enumerate(records(500, "churn"))]
    floods = made_up + versions + tenants
    for i in range(0, len(floods), 250):
        res = gateway.monitor.log_predictions(floods[i : i + 250])
        assert res["accepted"] == 0 and res["unknown"] == 250
    admin.monitor.evaluate()

    after_text, after = _scrape(url), admin.monitor.stats()
    assert len(after_text) - len(before_text) < 2048, len(after_text) - len(before_text)
    assert "made-up-" not in after_text and not re.search(r'version="1\d+"', after_text)
    unknown = r'raymlp_unknown_model_records_total\{reason="(\w+)"\} (\S+)'
    assert {k: float(v) for k, v in re.findall(unknown, after_text)} == {
        "unregistered_model": 1500.0,
        "unknown_tenant": 500.0,
    }
    # nothing was logged or windowed, and the registry was asked only a few times
    assert after["records_ingested"] == before["records_ingested"]
    assert after["prediction_log_version"] == before["prediction_log_version"]
    assert after["models"] == ["churn"]
    assert after["directory_refreshes"] - before["directory_refreshes"] <= 5
    with pytest.raises(NotFoundError):
        admin.monitor.report(floods[0]["model"])
