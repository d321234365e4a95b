"""``raymlp models ...`` and ``raymlp runs ...`` against a running platform."""

from __future__ import annotations

import json

import yaml

from raymlp.cli import main

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}


def _cli(capsys, cfg_file, *argv):
    code = main([*argv, "--config", str(cfg_file)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_and_runs_commands(platform, tmp_path, capsys, monkeypatch):
    cfg_file = tmp_path / "platform.yaml"
    cfg_file.write_text(yaml.safe_dump({"storage": {"root": platform.storage.root}}))
    art = tmp_path / "art"
    art.mkdir()
    (art / "w").write_text("w")
    reg = platform.registry
    run_ids = []
    for auc in (0.7, 0.9, 0.8):
        run_id = reg.start_run("churn-exp", params={"lr": auc / 10}, git_commit="")
        reg.log_metrics(run_id, {"val_auc": auc}, step=1)
        reg.end_run(run_id)
        run_ids.append(run_id)
    reg.register(
        "churn",
        art,
        run_id=run_ids[1],
        signature=SIG,
        lineage={
            "feature_views": [{"name": "customer_profile", "version": 2}],
            "dataset_rows": 500,
        },
    )
    reg.register(
        "churn", art, signature=SIG, lineage={"parent_model": {"name": "churn", "version": 1}}
    )

    code, out, _ = _cli(capsys, cfg_file, "models", "list")
    assert code == 0 and "churn" in out and "required" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "promote", "churn", "1", "--reason", "best")
    assert code == 0 and "created request pr-1" in out
    code, _, err = _cli(capsys, cfg_file, "models", "approve", "pr-1")
    assert code == 1 and "may not approve" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("RAYMLP_PRINCIPAL", "bob")
    code, out, _ = _cli(capsys, cfg_file, "models", "approve", "pr-1", "--comment", "ok")
    assert code == 0 and "production -> version 1" in out
    monkeypatch.delenv("RAYMLP_PRINCIPAL")
    code, out, _ = _cli(capsys, cfg_file, "models", "show", "churn")
    assert code == 0 and "production -> 1" in out and "pr-1" in out and "approved" in out
    assert "best" in out and "bob" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "promote", "churn", "2")
    assert "pr-2" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "reject", "pr-2", "--reason", "not yet")
    assert code == 0 and "rejected pr-2" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "alias", "churn", "canary", "2")
    assert code == 0 and "canary -> version 2" in out
    code, _, err = _cli(
        capsys, cfg_file, "models", "promote", "churn", "1", "--alias", "canary", "--expect", "1"
    )
    assert code == 1 and "held by version 2" in err
    code, out, _ = _cli(
        capsys, cfg_file, "models", "promote", "churn", "1", "--alias", "canary", "--expect", "2"
    )
    assert code == 0 and "canary -> version 1 (was 2)" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "rollback", "churn", "--alias", "canary")
    assert code == 0 and "rolled back to version 2" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "stage", "churn", "2", "staging")
    assert code == 0 and "stage staging" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "versions", "churn", "--json")
    assert [v["stage"] for v in json.loads(out)] == ["production", "staging"]
    code, out, _ = _cli(capsys, cfg_file, "models", "lineage", "churn", "2")
    assert code == 0 and "derived from: churn v2 <- churn v1" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "lineage", "churn", "1")
    assert "customer_profile @ table version 2" in out and "fine-tuned into: churn v2" in out
    assert f"trained by run {run_ids[1]}" in out
    code, out, _ = _cli(capsys, cfg_file, "models", "events", "--kind", "alias_moved", "--json")
    assert [e["payload"]["alias"] for e in json.loads(out)] == [
        "production",
        "canary",
        "canary",
        "canary",
    ]
    code, _, err = _cli(capsys, cfg_file, "models", "show", "nope")
    assert code == 1 and "model 'nope' does not exist" in err
    code, _, err = _cli(capsys, cfg_file, "models", "stage", "churn", "1", "gold")
    assert code == 1 and "stage 'gold' is not a stage" in err
    code, _, err = _cli(capsys, cfg_file, "models", "lineage", "churn", "9")
    assert code == 1 and "no version 9" in err

    code, out, _ = _cli(capsys, cfg_file, "runs", "list")
    assert code == 0 and "churn-exp" in out
    code, out, _ = _cli(
        capsys,
        cfg_file,
        "runs",
        "list",
        "churn-exp",
        "--order-by",
        "metrics.val_auc DESC",
        "--json",
    )
    assert [r["metrics"]["val_auc"] for r in json.loads(out)] == [0.9, 0.8, 0.7]
    code, out, _ = _cli(
        capsys,
        cfg_file,
        "runs",
        "list",
        "churn-exp",
        "--filter",
        "metrics.val_auc < 0.85",
        "--order-by",
        "metrics.val_auc",
    )
    assert code == 0 and "0.7" in out and "0.9" not in out
    code, out, _ = _cli(capsys, cfg_file, "runs", "show", run_ids[0])
    assert code == 0 and "val_auc = 0.7" in out and "FINISHED" in out
    code, _, err = _cli(capsys, cfg_file, "runs", "list", "churn-exp", "--order-by", "val_auc")
    assert code == 1 and "unknown key" in err
