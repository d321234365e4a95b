"""Drift statistics against scipy's reference implementations, and the batch comparator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from raymlp.config import DriftSettings
from raymlp.errors import ValidationError
from raymlp.monitoring import stats
from raymlp.monitoring.dataset_drift import compare_numeric, profile_numeric


def test_psi_matches_the_formula_and_is_zero_for_equal_distributions():
    e = np.array([0.25, 0.25, 0.25, 0.25])
    a = np.array([0.4, 0.3, 0.2, 0.1])
    expected = float(np.sum((a - e) * np.log(a / e)))
    assert stats.psi(e, a) == pytest.approx(expected)
    assert stats.psi(e, e) == pytest.approx(0.0)
    # counts are normalised; empty bins are floored instead of producing inf
    assert np.isfinite(stats.psi(np.array([10, 0]), np.array([5, 5])))


def test_psi_is_vectorised_over_leading_axes():
    e = np.tile([0.5, 0.5], (3, 1))
    a = np.array([[0.5, 0.5], [0.6, 0.4], [0.9, 0.1]])
    out = stats.psi(e, a)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(0.0) and out[0] < out[1] < out[2]


def test_js_distance_matches_scipy_base2():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random(7), rng.random(7)
        assert stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))


def test_ks_pvalue_is_close_to_scipy_two_sample():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=3000), rng.normal(0.08, size=2000)
    ref = sps.ks_2samp(a, b)
    assert stats.ks_pvalue(ref.statistic, 3000, 2000) == pytest.approx(ref.pvalue, rel=0.15)


def test_chi_square_matches_scipy():
    exp = np.array([0.5, 0.3, 0.2])
    obs = np.array([48, 35, 17])
    stat, dof, p = stats.chi_square(exp, obs)
    ref = sps.chisquare(obs, exp * obs.sum())
    assert stat == pytest.approx(ref.statistic)
    assert dof == 2
    assert p == pytest.approx(ref.pvalue)


def test_wasserstein_from_cdfs_and_quantiles_match_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=4000), rng.normal(0.3, 1.2, size=5000)
    exact = sps.wasserstein_distance(a, b)
    edges = np.linspace(-8, 8, 4001)
    fa = np.searchsorted(np.sort(a), edges, side="right") / a.size
    fb = np.searchsorted(np.sort(b), edges, side="right") / b.size
    assert stats.wasserstein_binned(edges, fa, fb) == pytest.approx(exact, rel=0.01)
    qs = np.linspace(0, 1, 2001)
    assert stats.wasserstein_quantiles(np.quantile(a, qs), np.quantile(b, qs)) == pytest.approx(
        exact, rel=0.02
    )


def test_wasserstein_binned_handles_a_sign_change_inside_a_bin():
    # F_ref - F_cur goes from +0.5 to -0.5 across one unit bin: |area| = 2 * (0.5 * 0.5 / 2)
    assert stats.wasserstein_binned(
        np.array([0.0, 1.0]), np.array([0.5, 0.0]), np.array([0.0, 0.5])
    ) == pytest.approx(0.25)


def test_binned_auc_equals_exact_auc_without_ties():
    rng = np.random.default_rng(3)
    pos = rng.beta(5, 2, 500)
    neg = rng.beta(2, 5, 700)
    exact = np.mean(pos[:, None] > neg[None, :])
    bins = np.linspace(0, 1, 1001)
    ph = np.histogram(pos, bins)[0]
    nh = np.histogram(neg, bins)[0]
    assert stats.auc_binned(ph, nh) == pytest.approx(exact, abs=0.003)
    assert stats.auc_binned(ph, np.zeros_like(nh)) is None


def test_two_proportion_test_detects_a_real_regression_only():
    z, p = stats.two_proportion_test(30, 200, 10, 1000)
    assert z > 3 and p < 1e-6
    _, p_same = stats.two_proportion_test(10, 1000, 10, 1000)
    assert p_same == pytest.approx(0.5)
    assert stats.two_proportion_test(0, 0, 1, 10) == (0.0, 1.0)


def test_quantile_from_histogram_interpolates_inside_the_bin():
    edges = np.array([0.0, 1.0, 2.0])
    assert stats.quantile_from_histogram(edges, np.array([0, 10]), 0.5) == pytest.approx(1.5)
    assert stats.quantile_from_histogram(edges, np.array([0, 0]), 0.5) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 100), min_size=2, max_size=12),
    st.lists(st.floats(0, 100), min_size=2, max_size=12),
)
def test_psi_and_js_are_bounded(p, q):
    n = min(len(p), len(q))
    p, q = np.array(p[:n]) + 1e-9, np.array(q[:n]) + 1e-9
    assert stats.psi(p, q) >= -1e-12
    assert -1e-12 <= stats.js_distance(p, q) <= 1 + 1e-9


def test_batch_compare_flags_exactly_the_shifted_features_and_matches_scipy():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(20_000, 12))
    cur = rng.normal(size=(20_000, 12))
    cur[:, :3] += 0.5
    cur[::5, 7] = np.nan
    rows = compare_numeric(ref, cur, names=[f"x{i}" for i in range(12)])
    assert [r["feature"] for r in rows if r["drifted"]] == ["x0", "x1", "x2"]
    for i in (0, 5, 7):
        a, b = ref[:, i], cur[:, i][~np.isnan(cur[:, i])]
        w = sps.wasserstein_distance(a, b) / a.std()
        assert rows[i]["wasserstein"] == pytest.approx(w, abs=0.01)
        assert rows[i]["ks"] == pytest.approx(sps.ks_2samp(a, b).statistic, abs=0.01)
    assert rows[7]["missing_ratio"] == pytest.approx(0.2)
    assert rows[0]["psi"] > 0.2 > rows[5]["psi"]


def test_batch_profile_is_reusable_and_checks_shapes():
    rng = np.random.default_rng(5)
    prof = profile_numeric(rng.normal(size=(5000, 3)))
    same = compare_numeric(prof, rng.normal(size=(5000, 3)), settings=DriftSettings())
    assert not any(r["drifted"] for r in same)
    with pytest.raises(ValidationError, match="features"):
        compare_numeric(prof, rng.normal(size=(10, 4)))


def test_batch_heavy_tails_do_not_break_the_binning():
    rng = np.random.default_rng(6)
    ref = rng.standard_cauchy(size=(20_000, 1))
    cur = rng.standard_cauchy(size=(20_000, 1))
    row = compare_numeric(ref, cur)[0]
    assert np.isfinite(row["wasserstein"]) and row["psi"] < 0.05
