"""The pieces ``raymlp train`` and ``python -m jobs.train`` share (no cluster)."""

from __future__ import annotations

import argparse

import pytest

from raymlp import _constants
from raymlp.cli._common import add_train_arguments
from raymlp.training.pipeline import TrainJobResult

METRICS = {"auc": 0.81, "accuracy": 0.75, "log_loss": 0.5, "brier": 0.17, "ece": 0.02}


def test_summary_lines_of_a_result():
    r = TrainJobResult(
        model_name="m",
        version=3,
        run_id="run-1",
        artifact_uri="file:///a",
        test_metrics=METRICS,
        best_params={},
        fallback_name="m-fallback",
        fallback_version=2,
        fallback_metrics={"auc": 0.7},
        gate={"reason": "no model holds 'production'"},
    )
    lines = r.summary().splitlines()
    assert lines[0] == "model      m v3  (file:///a)"
    assert lines[2] == "fallback   m-fallback v2  (test auc 0.7000)"
    assert lines[-2:] == ["gate       no model holds 'production'", "run        run-1"]


def test_job_and_cli_parse_the_same_train_arguments():
    from jobs.train import _main  # noqa: F401  (the job builds on the same pieces)

    ap = argparse.ArgumentParser()
    add_train_arguments(ap)
    a = ap.parse_args(["--config", "t.yaml", "--set", "a=1", "--set", "b=[1]"])
    assert (a.config, a.overrides, a.address, a.json) == ("t.yaml", ["a=1", "b=[1]"], None, False)


@pytest.mark.parametrize(("value", "on"), [(None, False), ("", False), ("1", True)])
def test_debug_setting(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("RAYMLP_DEBUG", raising=False)
    else:
        monkeypatch.setenv("RAYMLP_DEBUG", value)
    assert _constants.debug() is on
