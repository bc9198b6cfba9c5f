"""The critic's variance in the data's units, against a known noise variance far from 1.

Ratings ``y = 10 + b_u + b_i + e`` with ``e ~ N(0, s^2)``, ``s = 0.5`` for items of category
``calm`` and ``s = 3`` for ``wild`` (variances 0.25 and 9, target std ~2.2): predicting the std
instead of the variance, dropping the target scaling or the calibration factor, or ignoring the
category would each miss these bounds by a factor of 2 or more. Intervals are checked against
binomial bounds for a calibrated predictor.
"""

import numpy as np
import pytest
from scipy.stats import binom

from verl_flexrec.critic import CriticConfig, train_critic
from verl_flexrec.critic.data import Interactions
from verl_flexrec.critic.evaluate import gaussian_metrics

SD = {"calm": 0.5, "wild": 3.0}


def _data(seed=0, n_users=150, n_items=120, per_user=40):
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 1.0, n_users), rng.normal(0, 1.0, n_items)
    cat = np.where(np.arange(n_items) % 2 == 0, "calm", "wild")
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    sd = np.where(cat[items] == "calm", SD["calm"], SD["wild"])
    y = 10.0 + bu[users] + bi[items] + sd * rng.standard_normal(len(users))
    cats = {f"i{k}": (cat[k],) for k in range(n_items)}
    inter = Interactions(np.char.add("u", users.astype(str)).astype(object),
                         np.char.add("i", items.astype(str)).astype(object), None, y, cats)
    test = rng.random(len(y)) < 0.15
    return inter.subset(~test), inter.subset(test), cat[items[test]]


@pytest.fixture(scope="module")
def fitted():
    train, test, cat = _data()
    pred = train_critic(train, CriticConfig(seed=0), progress=False, num_threads=1)  # the defaults
    mean, var = pred.predict(test.user_ids, test.item_ids)
    return test, cat, mean, var


def test_variance_is_in_the_data_units_per_noise_level(fitted):
    test, cat, mean, var = fitted
    err2 = (test.interest - mean) ** 2
    for name, s in SD.items():
        k = cat == name
        # the predictive variance = noise variance + the error of the estimated biases (~0.13 here) ...
        assert 0.8 * s**2 <= var[k].mean() <= 1.2 * s**2 + 0.25, (name, var[k].mean())
        # ... and matches the squared errors the critic really makes on new points (a std instead of
        # a variance would be 1.6x / 0.33x off, a missing target scaling 4.8x)
        assert 0.75 <= var[k].mean() / err2[k].mean() <= 1.33, (name, var[k].mean(), err2[k].mean())
    assert var[cat == "wild"].mean() / var[cat == "calm"].mean() > 15  # ~25 (a std ratio would be ~5)


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_interval_coverage_within_binomial_bounds(fitted, level):
    test, cat, mean, var = fitted
    for k in (np.ones(len(cat), bool), cat == "calm", cat == "wild"):
        n = int(k.sum())
        got = gaussian_metrics(test.interest[k], mean[k], var[k])[f"coverage_{round(level * 100)}"]
        lo, hi = binom.interval(0.999, n, level)
        slack = 0.02  # the learned variance is an estimate, not the truth
        assert lo / n - slack <= got <= hi / n + slack, (level, n, got)
