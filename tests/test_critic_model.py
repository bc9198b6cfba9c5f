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
    cats = torch.tensor([[0, 0], [1, 2], [2, 0], [3, 1], [0, 0]])
    return CriticEnsemble(cfg, n_users=6, n_items=4, n_categories=3, n_needs=2, item_categories=cats)


def test_forward_shapes_and_positive_variance():
    torch.manual_seed(0)
    m = _model()
    u, i = torch.tensor([0, 1, 6, 3]), torch.tensor([1, 0, 4, 2])
    mu, var = m(u, i)
    assert mu.shape == var.shape == (3, 4)
    assert (var > 0).all() and torch.isfinite(mu).all()
    # members are independent networks: their predictions differ
    assert not torch.allclose(mu[0], mu[1])


def test_per_member_indices_equal_broadcast_indices():
    torch.manual_seed(0)
    m = _model()
    u, i, k = torch.tensor([1, 2, 5]), torch.tensor([1, 3, 0]), torch.tensor([1, 2, 0])
    shared = m(u, i, k)
    per_member = m(u.expand(3, -1), i.expand(3, -1), k.expand(3, -1), m.item_categories[i].expand(3, -1, -1))
    for a, b in zip(shared, per_member):
        assert torch.allclose(a, b, atol=1e-6)


def test_category_override_changes_prediction_only_through_categories():
    torch.manual_seed(0)
    m = _model()
    u, i = torch.tensor([1, 1]), torch.tensor([0, 0])  # unknown item
    no_cat = m(u, i)[0]
    with_cat = m(u, i, categories=torch.tensor([[1, 2], [0, 0]]))[0]
    assert not torch.allclose(no_cat[:, 0], with_cat[:, 0])
    assert torch.allclose(no_cat[:, 1], with_cat[:, 1])


def test_gradients_reach_all_parameter_groups():
    m = _model()
    mu, var = m(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1, 1]))
    gaussian_nll(mu, var, torch.zeros_like(mu)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    "kw", [{"ensemble": 0}, {"hidden": ()}, {"id_dropout": 1.0}, {"val_frac": 1.0}, {"beta": 2.0}, {"lr": 0}]
)
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError, match="invalid critic config"):
        CriticConfig(**kw)


def test_config_roundtrip():
    cfg = CriticConfig(hidden=(8, 4), ensemble=2, use_need=True)
    assert CriticConfig.from_dict(cfg.to_dict()) == cfg
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
