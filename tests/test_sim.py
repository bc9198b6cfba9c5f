"""The learning benchmark's simulator (benchmarks/sim): world truth, sparse feedback, the token-level
policy and the curve statistics.

World: gains follow the package's need definitions on an independently recomputed interest;
observation is sparse, missing-not-at-random and exact; a filler's predictions land on the right
(user, item) pairs. Policy: valid outputs spell each candidate's id once, sampling log-probs equal
teacher forcing, the probabilities of *every* token sequence (invalid ones included) sum to 1
(brute force), the pointer limit is Plackett-Luce, and batching seeds changes nothing: a seed
trained inside a batch takes exactly the update it takes alone. Statistics: against scipy and
hand-computed values.
"""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from sim import (
    NEEDS,
    Rollouts,
    SeedBatchedPolicy,
    World,
    WorldConfig,
    item_token_positions,
    rank_metrics,
    stats,
)

from verl_flexrec.needs import get_need

CFG = WorldConfig(n_users=50, n_items=90, n_candidates=8, id_base=8, density=0.2, seed=3)


@pytest.fixture(scope="module")
def world():
    return World(CFG)


def test_gains_follow_the_need_definitions_on_the_true_interest(world):
    ep = world.sample_episodes(60, np.random.default_rng(0))
    for e in range(len(ep)):
        u, items = ep.users[e], ep.items[e]
        m = CFG.mean + world.b[items] + world.Q[items] @ world.P[u] + world.Kc[world.category[items]] @ world.P[u]
        interest = np.maximum(0.0, m)
        novel = np.array([0.0 if world.seen[u, world.category[i]] else 1.0 for i in items])
        pop = world.popularity[items] / world.popularity[items].max()
        expected = get_need(NEEDS[ep.needs[e]]).gain({"interest": interest, "novel_topic": novel, "popularity": pop})
        np.testing.assert_allclose(ep.gains[e].numpy(), expected, rtol=1e-12, atol=1e-12)
        assert sorted(world.catalog_id[items].tolist()) == sorted((ep.id_prefix[e] * CFG.id_base + ep.id_suffix[e]).tolist())
    assert set(ep.needs.tolist()) == {0, 1, 2}
    assert torch.equal(ep.gains, ep.train_gains) and (ep.train_var == 0).all()
    assert ep.features.shape == (60, CFG.n_candidates, CFG.num_features) and ep.context.shape == (60, CFG.num_context)
    # the policy sees the factors but not their products (the target is non-linear in its input)
    assert not any(np.allclose(ep.features[0, :, j].numpy(), (world.Q[ep.items[0]] @ world.P[ep.users[0]])) for j in range(CFG.num_features))


def test_oracle_ranking_scores_one(world):
    ep = world.sample_episodes(50, np.random.default_rng(1))
    ep = ep.take(np.flatnonzero((ep.gains > 0).sum(-1).numpy() >= 2))
    oracle = torch.sort(ep.gains, -1, descending=True).values
    m = rank_metrics(oracle, 5)
    torch.testing.assert_close(m["ndcg@5"], torch.ones(len(ep), dtype=torch.float64))
    assert (rank_metrics(torch.flip(oracle, (-1,)), 5)["ndcg@5"] < 1).all()


def test_sparse_feedback_is_uneven_and_missing_not_at_random():
    w = World(WorldConfig(seed=1))  # default sizes: enough pairs for stable shares
    assert w.observed.mean() == pytest.approx(0.1, abs=0.01)
    m = w.mean_matrix()
    assert m[w.observed].mean() > m[~w.observed].mean() + 0.1  # people see what they like
    niche = w.niche_category[w.category]
    assert w.observed[:, niche].mean() < 0.3 * w.observed[:, ~niche].mean()
    per_user = w.observed.mean(1)
    assert per_user.min() < 0.02 and per_user.max() > 0.3  # cold and heavy users
    inter = w.observed_interactions()
    assert len(inter) == w.observed.sum()
    u = np.array([int(x[1:]) for x in inter.user_ids])
    i = np.array([int(x[1:]) for x in inter.item_ids])
    np.testing.assert_array_equal(inter.interest, w.interest_matrix[u, i])  # exact observations


class _PairFiller:
    """Predicts mean = user + item / 1000 and var = item / 100 (recognisable per pair)."""

    def predict(self, user_ids, item_ids):
        u = np.array([int(x[1:]) for x in user_ids], dtype=np.float64)
        i = np.array([int(x[1:]) for x in item_ids], dtype=np.float64)
        return u + i / 1000 - 5.0, i / 100


def test_fill_keeps_observed_values_and_puts_predictions_on_their_pairs(world):
    ep = world.sample_episodes(40, np.random.default_rng(4))
    filled, errors = world.fill_episodes(ep, _PairFiller())
    w = world.need_weights(ep.users, ep.needs, ep.items)
    for e in range(len(ep)):
        for k, item in enumerate(ep.items[e]):
            u = ep.users[e]
            if world.observed[u, item]:
                exp_gain, exp_var = world.interest_matrix[u, item] * w[e, k], 0.0
            else:
                exp_gain, exp_var = max(u + item / 1000 - 5.0, 0.0) * w[e, k], item / 100 * w[e, k] ** 2
            assert float(filled.train_gains[e, k]) == pytest.approx(exp_gain, abs=1e-12)
            assert float(filled.train_var[e, k]) == pytest.approx(exp_var, abs=1e-12)
    assert torch.equal(filled.gains, ep.gains)  # the truth is untouched
    unobs = ~world.observed[ep.users[:, None], ep.items]
    assert len(errors["error"]) == unobs.sum()


# -- policy ---------------------------------------------------------------------------------------
def _policy(seeds, cfg=CFG, **kw):
    return SeedBatchedPolicy(list(seeds), cfg.num_features, cfg.num_context, cfg.n_prefix, cfg.id_base, d_model=16, **kw)


def _stacked(ep, S):
    return [getattr(ep, f)[None].expand(S, *getattr(ep, f).shape) for f in ("features", "context", "id_prefix", "id_suffix")]


def test_valid_outputs_spell_every_candidate_once_and_sampling_matches_teacher_forcing(world):
    ep = world.sample_episodes(32, np.random.default_rng(5))
    pol = _policy([0, 1], hallucination_logit=-3.0)  # some invalid outputs too
    x = _stacked(ep, 2)
    ro = pol.sample(*x, generator=torch.Generator().manual_seed(1))
    K = CFG.n_candidates
    assert 0 < ro.valid.float().mean() < 1
    pfx, sfx = x[2].reshape(-1, K), x[3].reshape(-1, K)
    for n in range(ro.order.shape[0]):
        o = ro.order[n]
        written = o[o >= 0]
        assert len(set(written.tolist())) == len(written)  # never the same candidate twice
        assert bool(ro.valid[n]) == (len(written) == K)
        for t in range(K):  # the written tokens spell the candidate's id
            if o[t] >= 0:
                assert (ro.id_first[n, t], ro.id_second[n, t]) == (pfx[n, o[t]], sfx[n, o[t]])
    torch.testing.assert_close(pol.log_probs(*x, ro), ro.log_probs, atol=1e-5, rtol=1e-5)
    assert item_token_positions(2, K).tolist() == [-1, -1] + [k for k in range(K) for _ in range(2)]
    greedy = pol.sample(*x, greedy=True)
    assert (pol.log_probs(*x, greedy).sum(-1) >= ro.log_probs.sum(-1) - 1e-4).float().mean() > 0.5


def _order_from_tokens(first, second, pfx, sfx):
    """Which candidate each slot writes (-1: not a remaining candidate), by reading the tokens."""
    remaining, order = set(range(len(pfx))), []
    for a, b in zip(first, second):
        hit = [i for i in remaining if (pfx[i], sfx[i]) == (a, b)]
        order.append(hit[0] if hit else -1)
        remaining -= set(hit)
    return order


def test_probabilities_of_all_token_sequences_sum_to_one():
    """K = 2 candidates, 2 first tokens x 2 second tokens, 1 reasoning token of 2: all 2 * 4**2
    responses, valid or not."""
    cfg = WorldConfig(n_users=5, n_items=4, n_candidates=2, id_base=2, seed=0)
    pol = SeedBatchedPolicy([0], cfg.num_features, cfg.num_context, 2, 2, d_model=8, num_reasoning=1, reasoning_vocab=2, hallucination_logit=-1.0)
    feats, ctx = torch.randn(1, 1, 2, cfg.num_features), torch.randn(1, 1, cfg.num_context)
    pfx, sfx = torch.tensor([[[0, 1]]]), torch.tensor([[[1, 1]]])  # ids 1 and 3
    seqs = list(itertools.product(range(2), itertools.product(range(2), repeat=2), itertools.product(range(2), repeat=2)))
    total, valid_mass = [], []
    for r, (a1, b1), (a2, b2) in seqs:
        first, second = [a1, a2], [b1, b2]
        order = _order_from_tokens(first, second, [0, 1], [1, 1])
        ro = Rollouts(torch.tensor([[r]]), torch.tensor([first]), torch.tensor([second]), torch.tensor([order]), torch.zeros(1, 5))
        with torch.no_grad():
            lp = float(pol.log_probs(feats, ctx, pfx, sfx, ro).sum())
        total.append(lp)
        if -1 not in order:
            valid_mass.append(lp)
    assert len(total) == 32
    assert float(torch.logsumexp(torch.tensor(total, dtype=torch.float64), 0)) == pytest.approx(0.0, abs=1e-5)
    assert 0.3 < math.exp(float(torch.logsumexp(torch.tensor(valid_mass, dtype=torch.float64), 0))) < 1.0


def test_without_hallucination_the_list_is_plackett_luce_on_the_scores(world):
    ep = world.sample_episodes(4, np.random.default_rng(6))
    pol = _policy([7], hallucination_logit=-80.0)
    x = _stacked(ep, 1)
    ro = pol.sample(*x, generator=torch.Generator().manual_seed(2))
    assert ro.valid.all()
    s = pol.scores(x[0], ro.reasoning.view(1, -1, pol.R))[0].detach().double()
    for n in range(4):
        o = ro.order[n].tolist()
        pl = sum(float(s[n, o[t]] - torch.logsumexp(s[n, o[t:]], 0)) for t in range(len(o)))
        items = ro.log_probs[n, pol.R :].double().sum()
        assert float(items) == pytest.approx(pl, abs=1e-4)


def test_a_seed_trained_in_a_batch_takes_exactly_its_solo_update(world):
    ep = world.sample_episodes(6, np.random.default_rng(7))
    batched, solo = _policy([3, 5]), _policy([5])
    for pb, ps in zip(batched.parameters(), solo.parameters()):
        assert torch.equal(pb[1], ps[0])  # a seed's initial weights depend on that seed only
    xb, xs = _stacked(ep, 2), _stacked(ep, 1)
    ro = batched.sample(*xb, generator=torch.Generator().manual_seed(3))
    B = len(ep)
    ro_solo = Rollouts(*(getattr(ro, f)[B:] for f in ("reasoning", "id_first", "id_second", "order", "log_probs")))
    adv = torch.randn(2 * B, ro.log_probs.shape[1])
    opt_b, opt_s = torch.optim.Adam(batched.parameters(), lr=1e-2), torch.optim.Adam(solo.parameters(), lr=1e-2)
    for _ in range(3):
        lb = batched.log_probs(*xb, ro)
        (-(lb[:B] * adv[:B]).mean() - (lb[B:] * adv[B:]).mean()).backward()
        batched.clip_grad_norm_per_seed_(0.05)
        opt_b.step()
        opt_b.zero_grad()
        ls = solo.log_probs(*xs, ro_solo)
        (-(ls * adv[B:]).mean()).backward()
        torch.nn.utils.clip_grad_norm_(list(solo.parameters()), 0.05)  # torch's own clipping
        opt_s.step()
        opt_s.zero_grad()
    for pb, ps in zip(batched.parameters(), solo.parameters()):
        torch.testing.assert_close(pb[1], ps[0], atol=1e-6, rtol=1e-5)


# -- statistics -------------------------------------------------------------------------------------
def test_curve_statistics_against_hand_values_and_scipy():
    steps = [0, 10, 20, 30]
    curves = np.array([[0.0, 0.1, 0.2, 0.3], [0.2, 0.2, 0.4, 0.4]])
    np.testing.assert_allclose(stats.auc(steps, curves), [0.15, (0.2 + 0.3 + 0.4) / 3])
    np.testing.assert_allclose(stats.trailing_mean(curves[0], 2), [0.0, 0.05, 0.15, 0.25])
    reach = stats.steps_to_threshold(steps, curves, [0.2, 0.5])
    assert reach[0] == 20 and np.isnan(reach[1])
    x = np.array([0.3, 0.5, 0.4, 0.7, 0.6])
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    ci = stats.mean_ci(x)
    assert ci["mean"] == pytest.approx(x.mean()) and ci["ci95"] == pytest.approx((hi - lo) / 2) and ci["n"] == 5
    assert stats.mean_ci([0.1, np.nan, 0.3])["n"] == 2
    y = x - np.array([0.1, 0.12, 0.09, 0.11, 0.1])
    p = stats.paired(x, y)
    assert p["separates"] and p["mean"] == pytest.approx(0.104)
    assert not stats.paired(x, x[::-1])["separates"]
    assert stats.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0) and np.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))
