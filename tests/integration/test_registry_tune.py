"""A real (tiny) Ray Tune job tracked by RegistryTuneCallback: a parent run, one run per trial."""

from __future__ import annotations

import pickle

from ray import tune

from raymlp.training.tune_callback import RegistryTuneCallback


def test_tune_trials_become_runs_under_a_parent(platform, tmp_path):
    def _trainable(config):  # nested: pickled by value, so Tune's workers need no test module
        for step in range(1, 4):
            tune.report(
                {"val_auc": config["lr"] * step, "loss": 1.0 / step, "nested": {"acc": 0.5}}
            )
        if config["lr"] > 0.25:
            raise RuntimeError("diverged")

    cb = RegistryTuneCallback(platform, "churn-tune", metric="val_auc", mode="max")
    assert pickle.loads(pickle.dumps(cb)).experiment == "churn-tune"  # Tune may pickle it
    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": 0.5}),
        param_space={"lr": tune.grid_search([0.1, 0.2, 0.3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=3),
        run_config=tune.RunConfig(
            name="t", storage_path=str(tmp_path / "tune"), callbacks=[cb], verbose=0
        ),
    )
    tuner.fit()
    reg = platform.registry
    parent = reg.get_run(cb.parent_run_id)
    assert parent["status"] == "FAILED"  # one trial errored
    assert sorted(parent["children"]) == sorted(cb.trial_runs.values())
    trials = reg.search_runs(
        "churn-tune", filter="tags.raymlp.tune = 'trial'", order_by="params.lr"
    )
    assert [r["params"]["lr"] for r in trials] == [0.1, 0.2, 0.3]
    assert [r["status"] for r in trials] == ["FINISHED", "FINISHED", "FAILED"]
    full = reg.get_run(trials[1]["run_id"])
    assert [s for s, _, _ in full["history"]["val_auc"]] == [1, 2, 3]
    assert full["metrics"]["val_auc"] == 0.2 * 3 and full["metrics"]["nested/acc"] == 0.5
    assert full["config"] == {"lr": 0.2} and full["parent_run_id"] == cb.parent_run_id
    best = reg.best_run("churn-tune", "val_auc", filter="status = 'FINISHED'")
    assert best["params"]["lr"] == 0.2
    assert parent["tags"]["best_run_id"] == trials[2]["run_id"]  # best reported, even if it failed
    assert parent["metrics"]["best_val_auc"] == 0.3 * 3
