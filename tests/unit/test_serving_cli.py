"""``raymlp serve ...`` argument parsing and the offline ``serve config`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raymlp.cli import build_parser, main
from raymlp.cli._serve import _steps
from raymlp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_subcommands_and_their_arguments():
    a = parse(
        "serve", "deploy", "--config", "configs/serve/churn.yaml", "--platform-config", "p.yaml"
    )
    assert (a.config, a.platform_config) == ("configs/serve/churn.yaml", "p.yaml")
    a = parse(
        "serve",
        "canary",
        "customer-churn",
        "--version",
        "4",
        "--weight",
        "12.5",
        "--steps",
        "5,25,50,100",
    )
    assert (a.model, a.version, a.weight, a.steps) == ("customer-churn", 4, 12.5, "5,25,50,100")
    assert parse("serve", "shadow", "m", "--off").off
    assert parse("serve", "promote", "m", "--version", "3").version == 3
    assert parse("serve", "promote", "m").version is None
    assert parse("serve", "rollback", "m", "--no-wait").no_wait
    assert parse("serve", "status", "--json").json
    with pytest.raises(SystemExit):
        parse("serve", "canary", "m", "--version", "4")  # --weight is required


def test_steps_parsing():
    assert _steps("5, 25,50") == [5.0, 25.0, 50.0]
    assert _steps(None) is None
    with pytest.raises(ConfigError):
        _steps("5,lots")


def test_serve_config_prints_a_serve_deploy_file(capsys):
    from ray.serve.schema import ServeDeploySchema

    assert main(["serve", "config", "--config", str(ROOT / "configs/serve/churn.yaml")]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    schema = ServeDeploySchema.model_validate(doc)
    assert schema.applications[0].name == "churn"


def test_a_bad_serve_config_is_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: m, alias: 9x}]\n")
    assert main(["serve", "config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "models.0.alias" in err


def test_deploy_job_has_the_same_arguments():
    import argparse

    from raymlp.cli._common import add_deploy_arguments

    ap = argparse.ArgumentParser()
    add_deploy_arguments(ap)
    a = ap.parse_args(["--config", "x.yaml", "--address", "auto"])
    assert (a.config, a.address, a.json) == ("x.yaml", "auto", False)
