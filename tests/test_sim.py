"""The learning-dynamics simulator (benchmarks/sim): environment truth and policy probabilities.

Environment: gains follow the package's need definitions, the oracle ranking scores NDCG 1,
metrics match pytrec_eval-checked package metrics on brute-force relevance, sparse training gains
keep observed values and give them zero variance. Policy: emitted rankings are permutations, the
per-step log-probs of sampling equal teacher forcing, and the probabilities of all K! rankings
sum to 1 (brute force).
"""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from sim import EnvConfig, PointerPolicy, RankingEnv, rank_metrics

from verl_flexrec.needs import get_need


@pytest.fixture(scope="module")
def env():
    return RankingEnv(EnvConfig(n_users=40, n_items=90, n_candidates=8, density=0.3, seed=3))


def test_gains_follow_the_need_definitions(env):
    ep = env.sample_episodes(60, rng=np.random.default_rng(0))
    interest = np.maximum(0.0, env.cfg.mean + env.b[ep.items] + np.einsum("ekf,ekf->ek", env.P[ep.users][:, None, :].repeat(8, 1), env.Q[ep.items]))
    for e in range(len(ep)):
        name = env.cfg.needs[ep.needs[e]]
        cats_seen = env.seen[ep.users[e]]
        novel = np.array([0.0 if cats_seen[env.category[i]] else 1.0 for i in ep.items[e]])
        pop = env.popularity[ep.items[e]] / env.popularity[ep.items[e]].max()
        expected = get_need(name).gain({"interest": interest[e], "novel_topic": novel, "popularity": pop})
        np.testing.assert_allclose(ep.gains[e].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert set(ep.needs.tolist()) == {0, 1, 2}
    assert (ep.gains >= 0).all() and torch.equal(ep.gains, ep.train_gains) and (ep.train_var == 0).all()
    assert ep.features.shape == (60, 8, env.num_features) and torch.isfinite(ep.features).all()


def test_oracle_ranking_has_ndcg_one_and_reverse_less(env):
    ep = env.sample_episodes(50, rng=np.random.default_rng(1))
    ep = ep.take(np.flatnonzero((ep.gains > 0).sum(-1).numpy() >= 2))
    oracle = torch.sort(ep.gains, -1, descending=True).values
    m = rank_metrics(oracle, 5)
    torch.testing.assert_close(m["ndcg@5"], torch.ones(len(ep), dtype=torch.float64))
    torch.testing.assert_close(m["recall@5"], torch.ones(len(ep), dtype=torch.float64))
    worst = rank_metrics(torch.flip(oracle, (-1,)), 5)
    assert (worst["ndcg@5"] < 1).all()


def test_recall_against_brute_force(env):
    rng = np.random.default_rng(2)
    ep = env.sample_episodes(40, rng=rng)
    for e in range(len(ep)):
        g = ep.gains[e].numpy()
        perm = rng.permutation(len(g))
        top = sorted(range(len(g)), key=lambda i: -g[i])[:5]
        relevant = {i for i in range(len(g)) if g[i] >= g[top[-1]] and g[i] > 0}
        expected = len(relevant & set(perm[:5].tolist())) / len(relevant) if relevant else 0.0
        got = float(rank_metrics(torch.as_tensor(g[perm]), 5)["recall@5"])
        assert got == pytest.approx(expected)


@pytest.mark.parametrize("filler", ["noisy", "user_knn", "item_knn"])
def test_sparse_gains_keep_observations_and_fill_the_rest(env, filler):
    model = env.fit_filler(filler)
    ep = env.sample_episodes(30, sparse=True, filler=filler, filler_model=model, rng=np.random.default_rng(4))
    obs = env.observed[ep.users[:, None], ep.items]
    w = np.where(ep.gains.numpy() > 0, ep.gains.numpy() / np.maximum(env.interest(ep.users[:, None], ep.items), 1e-300), np.nan)
    assert 0 < obs.mean() < 1
    np.testing.assert_array_equal(ep.train_var.numpy()[obs], 0.0)
    assert (ep.train_var.numpy()[~obs] >= 0).all() and torch.isfinite(ep.train_gains).all()
    # observed: the logged noisy draw times the need weight (where the weight is recoverable)
    ok = obs & np.isfinite(w)
    np.testing.assert_allclose(ep.train_gains.numpy()[ok], (env.obs_value[ep.users[:, None], ep.items] * w)[ok], rtol=1e-9)
    if filler == "noisy":  # a noisy but unbiased-in-mean filler: not equal to the truth
        assert not torch.allclose(ep.train_gains, ep.gains)


def test_unknown_filler_is_rejected(env):
    with pytest.raises(ValueError, match="filler must be one of"):
        env.fit_filler("oracle")


def test_policy_emits_permutations_and_sampling_matches_teacher_forcing(env):
    torch.manual_seed(0)
    ep = env.sample_episodes(16, rng=np.random.default_rng(5))
    pol = PointerPolicy(env.num_features, d_model=16)
    perm, logp = pol.sample(ep.features, generator=torch.Generator().manual_seed(1))
    K = env.cfg.n_candidates
    assert torch.equal(torch.sort(perm, -1).values, torch.arange(K).expand(16, K))
    tf = pol.log_probs(ep.features, perm)
    torch.testing.assert_close(tf, logp, atol=1e-5, rtol=1e-5)
    assert (tf[:, -1].abs() < 1e-6).all()  # the last item is forced
    greedy, glogp = pol.sample(ep.features, greedy=True)
    assert torch.equal(torch.sort(greedy, -1).values, torch.arange(K).expand(16, K))
    assert (glogp.sum(-1) >= tf.sum(-1) - 1e-5).float().mean() > 0.5  # greedy is usually likelier


def test_permutation_probabilities_sum_to_one():
    torch.manual_seed(0)
    K, F = 4, 5
    pol = PointerPolicy(F, d_model=8, n_heads=2)
    feats = torch.randn(1, K, F)
    perms = torch.tensor(list(itertools.permutations(range(K))))
    logp = pol.log_probs(feats.expand(len(perms), K, F), perms).sum(-1)
    assert len(perms) == math.factorial(K)
    assert float(torch.logsumexp(logp.detach().double(), 0)) == pytest.approx(0.0, abs=1e-5)


def test_policy_gradient_flows_through_every_step(env):
    ep = env.sample_episodes(4, rng=np.random.default_rng(6))
    pol = PointerPolicy(env.num_features, d_model=16)
    perm, _ = pol.sample(ep.features)
    pol.log_probs(ep.features, perm)[:, 0].sum().backward()
    grads = [p.grad for p in pol.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
