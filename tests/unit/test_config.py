"""platform.yaml loading: defaults, env override, and one-line errors naming file and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from raymlp.cli import main
from raymlp.config import (
    PlatformConfig,
    format_duration,
    hash_api_key,
    load_platform_config,
    parse_duration,
)
from raymlp.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "platform.yaml"
    p.write_text(text)
    return p


def test_repo_platform_yaml_loads():
    cfg = load_platform_config(REPO / "configs" / "platform.yaml")
    assert cfg.ray.namespace == "raymlp"
    assert Path(cfg.storage.root).is_absolute()
    assert cfg.auth.enabled is False


def test_defaults_without_a_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_platform_config()
    assert cfg.storage.root == str(tmp_path / ".raymlp")
    assert cfg.http.port == 8000


def test_env_overrides_storage_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYMLP_STORAGE_ROOT", "s3://bucket/prefix")
    cfg = load_platform_config(write(tmp_path, "storage: {root: /tmp/x}\n"))
    assert cfg.storage.root == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        ("storage: {root: /tmp/x, colour: blue}\n", "storage.colour", "unknown key 'colour'"),
        ("http: {port: eighty}\n", "http.port", "eighty"),
        ("http: {port: 70000}\n", "http.port", "65535"),
        ("storage: {root: 'ftp://host/x'}\n", "storage.root", "unsupported URI scheme 'ftp'"),
        ("storage: {root: 's3://'}\n", "storage.root", "names no bucket"),
        ("ray: {address: 'nonsense'}\n", "ray.address", "'nonsense'"),
        ("auth: {principals: [{name: bob, tenant: nowhere}]}\n", "auth", "'nowhere'"),
        ("auth: {principals: [{name: bob, api_key_sha256: plain-key}]}\n",
         "auth.principals.0.api_key_sha256", "SHA-256"),
        ("auth: {principals: [{name: bob, roles: [wizard]}]}\n", "auth.principals.0.roles.0",
         "wizard"),
        ("http: {ssl_keyfile: k.pem}\n", "http", "set together"),
    ],
)
def test_broken_platform_yaml_names_file_and_field(tmp_path, text, field, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_platform_config(path)
    err = info.value
    assert err.field == field
    assert err.file == str(path)
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: ")
    assert needle in msg


def test_invalid_yaml_syntax_names_the_line(tmp_path):
    path = write(tmp_path, "storage:\n  root: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_platform_config(path)
    assert "line" in info.value.field
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_platform_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text", ["storage: {bogus: 1}\n", "http: {port: -1}\n", "storage: {root: 'gopher://x'}\n"]
)
def test_cli_exits_1_with_one_line_on_a_broken_config(tmp_path, capsys, text):
    path = write(tmp_path, text)
    code = main(["status", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}: ")


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert main([]) == 2


def test_help_lists_the_command_groups(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for group in ("up", "down", "status", "demo"):
        assert group in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90s", timedelta(seconds=90)),
     ("250ms", timedelta(milliseconds=250)), (15, timedelta(seconds=15)), ("2w", timedelta(weeks=2))],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("bad", ["30 days", "-1s", "d", True, -4])
def test_bad_durations_quote_the_value(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


def test_api_keys_are_matched_by_hash():
    cfg = PlatformConfig.model_validate(
        {
            "auth": {
                "tenants": [{"name": "acme"}],
                "principals": [
                    {"name": "alice", "tenant": "acme", "roles": ["developer"],
                     "api_key_sha256": hash_api_key("secret-a")},
                ],
            }
        }
    )
    assert cfg.auth.by_api_key("secret-a").name == "alice"
    assert cfg.auth.by_api_key("secret-b") is None
    assert "secret-a" not in cfg.model_dump_json()
