"""Feature refs → model inputs, and the batch predictor class (the actor's code, run in-process)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from raymlp.errors import ValidationError
from raymlp.inference.batch import OUTPUT_COLUMNS, BatchPredictor
from raymlp.inference.model import feature_column, input_refs, labels_for, with_model_inputs
from raymlp.predictor.artifact import load_predictor
from raymlp.serving.examples import make_artifact, synthetic_table

REFS = {
    "tenure_months": "customer_profile:tenure_months",
    "monthly_charges": "customer_profile:monthly_charges",
    "contract": "customer_profile:contract",
    "support_calls": "customer_usage:support_calls",
}


def test_input_refs_recorded_and_overridden():
    spec = {"feature_refs": {**REFS, "gone": "v:gone"}}
    inputs = list(REFS)
    assert input_refs(spec, None, inputs) == REFS  # refs of non-inputs are dropped
    over = input_refs(spec, ["other_view:tenure_months", "x:unknown"], inputs)
    assert over == {"tenure_months": "other_view:tenure_months", "x__unknown": "x:unknown"}
    assert input_refs({}, None, inputs) == {}


def test_with_model_inputs_aliases_feature_columns():
    t = pa.table({"customer_profile__tenure_months": [3, 4], "monthly_charges": [1.0, 2.0]})
    refs = {"tenure_months": REFS["tenure_months"], "monthly_charges": REFS["monthly_charges"]}
    out = with_model_inputs(t, refs)
    assert out.column("tenure_months").to_pylist() == [3, 4]
    assert out.column("monthly_charges").to_pylist() == [1.0, 2.0]  # already there: kept
    d = with_model_inputs(
        {"customer_profile__tenure_months": [5]}, {"tenure_months": REFS["tenure_months"]}
    )
    assert d["tenure_months"] == [5]
    with pytest.raises(ValidationError) as e:
        with_model_inputs(pa.table({"a": [1]}), {"support_calls": REFS["support_calls"]})
    assert e.value.field == "support_calls"
    assert feature_column("v:f") == "v__f"


def test_labels_for_threshold():
    assert labels_for([0.2, 0.5, 0.9], ["no", "yes"], 0.5).to_pylist() == ["no", "yes", "yes"]


def test_batch_predictor_scores_like_the_serving_loader(tmp_path):
    art = make_artifact(tmp_path / "art", seed=3, feature_refs=REFS)
    feats = synthetic_table(50, seed=1)
    # The joined dataset names features view__feature; the entity key rides along.
    cols = {feature_column(REFS[n]): feats.column(n) for n in feats.column_names}
    batch = pa.table({"customer_id": [f"c{i}" for i in range(50)], **cols})
    ts = datetime(2026, 2, 1, tzinfo=UTC)
    pred = BatchPredictor(
        str(art),
        refs=REFS,
        keep=["customer_id"],
        model_name="customer-churn",
        model_version=7,
        run_id="run-1",
        run_timestamp_us=int(ts.timestamp() * 1e6),
    )
    out = pred(batch)
    assert out.column_names == ["customer_id", *OUTPUT_COLUMNS]
    expected = load_predictor(art).predict_proba(feats)
    np.testing.assert_allclose(out.column("probability").to_numpy(), expected, rtol=1e-6)
    assert set(out.column("model_version").to_pylist()) == {7}
    assert set(out.column("prediction").to_pylist()) <= {"stay", "churn"}
    assert out.column("run_timestamp").to_pylist()[0] == ts


def test_batch_predictor_types_all_null_columns(tmp_path):
    art = make_artifact(tmp_path / "art", seed=3)
    batch = synthetic_table(4).append_column("note", pa.nulls(4))
    pred = BatchPredictor(
        str(art),
        refs={},
        keep=["note"],
        model_name="m",
        model_version=1,
        run_id="r",
        run_timestamp_us=0,
    )
    assert pred(batch).schema.field("note").type == pa.string()


def test_batch_predictor_writes_a_whole_block_in_files_of_bounded_rows(tmp_path):
    import json

    import pyarrow.parquet as pq

    from raymlp.inference.batch import PredictionFiles, file_prefix
    from raymlp.storage import Storage

    art = make_artifact(tmp_path / "art", seed=3)
    block = synthetic_table(250, seed=2).append_column(
        "customer_id", pa.array([f"c{i}" for i in range(250)]))
    storage = Storage(str(tmp_path / "root"))
    kwargs = dict(refs={}, keep=["customer_id"], model_name="m", model_version=2, run_id="r",
                  run_timestamp_us=0, score_rows=64)
    writer = BatchPredictor(str(art), **kwargs,
                            write_to=PredictionFiles(storage, "scores", file_prefix("t1"), 100))
    out = writer(block)
    metas = [json.loads(m) for m in out.column("file").to_pylist()]
    assert [m["num_records"] for m in metas] == [100, 100, 50]
    assert all(m["path"].startswith("part-t1-") for m in metas)
    written = pa.concat_tables(
        pq.read_table(storage.path("predictions", "scores", m["path"])) for m in metas)
    expected = BatchPredictor(str(art), **kwargs)(block)  # same rows, scored 64 at a time
    assert written.column("customer_id").to_pylist() == block.column("customer_id").to_pylist()
    np.testing.assert_allclose(written.column("probability").to_numpy(),
                               expected.column("probability").to_numpy(), rtol=1e-6)
    # An empty block writes nothing and reports no file.
    assert writer(block.slice(0, 0)).num_rows == 0
