"""Evaluation metrics against brute-force definitions, and the promotion gate's decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlp.training.classification_metrics import (
    auc_from_histograms,
    binary_metrics,
    brier_score,
    expected_calibration_error,
    log_loss,
    roc_auc,
)
from raymlp.training.promotion import decide


def _auc_pairs(y, p) -> float:
    pos = [s for s, t in zip(p, y) if t == 1]
    neg = [s for s, t in zip(p, y) if t == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9])),
        min_size=2,
        max_size=60,
    )
)
def test_auc_equals_the_pairwise_definition_with_ties(pairs):
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    if y.min() == y.max():
        assert math.isnan(roc_auc(y, p))
    else:
        assert roc_auc(y, p) == pytest.approx(_auc_pairs(y, p))


def test_known_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, p) == pytest.approx(0.75)
    assert log_loss(y, p) == pytest.approx(
        -np.mean([np.log(0.9), np.log(0.6), np.log(0.35), np.log(0.8)])
    )
    assert brier_score(y, p) == pytest.approx(np.mean([0.01, 0.16, 0.4225, 0.04]))
    m = binary_metrics(y, p)
    assert m["accuracy"] == 0.75 and m["precision"] == 1.0 and m["recall"] == 0.5
    assert m["rows"] == 4 and m["positive_rate"] == 0.5


def test_ece_by_hand():
    # ECE = sum over bins |sum(p) - sum(y)| / n
    # bin [0.2,0.3): predicted 0.25 + 0.25 = 0.5, one positive -> |0.5 - 1| = 0.5
    # bin [0.9,1.0]: predicted 0.95 + 0.95 = 1.9, no positive -> |1.9 - 0| = 1.9
    y = np.array([1, 0, 0, 0])
    p = np.array([0.25, 0.25, 0.95, 0.95])
    assert expected_calibration_error(y, p) == pytest.approx((0.5 + 1.9) / 4)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_log_loss_clips_certain_mistakes():
    assert math.isfinite(log_loss(np.array([1]), np.array([0.0])))


def test_histogram_auc_matches_exact_auc_to_the_bin_width():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    bins = 2048
    idx = np.minimum((p * bins).astype(int), bins - 1)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    assert auc_from_histograms(pos, neg) == pytest.approx(roc_auc(y, p), abs=1e-3)


def test_gate_never_promotes_a_worse_or_equal_model():
    assert not decide({"auc": 0.70}, {"auc": 0.80}).request
    assert not decide({"auc": 0.80}, {"auc": 0.80}).request  # a tie does not win
    d = decide({"log_loss": 0.6}, {"log_loss": 0.5}, metric="log_loss")
    assert not d.request and d.delta == pytest.approx(-0.1)


def test_gate_needs_the_margin():
    assert not decide({"auc": 0.805}, {"auc": 0.80}, margin=0.01).request
    d = decide({"auc": 0.82}, {"auc": 0.80}, margin=0.01, current_version=3)
    assert d.request and d.delta == pytest.approx(0.02) and d.current_version == 3
    assert decide({"brier": 0.10}, {"brier": 0.15}, metric="brier", margin=0.01).request


def test_gate_without_a_current_model_and_with_missing_values():
    assert decide({"auc": 0.6}, None).request
    assert not decide({"auc": 0.6}, None, min_value=0.7).request
    assert not decide({"auc": float("nan")}, {"auc": 0.5}).request
    assert decide({"auc": 0.6}, {"auc": float("nan")}).request
