"""Live drift and data quality of traffic against a training reference profile."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlp.config import DriftSettings
from raymlp.errors import ValidationError
from raymlp.monitoring.drift import FeatureCell, feature_drift, observe, prediction_drift
from raymlp.monitoring.reference import ReferenceProfile
from raymlp.training.profile import build_profile

SETTINGS = DriftSettings(min_samples=100)


def _train_profile(n: int = 5000, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "tenure": rng.normal(24, 6, n),
            "calls": rng.integers(0, 6, n).astype(np.int64),  # discrete: many ties at the edges
            "contract": rng.choice(["monthly", "yearly", "two-year"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    doc = build_profile(
        table,
        {"tenure": "numeric", "calls": "numeric", "contract": "categorical"},
        predictions=rng.beta(2, 5, n),
    )
    return ReferenceProfile.from_dict(doc)


def _traffic(n: int, seed: int, shift: float = 0.0, contract_p=(0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    feats = [
        {"tenure": float(t), "calls": int(c), "contract": str(k)}
        for t, c, k in zip(
            rng.normal(24 + shift * 6, 6, n),
            rng.integers(0, 6, n),
            rng.choice(["monthly", "yearly", "two-year"], n, p=contract_p),
        )
    ]
    return feats, list(rng.beta(2, 5, n))


def _rows(prof, feats, probs=None):
    cell = FeatureCell.empty(prof)
    observe(prof, cell, feats, probs)
    return {r["feature"]: r for r in feature_drift(prof, cell, SETTINGS)}, cell


def test_same_distribution_is_not_drift_including_a_discrete_feature():
    prof = _train_profile()
    feats, probs = _traffic(3000, seed=1)
    rows, cell = _rows(prof, feats, probs)
    assert not any(r["drifted"] for r in rows.values()), rows
    assert rows["calls"]["psi"] < 0.02  # the left-closed bin convention matches training's
    assert rows["tenure"]["ks"] < 0.05 and rows["tenure"]["wasserstein"] < 0.06
    assert rows["contract"]["js"] < 0.05 and rows["contract"]["chi2_p"] > 0.001
    pred = prediction_drift(prof, cell, SETTINGS)
    assert pred is not None and not pred["drifted"]


def test_a_half_sigma_shift_is_drift_on_that_feature_only():
    prof = _train_profile()
    feats, _ = _traffic(3000, seed=2, shift=0.5)
    rows, _ = _rows(prof, feats)
    assert rows["tenure"]["drifted"]
    assert rows["tenure"]["psi"] > 0.2
    assert rows["tenure"]["wasserstein"] == pytest.approx(0.5, abs=0.08)
    assert rows["tenure"]["ks_p"] < 1e-6
    assert not rows["calls"]["drifted"] and not rows["contract"]["drifted"]


def test_a_categorical_mix_change_is_drift():
    prof = _train_profile()
    feats, _ = _traffic(3000, seed=3, contract_p=(0.1, 0.3, 0.6))
    rows, _ = _rows(prof, feats)
    assert rows["contract"]["drifted"] and rows["contract"]["chi2_p"] < 1e-6
    assert not rows["tenure"]["drifted"]


def test_too_few_samples_are_never_judged_drifted():
    prof = _train_profile()
    feats, _ = _traffic(50, seed=4, shift=3.0)
    rows, _ = _rows(prof, feats)
    assert rows["tenure"]["psi"] > 1 and not rows["tenure"]["drifted"]


def test_quality_missing_out_of_range_unseen_and_schema_violations():
    prof = _train_profile()
    feats = [
        {"tenure": None, "calls": 2, "contract": "monthly"},
        {"calls": 1, "contract": "monthly"},  # absent feature
        {"tenure": "long", "calls": 1, "contract": "monthly"},  # wrong type
        {"tenure": 500.0, "calls": 1, "contract": "lifetime"},  # out of range, unseen
        {"tenure": 20.0, "calls": 1, "contract": "yearly", "zip": "x"},
    ]  # unexpected
    rows, cell = _rows(prof, feats)
    assert rows["tenure"]["missing_ratio"] == pytest.approx(3 / 5)
    assert rows["tenure"]["out_of_range_ratio"] == pytest.approx(1 / 2)
    assert rows["contract"]["out_of_range_ratio"] == pytest.approx(1 / 5)
    assert cell.categorical["contract"].new_categories == {"lifetime": 1}
    assert cell.violations == {
        ("tenure", "missing_feature"): 1,
        ("tenure", "type"): 1,
        ("zip", "unexpected_feature"): 1,
    }
    assert cell.violation_records == 3 and cell.records == 5


def test_values_beyond_the_reference_range_count_in_wasserstein():
    prof = _train_profile()
    far = [{"tenure": 1000.0, "calls": 1, "contract": "monthly"}] * 200
    rows, _ = _rows(prof, far)
    assert rows["tenure"]["wasserstein"] > 50  # (1000 - 24) / 6, not capped at the grid edge


def test_cells_merge_like_one_big_batch():
    prof = _train_profile()
    feats, probs = _traffic(2000, seed=5, shift=0.3)
    one = FeatureCell.empty(prof)
    observe(prof, one, feats, probs)
    a, b = FeatureCell.empty(prof), FeatureCell.empty(prof)
    observe(prof, a, feats[:700], probs[:700])
    observe(prof, b, feats[700:], probs[700:])
    merged = FeatureCell.empty(prof)
    merged.merge(a)
    merged.merge(b)
    r1 = feature_drift(prof, one, SETTINGS)
    r2 = feature_drift(prof, merged, SETTINGS)
    assert r1 == r2


def test_profiles_from_raw_samples_and_histogram_only():
    rng = np.random.default_rng(6)
    sample = rng.normal(size=2000).tolist()
    prof = ReferenceProfile.from_dict(
        {
            "features": {
                "x": {"kind": "numeric", "sample": sample},
                "h": {
                    "kind": "numeric",
                    "histogram": {"edges": [0, 1, 2, 3], "counts": [10, 20, 10]},
                },
                "c": {"kind": "categorical", "sample": ["a", "b", "a", None]},
            }
        }
    )
    assert prof.numeric["x"].std == pytest.approx(np.std(sample))
    assert prof.numeric["h"].psi_fractions.tolist() == [0.25, 0.5, 0.25]
    assert prof.categorical["c"].frequencies == {"a": 2 / 3, "b": 1 / 3}
    assert prof.categorical["c"].missing_rate == pytest.approx(0.25)


def test_malformed_profiles_name_the_feature():
    with pytest.raises(ValidationError) as ei:
        ReferenceProfile.from_dict({"features": {"x": {"kind": "numeric"}}})
    assert ei.value.field == "features.x"
    with pytest.raises(ValidationError, match="kind"):
        ReferenceProfile.from_dict({"features": {"x": {"kind": "text"}}})
