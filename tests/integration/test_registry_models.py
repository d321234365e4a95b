"""The registry actor through the SDK: versions, stages, aliases, approvals, lineage, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raymlp.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

SIG = {
    "inputs": [
        {"name": "tenure_months", "dtype": "int64"},
        {"name": "monthly_charges", "dtype": "float64"},
    ],
    "output": {"name": "churn", "kind": "binary", "labels": ["stay", "churn"]},
}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"\x00\x01weights")
    (d / "sub").mkdir()
    (d / "sub" / "config.json").write_text('{"layers": 2}')
    return d


def test_register_copies_artifact_and_versions_increase(platform, model_dir):
    reg = platform.registry
    v1 = reg.register(
        "churn", model_dir, signature=SIG, metrics={"val_auc": 0.8}, card="# churn v1"
    )
    v2 = reg.register("churn", model_dir, signature=SIG)
    assert (v1, v2) == (1, 2)
    mv = reg.get("churn", version=1)
    assert mv.artifact_uri == platform.storage.uri("models", "churn", "1")
    root = Path(mv.artifact_uri)
    assert (root / "weights.bin").read_bytes() == b"\x00\x01weights"
    assert (root / "sub" / "config.json").read_text() == '{"layers": 2}'
    assert json.loads((root / "signature.json").read_text())["inputs"][0]["name"] == "tenure_months"
    assert (root / "card.md").read_text() == "# churn v1"
    assert mv.metrics == {"val_auc": 0.8} and mv["stage"] == "none"
    assert reg.get("churn").version == 2  # latest
    assert [v.version for v in reg.versions("churn")] == [1, 2]
    assert [m["name"] for m in reg.list_models()] == ["churn"]
    # the staging area is empty again
    assert platform.storage.listdir("models", "_staging") == []


def test_bad_registration_changes_nothing(platform, model_dir):
    reg = platform.registry
    reg.register("churn", model_dir, signature=SIG)
    bad = {**SIG, "inputs": [{"name": "a", "dtype": "int64"}, {"name": "a", "dtype": "int64"}]}
    with pytest.raises(ValidationError) as e:
        reg.register("churn", model_dir, signature=bad)
    assert "repeat" in str(e.value) and e.value.field == "signature.inputs"
    with pytest.raises(ValidationError) as e:
        reg.register(
            "churn", model_dir, signature={**SIG, "inputs": [{"name": "a", "dtype": "int65"}]}
        )
    assert e.value.field == "signature.inputs.0.dtype"
    with pytest.raises(NotFoundError) as e:
        reg.register("churn", model_dir, signature=SIG, run_id="nope")
    assert e.value.name == "nope"
    with pytest.raises(NotFoundError):
        reg.register(
            "churn",
            model_dir,
            signature=SIG,
            lineage={"parent_model": {"name": "ghost", "version": 1}},
        )
    with pytest.raises(ValidationError) as e:
        reg.register("Bad Name", model_dir)
    assert e.value.field == "name"
    # nothing moved: still one version, no staged leftovers, no orphan artifact
    assert [v.version for v in reg.versions("churn")] == [1]
    assert platform.storage.listdir("models", "_staging") == []
    assert platform.storage.listdir("models", "churn") == ["1"]
    assert reg.register("churn", model_dir, signature=SIG) == 2  # never a gap or a reuse


def test_every_stage_transition(platform, model_dir):
    reg = platform.registry
    for _ in range(3):
        reg.register("churn", model_dir, signature=SIG)
    assert reg.set_stage("churn", 1, "staging")["stage"] == "staging"
    assert reg.set_stage("churn", 1, "none")["stage"] == "none"
    reg.set_stage("churn", 1, "staging")
    assert reg.set_stage("churn", 1, "archived")["stage"] == "archived"
    assert reg.set_stage("churn", 1, "staging")["stage"] == "staging"  # restore
    assert reg.set_stage("churn", 2, "archived")["stage"] == "archived"  # none -> archived
    with pytest.raises(ConflictError) as e:
        reg.set_stage("churn", 2, "none")  # archived -> none is not a move
    assert e.value.current == "archived"
    # production is gated (approval_required by default) ...
    with pytest.raises(PermissionDeniedError) as e:
        reg.set_stage("churn", 1, "production")
    assert e.value.rule == "approval_required"
    # ... and reached through an approved promotion, which archives the previous holder
    rid = reg.request_promotion("churn", 1, reason="first")
    platform.as_principal(principal="bob").registry.approve(rid)
    assert reg.get("churn", 1).stage == "production"
    with pytest.raises(ConflictError):
        reg.set_stage("churn", 1, "staging")  # leave production only by moving the alias
    rid = reg.request_promotion("churn", 3)
    platform.as_principal(principal="bob").registry.approve(rid)
    assert [reg.get("churn", v).stage for v in (1, 3)] == ["archived", "production"]
    with pytest.raises(ValidationError) as e:
        reg.set_stage("churn", 1, "prod")
    assert e.value.field == "stage" and e.value.value == "prod"
    # a version that holds an alias cannot be archived
    reg.set_stage("churn", 1, "staging")
    reg.set_alias("churn", "canary", 1)
    with pytest.raises(ConflictError) as e:
        reg.set_stage("churn", 1, "archived")
    assert e.value.aliases == ["canary"]


def test_approval_workflow_and_rollback(platform, model_dir):
    reg = platform.registry
    bob = platform.as_principal(principal="bob").registry
    for _ in range(3):
        reg.register("churn", model_dir, signature=SIG)
    assert reg.requires_approval("churn") is True
    with pytest.raises(PermissionDeniedError):
        reg.promote("churn", 1)  # production needs a request
    rid = reg.request_promotion("churn", 1, reason="better AUC")
    with pytest.raises(ConflictError):
        reg.request_promotion("churn", 1)  # duplicate pending request
    with pytest.raises(PermissionDeniedError) as e:
        reg.approve(rid)  # self-approval, even as admin
    assert e.value.rule == "four-eyes"
    moved = bob.approve(rid, comment="lgtm")
    assert moved == {"name": "churn", "alias": "production", "version": 1, "previous": None}
    assert reg.get("churn", alias="production").version == 1
    with pytest.raises(ConflictError):
        bob.approve(rid)  # already approved
    # two requests made against the same holder: the second approval is stale
    r2 = reg.request_promotion("churn", 2)
    r3 = reg.request_promotion("churn", 3)
    bob.approve(r2)
    with pytest.raises(ConflictError) as e:
        bob.approve(r3)
    assert e.value.current == 2
    assert bob.reject(r3, reason="stale, re-request") == r3
    with pytest.raises(ValidationError):
        bob.reject(reg.request_promotion("churn", 3), reason="  ")
    show = reg.show("churn")
    statuses = {r["id"]: (r["status"], r["decided_by"]) for r in show["requests"]}
    assert statuses[rid] == ("approved", "bob") and statuses[r3] == ("rejected", "bob")
    assert show["aliases"] == {"production": 2} and show["alias_history"] == {"production": [1]}
    # rollback: one call, back to the previous holder, stages follow
    assert reg.rollback("churn")["version"] == 1
    assert reg.get("churn", alias="production").version == 1
    assert [reg.get("churn", v).stage for v in (1, 2)] == ["production", "archived"]
    with pytest.raises(ConflictError):
        reg.rollback("churn")  # nothing before version 1
    # other aliases move directly, with an optional precondition
    reg.set_alias("churn", "champion", 3)
    with pytest.raises(ConflictError):
        reg.promote("churn", 2, "champion")  # archived by the rollback
    with pytest.raises(ConflictError):
        reg.promote("churn", 1, "champion", expected_version=2)
    assert reg.promote("churn", 1, "champion", expected_version=3)["previous"] == 3
    reg.delete_alias("churn", "champion")
    with pytest.raises(NotFoundError):
        reg.get("churn", alias="champion")
    kinds = [e["kind"] for e in reg.events()]
    for kind in (
        "version_registered",
        "promotion_requested",
        "promotion_approved",
        "promotion_rejected",
        "alias_moved",
        "stage_changed",
        "alias_deleted",
    ):
        assert kind in kinds
    approved = next(e for e in reg.events(kinds=["promotion_approved"]))
    assert approved["principal"] == "bob" and approved["payload"]["comment"] == "lgtm"
    moved_ev = [e for e in reg.events(kinds=["alias_moved"])][0]
    assert moved_ev["payload"]["before"] is None and moved_ev["payload"]["after"] == 1


def test_errors_name_the_thing(platform, model_dir):
    reg = platform.registry
    reg.register("churn", model_dir, signature=SIG)
    with pytest.raises(NotFoundError) as e:
        reg.get("nope")
    assert e.value.kind == "model" and "'nope'" in str(e.value)
    with pytest.raises(NotFoundError) as e:
        reg.get("churn", version=7)
    assert e.value.version == 7 and "versions: 1" in str(e.value)
    for bad in (0, -1, "x", 1.5):
        with pytest.raises(ValidationError) as e:
            reg.get("churn", version=bad)
        assert e.value.field == "version"
    with pytest.raises(ValidationError) as e:
        reg.set_stage("churn", 1, "Production")
    assert e.value.field == "stage"
    with pytest.raises(ValidationError) as e:
        reg.set_alias("churn", "1abc", 1)
    assert e.value.field == "alias"
    with pytest.raises(NotFoundError) as e:
        reg.approve("pr-99")
    assert e.value.kind == "request"
    with pytest.raises(NotFoundError) as e:
        reg.get("churn", alias="production")
    assert e.value.kind == "alias"
    with pytest.raises(NotFoundError):
        reg.lineage("churn", 2)


def test_lineage_both_directions(platform, model_dir):
    reg = platform.registry
    run = reg.start_run("churn-train", params={"lr": 0.1}, git_commit="abc1234")
    reg.end_run(run)
    base = reg.register(
        "churn",
        model_dir,
        run_id=run,
        signature=SIG,
        lineage={
            "feature_views": [
                {"name": "customer_profile", "version": 4, "features": ["tenure_months"]},
                {"name": "billing", "version": 9},
            ],
            "dataset_rows": 1000,
        },
    )
    reg.register("churn-rules", model_dir, signature=SIG)
    tuned = reg.register(
        "churn-small",
        model_dir,
        signature=SIG,
        lineage={
            "feature_views": [{"name": "customer_profile", "version": 5}],
            "parent_model": {"name": "churn", "version": base},
            "fallback_model": {"name": "churn-rules", "alias": "production"},
            "code_commit": "def5678",
        },
    )
    grand = reg.register(
        "churn-tiny",
        model_dir,
        signature=SIG,
        lineage={"parent_model": {"name": "churn-small", "version": tuned}},
    )
    up = reg.lineage("churn-tiny", grand)
    assert [(p["name"], p["version"]) for p in up["parents"]] == [("churn-small", 1), ("churn", 1)]
    mid = reg.lineage("churn-small", tuned)
    assert mid["fallback"]["name"] == "churn-rules" and mid["code_commit"] == "def5678"
    assert [(c["name"], c["version"]) for c in mid["children"]] == [("churn-tiny", 1)]
    down = reg.lineage("churn", base)
    assert down["run"]["run_id"] == run and down["code_commit"] == "abc1234"
    assert down["dataset_rows"] == 1000
    assert {fv["name"]: fv["version"] for fv in down["feature_views"]} == {
        "customer_profile": 4,
        "billing": 9,
    }
    assert [(c["name"], c["version"]) for c in down["children"]] == [("churn-small", 1)]
    assert [(c["name"], c["version"]) for c in reg.lineage("churn-rules", 1)["fallback_for"]] == [
        ("churn-small", 1)
    ]
    users = reg.models_using_view("customer_profile")
    assert [(u["name"], u["version"], u["view_version"]) for u in users] == [
        ("churn", 1, 4),
        ("churn-small", 1, 5),
    ]
    assert users[0]["features"] == ["tenure_months"]
    assert reg.models_using_view("billing")[0]["name"] == "churn"
    assert reg.models_using_view("unused") == []


def test_runs_track_params_metrics_artifacts_and_status(platform, tmp_path):
    reg = platform.registry
    parent = reg.start_run("churn-exp", params={"search": "grid"}, name="sweep")
    run = reg.start_run(
        "churn-exp",
        params={"lr": 0.01},
        config={"model": {"layers": 2}},
        tags={"owner": "ml"},
        parent_run_id=parent,
    )
    reg.log_params(run, {"batch_size": 64})
    for step, auc in enumerate((0.6, 0.7, 0.75)):
        reg.log_metrics(run, {"val_auc": auc, "loss": 1 - auc}, step=step)
    reg.set_tags(run, {"stage": "done"})
    f = tmp_path / "report.txt"
    f.write_text("ok")
    d = tmp_path / "plots"
    d.mkdir()
    (d / "roc.txt").write_text("roc")
    uri_file = reg.log_artifact(run, f)
    uri_dir = reg.log_artifact(run, d, artifact_path="figures/plots")
    assert Path(uri_file).read_text() == "ok"
    assert (Path(uri_dir) / "roc.txt").read_text() == "roc"
    reg.end_run(run)
    got = reg.get_run(run)
    assert got["status"] == "FINISHED" and got["end_time"] >= got["start_time"]
    assert got["params"] == {"lr": 0.01, "batch_size": 64}
    assert got["config"] == {"model": {"layers": 2}}
    assert got["tags"] == {"owner": "ml", "stage": "done"}
    assert [(s, v) for s, v, _ in got["history"]["val_auc"]] == [(0, 0.6), (1, 0.7), (2, 0.75)]
    assert got["metrics"]["val_auc"] == 0.75
    assert [a["path"] for a in got["artifacts"]] == ["report.txt", "figures/plots"]
    assert got["git_commit"] is None or len(got["git_commit"]) == 40  # HEAD of the checkout
    assert reg.get_run(parent)["children"] == [run]
    with pytest.raises(RuntimeError), reg.run("churn-exp", params={"lr": 0.5}) as failing:
        reg.log_metrics(failing, {"val_auc": 0.99})
        raise RuntimeError("boom")
    assert reg.get_run(failing)["status"] == "FAILED"
    best = reg.best_run("churn-exp", "val_auc", filter="status = 'FINISHED'")
    assert best["run_id"] == run
    assert reg.best_run("churn-exp", "val_auc")["run_id"] == failing
    assert reg.best_run("churn-exp", "loss", mode="min")["run_id"] == run
    assert reg.best_run("churn-exp", "nope") is None
    ordered = reg.search_runs("churn-exp", order_by="metrics.val_auc DESC")
    assert [r["run_id"] for r in ordered] == [failing, run, parent]
    assert [e["name"] for e in reg.list_experiments()] == ["churn-exp"]
    with pytest.raises(ConflictError):
        reg.log_metrics(run, {"val_auc": 0.1})  # ended
    with pytest.raises(NotFoundError):
        reg.search_runs("no-such-experiment")
