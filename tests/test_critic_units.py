"""The critic's numbers against first principles, deterministic (no training).

* Predictor units: an ensemble whose members output known constants (zero head weights), so the
  predictor's mean and variance in the data's units are a hand computation:
  ``mean = g + b_u + b_i + target_std * avg_m mu_m`` and
  ``var = target_std**2 * var_scale * (avg_m s2_m + var_m(mu_m))`` -- a std instead of a variance,
  a missing target scaling or a dropped calibration factor each change them by a known factor.
* KNN fillers: a dense reference of the documented neighbourhood formula written out here
  (centred rows, cosine similarity, top-k positive neighbours, weighted mean and dispersion,
  shrinkage toward the residual variance), and the variance rising with the neighbours' spread.

tests/test_critic_variance.py already covers the trained critic's variance against known noise
variances (0.25 and 9) and its 50 % / 90 % coverage with binomial bounds;
tests/test_critic_train.py covers the calibration scale's formula (shrinkage toward 1, the clip).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verl_flexrec.critic.data import Interactions, Vocab
from verl_flexrec.critic.features import SupportFeatures
from verl_flexrec.critic.knn import ItemKNNFiller, UserKNNFiller
from verl_flexrec.critic.model import CriticConfig, CriticEnsemble
from verl_flexrec.critic.predictor import CriticPredictor

MU = [0.5, -0.1]  # member means (standardised residual units)
S2 = [0.3, 0.7]  # member variances
TARGET_STD, VAR_SCALE = 2.5, 1.7


def _constant_predictor(var_scale=VAR_SCALE):
    users, items = np.array([1, 1, 2, 2, 3]), np.array([1, 2, 1, 3, 2])
    y = np.array([4.0, 2.0, 5.0, 1.0, 3.0])
    features = SupportFeatures(bias_reg=1.0, prior=5.0, mf_dim=0).fit(users, items, y, 3, 3)
    config = CriticConfig(ensemble=2, hidden=(4,), use_categories=False, mf_dim=0)
    model = CriticEnsemble(config, len(features.names))
    with torch.no_grad():
        model.head_w.zero_()
        for m in range(2):  # softplus(b) + min_var = S2[m]
            model.head_b[m, 0, 0] = MU[m]
            model.head_b[m, 0, 1] = math.log(math.expm1(S2[m] - config.min_var))
    vocab = lambda n, p: Vocab([f"{p}{j}" for j in range(1, n + 1)])  # noqa: E731
    pred = CriticPredictor(model, features=features, users=vocab(3, "u"), items=vocab(3, "i"), categories=Vocab(),
                           needs=Vocab(), catalog=vocab(3, "i"), catalog_categories=np.zeros((4, 1), dtype=np.int64),
                           target_std=TARGET_STD, var_scale=var_scale)
    return pred, features


def test_predictor_maps_member_outputs_to_the_data_units():
    pred, features = _constant_predictor()
    users, items = ["u1", "u2", "u3", "nobody"], ["i3", "i3", "i1", "i2"]
    out = pred.predict_components(users, items)
    b = features.bias
    u_code, i_code = [1, 2, 3, 0], [3, 3, 1, 2]
    base = np.array([b.global_mean + b.user_bias[u] + b.item_bias[i] for u, i in zip(u_code, i_code)])
    np.testing.assert_allclose(out["mean"], base + TARGET_STD * np.mean(MU), rtol=0, atol=1e-6)
    aleatoric = TARGET_STD**2 * VAR_SCALE * np.mean(S2)  # 6.25 * 1.7 * 0.5
    epistemic = TARGET_STD**2 * VAR_SCALE * np.var(MU)  # population variance of the members: 0.09
    np.testing.assert_allclose(out["aleatoric"], aleatoric, rtol=1e-5)
    np.testing.assert_allclose(out["epistemic"], epistemic, rtol=1e-4)
    np.testing.assert_allclose(out["var"], aleatoric + epistemic, rtol=1e-5)
    mean, var = pred.predict("u1", ["i1", "i2"])
    np.testing.assert_allclose(var, aleatoric + epistemic, rtol=1e-5)
    # the calibration factor multiplies every variance and leaves the mean alone
    plain, _ = _constant_predictor(var_scale=1.0)
    m1, v1 = plain.predict("u1", ["i1", "i2"])
    np.testing.assert_allclose(var / v1, VAR_SCALE, rtol=1e-6)
    np.testing.assert_allclose(mean, m1, rtol=0, atol=0)


# -- KNN fillers --------------------------------------------------------------------------------------
def _knn_reference(triples, kind, k, shrink, queries):
    """The module docstring's formula, dense and written out (rows = users for kind='user')."""
    if kind == "item":
        triples = [(i, u, y) for u, i, y in triples]
        queries = [(i, u) for u, i in queries]
    rows = sorted({r for r, _, _ in triples})
    cols = sorted({c for _, c, _ in triples})
    Y = np.full((len(rows), len(cols)), np.nan)
    for r, c, y in triples:
        Y[rows.index(r), cols.index(c)] = y
    seen = ~np.isnan(Y)
    row_mean = np.nanmean(Y, axis=1)
    R = np.where(seen, Y - row_mean[:, None], 0.0)
    res_var = float(np.var(R[seen]))
    norms = np.linalg.norm(R, axis=1)
    out = []
    for r, c in queries:
        a, j = rows.index(r), cols.index(c)
        sims = np.array([R[a] @ R[v] / (norms[a] * norms[v]) if v != a and norms[a] * norms[v] > 0 else -np.inf
                         for v in range(len(rows))])
        neighbours = [v for v in np.argsort(-sims, kind="stable")[:k] if v != a]
        w = np.array([max(sims[v], 0.0) if seen[v, j] else 0.0 for v in neighbours])
        res = np.array([R[v, j] for v in neighbours])
        used = w > 0
        pred = (w @ res) / w.sum() if used.any() else 0.0
        disp = (w @ (res - pred) ** 2) / w.sum() if used.any() else 0.0
        n_eff = int(used.sum())
        out.append((row_mean[a] + pred, (n_eff * disp + shrink * res_var) / (n_eff + shrink)))
    return np.array(out)


def _random_triples(seed, n_users=9, n_items=7, density=0.6):
    rng = np.random.default_rng(seed)
    triples = [(f"u{u}", f"i{i}", float(rng.normal(3.0, 1.5)))
               for u in range(n_users) for i in range(n_items) if rng.random() < density]
    return triples


def _interactions(triples):
    u, i, y = zip(*triples)
    return Interactions(np.array(u, dtype=object), np.array(i, dtype=object), None, np.array(y))


@pytest.mark.parametrize("cls,kind", [(UserKNNFiller, "user"), (ItemKNNFiller, "item")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_fillers_equal_the_written_out_formula(cls, kind, seed):
    triples = _random_triples(seed)
    observed = {(u, i) for u, i, _ in triples}
    queries = [(f"u{u}", f"i{i}") for u in range(9) for i in range(7) if (f"u{u}", f"i{i}") not in observed]
    users_seen = {u for u, _, _ in triples}
    items_seen = {i for _, i, _ in triples}
    queries = [(u, i) for u, i in queries if u in users_seen and i in items_seen]
    assert len(queries) > 10
    filler = cls(k=50, shrink=2.0).fit(_interactions(triples))
    mean, var = filler.predict([u for u, _ in queries], [i for _, i in queries])
    want = _knn_reference(triples, kind, 50, 2.0, queries)
    np.testing.assert_allclose(mean, want[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(var, want[:, 1], rtol=1e-9, atol=1e-9)


def test_knn_top_k_keeps_the_most_similar_rows():
    triples = _random_triples(5, n_users=12, n_items=8, density=0.7)
    filler = UserKNNFiller(k=3, shrink=1.0).fit(_interactions(triples))
    users = {u for u, _, _ in triples}
    observed = {(u, i) for u, i, _ in triples}
    queries = [(u, f"i{i}") for u in sorted(users) for i in range(8) if (u, f"i{i}") not in observed]
    mean, var = filler.predict([u for u, _ in queries], [i for _, i in queries])
    want = _knn_reference(triples, "user", 3, 1.0, queries)
    np.testing.assert_allclose(mean, want[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(var, want[:, 1], rtol=1e-9, atol=1e-9)


def _dispersion_case(spread):
    """Users a, b, c agree on items x, y, z (so they are each other's neighbours); b and c rated the
    target item t with residuals +/- spread around the same value; a did not."""
    triples = [
        ("a", "x", 5.0), ("a", "y", 1.0), ("a", "z", 3.0),
        ("b", "x", 5.0), ("b", "y", 1.0), ("b", "z", 3.0), ("b", "t", 4.0 + spread),
        ("c", "x", 5.0), ("c", "y", 1.0), ("c", "z", 3.0), ("c", "t", 4.0 - spread),
        ("d", "x", 1.0), ("d", "y", 5.0), ("d", "t", 0.0),  # opposite taste: negative similarity, not used
    ]
    return triples, UserKNNFiller(k=50, shrink=2.0).fit(_interactions(triples))


def test_knn_variance_rises_with_the_neighbours_dispersion():
    variances = []
    for spread in (0.0, 0.5, 1.0, 2.0):
        triples, filler = _dispersion_case(spread)
        mean, var = filler.predict("a", ["t"])
        want = _knn_reference(triples, "user", 50, 2.0, [("a", "t")])[0]
        assert (mean[0], var[0]) == pytest.approx(tuple(want), rel=1e-9, abs=1e-12)
        variances.append(var[0])
    assert all(later > earlier for earlier, later in zip(variances, variances[1:]))
    # agreeing neighbours: only the shrinkage term is left, shrink * res_var / (n_eff + shrink),
    # n_eff = 2 (b and c; d's similarity is negative)
    triples, filler = _dispersion_case(0.0)
    res = []
    for user in "abcd":
        ys = [y for u, _, y in triples if u == user]
        res += [y - np.mean(ys) for y in ys]
    assert filler.predict("a", ["t"])[1][0] == pytest.approx(2.0 * np.var(res) / (2 + 2.0), rel=1e-9)


def _four_ratings():
    # users u1 (a: 1, b: 3), u2 (a: 2), u3 (b: 6)
    return Interactions(np.array(["u1", "u1", "u2", "u3"], dtype=object), np.array(["a", "b", "a", "b"], dtype=object),
                        None, np.array([1.0, 3.0, 2.0, 6.0]))


def test_knn_fallbacks_for_unknown_rows_and_columns_by_hand():
    """An unknown user with a known item gets the item's mean and the variance of the
    item-centred residuals; nothing known: the global mean and variance (population)."""
    user = UserKNNFiller(k=5).fit(_four_ratings())
    mean, var = user.predict(["new", "new"], ["a", "zz"])
    # item means a: 1.5, b: 4.5; item-centred residuals -0.5, -1.5, 0.5, 1.5 -> variance 1.25
    np.testing.assert_allclose(mean, [1.5, 3.0], rtol=1e-15)
    np.testing.assert_allclose(var, [1.25, 3.5], rtol=1e-15)  # global: mean 3, variance 14 / 4
    item = ItemKNNFiller(k=5).fit(_four_ratings())
    mean, var = item.predict(["u1", "nobody"], ["zz", "zz"])
    # user means u1: 2, u2: 2, u3: 6; user-centred residuals -1, 1, 0, 0 -> variance 0.5
    np.testing.assert_allclose(mean, [2.0, 3.0], rtol=1e-15)
    np.testing.assert_allclose(var, [0.5, 3.5], rtol=1e-15)


def test_knn_with_one_rating_falls_back_to_unit_variance():
    one = Interactions(np.array(["u1"], dtype=object), np.array(["a"], dtype=object), None, np.array([4.0]))
    mean, var = UserKNNFiller().fit(one).predict(["u1", "new", "new"], ["a", "a", "zz"])
    np.testing.assert_allclose(mean, [4.0, 4.0, 4.0])
    np.testing.assert_allclose(var, [1.0, 1.0, 1.0])  # a variance of one value is no evidence: 1, not 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fresh_ensemble_starts_at_no_correction_and_unit_variance(seed):
    """Before training every member predicts mu ~ 0 and var ~ 1 (the standardised residual's
    marginal), whatever the categories and need: small embedding and head initialisations."""
    torch.manual_seed(seed)
    model = CriticEnsemble(CriticConfig(ensemble=4, use_need=True), 6, n_categories=5, n_needs=3)
    with torch.no_grad():
        mu, var = model(torch.randn(200, 6), torch.randint(0, 6, (200, 2)), torch.randint(0, 4, (200,)))
    assert float(mu.abs().max()) < 0.5
    assert 0.7 < float(var.min()) and float(var.max()) < 1.4


def test_knn_predict_broadcasts_one_user_id_of_any_scalar_type():
    inter = Interactions(np.array(["7", "7", "8"], dtype=object), np.array(["a", "b", "a"], dtype=object), None,
                         np.array([1.0, 3.0, 2.0]))
    knn = UserKNNFiller(k=5).fit(inter)
    want = knn.predict(["7", "7"], ["a", "zz"])
    for user in ("7", 7, np.int64(7)):
        got = knn.predict(user, ["a", "zz"])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
