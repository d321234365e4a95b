"""Inference job configs: defaults, rules quoted in one-line errors, the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlp.config import (
    BatchPredictJobConfig,
    PredictionModelRef,
    StreamPredictJobConfig,
    load_config,
    load_config_file,
)
from raymlp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BATCH = {
    "entity_table": "data/x.parquet",
    "entity_keys": ["customer_id"],
    "model": {"name": "customer-churn"},
    "output": "churn_scores",
}
STREAM = {
    "name": "s1",
    "source": {"path": "data/events"},
    "entity_keys": ["customer_id"],
    "model": {"name": "customer-churn", "version": 2},
}


def batch(**over) -> BatchPredictJobConfig:
    return load_config(BatchPredictJobConfig, {**BATCH, **over}, "b.yaml")


def stream(**over) -> StreamPredictJobConfig:
    return load_config(StreamPredictJobConfig, {**STREAM, **over}, "s.yaml")


def test_batch_defaults():
    c = batch()
    assert c.feature_mode == "point_in_time"
    assert c.model.alias == "production" and c.model.version is None
    assert c.concurrency == 2 and c.batch_size == 1024 and not c.use_gpu
    assert batch(concurrency=[1, 4]).concurrency == (1, 4)


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"concurrency": [3, 1]}, "concurrency", "1 <= min <= max"),
        ({"concurrency": 0}, "concurrency", "pool size >= 1"),
        ({"entity_keys": []}, "entity_keys", "at least one"),
        ({"passthrough_columns": ["a", "a"]}, "passthrough_columns", "listed twice"),
        ({"features": ["tenure"]}, "features", "'view:feature'"),
        ({"features": []}, "features", "is empty"),
        ({"output": "Bad Name"}, "output", "not a valid name"),
        ({"as_of": "2026-01-01"}, "<root>", "feature_mode latest"),
        ({"feature_mode": "latest", "as_of": "yesterday"}, "as_of", "ISO-8601"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"model": {"name": "m", "alias": None}}, "model", "alias nor version"),
        ({"extra": 1}, "extra", "unknown key"),
    ],
)
def test_batch_rules(over, field, words):
    with pytest.raises(ConfigError) as e:
        batch(**over)
    assert e.value.field == field
    assert words in str(e.value) and "b.yaml" in str(e.value)


def test_latest_mode_accepts_as_of():
    c = batch(feature_mode="latest", as_of="2026-03-01T00:00:00+00:00")
    assert c.as_of.startswith("2026-03-01")


def test_model_ref_version_wins_and_is_positive():
    ref = PredictionModelRef(name="m", version=3)
    assert ref.version == 3 and ref.alias == "production"
    with pytest.raises(ValueError):
        PredictionModelRef(name="m", version=0)


def test_stream_defaults_and_output_name():
    c = stream()
    assert c.poll_interval.total_seconds() == 1.0
    assert c.output_table == "s1"
    assert stream(output="scores").output_table == "scores"
    assert c.scoring.mode == "auto" and c.scoring.request == "entity"
    assert c.source.kind == "delta" and c.source.max_records == 10_000


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"source": {"kind": "delta"}}, "source", "source.path is required"),
        ({"source": {"kind": "adapter", "adapter": "nocolon"}}, "source", "'module:Class'"),
        (
            {"source": {"path": "x", "max_records": 0}},
            "source.max_records",
            "greater than or equal to 1",
        ),
        ({"name": "_x"}, "name", "not a valid name"),
        ({"scoring": {"mode": "remote"}}, "scoring.mode", "'auto', 'serve' or 'local'"),
        ({"push_views": ["v", "v"]}, "push_views", "listed twice"),
        ({"poll_interval": "soon"}, "poll_interval", "not understood"),
    ],
)
def test_stream_rules(over, field, words):
    with pytest.raises(ConfigError) as e:
        stream(**over)
    assert e.value.field == field
    assert words in str(e.value)


def test_shipped_job_configs_load():
    b = load_config_file(BatchPredictJobConfig, ROOT / "configs/jobs/batch_predict_churn.yaml")
    assert b.model.name == "customer-churn" and b.output == "churn_scores"
    s = load_config_file(StreamPredictJobConfig, ROOT / "configs/jobs/stream_predict_churn.yaml")
    assert s.push_views == ["customer_usage"] and s.output_table == "churn_stream"
