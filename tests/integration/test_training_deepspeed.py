"""Real Ray Data + Ray Train TorchTrainer + DeepSpeed on the session cluster: the split through
Ray Data, preprocessing parity, bad data, and resume after a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raymlp.config import TrainConfig
from raymlp.errors import SchemaError, ValidationError
from raymlp.predictor.artifact import Predictor
from raymlp.predictor.factory import build_model
from raymlp.training.data import LABEL_COL, prepare_data, read_table
from raymlp.training.evaluation import evaluate
from raymlp.training.fallback import train_fallback
from raymlp.training.loop import STATE_FILE
from raymlp.training.synthetic import CHURN_FEATURES, churn_table
from raymlp.training.trainer import find_best_checkpoint, make_trainer

pytestmark = pytest.mark.slow

FEATURES = list(CHURN_FEATURES)


@pytest.fixture(scope="module")
def churn_parquet(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("churn") / "churn.parquet"
    pq.write_table(churn_table(1500, rows_per_customer=2, seed=3), path)
    return str(path)


def _cfg(entity_table: str, **sections) -> TrainConfig:
    data = {
        "dataset": {
            "entity_table": entity_table,
            "entity_keys": ["customer_id"],
            "label_column": "churned",
            "columns": FEATURES,
        },
        "registry": {"model_name": "churn-test"},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return TrainConfig.model_validate(data)


def test_split_through_ray_data_never_shares_an_entity(ray_cluster, churn_parquet):
    cfg = _cfg(churn_parquet)
    ds, info = read_table(churn_parquet)
    prepared = prepare_data(ds, cfg.dataset, cfg.preprocessing, FEATURES)
    assert info["format"] == "parquet"
    assert sum(prepared.rows.values()) == 3000
    ids = {s: set(prepared.raw[s].to_pandas()["customer_id"]) for s in prepared.raw}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    # Fitted on train only: the scaler's mean is the train split's mean, not the table's.
    train = prepared.raw["train"].to_pandas()
    spec = {c.name: c for c in prepared.preprocessor.columns}
    assert spec["tenure_months"].mean == pytest.approx(train["tenure_months"].mean())
    assert spec["tenure_months"].mean != pytest.approx(
        pq.read_table(churn_parquet).column("tenure_months").to_numpy().mean(), rel=1e-9
    )
    # Train/serve parity: the tensors the workers stream equal the serving transform of the
    # same rows (given as JSON-like dicts, as a request would).
    rows = prepared.raw["validation"].take_batch(50, batch_format="pyarrow")
    served = prepared.preprocessor.transform(rows.select(FEATURES).to_pylist())
    streamed = prepared.tensors["validation"].take_batch(50, batch_format="numpy")["x"]
    assert np.array_equal(served, streamed)


def test_empty_or_unlabelled_data_is_refused_naming_the_field(ray_cluster, tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(churn_table(10).slice(0, 0), empty)
    cfg = _cfg(str(empty))
    ds, _ = read_table(str(empty))
    with pytest.raises(ValidationError) as e:
        prepare_data(ds, cfg.dataset, cfg.preprocessing, FEATURES)
    assert e.value.field == "dataset.entity_table" and "empty" in str(e.value)

    nolabel = tmp_path / "nolabel.parquet"
    pq.write_table(churn_table(50).drop_columns(["churned"]), nolabel)
    ds, _ = read_table(str(nolabel))
    with pytest.raises(SchemaError) as e:
        prepare_data(ds, _cfg(str(nolabel)).dataset, cfg.preprocessing, FEATURES)
    assert e.value.field == "dataset.label_column"

    with pytest.raises(ValidationError) as e:
        read_table(str(tmp_path / "missing.parquet"))
    assert e.value.field == "dataset.entity_table"

    one_class = tmp_path / "one_class.parquet"
    t = churn_table(60)
    pq.write_table(
        t.set_column(t.column_names.index("churned"), "churned", pa.array([False] * t.num_rows)),
        one_class,
    )
    ds, _ = read_table(str(one_class))
    with pytest.raises(ValidationError) as e:
        prepare_data(ds, _cfg(str(one_class)).dataset, cfg.preprocessing, FEATURES)
    assert e.value.field == "dataset.label_column"


def _kill_rank0_after_first_checkpoint(run_dir: Path, done: threading.Event, killed: dict) -> None:
    """Poll the run directory; once the controller has *registered* a checkpoint (its snapshot
    names it: a checkpoint whose files are uploaded but not yet registered would not be resumed
    from), SIGKILL the rank-0 worker that reported it."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while not done.is_set() and time.monotonic() < deadline:
        try:
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            state = json.loads((run_dir / latest["checkpoint_dir_name"] / STATE_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)  # not there yet, or being written
            continue
        try:
            os.kill(state["metrics"]["worker_pid"], signal.SIGKILL)
        except ProcessLookupError:
            return
        killed.update(pid=state["metrics"]["worker_pid"], after_epoch=state["epoch"])
        return


@pytest.mark.parametrize("engine", ["deepspeed", "ddp"])
def test_deepspeed_training_resumes_from_its_checkpoint_after_a_worker_dies(
    ray_cluster, churn_parquet, tmp_path, engine
):
    """Under DeepSpeed ZeRO-2 and under the plain DDP engine (what ``engine: auto`` picks for
    this small model)."""
    epochs = 6
    cfg = _cfg(
        churn_parquet,
        training={"epochs": epochs, "batch_size": 64, "max_failures": 2},
        deepspeed={"zero_stage": 2, "engine": engine},
    )
    ds, _ = read_table(churn_parquet)
    prepared = prepare_data(ds, cfg.dataset, cfg.preprocessing, FEATURES)
    storage = tmp_path / "training"
    trainer = make_trainer(
        cfg, prepared.tensors, prepared.input_dim, storage_path=str(storage), name="resume"
    )
    done, killed = threading.Event(), {}
    killer = threading.Thread(
        target=_kill_rank0_after_first_checkpoint,
        args=(storage / "resume", done, killed),
        daemon=True,
    )
    killer.start()
    try:
        result = trainer.fit()
    finally:
        done.set()
        killer.join(timeout=10)

    assert killed, "the worker was never killed (no checkpoint appeared)"
    with result.checkpoint.as_directory() as d:
        state = json.loads((Path(d) / STATE_FILE).read_text())
    history = state["history"]
    # Every epoch ran exactly once: the restarted group continued from the checkpoint...
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert history[0]["attempt"] == 0 and history[-1]["attempt"] >= 1
    # ...at the epoch after the last checkpoint, not from scratch.
    final = result.metrics
    assert final["attempt"] >= 1 and final["start_epoch"] >= 1
    assert final["worker_pid"] != killed["pid"]
    assert final["world_size"] == 2 and final["engine"] == engine
    assert final["zero_stage"] == (2 if engine == "deepspeed" else 0)
    assert final["precision"] == "fp32"  # CPU: bf16 only where the hardware has it

    # The best checkpoint's consolidated weights make a working model.
    best = find_best_checkpoint(str(storage / "resume"), "val_auc", "max")
    assert best.metrics["val_auc"] > 0.65
    net = build_model(cfg.model.factory, prepared.input_dim, cfg.model.kwargs)
    net.load_state_dict(best.load_weights())
    spec = {"class_names": ["negative", "positive"], "factory": cfg.model.factory}
    metrics, y, p = evaluate(Predictor(spec, prepared.preprocessor, net, {}), prepared.raw["test"])
    assert metrics["auc"] > 0.65 and len(y) == prepared.rows["test"]
    assert np.isfinite(metrics["ece"]) and 0 <= metrics["brier"] <= 1
    assert torch.isfinite(torch.tensor(p)).all()
    assert prepared.raw["test"].take_batch(1, batch_format="pyarrow").column(LABEL_COL)

    # A small student distilled from this model (the distilled_mlp fallback) learns from it.
    teacher = {
        "factory": cfg.model.factory,
        "kwargs": cfg.model.kwargs,
        "state_dict": best.load_weights(),
    }
    state, factory, kwargs = train_fallback(
        prepared.tensors["train"],
        prepared.input_dim,
        {"kind": "distilled_mlp", "hidden_dims": [8], "epochs": 2, "lr": 0.05, "batch_size": 256},
        teacher=teacher,
    )
    student = build_model(factory, prepared.input_dim, kwargs)
    student.load_state_dict(state)
    assert kwargs == {"hidden_dims": [8]}
    s_metrics, _, _ = evaluate(
        Predictor(spec, prepared.preprocessor, student, {}), prepared.raw["test"]
    )
    assert s_metrics["auc"] > 0.6
