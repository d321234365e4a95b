"""Logic that must agree across processes has one source: the category key the model was trained
on is the key the monitor slices and drift-scores by, and both AUCs from histograms agree."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from raymlp._private import values
from raymlp.monitoring import records, stats
from raymlp.predictor import preprocessing
from raymlp.training.classification_metrics import auc_from_histograms, roc_auc

TRICKY = [
    0,
    7,
    -3,
    2**40,
    1.0,
    -0.0,
    2.5,
    1e-7,
    1e20,
    True,
    False,
    None,
    float("nan"),
    "",
    " ",
    "a b",
    " padded ",
    "1.0",
    "True",
    "émoji ✓",
    np.int32(5),
    np.int64(-2),
    np.uint8(255),
    np.float32(1.0),
    np.float32(2.5),
    np.float64(3.0),
    np.float64("nan"),
    np.bool_(True),
    np.bool_(False),
    np.str_("monthly"),
]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_training_and_monitoring_share_one_category_key(value):
    key = preprocessing.category_key(value)
    assert key == records.category_key(value)
    assert preprocessing.category_key is records.category_key is values.category_key
    assert key is None or isinstance(key, str)


def test_category_key_canonical_forms():
    key = values.category_key
    assert [key(1), key(1.0), key(np.float32(1.0)), key(np.int64(1))] == ["1"] * 4
    assert [key(True), key(np.bool_(False))] == ["true", "false"]  # bool before int
    assert key(None) is None and key(float("nan")) is None and key(np.float64("nan")) is None
    assert key(" a b ") == " a b "  # strings are kept as they are, spaces included
    assert key(2.5) == "2.5" and key(np.float32(2.5)) == "2.5"


def test_arrow_json_and_python_values_get_the_same_key():
    py = [1, 2.0, True, None, "x y"]
    from_json = [1, 2.0, True, None, "x y"]  # json.loads gives the same Python types
    from_arrow_float = pa.array([1.0, 2.0, None]).to_pylist()
    assert [values.category_key(v) for v in py] == [values.category_key(v) for v in from_json]
    assert [values.category_key(v) for v in from_arrow_float] == ["1", "2", None]


def _histograms(seed: int, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = rng.beta(5, 2, 400)
    neg = rng.beta(2, 5, 600)
    edges = np.linspace(0, 1, bins + 1)
    return pos, neg, np.histogram(pos, edges)[0], np.histogram(neg, edges)[0]


@pytest.mark.parametrize(("seed", "bins"), [(0, 10), (1, 100), (2, 1000), (3, 1)])
def test_training_and_monitoring_auc_agree_on_defined_cases(seed, bins):
    pos, neg, ph, nh = _histograms(seed, bins)
    train = auc_from_histograms(ph, nh)
    monitor = stats.auc_binned(ph, nh)
    assert train == monitor == values.histogram_auc(ph, nh)
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    exact = roc_auc(y, np.r_[pos, neg])
    assert train == pytest.approx(exact, abs=1.0 / bins)  # exact up to the bin width


def test_auc_callers_keep_their_own_contract_when_undefined():
    ph = np.array([3.0, 1.0])
    empty = np.zeros(2)
    assert values.histogram_auc(ph, empty) is None
    assert stats.auc_binned(ph, empty) is None
    assert math.isnan(auc_from_histograms(ph, empty))
    assert math.isnan(auc_from_histograms(empty, empty))
