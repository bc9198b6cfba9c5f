"""User-level bootstrap intervals (verl_flexrec.evaluate.stats)."""

import numpy as np
import pytest

from verl_flexrec.evaluate.stats import cluster_bootstrap, spread


def test_one_row_per_user_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    values = rng.normal(0.5, 0.2, size=400)
    users = [f"u{i}" for i in range(400)]
    ci = cluster_bootstrap(values, users, n_boot=4000, seed=1)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert ci["mean"][0] == pytest.approx(values.mean())
    assert ci["low"][0] < values.mean() < ci["high"][0]
    assert (ci["high"][0] - ci["low"][0]) == pytest.approx(2 * half, rel=0.1)


def test_resampling_is_by_user_not_by_row():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    users = [f"u{i}" for i in range(200)]
    single = cluster_bootstrap(values, users, n_boot=2000, seed=3)
    # every user now has three identical rows: same users, same information, same interval
    tripled = cluster_bootstrap(np.repeat(values, 3), np.repeat(users, 3), n_boot=2000, seed=3)
    assert tripled["low"][0] == pytest.approx(single["low"][0], abs=1e-12)
    assert tripled["high"][0] == pytest.approx(single["high"][0], abs=1e-12)
    # treating those rows as independent users would shrink the interval by about sqrt(3)
    naive = cluster_bootstrap(np.repeat(values, 3), [f"r{i}" for i in range(600)], n_boot=2000, seed=3)
    ratio = (single["high"][0] - single["low"][0]) / (naive["high"][0] - naive["low"][0])
    assert ratio == pytest.approx(np.sqrt(3), rel=0.15)


def test_seeded_multi_column_and_degenerate_cases():
    values = np.random.default_rng(2).random((50, 3))
    users = [f"u{i % 10}" for i in range(50)]
    a = cluster_bootstrap(values, users, n_boot=300, seed=5)
    b = cluster_bootstrap(values, users, n_boot=300, seed=5)
    c = cluster_bootstrap(values, users, n_boot=300, seed=6)
    assert np.array_equal(a["low"], b["low"]) and not np.array_equal(a["low"], c["low"])
    assert a["low"].shape == (3,) and np.all(a["low"] <= a["mean"]) and np.all(a["mean"] <= a["high"])
    empty = cluster_bootstrap(np.zeros((0, 3)), [], n_boot=100)
    assert np.all(empty["mean"] == 0) and np.all(np.isfinite(empty["low"]))
    constant = cluster_bootstrap(np.ones(20), [f"u{i}" for i in range(20)], n_boot=100)
    assert constant["low"][0] == constant["high"][0] == 1.0
    none = cluster_bootstrap(values, users, n_boot=0)
    assert np.array_equal(none["low"], none["mean"])


def test_spread():
    s = spread([0.5, 0.7, 0.6])
    assert s["spread"] == pytest.approx(0.2) and s["mean"] == pytest.approx(0.6)
    assert s["std"] == pytest.approx(np.std([0.5, 0.7, 0.6]))
    assert spread([])["spread"] == 0.0
