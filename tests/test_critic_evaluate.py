"""The comparison harness: Gaussian metrics vs scipy, variance information on a case where the
informative variance is known, paired bootstrap intervals and breakdowns."""

import math

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from verl_flexrec.critic.data import Interactions
from verl_flexrec.critic.evaluate import compare_fillers, gaussian_metrics, variance_information
from verl_flexrec.critic.report import format_report


def test_gaussian_metrics_against_scipy_and_direct_intervals():
    rng = np.random.default_rng(0)
    y, mean, var = rng.normal(size=500), rng.normal(size=500), rng.uniform(0.2, 3, 500)
    m = gaussian_metrics(y, mean, var)
    assert m["nll"] == pytest.approx(-norm.logpdf(y, mean, np.sqrt(var)).mean())
    lo50, hi50 = norm.interval(0.5, mean, np.sqrt(var))
    lo90, hi90 = norm.interval(0.9, mean, np.sqrt(var))
    assert m["coverage_50"] == pytest.approx(((y >= lo50) & (y <= hi50)).mean())
    assert m["coverage_90"] == pytest.approx(((y >= lo90) & (y <= hi90)).mean())
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((y - mean) ** 2)))


@pytest.fixture(scope="module")
def known_variance():
    """y ~ N(0, s2) with log s2 ~ N(0, tau^2): the informative variance is s2 itself."""
    rng = np.random.default_rng(1)
    n, tau = 40_000, 1.0
    s2 = np.exp(rng.normal(0, tau, n))
    return rng.normal(0, np.sqrt(s2)), np.zeros(n), s2, tau


def test_true_variance_gains_the_jensen_gap_over_any_constant(known_variance):
    y, mean, s2, tau = known_variance
    info = variance_information(y, mean, s2)
    # E NLL(const c* = E s2) - E NLL(s2) = 0.5 (log E s2 - E log s2) = 0.5 * tau^2 / 2 for log-normal s2
    assert info["nll_gain_vs_constant_var"] == pytest.approx(tau**2 / 4, abs=0.02)
    assert info["nll_gain_shape"] == pytest.approx(tau**2 / 4, abs=0.02)
    err2 = y**2
    assert info["spearman"] == pytest.approx(spearmanr(s2, err2).statistic) and info["spearman"] > 0.2
    # RMSE of the top / bottom decile of s2 = sqrt of the mean s2 there
    order = np.argsort(s2)
    k = len(y) // 10
    assert info["rmse_top_decile"] == pytest.approx(math.sqrt(s2[order[-k:]].mean()), rel=0.05)
    assert info["rmse_bottom_decile"] == pytest.approx(math.sqrt(s2[order[:k]].mean()), rel=0.05)
    assert info["top_bottom_ratio"] > 5


def test_miscalibrated_but_informative_variance_keeps_its_shape_gain(known_variance):
    y, mean, s2, tau = known_variance
    info = variance_information(y, mean, 4.0 * s2)  # 4x too wide: as-is it can lose to a constant
    # NLL(c * s2) - NLL(s2) = 0.5 (log c + 1/c - 1) = 0.5 (log 4 - 0.75) for c = 4
    expected = tau**2 / 4 - 0.5 * (math.log(4) - 0.75)
    assert info["nll_gain_vs_constant_var"] == pytest.approx(expected, abs=0.02)
    assert info["nll_gain_shape"] == pytest.approx(tau**2 / 4, abs=0.02)  # calibration aside, still informative


def test_uninformative_variance_does_not_beat_a_constant(known_variance):
    y, mean, s2, _ = known_variance
    shuffled = np.random.default_rng(2).permutation(s2)  # same values, no relation to the errors
    info = variance_information(y, mean, shuffled)
    assert info["nll_gain_vs_constant_var"] < -0.1 and info["nll_gain_shape"] < 0
    assert abs(info["spearman"]) < 0.03 and 0.85 < info["top_bottom_ratio"] < 1.15
    assert variance_information(y, mean, np.full(len(y), 2.0)) is None  # one constant: nothing to say


class _Fixed:
    def __init__(self, mean, var):
        self.mean, self.var = np.asarray(mean, float), np.asarray(var, float)

    def predict(self, user_ids, item_ids, need=None, categories=None):
        return self.mean.copy(), self.var.copy()


def test_compare_fillers_pairs_intervals_and_groups():
    rng = np.random.default_rng(3)
    n_users, per = 60, 8
    n = n_users * per
    users = np.repeat([f"u{k}" for k in range(n_users)], per).astype(object)
    items = np.array([f"i{k % 25}" for k in range(n)], dtype=object)
    s2 = np.exp(rng.normal(0, 1, n))
    y = rng.normal(0, np.sqrt(s2))
    cut = np.full(n, 1000.0)
    ts = cut + np.tile([0.0, 10.0, 2 * 86400, 10 * 86400, 40 * 86400, 5.0, 6.0, 7.0], n_users)
    test = Interactions(users, items, None, y, timestamps=ts, cutoffs=cut)
    fillers = {"good": _Fixed(np.zeros(n), s2), "flat": _Fixed(np.zeros(n), np.full(n, s2.mean()))}
    rep = compare_fillers(fillers, test, reference="good", known_users={f"u{k}" for k in range(30)},
                          known_items={"i1"}, n_boot=500, seed=0)
    good, flat = rep["fillers"]["good"], rep["fillers"]["flat"]
    assert rep["users"] == n_users and rep["n"] == n
    d = flat["vs_reference"]["nll_diff"]
    assert d["mean"] == pytest.approx(flat["metrics"]["nll"]["mean"] - good["metrics"]["nll"]["mean"])
    assert d["low"] <= d["mean"] <= d["high"] and d["low"] > 0  # the informative variance wins, paired
    g = good["variance_information"]["nll_gain_vs_constant_var_ci"]
    assert g["low"] <= g["mean"] <= g["high"]
    assert flat["variance_information"] is None
    assert rep["groups"]["user"]["known"]["good"]["n"] == 30 * per
    assert rep["groups"]["item"]["known"]["good"]["n"] == (items == "i1").sum()
    t = rep["groups"]["time_since_cutoff"]
    assert t["< 1 day"]["good"]["n"] == 5 * n_users and t["> 30 days"]["good"]["n"] == n_users
    assert rep["goal"]["nll_below_best_baseline"]["best_baseline"] == "flat"
    assert rep["goal"]["nll_below_best_baseline"]["met"] and rep["goal"]["variance_beats_constant"]["met"]
    md = format_report(rep)
    rows = [line for line in md.splitlines() if line.startswith("| good |")]
    assert len(rows) == 2 and "does NOT beat" not in rows[1]  # the metrics row and the variance row
    # no replicates: every interval collapses to its point
    rep0 = compare_fillers(fillers, test, reference="good", n_boot=0)
    m = rep0["fillers"]["good"]["metrics"]["nll"]
    assert m["low"] == m["mean"] == m["high"]


def test_compare_fillers_rejects_bad_predictions_and_empty_data():
    test = Interactions(np.array(["u"], dtype=object), np.array(["i"], dtype=object), None, np.array([1.0]))
    with pytest.raises(ValueError, match="non-positive"):
        compare_fillers({"bad": _Fixed([1.0], [0.0])}, test)
    with pytest.raises(ValueError, match="no held-out points"):
        compare_fillers({"x": _Fixed([], [])}, test.subset(np.zeros(1, bool)))
