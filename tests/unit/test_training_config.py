"""Training config: bad files fail at load time with one line naming the field and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from raymlp.cli._common import parse_overrides
from raymlp.config import TrainConfig, load_train_config
from raymlp.errors import ConfigError
from raymlp.training.ds_config import build_deepspeed_config, client_optimizer, resolve_bf16
from raymlp.training.tuning import apply_overrides

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "dataset": {
        "entity_table": "labels.parquet",
        "entity_keys": ["customer_id"],
        "label_column": "churned",
        "features": ["customer_profile:tenure_months"],
    },
    "registry": {"model_name": "customer-churn"},
}


def _write(tmp_path: Path, patch: dict) -> Path:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in patch.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _error(tmp_path: Path, patch: dict) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_train_config(_write(tmp_path, patch))
    return e.value


def test_the_churn_example_is_valid():
    cfg = load_train_config(REPO / "configs/train/churn.yaml")
    assert cfg.tune.enabled and cfg.tune.mode == "max"
    assert cfg.scaling.num_workers == 2 and cfg.deepspeed.zero_stage in (0, 1, 2, 3)


def test_unknown_optimizer_names_the_field(tmp_path):
    err = _error(tmp_path, {"optimizer.name": "rmsprop"})
    assert err.field == "optimizer.name"
    assert "rmsprop" in str(err) and "adamw" in str(err) and "train.yaml" in str(err)


def test_zero_stage_4_names_the_field(tmp_path):
    err = _error(tmp_path, {"deepspeed.zero_stage": 4})
    assert err.field == "deepspeed.zero_stage"
    assert "ZeRO stage 4" in str(err) and "0, 1, 2 or 3" in str(err)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"dataset.features": [], "dataset.columns": []}, "dataset"),
        ({"dataset.features": ["no_colon"]}, "dataset.features"),
        ({"dataset.split": {"train": 0.8, "validation": 0.15, "test": 0.15}}, "dataset.split"),
        ({"dataset.min_rows": 0}, "dataset.min_rows"),
        ({"deepspeed.offload_params": True}, "deepspeed"),
        ({"deepspeed.zero_stage": 0, "deepspeed.offload_optimizer": True}, "deepspeed"),
        ({"tune.search_space": {"scaling.num_workers": {"choice": [1, 2]}}}, "tune.search_space"),
        ({"tune.search_space": {"optimizer.lrr": {"uniform": [0.1, 0.2]}}}, "tune.search_space"),
        ({"tune.search_space": {"optimizer.lr": {"normal": [0, 1]}}}, "tune.search_space"),
        ({"tune.search_space": {"optimizer.lr": {"loguniform": [0, 1]}}}, "tune.search_space"),
        ({"tune.search_space": {"optimizer.lr": {"uniform": [0.2, 0.1]}}}, "tune.search_space"),
        ({"tune.metric": "val_auc", "tune.mode": "min"}, "tune"),
        ({"model.factory": "not a path"}, "model.factory"),
        ({"registry.model_name": "Bad Name"}, "registry.model_name"),
        ({"training.epochs": 0}, "training.epochs"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_settings_name_their_field(tmp_path, patch, field):
    assert _error(tmp_path, patch).field == field


def test_search_space_accepts_model_kwargs_and_the_four_samplers(tmp_path):
    cfg = load_train_config(
        _write(
            tmp_path,
            {
                "tune.search_space": {
                    "optimizer.lr": {"loguniform": [1e-4, 1e-2]},
                    "model.kwargs.hidden_dims": {"choice": [[8], [16, 8]]},
                    "training.batch_size": {"randint": [64, 256]},
                    "optimizer.weight_decay": {"uniform": [0.0, 0.1]},
                }
            },
        )
    )
    assert cfg.tune.enabled and cfg.tune.mode == "max"


def test_overrides_are_revalidated_and_name_the_field():
    cfg = TrainConfig.model_validate(BASE)
    assert apply_overrides(cfg, {"optimizer.lr": 0.05}).optimizer.lr == 0.05
    assert apply_overrides(cfg, {"model.kwargs.hidden_dims": [4]}).model.kwargs == {
        "hidden_dims": [4]
    }
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, {"deepspeed.zero_stage": 4}, source="x --set")
    assert e.value.field == "deepspeed.zero_stage" and str(e.value).startswith("x --set")
    assert cfg.deepspeed.zero_stage == 2  # the original is untouched


def test_cli_set_values_are_yaml():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=adamw"]) == {
        "a.b": 1,
        "c": [1, 2],
        "d": "adamw",
    }
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


def test_deepspeed_config_from_yaml_sections():
    cfg = TrainConfig.model_validate(
        {
            **BASE,
            "deepspeed": {
                "zero_stage": 3,
                "offload_optimizer": True,
                "offload_params": True,
                "extra": {"zero_optimization": {"reduce_bucket_size": 1000}},
            },
        }
    )
    ds = build_deepspeed_config(
        cfg.deepspeed.model_dump(),
        cfg.optimizer.model_dump(),
        micro_batch=64,
        world_size=4,
        bf16=False,
    )
    assert ds["train_batch_size"] == 256 and ds["train_micro_batch_size_per_gpu"] == 64
    z = ds["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu"
    assert z["offload_param"]["device"] == "cpu" and z["reduce_bucket_size"] == 1000
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["bf16"] == {"enabled": False} and ds["zero_force_ds_cpu_optimizer"] is False


def test_sgd_and_adagrad_are_torch_optimizers_not_deepspeed_ones():
    params = [torch.nn.Parameter(torch.zeros(2))]
    ds = build_deepspeed_config(
        {"zero_stage": 1}, {"name": "sgd", "lr": 0.1}, micro_batch=8, world_size=1, bf16=False
    )
    assert "optimizer" not in ds
    assert isinstance(client_optimizer({"name": "sgd", "lr": 0.1}, params), torch.optim.SGD)
    assert isinstance(client_optimizer({"name": "adagrad"}, params), torch.optim.Adagrad)
    assert client_optimizer({"name": "adamw"}, params) is None


def test_bf16_only_where_the_hardware_has_it():
    cpu = torch.device("cpu")
    assert resolve_bf16("auto", cpu)[0] is False  # auto never picks bf16 on CPU
    assert resolve_bf16(False, cpu) == (False, "fp32 (configured)")
    on, note = resolve_bf16(True, cpu)
    assert on is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not on:
        assert "unsupported" in note


def test_cli_and_job_refuse_a_bad_config_before_touching_a_cluster(tmp_path, capsys):
    from jobs.train import main as job_main
    from raymlp.cli import main as cli_main

    path = _write(tmp_path, {"deepspeed.zero_stage": 4})
    assert cli_main(["train", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "deepspeed.zero_stage" in err and err.count("\n") == 1
    assert job_main(["--config", str(path), "--set", "optimizer.name=rmsprop"]) == 1
    assert "deepspeed.zero_stage" in capsys.readouterr().err  # the file is checked first
    good = _write(tmp_path, {})
    assert job_main(["--config", str(good), "--set", "optimizer.name=rmsprop"]) == 1
    assert "optimizer.name" in capsys.readouterr().err
