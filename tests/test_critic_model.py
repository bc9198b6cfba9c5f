"""Critic network pieces: loss, ensemble moments, batched members, config validation."""

import math

import numpy as np
import pytest
import torch

from verl_flexrec.critic.data import Interactions, Vocab, split_categories
from verl_flexrec.critic.model import CriticConfig, CriticEnsemble, ensemble_moments, gaussian_nll


def test_gaussian_nll_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu, y = torch.randn(50, generator=g), torch.randn(50, generator=g)
    var = torch.rand(50, generator=g) + 0.1
    ours = gaussian_nll(mu, var, y).mean()
    ref = torch.nn.functional.gaussian_nll_loss(mu, y, var, full=True, eps=1e-12)
    assert torch.allclose(ours, ref, atol=1e-6)
    # beta-NLL with beta=1 weights every term by the (detached) variance
    assert torch.allclose(gaussian_nll(mu, var, y, beta=1.0), gaussian_nll(mu, var, y) * var)


def test_ensemble_moments_law_of_total_variance():
    mu = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    var = torch.tensor([[0.5, 1.0], [1.5, 1.0]])
    mean, total = ensemble_moments(mu, var)
    assert torch.allclose(mean, torch.tensor([2.0, 0.0]))
    # aleatoric mean 1.0 + epistemic population variance of (1, 3) = 1.0
    assert torch.allclose(total, torch.tensor([2.0, 1.0]))
    m1, v1 = ensemble_moments(mu[:1], var[:1])
    assert torch.equal(m1, mu[0]) and torch.equal(v1, var[0])


def _model(**kw):
    cfg = CriticConfig(ensemble=3, emb_dim=8, hidden=(16,), use_need=True, **kw)
    return CriticEnsemble(cfg, n_features=4, n_categories=3, n_needs=2)


def test_forward_shapes_and_positive_variance():
    torch.manual_seed(0)
    m = _model()
    x = torch.randn(4, 4)
    mu, var = m(x, torch.tensor([[1, 2], [0, 0], [3, 0], [2, 1]]), torch.tensor([0, 1, 2, 1]))
    assert mu.shape == var.shape == (3, 4)
    assert (var > 0).all() and torch.isfinite(mu).all()
    # members are independent networks: their predictions differ
    assert not torch.allclose(mu[0], mu[1])


def test_per_member_inputs_equal_broadcast_inputs():
    torch.manual_seed(0)
    m = _model()
    x, c, k = torch.randn(3, 4), torch.tensor([[1, 2], [3, 0], [0, 0]]), torch.tensor([1, 2, 0])
    shared = m(x, c, k)
    per_member = m(x.expand(3, -1, -1), c.expand(3, -1, -1), k.expand(3, -1))
    for a, b in zip(shared, per_member):
        assert torch.allclose(a, b, atol=1e-6)


def test_categories_change_only_their_own_point_and_padding_is_ignored():
    torch.manual_seed(0)
    m = _model()
    x = torch.randn(2, 4)
    no_cat = m(x, torch.tensor([[0, 0], [0, 0]]))[0]
    with_cat = m(x, torch.tensor([[1, 2], [0, 0]]))[0]
    assert not torch.allclose(no_cat[:, 0], with_cat[:, 0])
    assert torch.allclose(no_cat[:, 1], with_cat[:, 1])
    # the mean of category embeddings: order and padding do not matter
    assert torch.allclose(m(x, torch.tensor([[2, 1, 0], [0, 0, 0]]))[0], with_cat, atol=1e-6)


def test_feature_standardisation_buffers_are_applied():
    torch.manual_seed(0)
    m = _model()
    x = torch.randn(5, 4)
    before = m(x)[0]
    m.feature_mean.fill_(1.0)
    m.feature_std.fill_(2.0)
    after = m(2 * x + 1)[0]
    assert torch.allclose(before, after, atol=1e-5)


def test_gradients_reach_all_parameter_groups():
    m = _model()
    mu, var = m(torch.randn(2, 4), torch.tensor([[1, 0], [2, 3]]), torch.tensor([1, 1]))
    gaussian_nll(mu, var, torch.zeros_like(mu)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    "kw",
    [{"ensemble": 0}, {"hidden": ()}, {"folds": 1}, {"bias_reg": -1.0}, {"val_frac": 1.0}, {"beta": 2.0}, {"lr": 0}],
)
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError, match="invalid critic config"):
        CriticConfig(**kw)


def test_config_roundtrip():
    cfg = CriticConfig(hidden=(8, 4), ensemble=2, use_need=True, bias_reg=3.0)
    assert CriticConfig.from_dict(cfg.to_dict()) == cfg
    assert CriticConfig.from_dict(CriticConfig().to_dict()) == CriticConfig()  # None = "tune on validation"
    assert CriticConfig.from_dict({**cfg.to_dict(), "unknown_future_key": 1}) == cfg


def test_vocab_and_categories():
    v = Vocab(["b", "a", "b", "c"])
    assert len(v) == 3 and v.values == ["b", "a", "c"]
    assert v.lookup(["a", "zzz", "c", "b"]).tolist() == [2, 0, 3, 1]
    assert v.lookup(np.array(["c"])).tolist() == [3]
    assert split_categories("x| y||z ") == ("x", "y", "z")
    assert split_categories("") == () and split_categories(None) == ()


def test_interactions_dedupe_means_duplicates():
    inter = Interactions(
        np.array(["u1", "u1", "u2", "u1"], dtype=object),
        np.array(["a", "a", "a", "b"], dtype=object),
        np.array(["n1", "n2", "n1", "n1"], dtype=object),
        np.array([1.0, 3.0, 5.0, 7.0]),
    )
    d = inter.dedupe()
    got = {(u, i): y for u, i, y in zip(d.user_ids, d.item_ids, d.interest)}
    assert got == {("u1", "a"): 2.0, ("u2", "a"): 5.0, ("u1", "b"): 7.0}
    assert d.stats["duplicates_merged"] == 1 and d.stats["conflicting_duplicates"] == 1
    assert len(inter.dedupe(by_need=True)) == 4
    with pytest.raises(ValueError, match="non-finite"):
        Interactions(np.array(["u"]), np.array(["i"]), None, np.array([math.nan]))


def test_dedupe_keeps_the_latest_timestamp_and_cutoff():
    inter = Interactions(
        np.array(["u1", "u1", "u2"], dtype=object), np.array(["a", "a", "a"], dtype=object), None,
        np.array([1.0, 3.0, 5.0]), timestamps=np.array([10.0, 30.0, 20.0]), cutoffs=np.array([5.0, 7.0, np.nan]),
    )
    d = inter.dedupe()
    got = {(u, i): (t, c) for u, i, t, c in zip(d.user_ids, d.item_ids, d.timestamps, d.cutoffs)}
    assert got[("u1", "a")] == (30.0, 7.0) and got[("u2", "a")][0] == 20.0 and math.isnan(got[("u2", "a")][1])
    assert d.has_time and not Interactions(np.array(["u"]), np.array(["i"]), None, np.array([1.0])).has_time


def test_critic_package_imports_no_verl_and_no_heavy_optional_deps():
    import subprocess
    import sys

    code = (
        "import sys, verl_flexrec.critic, verl_flexrec.critic.predictor;"
        "bad = [m for m in ('verl', 'sklearn', 'matplotlib', 'ray') if m in sys.modules];"
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_validation_split_holds_out_each_users_latest_points():
    from verl_flexrec.critic.data import validation_split

    # u1: 10 points (t = 0..9), u2: 3 points, u3: 1 point (stays in training)
    users = ["u1"] * 10 + ["u2"] * 3 + ["u3"]
    ts = list(range(10)) + [5.0, 1.0, 3.0] + [100.0]
    inter = Interactions(np.array(users, dtype=object), np.array([f"i{k}" for k in range(14)], dtype=object), None,
                         np.arange(14.0), timestamps=np.array(ts, dtype=float))
    tr, va = validation_split(inter, 0.2, seed=0)
    # ceil(0.2 * 10) = 2 latest of u1 (t = 9, 8), ceil(0.2 * 3) = 1 latest of u2 (t = 5), none of u3
    assert sorted(va.tolist()) == [8, 9, 10]
    assert sorted(tr.tolist() + va.tolist()) == list(range(14))
    # without timestamps: a random 20 %
    tr2, va2 = validation_split(Interactions(inter.user_ids, inter.item_ids, None, inter.interest), 0.2, seed=0)
    assert len(va2) == 3 and len(tr2) == 11
    # ties in time are broken at random (seeded), never by position
    tied = Interactions(np.array(["u"] * 40, dtype=object), np.array([f"i{k}" for k in range(40)], dtype=object), None,
                        np.zeros(40), timestamps=np.zeros(40))
    picks = {tuple(validation_split(tied, 0.1, seed=s)[1]) for s in range(5)}
    assert len(picks) > 1 and all(len(p) == 4 for p in picks)
    assert validation_split(inter, 0.0)[1].size == 0
