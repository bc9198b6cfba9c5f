"""Rating-prediction baselines: each against a hand-checked tiny case or an independent reference."""

import numpy as np
import pytest

from verl_flexrec.critic.baselines import BASELINES, BiasFiller, ConstantFiller, MFFiller, fit_baselines
from verl_flexrec.critic.data import Interactions
from verl_flexrec.critic.features import BiasModel


def _inter(triples):
    u, i, y = zip(*triples)
    return Interactions(np.array(u, dtype=object), np.array(i, dtype=object), None, np.array(y, dtype=float))


def test_constant_is_the_training_mean_with_unit_variance():
    f = ConstantFiller().fit(_inter([("a", "x", 1.0), ("b", "y", 2.0), ("a", "y", 6.0)]))
    mean, var = f.predict(["a", "zzz"], ["x", "x"])
    assert mean.tolist() == [3.0, 3.0] and var.tolist() == [1.0, 1.0]


def test_bias_model_hand_checked_case():
    # one user, items a (4) and b (2), penalty 1 on every bias: g is free, so b_u = 0, and
    # d/db_a: b_a = (4 - g) / 2, d/db_b: b_b = (2 - g) / 2, d/dg: (4 - g - b_a) + (2 - g - b_b) = 0
    # => g = 3, b_a = 0.5, b_b = -0.5
    f = BiasFiller(reg=1.0).fit(_inter([("u", "a", 4.0), ("u", "b", 2.0)]))
    mean, _ = f.predict(["u", "u", "u", "new"], ["a", "b", "new", "a"])
    np.testing.assert_allclose(mean, [3.5, 2.5, 3.0, 3.5], atol=1e-6)


def test_bias_model_equals_the_closed_form_ridge_solution():
    rng = np.random.default_rng(0)
    nu, ni, n = 7, 9, 40
    u, i = rng.integers(1, nu + 1, n), rng.integers(1, ni + 1, n)
    y = rng.normal(3, 1, n) + 0.5 * u - 0.3 * i
    ru, ri = 2.0, 5.0
    ours = BiasModel(ru, ri, max_iter=5000, tol=1e-12).fit(u, i, y, nu, ni)
    # design [1 | one-hot user | one-hot item], penalty diag(0, ru.., ri..): (X'X + P) w = X'y
    x = np.zeros((n, 1 + nu + ni))
    x[:, 0] = 1
    x[np.arange(n), u] = 1
    x[np.arange(n), nu + i] = 1
    pen = np.diag([0.0] + [ru] * nu + [ri] * ni)
    w = np.linalg.solve(x.T @ x + pen, x.T @ y)
    assert ours.global_mean == pytest.approx(w[0], abs=1e-6)
    np.testing.assert_allclose(ours.user_bias[1:], w[1 : nu + 1], atol=1e-6)
    np.testing.assert_allclose(ours.item_bias[1:], w[nu + 1 :], atol=1e-6)
    assert ours.user_bias[0] == ours.item_bias[0] == 0.0  # unknown ids add nothing


def test_mf_matches_cornac_own_scores():
    import cornac
    from cornac.data import Dataset

    rng = np.random.default_rng(1)
    triples = [(f"u{a}", f"i{b}", float(rng.integers(1, 6)))
               for a in range(12) for b in range(15) if rng.random() < 0.5]
    f = MFFiller(reg=0.05, k=4, max_iter=30, seed=3).fit(_inter(triples))
    # the reference: cornac itself on the same triples (same order, so the same internal indices)
    ds = Dataset.from_uir(triples, seed=3)
    ref = cornac.models.MF(k=4, max_iter=30, learning_rate=0.01, lambda_reg=0.05, use_bias=True, num_threads=1,
                           seed=3).fit(ds)
    users, items = zip(*[(u, i) for u, i, _ in triples[:40]])
    ours, _ = f.predict(list(users), list(items))
    theirs = [ref.score(ds.uid_map[u], ds.iid_map[i]) for u, i in zip(users, items)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # an unknown user: cornac's rule, global mean + item bias; an unknown item: global mean + user bias
    new_user, _ = f.predict("nobody", ["i3"])
    assert new_user[0] == pytest.approx(ref.score(len(ds.uid_map) + 5, ds.iid_map["i3"]), abs=1e-6)
    new_item, _ = f.predict("u2", ["never"])
    assert new_item[0] == pytest.approx(ref.global_mean + ref.u_biases[ds.uid_map["u2"]], abs=1e-6)


def test_fit_baselines_hand_checked_variance_and_refit():
    train = _inter([("a", "x", 1.0), ("b", "y", 3.0)])
    val = _inter([("a", "y", 2.0), ("b", "x", 6.0)])
    f = fit_baselines(train, val, ["constant"])["constant"]
    # validation residuals of the training mean 2: (0, 4) -> variance 8; the mean is refitted on both
    assert f.info["scale"] == pytest.approx(8.0) and f.info["val_mse"] == pytest.approx(8.0)
    mean, var = f.predict(["a"], ["x"])
    assert mean[0] == pytest.approx(3.0) and var[0] == pytest.approx(8.0)


def test_fit_baselines_picks_the_knob_with_the_best_validation_nll():
    rng = np.random.default_rng(2)
    users, items = rng.integers(0, 30, 900), rng.integers(0, 40, 900)
    y = rng.normal(0, 1, 900) + 0.8 * np.sin(users) + 0.8 * np.cos(items)
    inter = Interactions(np.char.add("u", users.astype(str)).astype(object),
                         np.char.add("i", items.astype(str)).astype(object), None, y).dedupe()
    tr, va = inter.subset(np.arange(len(inter)) % 5 != 0), inter.subset(np.arange(len(inter)) % 5 == 0)
    out = fit_baselines(tr, va, ["bias", "user_knn"])
    _, knob, grid = BASELINES["bias"]
    nlls = []
    for reg in grid:
        m, _ = BiasFiller(reg).fit(tr).predict(va.user_ids, va.item_ids)
        mse = np.mean((va.interest - m) ** 2)
        nlls.append(0.5 * np.log(2 * np.pi * mse) + 0.5)
    assert out["bias"].info["reg"] == grid[int(np.argmin(nlls))]
    assert out["user_knn"].info["k"] in BASELINES["user_knn"][2]
    # the KNN's own variance keeps its shape and is scaled by one held-out factor
    m, v = out["user_knn"].predict(va.user_ids, va.item_ids)
    _, raw = out["user_knn"].filler.predict(va.user_ids, va.item_ids)
    np.testing.assert_allclose(v, raw * out["user_knn"].info["scale"])


def test_fit_baselines_rejects_unknown_names_and_empty_parts():
    inter = _inter([("a", "x", 1.0), ("b", "y", 3.0)])
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_baselines(inter, inter, ["svd++"])
    with pytest.raises(ValueError, match="training and validation"):
        fit_baselines(inter, inter.subset(np.zeros(2, bool)), ["constant"])
