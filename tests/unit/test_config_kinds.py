"""Configs that come in kinds: a key of another kind is an unknown-key error naming it, the
user's path is kept (no union tag), the YAML of today still loads; the monitoring file is read
by the loader, not by a validator; the one webhook target and name rules."""

from __future__ import annotations

import pytest

from raymlp.config import (
    AdapterSourceConfig,
    AlertWebhook,
    DeltaSourceConfig,
    DistilledFallbackSettings,
    LogisticFallbackSettings,
    MonitorSettings,
    PlatformConfig,
    RegistryWebhook,
    StreamPredictJobConfig,
    StreamSourceConfig,
    TrainConfig,
    WebhookTarget,
    load_config,
    load_platform_config,
)
from raymlp.errors import ConfigError, ValidationError

STREAM = {
    "name": "s1",
    "source": {"path": "data/events"},
    "entity_keys": ["customer_id"],
    "model": {"name": "m"},
}
TRAIN = {
    "dataset": {
        "entity_table": "t.parquet",
        "entity_keys": ["id"],
        "label_column": "y",
        "columns": ["x"],
    },
    "registry": {"model_name": "m"},
}


def _stream(source: dict) -> StreamPredictJobConfig:
    return load_config(StreamPredictJobConfig, {**STREAM, "source": source}, "s.yaml")


def test_stream_source_kinds_build_their_own_model():
    assert isinstance(_stream({"path": "p"}).source, DeltaSourceConfig)
    src = _stream({"kind": "adapter", "adapter": "m:C", "options": {"a": 1}}).source
    assert isinstance(src, AdapterSourceConfig) and src.options == {"a": 1}
    # calling the base builds the kind the data names (delta when it names none)
    assert isinstance(StreamSourceConfig(path="p"), DeltaSourceConfig)
    assert isinstance(StreamSourceConfig(kind="adapter", adapter="m:C"), AdapterSourceConfig)
    assert isinstance(StreamSourceConfig.model_validate({"path": "p"}), DeltaSourceConfig)


@pytest.mark.parametrize(
    ("source", "field", "key", "kind"),
    [
        ({"path": "p", "adapter": "m:C"}, "source.adapter", "adapter", "delta"),
        ({"path": "p", "options": {"a": 1}}, "source.options", "options", "delta"),
        ({"kind": "adapter", "adapter": "m:C", "path": "p"}, "source.path", "path", "adapter"),
        (
            {"kind": "adapter", "adapter": "m:C", "start_version": 3},
            "source.start_version",
            "start_version",
            "adapter",
        ),
    ],
)
def test_a_key_of_another_source_kind_is_an_unknown_key(source, field, key, kind):
    with pytest.raises(ConfigError) as e:
        _stream(source)
    assert e.value.field == field
    assert f"unknown key {key!r} for kind {kind!r}" in str(e.value)
    assert "kind=" not in str(e.value)  # the union tag never shows in the user's path


def test_an_unknown_kind_names_the_kinds():
    with pytest.raises(ConfigError) as e:
        _stream({"kind": "kafka", "topics": ["t"]})
    assert e.value.field == "source.kind"
    assert "'kafka'" in str(e.value) and "delta, adapter" in str(e.value)


def test_nested_errors_keep_the_users_path():
    with pytest.raises(ConfigError) as e:
        _stream({"kind": "adapter", "adapter": "m:C", "max_records": 0})
    assert e.value.field == "source.max_records"


def test_fallback_kinds():
    cfg = load_config(TrainConfig, TRAIN)
    assert isinstance(cfg.fallback, LogisticFallbackSettings)
    cfg = load_config(TrainConfig, {**TRAIN, "fallback": {"kind": "distilled_mlp"}})
    assert isinstance(cfg.fallback, DistilledFallbackSettings)
    assert cfg.fallback.hidden_dims == [16]
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, {**TRAIN, "fallback": {"hidden_dims": [8]}}, "t.yaml")
    assert e.value.field == "fallback.hidden_dims"
    assert "for kind 'logistic_regression'" in str(e.value)


def test_kinds_round_trip_through_json():
    cfg = load_config(TrainConfig, {**TRAIN, "fallback": {"kind": "distilled_mlp"}})
    again = TrainConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and isinstance(again.fallback, DistilledFallbackSettings)


def test_the_loader_reads_the_monitoring_file_not_the_model(tmp_path, monkeypatch):
    (tmp_path / "mon.yaml").write_text("rules:\n  - {name: e, metric: error_rate, threshold: 1}\n")
    monkeypatch.chdir(tmp_path)
    # building the models never touches the file system
    settings = MonitorSettings(config_file="mon.yaml")
    assert settings.monitoring.rules == [] and settings.config_file == "mon.yaml"
    assert PlatformConfig.model_validate({"monitor": {"config_file": "gone.yaml"}})
    # the loader does, once, and resolves the path
    (tmp_path / "platform.yaml").write_text("monitor: {config_file: mon.yaml}\n")
    cfg = load_platform_config("platform.yaml")
    assert cfg.monitor.config_file == str(tmp_path / "mon.yaml")
    assert [r.name for r in cfg.monitor.monitoring.rules] == ["e"]


def test_an_inline_monitoring_section_wins_over_the_file(tmp_path):
    (tmp_path / "platform.yaml").write_text(
        "monitor:\n  config_file: missing.yaml\n  monitoring: {rules: []}\n"
    )
    assert load_platform_config(tmp_path / "platform.yaml").monitor.monitoring.rules == []


def test_a_missing_monitoring_file_is_one_config_error(tmp_path):
    (tmp_path / "platform.yaml").write_text("monitor: {config_file: nope.yaml}\n")
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_platform_config(tmp_path / "platform.yaml")


def test_both_webhooks_are_webhook_targets_with_their_own_defaults():
    reg = RegistryWebhook(url="http://ci/hook", secret_env="CI_SECRET")
    alert = AlertWebhook(url="http://pager/hook", insecure=True)
    assert isinstance(reg, WebhookTarget) and isinstance(alert, WebhookTarget)
    assert (reg.max_retries, alert.max_retries) == (5, 3)
    assert reg.timeout_s == alert.timeout_s == 5.0 and alert.min_severity == "warning"
    for cls in (RegistryWebhook, AlertWebhook):
        with pytest.raises(ValueError, match="not an http"):
            cls(url="ftp://x")


def test_one_definition_of_the_name_rules():
    from raymlp.config import ALIAS_RE, MODEL_NAME_RE
    from raymlp.registry import names

    assert names._NAME_RE is MODEL_NAME_RE and names._ALIAS_RE is ALIAS_RE
    # a full match: a trailing newline is refused, also by callers that use .match
    for check, bad in ((names.check_model_name, "churn\n"), (names.check_alias, "prod\n")):
        with pytest.raises(ValidationError, match="not valid"):
            check(bad)
    assert MODEL_NAME_RE.match("churn\n") is None and ALIAS_RE.match("prod\n") is None
