"""Evaluation metrics (verl_flexrec.evaluate.metrics) against pytrec_eval (trec_eval's C code) and brute force."""

import itertools
import math

import numpy as np
import pytest
import pytrec_eval

from verl_flexrec.evaluate.metrics import (
    METRICS,
    evaluation_gains,
    expected_random_metrics,
    has_gain,
    ranking_metrics,
)
from verl_flexrec.schema import GroundTruth

RNG = np.random.default_rng(7)


def _lists(n=150, max_k=30):
    """(integer gains in prompt order, a random ranking) pairs with ties and zeros."""
    out = []
    for _ in range(n):
        k = int(RNG.integers(2, max_k + 1))
        gains = RNG.integers(0, 5, size=k).astype(np.float64) * (RNG.random(k) < 0.7)
        if not gains.any():
            gains[int(RNG.integers(k))] = 1.0
        out.append((gains, RNG.permutation(k)))
    return out


def _top5_relevant(gains):
    """FlexRec's Recall@5 ground truth, computed independently: gain >= 5th largest and > 0."""
    threshold = np.sort(gains)[::-1][min(5, len(gains)) - 1]
    return (gains >= threshold) & (gains > 0)


def test_ndcg_and_recall_match_pytrec_eval():
    worst = 0.0
    for gains, order in _lists():
        docs = [f"d{i}" for i in range(len(gains))]
        run = {"q": {docs[j]: float(len(order) - r) for r, j in enumerate(order)}}  # distinct scores: no ties
        ndcg_ref = pytrec_eval.RelevanceEvaluator({"q": {d: int(g) for d, g in zip(docs, gains)}},
                                                  {"ndcg_cut.5,10,30"}).evaluate(run)["q"]
        rel = _top5_relevant(gains)
        recall_ref = pytrec_eval.RelevanceEvaluator({"q": {d: int(r) for d, r in zip(docs, rel)}},
                                                    {"recall.5"}).evaluate(run)["q"]
        ours = ranking_metrics(order, gains)
        for name, ref in (("ndcg@5", ndcg_ref["ndcg_cut_5"]), ("ndcg@10", ndcg_ref["ndcg_cut_10"]),
                          ("ndcg@30", ndcg_ref["ndcg_cut_30"]), ("recall@5", recall_ref["recall_5"])):
            worst = max(worst, abs(ours[name] - ref))
    assert worst < 1e-6  # trec_eval prints/rounds through float32 in places


def test_mrr_matches_pytrec_eval_reciprocal_rank_of_the_top_five():
    """trec_eval's recip_rank has no cut-off: a run holding only the top 5 documents gives MRR@5."""
    worst = 0.0
    for gains, order in _lists(100):
        rel = _top5_relevant(gains)
        qrels = {"q": {f"d{j}": int(r) for j, r in enumerate(rel)}}
        run = {"q": {f"d{j}": float(5 - r) for r, j in enumerate(order[:5])}}
        ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
        worst = max(worst, abs(ranking_metrics(order, gains)["mrr@5"] - ref))
    assert worst < 1e-9


def _ideal_and_min(gains, k):
    d = [1 / math.log2(r + 2) for r in range(len(gains))]
    desc = sorted(gains, reverse=True)
    idcg = sum(g * d[r] for r, g in enumerate(desc[:k]))
    asc = sorted(gains)
    return idcg, sum(g * d[r] for r, g in enumerate(asc[:k])) / idcg


def test_oracle_scores_one_and_reversed_oracle_the_analytic_minimum():
    for gains, _ in _lists(60):
        oracle = np.argsort(-gains, kind="stable")
        reverse = np.argsort(gains, kind="stable")
        for k, name in ((5, "ndcg@5"), (10, "ndcg@10"), (30, "ndcg@30")):
            assert ranking_metrics(oracle, gains)[name] == pytest.approx(1.0)
            _, minimum = _ideal_and_min(list(gains), k)
            assert ranking_metrics(reverse, gains)[name] == pytest.approx(minimum, abs=1e-12)


def test_reversed_order_is_the_minimum_over_all_permutations():
    gains = np.array([3.0, 0.0, 1.0, 2.0, 0.5, 1.0])
    values = [ranking_metrics(p, gains)["ndcg@30"] for p in itertools.permutations(range(6))]
    assert ranking_metrics(np.argsort(gains), gains)["ndcg@30"] == pytest.approx(min(values))


def _metrics_of_many(perms, gains, gain="linear"):
    """Every metric for each row of ``perms`` (n, K), in plain numpy (independent of the package);
    NDCG with ``gain`` "linear" (g) or "exponential" (2**g - 1)."""
    perms = np.asarray(perms)
    k_all = len(gains)
    d = 1.0 / np.log2(np.arange(2, k_all + 2))
    graded = gains if gain == "linear" else 2.0 ** gains - 1.0
    ranked = graded[perms]
    ideal = np.sort(graded)[::-1]
    out = {}
    for name, k in (("ndcg@5", 5), ("ndcg@10", 10), ("ndcg@30", 30)):
        idcg = (ideal[:k] * d[:k]).sum()
        out[name] = (ranked[:, :k] * d[:k]).sum(1) / idcg if idcg > 0 else np.zeros(len(perms))
    rel = _top5_relevant(gains)[perms][:, :5]
    n_rel = _top5_relevant(gains).sum()
    out["recall@5"] = rel.sum(1) / n_rel if n_rel else np.zeros(len(perms))
    out["mrr@5"] = (rel / np.arange(1, rel.shape[1] + 1)).max(1)
    return out


@pytest.mark.parametrize("gain", ["linear", "exponential"])
@pytest.mark.parametrize("seed", range(12))
def test_random_floor_equals_brute_force_over_all_permutations(seed, gain):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))  # up to 40,320 permutations
    gains = rng.integers(0, 6, size=k).astype(np.float64) * (rng.random(k) < 0.8)
    brute = _metrics_of_many(list(itertools.permutations(range(k))), gains, gain)
    exact = expected_random_metrics(gains, gain)
    for m in METRICS:
        assert exact[m] == pytest.approx(brute[m].mean(), abs=1e-12), m
    # the numpy reference agrees with the package on a few of those permutations
    for p in list(itertools.permutations(range(k)))[:: max(1, math.factorial(k) // 5)]:
        ours = ranking_metrics(p, gains, gain)
        ref = _metrics_of_many([p], gains, gain)
        assert all(ours[m] == pytest.approx(ref[m][0], abs=1e-12) for m in METRICS)


@pytest.mark.parametrize("gain", ["linear", "exponential"])
def test_random_floor_matches_monte_carlo_for_thirty_candidates(gain):
    rng = np.random.default_rng(3)
    gains = rng.gamma(1.0, 1.0, size=30) * (rng.random(30) < 0.4)
    sims = _metrics_of_many(np.argsort(rng.random((20000, 30)), axis=1), gains, gain)
    exact = expected_random_metrics(gains, gain)
    for m in METRICS:
        se = sims[m].std() / math.sqrt(len(sims[m]))
        assert abs(exact[m] - sims[m].mean()) < 5 * se + 1e-9, m


def test_exponential_floor_on_ratings_is_the_issue_s_ml1m_number():
    """1-5 ratings, K = 30, MovieLens-1M's rating shares: random NDCG@5 is ~0.72 with linear gains
    and ~0.48 with 2^r - 1 (the numbers that show the paper's ~0.50 zero-shot rows are exponential)."""
    rng = np.random.default_rng(0)
    shares = [0.056, 0.108, 0.261, 0.349, 0.226]  # ML-1M ratings 1..5
    rows = [rng.choice(np.arange(1, 6), size=30, p=shares).astype(np.float64) for _ in range(400)]
    lin = np.mean([expected_random_metrics(g)["ndcg@5"] for g in rows])
    exp = np.mean([expected_random_metrics(g, "exponential")["ndcg@5"] for g in rows])
    assert 0.68 < lin < 0.76 and 0.43 < exp < 0.53 and exp < lin - 0.15


def test_exponential_gain_matches_pytrec_eval_and_ranx_burges():
    """pytrec_eval reads integer judgements: feed it 2^g - 1 (an integer for integer g); ranx's
    ndcg_burges applies 2^g - 1 itself to the raw judgements."""
    from ranx import Qrels, Run, evaluate as ranx_evaluate

    worst_trec = worst_ranx = 0.0
    qrels, run, ours = {}, {}, []
    for n, (gains, order) in enumerate(_lists(120)):
        docs = [f"d{i}" for i in range(len(gains))]
        scores = {docs[j]: float(len(order) - r) for r, j in enumerate(order)}
        transformed = {"q": {d: int(2 ** int(g) - 1) for d, g in zip(docs, gains)}}
        ref = pytrec_eval.RelevanceEvaluator(transformed, {"ndcg_cut.5,10,30"}).evaluate({"q": scores})["q"]
        mine = ranking_metrics(order, gains, "exponential")
        for name, key in (("ndcg@5", "ndcg_cut_5"), ("ndcg@10", "ndcg_cut_10"), ("ndcg@30", "ndcg_cut_30")):
            worst_trec = max(worst_trec, abs(mine[name] - ref[key]))
        qid = f"q{n:04d}"  # ranx returns queries sorted by id
        qrels[qid] = {d: int(g) for d, g in zip(docs, gains) if g > 0}
        run[qid] = scores
        ours.append([mine["ndcg@5"], mine["ndcg@10"], mine["ndcg@30"]])
    ref = ranx_evaluate(Qrels(qrels), Run(run), ["ndcg_burges@5", "ndcg_burges@10", "ndcg_burges@30"],
                        return_mean=False)
    ranx = np.stack([ref["ndcg_burges@5"], ref["ndcg_burges@10"], ref["ndcg_burges@30"]], axis=1)
    worst_ranx = float(np.max(np.abs(np.asarray(ours) - ranx)))
    assert worst_trec < 1e-6 and worst_ranx < 1e-6, (worst_trec, worst_ranx)
    # the gain matters: exponential and linear NDCG differ on these graded lists
    assert any(abs(ranking_metrics(o, g)["ndcg@5"] - ranking_metrics(o, g, "exponential")["ndcg@5"]) > 0.01
               for g, o in _lists(20))


def test_unobserved_candidates_count_as_zero_gain():
    truth = GroundTruth(candidates=["1", "2", "3"], gains=[2.0, 5.0, 1.0], observed=[True, False, True])
    gains = evaluation_gains(truth)
    assert gains.tolist() == [2.0, 0.0, 1.0]
    assert ranking_metrics([0, 2, 1], gains)["ndcg@5"] == pytest.approx(1.0)
    assert not has_gain(np.zeros(4)) and has_gain(gains)


def test_order_must_be_a_permutation():
    with pytest.raises(ValueError, match="permutation"):
        ranking_metrics([0, 0, 1], np.ones(3))
