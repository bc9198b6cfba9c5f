"""Critic quality on synthetic sparse data with known heteroscedastic noise.

One small critic (200 users x 300 items, 10 % observed, 8 % cold users and items) is trained once
per module; the tests check it against the truth the generator knows.
"""

import numpy as np
import pytest
import torch

from verl_flexrec.critic import CriticConfig, CriticPredictor, fit_baselines, get_predictor, train_critic
from verl_flexrec.critic.data import validation_split
from verl_flexrec.critic.evaluate import gaussian_metrics
from verl_flexrec.critic.synthetic import make_synthetic


@pytest.fixture(scope="module")
def setup():
    m = make_synthetic(200, 300, 0.1, cold_user_frac=0.08, cold_item_frac=0.08, seed=3)
    train_mask, test_mask = m.split(0.15, seed=4)
    pred = train_critic(
        m.interactions(train_mask),
        CriticConfig(epochs=25, ensemble=3, hidden=(64, 32), seed=0),
        progress=False,
        num_threads=1,  # immune to a busy shared CPU (see predictor.SINGLE_THREAD_MAX_PAIRS)
    )
    test = m.interactions(test_mask)
    mean, var = pred.predict(test.user_ids, test.item_ids)
    return m, train_mask, test_mask, pred, test, mean, var


def test_beats_constant_and_bias_baselines_on_heldout_nll(setup):
    m, train_mask, _, pred, test, mean, var = setup
    train = m.interactions(train_mask)
    tr, va = validation_split(train, 0.1, 0)
    base = fit_baselines(train.subset(tr), train.subset(va), ["constant", "bias"])
    ours = gaussian_metrics(test.interest, mean, var)
    const, bias = (gaussian_metrics(test.interest, *base[k].predict(test.user_ids, test.item_ids)) for k in base)
    assert ours["nll"] < const["nll"] - 0.1, (ours, const)
    # the generator has rank-4 user x item structure and heteroscedastic noise: the bias model misses both
    assert ours["nll"] < bias["nll"] - 0.05 and ours["rmse"] < bias["rmse"], (ours, bias)


def test_90_percent_interval_coverage(setup):
    _, _, _, _, test, mean, var = setup
    cov = gaussian_metrics(test.interest, mean, var)["coverage_90"]
    assert 0.80 <= cov <= 0.97, cov


def test_variance_higher_on_unseen_users_and_items(setup):
    m, train_mask, test_mask, pred, _, _, var = setup
    u, i = m.obs_users[test_mask], m.obs_items[test_mask]
    n_user = np.bincount(m.obs_users[train_mask], minlength=m.n_users)
    n_item = np.bincount(m.obs_items[train_mask], minlength=m.n_items)
    well = (n_user[u] >= np.median(n_user[n_user > 0])) & (n_item[i] >= np.median(n_item[n_item > 0]))
    cold_user = m.cold_users[u] & ~m.cold_items[i]
    cold_item = m.cold_items[i] & ~m.cold_users[u]
    assert well.sum() > 30 and cold_user.sum() > 30 and cold_item.sum() > 30
    assert var[cold_user].mean() > var[well].mean()
    assert var[cold_item].mean() > var[well].mean()
    # total = aleatoric + epistemic (ensemble disagreement); an unseen id's uncertainty comes through
    # its zero support count, learned from cross-fitted points whose user / item was out of fold
    test = m.interactions(test_mask)
    comp = pred.predict_components(test.user_ids, test.item_ids)
    assert (comp["epistemic"] >= 0).all() and comp["epistemic"].mean() > 0
    np.testing.assert_allclose(comp["aleatoric"] + comp["epistemic"], comp["var"])


def test_learns_heteroscedastic_noise(setup):
    m, train_mask, test_mask, _, _, _, var = setup
    u, i = m.obs_users[test_mask], m.obs_items[test_mask]
    warm = ~(m.cold_users[u] | m.cold_items[i])
    # the predicted variance tracks the generator's known noise variance on warm pairs
    corr = np.corrcoef(var[warm], m.true_var(u[warm], i[warm]))[0, 1]
    assert corr > 0.5, corr


def test_save_load_roundtrip_and_cache(setup, tmp_path):
    _, _, _, pred, test, mean, var = setup
    path = pred.save(tmp_path / "c.pt")
    loaded = CriticPredictor.load(path)
    m2, v2 = loaded.predict(test.user_ids, test.item_ids)
    np.testing.assert_allclose(m2, mean, rtol=1e-6)
    np.testing.assert_allclose(v2, var, rtol=1e-6)
    assert loaded.meta["best_epoch"] == pred.meta["best_epoch"]
    # explicit categories for items the critic never saw are read through the loaded vocabulary
    cats = [pred.categories.values[0], "|".join(pred.categories.values[:2]), "no-such-category"]
    new_items = ["new-1", "new-2", "new-3"]
    np.testing.assert_allclose(loaded.predict("u5", new_items, categories=cats)[0],
                               pred.predict("u5", new_items, categories=cats)[0], rtol=1e-6)
    assert get_predictor(path) is get_predictor(str(path))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_predict_api_forms(setup):
    m, _, _, pred, _, _, _ = setup
    items = ["i1", "i2", "never-seen"]
    threads = torch.get_num_threads()
    a_mean, a_var = pred.predict("u5", items)
    assert torch.get_num_threads() == threads  # the single-thread guard restores torch's setting
    b_mean, b_var = pred.predict(["u5"] * 3, items, need="maximize_interest")
    np.testing.assert_allclose(a_mean, b_mean)
    assert a_mean.dtype == np.float64 and a_mean.shape == (3,)
    assert np.isfinite(a_mean).all() and (a_var > 0).all()
    # an unknown item with categories differs from one without (side information is used)
    c_mean, _ = pred.predict("u5", ["never-seen"], categories=["c1"])
    d_mean, _ = pred.predict("u5", ["never-seen"], categories=[""])
    assert c_mean[0] != d_mean[0]
    e_mean, e_var = pred.predict("u5", [])
    assert e_mean.shape == e_var.shape == (0,)
    with pytest.raises(ValueError, match="user_ids has 2 entries"):
        pred.predict(["u1", "u2"], items)


def test_training_is_deterministic_for_a_seed():
    m = make_synthetic(40, 50, 0.3, seed=1)
    cfg = CriticConfig(ensemble=2, epochs=2, emb_dim=8, hidden=(16,), seed=7)
    a = train_critic(m.interactions(), cfg, progress=False)
    b = train_critic(m.interactions(), cfg, progress=False)
    ids = m.user_id(m.obs_users[:20]), m.item_id(m.obs_items[:20])
    np.testing.assert_array_equal(a.predict(*ids)[0], b.predict(*ids)[0])


def test_rejects_too_little_data():
    m = make_synthetic(5, 5, 0.2, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        train_critic(m.interactions(np.arange(len(m.obs_values)) < 1), progress=False)


def test_need_conditioned_critic_without_categories():
    m = make_synthetic(30, 40, 0.3, seed=2)
    inter = m.interactions()
    inter.item_categories = {}
    half = np.arange(len(inter)) % 2 == 0
    inter.needs = np.where(half, "maximize_interest", "trend_promotion").astype(object)
    cfg = CriticConfig(ensemble=2, epochs=2, emb_dim=8, hidden=(16,), use_need=True)
    pred = train_critic(inter, cfg, progress=False, num_threads=1)
    assert not pred.model.use_categories and pred.model.use_need and len(pred.needs) == 2
    ids = list(inter.user_ids[:5]), list(inter.item_ids[:5])
    a, _ = pred.predict(*ids, need="maximize_interest")
    b, _ = pred.predict(*ids, need="trend_promotion")
    c, _ = pred.predict(*ids, need="never-seen-need")
    assert not np.allclose(a, b) and np.isfinite(c).all()
    loaded = CriticPredictor.from_state(pred.state())
    np.testing.assert_allclose(loaded.predict(*ids, need="trend_promotion")[0], b, rtol=1e-6)


class _FixedModel(torch.nn.Module):
    """One 'member' predicting mean 0 and variance 1 for every point."""

    def forward(self, x, c=None, k=None):
        return torch.zeros(1, len(x)), torch.ones(1, len(x))


@pytest.mark.parametrize("n", [10, 100, 10_000])
def test_variance_calibration_is_shrunk_toward_one_on_small_slices(n):
    from verl_flexrec.critic.train import CALIBRATION_PRIOR_POINTS, _evaluate

    y = torch.full((n,), 0.1)  # z^2 = 0.01: the raw calibration would divide variances by 100
    idx = torch.zeros(n, dtype=torch.long)
    scale = _evaluate(_FixedModel(), idx, idx, idx, y)["scale"]
    expected = (0.01 * n + CALIBRATION_PRIOR_POINTS) / (n + CALIBRATION_PRIOR_POINTS)
    assert scale == pytest.approx(max(expected, 0.05))
    if n == 10:
        assert scale > 0.9  # a 10-point slice barely moves the variance
    if n == 10_000:
        assert scale < 0.05 + 1e-9  # a large slice is trusted (down to the clip)


def test_old_checkpoint_format_is_refused_with_a_clear_message(setup):
    _, _, _, pred, _, _, _ = setup
    state = {**pred.state(), "format": "verl_flexrec.critic/1"}
    with pytest.raises(ValueError, match="older verl-flexrec.*retrain"):
        CriticPredictor.from_state(state, "old.pt")
    with pytest.raises(ValueError, match="not a FlexRec critic checkpoint"):
        CriticPredictor.from_state({"format": "something else"}, "x.pt")


def _codes_split(inter, seed=0):
    from verl_flexrec.critic.data import Vocab

    tr, va = validation_split(inter, 0.2, seed)
    users, items = Vocab(sorted(set(inter.user_ids))), Vocab(sorted(set(inter.item_ids)))
    t, v = inter.subset(tr), inter.subset(va)
    return (users.lookup(t.user_ids), items.lookup(t.item_ids), t.interest,
            users.lookup(v.user_ids), items.lookup(v.item_ids), v.interest, len(users), len(items))


def test_mf_feature_is_kept_only_when_there_is_user_item_structure():
    from verl_flexrec.critic.train import MF_REG_GRID, _choose_bias_reg, _choose_mf_reg

    m = make_synthetic(150, 200, 0.3, factor_sd=1.0, noise_sd=(0.3, 0.3), seed=11)  # strong rank-4 structure
    structured = _codes_split(m.interactions())
    noise_inter = m.interactions()
    noise_inter.interest = np.random.default_rng(0).normal(3.0, 1.0, len(noise_inter))
    noise = _codes_split(noise_inter)
    cfg = CriticConfig()
    assert _choose_mf_reg(cfg, 3.0, *structured) in MF_REG_GRID
    assert _choose_mf_reg(cfg, 3.0, *noise) is None
    assert _choose_mf_reg(CriticConfig(mf_dim=0), 3.0, *structured) is None  # switched off
    assert _choose_mf_reg(CriticConfig(mf_reg=0.5), 3.0, *noise) == 0.5  # fixed by the user
    # the biases of pure noise are shrunk hard; those of real biases much less
    assert _choose_bias_reg(*noise) >= 100
    assert _choose_bias_reg(*structured) <= 10


def test_trained_critic_records_its_choices(setup):
    _, _, _, pred, _, _, _ = setup
    from verl_flexrec.critic.train import BIAS_REG_GRID, MF_REG_GRID

    assert pred.meta["bias_reg"] in BIAS_REG_GRID
    assert pred.meta["mf_reg"] is None or pred.meta["mf_reg"] in MF_REG_GRID
    assert ("mf" in pred.features.names) == (pred.meta["mf_reg"] is not None)
    assert pred.meta["validation"] == "random"  # synthetic points carry no timestamps


def test_seen_pairs_are_the_training_pairs(setup):
    m, train_mask, test_mask, pred, test, _, _ = setup
    train = m.interactions(train_mask)
    seen = pred.seen_pairs()
    assert seen == set(zip(map(str, train.user_ids), map(str, train.item_ids)))
    assert pred.seen_in_training(list(train.user_ids[:5]), list(train.item_ids[:5])).all()
    assert not pred.seen_in_training(["never"], [str(train.item_ids[0])]).any()
