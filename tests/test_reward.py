"""score_response: sequence reward, item rewards and uncertainty of one response."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_flexrec.config import RewardOptions, UncertaintyOptions
from verl_flexrec.parsing import format_answer
from verl_flexrec.ranking import ndcg, swap_item_rewards
from verl_flexrec.reward import compute_score, score_response
from verl_flexrec.schema import GroundTruth, GroundTruthError

K = 10
IDS = [str(i) for i in range(1, K + 1)]
GAINS = [0.0, 2.0, 0.5, 1.5, 0.0, 3.0, 1.0, 0.2, 0.0, 2.5]


def _gt(**kw):
    return GroundTruth(candidates=IDS, gains=GAINS, **kw)


def test_valid_response_reward_is_format_bonus_plus_ndcg_and_items_are_swap_rewards():
    order = ["6", "10", "2", "4", "7", "3", "8", "1", "5", "9"]
    result = score_response(format_answer(order, "user likes 6"), _gt())
    ranked = torch.tensor([GAINS[IDS.index(c)] for c in order], dtype=torch.float64)
    assert result.valid and result.error == ""
    assert result.score == pytest.approx(0.1 + float(ndcg(ranked)))
    np.testing.assert_allclose(result.item_rewards, swap_item_rewards(ranked).numpy(), atol=1e-12)
    assert result.metrics["ndcg@5"] == pytest.approx(float(ndcg(ranked, 5)))
    assert result.uncertainty == 0.0  # no variances in the record
    text = format_answer(order, "user likes 6")
    assert [text[s:e] for s, e in result.item_char_spans] == order


def test_oracle_scores_one_and_reversed_oracle_scores_less():
    best = [c for _, c in sorted(zip(GAINS, IDS), key=lambda t: -t[0])]
    top = score_response(format_answer(best), _gt())
    low = score_response(format_answer(best[::-1]), _gt())
    assert top.ndcg == pytest.approx(1.0) and top.metrics["recall@5"] == 1.0 and top.metrics["mrr@5"] == 1.0
    assert low.ndcg < top.ndcg and all(r >= -1e-12 for r in top.item_rewards)


def test_invalid_response_gets_penalty_and_no_item_rewards():
    result = score_response("<answer>[1, 2, 3]</answer>", _gt(), RewardOptions(invalid_penalty=-1.5))
    assert not result.valid and result.error == "missing_tags"
    assert result.score == -1.5 and result.item_rewards == [] and result.metrics["ndcg@5"] == 0.0
    partial = score_response(format_answer(IDS[:5]), _gt())
    assert partial.error == "missing_ids"


def test_uncertainty_is_discount_weighted_variance_of_ndcg():
    var = [0.0, 0.0, 0.3, 0.0, 0.0, 0.1, 0.0, 0.0, 0.2, 0.0]
    gt = _gt(observed=[v == 0 for v in var], gain_var=var)
    order = IDS[::-1]
    result = score_response(format_answer(order), gt)
    d = 1 / np.log2(np.arange(2, K + 2))
    ideal = np.sort(GAINS)[::-1] @ d
    v_ranked = np.array([var[IDS.index(c)] for c in order])
    assert result.uncertainty == pytest.approx(float((d**2 * v_ranked).sum() / ideal**2))
    flat = score_response(format_answer(order), gt, uncertainty_options=UncertaintyOptions(weighting="sum"))
    assert flat.uncertainty == pytest.approx(sum(var))


def test_rollout_uncertainty_batched_torch_equals_the_hand_formula_and_the_one_list_numpy_call():
    from verl_flexrec.uncertainty import rollout_uncertainty

    rng = np.random.default_rng(5)
    gains = rng.integers(0, 4, (6, K)).astype(np.float64)
    gains[0] = 0.0  # IDCG = 0: u = 0, not NaN
    var = rng.uniform(0, 0.3, (6, K))
    d = 1 / np.log2(np.arange(2, K + 2))
    d5 = np.where(np.arange(1, K + 1) <= 5, d, 0.0)
    for cutoff, disc in ((None, d), (5, d5)):
        ideal = np.sort(gains, -1)[:, ::-1] @ disc
        want = np.where(ideal > 0, (disc**2 * var).sum(-1) / np.where(ideal > 0, ideal, 1.0) ** 2, 0.0)
        batched = rollout_uncertainty(torch.from_numpy(var), torch.from_numpy(gains), cutoff=cutoff)
        assert isinstance(batched, torch.Tensor)
        np.testing.assert_allclose(batched.numpy(), want, rtol=1e-12, atol=0)
        one = [float(rollout_uncertainty(v, g, cutoff=cutoff)) for v, g in zip(var, gains)]
        np.testing.assert_allclose(one, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rollout_uncertainty(var, gains, weighting="sum"), var.sum(-1), rtol=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        rollout_uncertainty(var, gains, weighting="max")


def test_compute_score_for_verl_naive_manager():
    out = compute_score("flexrec/test", format_answer(IDS), _gt().to_dict(), {})
    assert out["valid"] == 1.0 and out["score"] == pytest.approx(0.1 + out["ndcg"])
    out_json = compute_score("flexrec/test", "garbage", _gt().to_json(), {})
    assert out_json["score"] == -2.0


def test_bad_ground_truth_raises_one_clear_error():
    with pytest.raises(GroundTruthError, match="gains has 2 entries, candidates has 3"):
        GroundTruth(candidates=["a", "b", "c"], gains=[1, 2])
    with pytest.raises(GroundTruthError, match=r"gains\[1\]"):
        GroundTruth(candidates=["a", "b"], gains=[1, float("nan")])
    with pytest.raises(GroundTruthError, match="duplicate"):
        GroundTruth(candidates=["a", "a"], gains=[1, 2])
    with pytest.raises(GroundTruthError, match="missing field"):
        GroundTruth.from_any({"candidates": ["a"]})


_noise = st.text(alphabet=st.sampled_from(list("0123456789 ,[]'\"<>/thinkanswer\n#-_x")), max_size=80)


@st.composite
def _responses(draw):
    order = draw(st.permutations(IDS))
    text = format_answer(order, draw(st.text(max_size=20)))
    op = draw(st.integers(0, 3))
    if op == 0:
        return text[: draw(st.integers(0, len(text)))]
    if op == 1:
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(_noise) + text[i:]
    if op == 2:
        return draw(_noise)
    return text


@pytest.mark.slow  # 3,000 examples (~4 s of CPU)
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_responses(), st.sampled_from(["causal", "noncausal", "independent", "rank"]))
def test_fuzz_rewards_are_finite_and_bounded(response, mode):
    ropts = RewardOptions(swap_mode=mode)
    result = score_response(response, _gt(gain_var=[0.1] * K, observed=[False] * K), ropts)
    assert math.isfinite(result.score) and ropts.invalid_penalty <= result.score <= ropts.format_bonus + 1.0 + 1e-9
    assert all(math.isfinite(r) and abs(r) <= 1.0 + 1e-9 for r in result.item_rewards)
    assert 0.0 <= result.uncertainty < math.inf
    assert result.valid == (len(result.item_rewards) == K)


def _dcg_by_hand(ranked, k):
    return sum(g / math.log2(i + 2) for i, g in enumerate(ranked[:k]))


@pytest.mark.parametrize("order,recall5,mrr5", [
    (["1", "6", "3", "10", "5", "2", "8", "4", "7", "9"], 2 / 5, 1 / 2),  # first relevant at rank 2
    (["1", "5", "9", "3", "8", "6", "10", "2", "4", "7"], 0.0, 0.0),      # none in the top 5 (rank 6)
])
def test_evaluation_metrics_by_hand(order, recall5, mrr5):
    """The four reported metrics on hand cases: relevant = the top 5 by gain (ids 6, 10, 2, 4, 7),
    NDCG@5 and @10 written out, beside a reward NDCG at cut-off 3."""
    result = score_response(format_answer(order), _gt(), RewardOptions(cutoff=3))
    ranked = [GAINS[IDS.index(c)] for c in order]
    ideal = sorted(GAINS, reverse=True)
    assert set(result.metrics) == {"ndcg@5", "ndcg@10", "recall@5", "mrr@5"}
    assert result.metrics["recall@5"] == recall5 and result.metrics["mrr@5"] == mrr5
    assert result.metrics["ndcg@5"] == pytest.approx(_dcg_by_hand(ranked, 5) / _dcg_by_hand(ideal, 5), rel=1e-12)
    assert result.metrics["ndcg@10"] == pytest.approx(_dcg_by_hand(ranked, 10) / _dcg_by_hand(ideal, 10), rel=1e-12)
    assert result.ndcg == pytest.approx(_dcg_by_hand(ranked, 3) / _dcg_by_hand(ideal, 3), rel=1e-12)
    assert result.score == pytest.approx(0.1 + result.ndcg, rel=1e-12)


def test_invalid_response_scores_zero_on_every_metric():
    result = score_response("no answer at all", _gt(), RewardOptions(invalid_penalty=-1.0))
    assert result.ndcg == 0.0 and result.uncertainty == 0.0
    assert result.metrics == {"ndcg@5": 0.0, "ndcg@10": 0.0, "recall@5": 0.0, "mrr@5": 0.0}
    out = compute_score("flexrec/test", "no answer at all", _gt().to_dict(), {})
    assert out == {"score": -2.0, "valid": 0.0, "ndcg": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0, "recall@5": 0.0, "mrr@5": 0.0}


def test_uncertainty_follows_the_reward_cut_off():
    """u = sum_{k <= c} d_k^2 s2_k / IDCG@c^2: variances past the cut-off do not count."""
    var = [0.0, 0.0, 0.3, 0.0, 0.0, 0.1, 0.0, 0.0, 0.2, 0.0]
    gt = _gt(observed=[v == 0 for v in var], gain_var=var)
    order = ["3", "9", "1", "6", "2", "4", "5", "7", "8", "10"]  # variances 0.3, 0.2 at ranks 1-2, 0.1 at rank 4
    result = score_response(format_answer(order), gt, RewardOptions(cutoff=3))
    idcg3 = _dcg_by_hand(sorted(GAINS, reverse=True), 3)
    assert result.uncertainty == pytest.approx((0.3 + 0.2 / math.log2(3) ** 2) / idcg3**2, rel=1e-12)


def test_overflowing_exponential_gains_give_finite_rewards():
    """2**1100 overflows float64: NDCG = inf/inf; the reward, metrics and item rewards stay finite."""
    gt = GroundTruth(candidates=["a", "b", "c"], gains=[1100.0, 1.0, 0.0])
    result = score_response(format_answer(["a", "b", "c"]), gt, RewardOptions(gain="exponential"))
    assert result.valid
    values = [result.score, result.ndcg, result.uncertainty, *result.metrics.values(), *result.item_rewards]
    assert all(math.isfinite(v) for v in values), values
