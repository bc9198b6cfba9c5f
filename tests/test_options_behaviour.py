"""Documented options do what their documentation says, each against a hand-computed case or verl's
own code (never the function under test): ``uncertainty.normalize`` (batch / group / none),
``uncertainty.min_scale`` / ``max_scale``, ``advantage.norm_by_std`` against
``norm_adv_by_std_in_grpo``, and ``compute_score`` reading the ``flexrec`` block that verl's
``reward.custom_reward_function.reward_kwargs`` passes through.

The uncertainty hand case: five rollouts of two interleaved prompt groups, ``eps = 0.01``::

    row    group  u      1/(u+eps)   batch (/37)   group (a: /55, b: /25)   none
    0      b      0.01   50          50/37         2                        50
    1      a      0      100         100/37        20/11                    100
    2      b      0.04   20          20/37         4/5                      20
    3      a      0.09   10          10/37         2/11                     10
    4      b      0.19   5           5/37          1/5                      5
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.reward import get_custom_reward_fn

import verl_flexrec.register  # noqa: F401 - binds the registry names
from verl_flexrec.advantage import flexrec_advantages
from verl_flexrec.config import UncertaintyOptions
from verl_flexrec.parsing import ANSWER_CLOSE, ANSWER_OPEN, format_answer
from verl_flexrec.schema import GroundTruth
from verl_flexrec.uncertainty import uncertainty_scale

INDEX = np.array(["b", "a", "b", "a", "b"], dtype=object)
U = [0.01, 0.0, 0.04, 0.09, 0.19]
EPS = 0.01
RAW = [50.0, 100.0, 20.0, 10.0, 5.0]
EXPECTED_SCALE = {
    "batch": [50 / 37, 100 / 37, 20 / 37, 10 / 37, 5 / 37],
    "group": [2.0, 20 / 11, 4 / 5, 2 / 11, 1 / 5],
    "none": RAW,
}
SEQ = torch.tensor([0.3, 1.0, -0.2, 0.4, 0.9])
L = 6


def _verl_grpo(seq, norm=True):
    """verl's GRPO advantage of each rollout (reward on the last token, every token masked in)."""
    mask = torch.ones(len(seq), L)
    tlr = torch.zeros(len(seq), L)
    tlr[:, -1] = seq
    adv, _ = core_algos.compute_grpo_outcome_advantage(tlr, mask, INDEX, norm_adv_by_std_in_grpo=norm)
    return adv[:, 0].double()


@pytest.mark.parametrize("mode", ["batch", "group", "none"])
def test_uncertainty_scale_normalisation_modes_hand_case(mode):
    got = uncertainty_scale(U, eps=EPS, normalize=mode, max_scale=1e9, index=INDEX)
    np.testing.assert_allclose(got.numpy(), EXPECTED_SCALE[mode], rtol=1e-12)


@pytest.mark.parametrize("mode", ["batch", "group", "none"])
def test_normalize_option_reaches_the_advantages(mode):
    uopts = UncertaintyOptions(eps=EPS, normalize=mode, max_scale=1e9)
    out = flexrec_advantages(torch.ones(5, L), INDEX, SEQ, uncertainty=torch.tensor(U), uncertainty_options=uopts)
    want = torch.tensor(EXPECTED_SCALE[mode], dtype=torch.float64)
    torch.testing.assert_close(out.scale.double(), want, rtol=1e-6, atol=0)
    expected = (_verl_grpo(SEQ) * want)[:, None].expand(5, L)
    torch.testing.assert_close(out.advantages.double(), expected, rtol=1e-5, atol=1e-6)
    assert not out.clipped.any()


def test_normalize_none_with_the_default_clip_is_a_constant_scale():
    """Raw 1/(u+eps) is >= 5 here: the default max_scale 3 clips every rollout (docs: 'a clip constant')."""
    out = flexrec_advantages(torch.ones(5, L), INDEX, SEQ, uncertainty=torch.tensor(U),
                             uncertainty_options=UncertaintyOptions(eps=EPS, normalize="none"))
    assert out.scale.tolist() == [3.0] * 5 and out.clipped.all()


def test_group_normalisation_needs_the_index():
    with pytest.raises(ValueError, match="group index"):
        uncertainty_scale(U, eps=EPS, normalize="group")


def test_min_and_max_scale_clip_and_flag_each_rollout():
    # batch-normalised: [1.351, 2.703, 0.541, 0.270, 0.135]; clip to [0.3, 2]
    want = [50 / 37, 2.0, 20 / 37, 0.3, 0.3]
    np.testing.assert_allclose(uncertainty_scale(U, eps=EPS, min_scale=0.3, max_scale=2.0).numpy(), want, rtol=1e-12)
    uopts = UncertaintyOptions(eps=EPS, min_scale=0.3, max_scale=2.0)
    out = flexrec_advantages(torch.ones(5, L), INDEX, SEQ, uncertainty=torch.tensor(U), uncertainty_options=uopts)
    torch.testing.assert_close(out.scale.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
    assert out.clipped.tolist() == [False, True, False, True, True]
    expected = (_verl_grpo(SEQ) * torch.tensor(want, dtype=torch.float64))[:, None].expand(5, L)
    torch.testing.assert_close(out.advantages.double(), expected, rtol=1e-5, atol=1e-6)
    # exactly at a bound is not "clipped"
    at = flexrec_advantages(torch.ones(5, L), INDEX, SEQ, uncertainty=torch.tensor(U),
                            uncertainty_options=UncertaintyOptions(eps=EPS, min_scale=5 / 37, max_scale=100 / 37))
    assert not at.clipped.any()


def test_estimator_reads_the_uncertainty_options_from_the_algorithm_config():
    """``algorithm.flexrec.uncertainty`` through verl's registry: group normalisation and min_scale."""
    fn = core_algos.get_adv_estimator_fn("flexrec")
    mask = torch.ones(5, L)
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True,
                            "flexrec": {"uncertainty": {"eps": EPS, "normalize": "group", "min_scale": 0.5, "max_scale": 1e9}}})
    adv, _ = fn(torch.zeros(5, L), mask, index=INDEX, config=cfg, seq_reward=SEQ, uncertainty=torch.tensor(U))
    want = torch.tensor([max(s, 0.5) for s in EXPECTED_SCALE["group"]], dtype=torch.float64)
    torch.testing.assert_close(adv.double(), (_verl_grpo(SEQ) * want)[:, None].expand(5, L), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("verl_norm,flexrec_norm,use_std", [
    (False, None, False), (True, None, True), (True, False, False), (False, True, True),
])
def test_norm_by_std_follows_verl_unless_flexrec_overrides_it(verl_norm, flexrec_norm, use_std):
    """``algorithm.flexrec.advantage.norm_by_std`` null follows ``norm_adv_by_std_in_grpo``; set, it wins.
    Item tokens: a hand case (two rollouts, one position: values 1 and 3 -> centred -1, +1, std sqrt 2)."""
    fn = core_algos.get_adv_estimator_fn("flexrec")
    index = np.array(["g", "g"], dtype=object)
    mask = torch.ones(2, 3)
    pos = torch.tensor([[-1, 0, -1], [-1, 0, -1]])
    seq = torch.tensor([0.0, 4.0])
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": verl_norm,
                            "flexrec": {"advantage": {"norm_by_std": flexrec_norm}, "uncertainty": {"enable": False}}})
    adv, _ = fn(torch.zeros(2, 3), mask, index=index, config=cfg, seq_reward=seq,
                item_rewards=torch.tensor([[1.0], [3.0]]), item_token_pos=pos)
    seq_adv = 2.0 / (math.sqrt(8.0) + 1e-6) if use_std else 2.0  # (4 - 2) / std([0, 4]) or centred only
    item_adv = 1.0 / (math.sqrt(2.0) + 1e-6) if use_std else 1.0
    want = torch.tensor([[-seq_adv, -item_adv, -seq_adv], [seq_adv, item_adv, seq_adv]], dtype=torch.float64)
    torch.testing.assert_close(adv.double(), want, rtol=1e-6, atol=1e-7)


# -- compute_score through verl's custom_reward_function loader --------------------------------------
IDS = ["a", "b", "c", "d", "e"]
GAINS = [0.0, 2.0, 1.0, 3.0, 0.0]


def _ndcg(ranked, cutoff=None, exponential=False):
    """Written out: DCG = sum g'_i / log2(i + 1) over ranks i <= cutoff, g' = 2**g - 1 or g."""
    g = [(2.0**x - 1.0) if exponential else x for x in ranked]
    ideal = sorted(g, reverse=True)
    n = len(g) if cutoff is None else cutoff
    dcg = sum(x / math.log2(i + 2) for i, x in enumerate(g[:n]))
    idcg = sum(x / math.log2(i + 2) for i, x in enumerate(ideal[:n]))
    return dcg / idcg


def _verl_reward_fn(flexrec):
    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://verl_flexrec.reward", "name": "compute_score", "reward_kwargs": {"flexrec": flexrec}}}})
    return get_custom_reward_fn(config)


def test_compute_score_honours_the_flexrec_reward_kwargs():
    order = ["b", "d", "a", "c", "e"]
    ranked = [GAINS[IDS.index(c)] for c in order]
    gt = GroundTruth(candidates=IDS, gains=GAINS).to_dict()
    flexrec = {"reward": {"format_bonus": 0.5, "invalid_penalty": -1.0, "gain": "exponential", "cutoff": 2,
                          "require_think": False}}
    fn = _verl_reward_fn(flexrec)
    no_think = f"{ANSWER_OPEN}[{', '.join(order)}]{ANSWER_CLOSE}"  # valid only with require_think=false
    out = fn(data_source="flexrec/test", solution_str=no_think, ground_truth=gt, extra_info={})
    want = _ndcg(ranked, cutoff=2, exponential=True)  # (3/1 + 7/log2 3) / (7/1 + 3/log2 3)
    assert want == pytest.approx((3 + 7 / math.log2(3)) / (7 + 3 / math.log2(3)))
    assert out["valid"] == 1.0 and out["ndcg"] == pytest.approx(want, abs=1e-12)
    assert out["score"] == pytest.approx(0.5 + want, abs=1e-12)
    bad = fn(data_source="flexrec/test", solution_str="no answer here", ground_truth=gt, extra_info={})
    assert bad["score"] == -1.0 and bad["valid"] == 0.0
    # the defaults, for contrast: linear gains, whole list, bonus 0.1, and the think block is required
    default = _verl_reward_fn({})
    assert default(data_source="x", solution_str=no_think, ground_truth=gt, extra_info={})["score"] == -2.0
    full = default(data_source="x", solution_str=format_answer(order), ground_truth=gt, extra_info={})
    assert full["score"] == pytest.approx(0.1 + _ndcg(ranked), abs=1e-12)


def test_compute_score_parses_the_whole_flexrec_block():
    """Unknown keys in the kwargs are refused (the block is parsed, not ignored)."""
    gt = GroundTruth(candidates=IDS, gains=GAINS).to_dict()
    with pytest.raises(ValueError, match="unknown key"):
        _verl_reward_fn({"rewards": {}})(data_source="x", solution_str=format_answer(IDS), ground_truth=gt, extra_info={})
    with pytest.raises(ValueError, match="normalize"):
        _verl_reward_fn({"uncertainty": {"normalize": "row"}})(
            data_source="x", solution_str=format_answer(IDS), ground_truth=gt, extra_info={})


def test_rollout_uncertainty_is_float64_from_float32_variances():
    """u = sum_k d_k^2 s2_k / IDCG^2, computed in float64 whatever the variances' dtype (a float32
    sum loses the 1e-9 part below)."""
    from verl_flexrec.uncertainty import rollout_uncertainty

    var = torch.tensor([[1.0, 1e-9, 0.0]], dtype=torch.float32)
    gains = torch.tensor([[1.0, 0.0, 0.0]])  # IDCG = 1
    u = rollout_uncertainty(var, gains)
    assert u.dtype == torch.float64
    want = float(np.float32(1.0)) + float(np.float32(1e-9)) / math.log2(3) ** 2
    assert float(u[0]) == want
    assert float(rollout_uncertainty(var, gains, weighting="sum")[0]) == float(np.float32(1.0)) + float(np.float32(1e-9))


def test_a_scale_exactly_at_both_bounds_is_not_flagged_clipped():
    """Four equal uncertainties: the batch-normalised scale is exactly 1.0 (4x / 4 is exact), so
    with min_scale = max_scale = 1 nothing lies outside the bounds."""
    at = flexrec_advantages(torch.ones(4, L), INDEX[:4], SEQ[:4], uncertainty=torch.full((4,), 0.25),
                            uncertainty_options=UncertaintyOptions(eps=EPS, min_scale=1.0, max_scale=1.0))
    assert at.scale.tolist() == [1.0] * 4 and not at.clipped.any()
    above = flexrec_advantages(torch.ones(4, L), INDEX[:4], SEQ[:4], uncertainty=torch.tensor([0.0, 1.0, 1.0, 1.0]),
                               uncertainty_options=UncertaintyOptions(eps=EPS, min_scale=1.0, max_scale=1.0))
    assert above.clipped.tolist() == [True] * 4  # one above 1, three below


def test_group_ids_number_labels_by_how_they_print_in_order_of_first_appearance():
    from verl_flexrec.uncertainty import group_ids

    assert group_ids(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 0, 2, 1]
    assert group_ids([1, 1.0, "1"]).tolist() == [0, 1, 0]  # 1 and "1" print the same; 1.0 does not
    assert group_ids([7, 7.0]).tolist() == [0, 1]
    assert group_ids(np.array([["u1", "u2"], ["u1", "u3"]])).tolist() == [0, 1, 0, 2]  # flattened
    assert group_ids([]).tolist() == [] and group_ids([]).dtype == torch.int64
    # a prompt's rollouts in a row (verl's order), numbered run by run; a label that comes back
    # after another run, or labels that are not all str, take the general path
    runs = np.array(["x", "x", "y", "y", "y", "z"], dtype=object)
    assert group_ids(runs).tolist() == [0, 0, 1, 1, 1, 2]
    assert group_ids(np.array(["a", "a", "b", "a"], dtype=object)).tolist() == [0, 0, 1, 0]
    assert group_ids(np.array([1, 1, "1", 1.0, 1.0], dtype=object)).tolist() == [0, 0, 0, 1, 1]
    assert group_ids(np.array(["a", "a", "b", "b"])).tolist() == [0, 0, 1, 1]  # numpy str_ labels


def test_uncertainty_scale_defaults_and_degenerate_inputs_by_hand():
    """Defaults eps = 0.01, batch normalisation, clip to [0, 3]; non-finite or negative u counts as
    0 (the largest scale); eps must be > 0; an empty batch is empty in every mode."""
    c = uncertainty_scale([0.0, 0.09], normalize="none", max_scale=math.inf)
    np.testing.assert_allclose(c.numpy(), [100.0, 10.0], rtol=1e-12)
    raw = np.array([100.0, 1 / 1.01, 1 / 1.01, 1 / 1.01])
    np.testing.assert_allclose(uncertainty_scale([0.0, 1.0, 1.0, 1.0]).numpy(), np.minimum(raw / raw.mean(), 3.0), rtol=1e-12)
    assert float(uncertainty_scale([0.0, 1.0, 1.0, 1.0])[0]) == 3.0
    odd = uncertainty_scale([math.inf, math.nan, -1.0, 0.0], normalize="none", max_scale=math.inf)
    np.testing.assert_allclose(odd.numpy(), [100.0] * 4, rtol=1e-12)
    with pytest.raises(ValueError, match="eps must be > 0"):
        uncertainty_scale([0.1], eps=0.0)
    for mode in ("batch", "group", "none"):
        assert uncertainty_scale([], normalize=mode, index=[]).shape == (0,)


def test_estimator_defaults_and_the_sequence_reward_from_token_rewards():
    """Without ``norm_adv_by_std_in_grpo`` in the config the std normalisation is on (verl's
    default); item inputs without ``seq_reward`` take each row's summed token rewards; the pure
    GRPO path uses ``algorithm.flexrec.advantage.eps``."""
    fn = core_algos.get_adv_estimator_fn("flexrec")
    index = np.array(["g", "g"], dtype=object)
    mask = torch.ones(2, 3)
    tlr = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])  # row sums 0 and 4
    pos = torch.tensor([[-1, 0, -1], [-1, 0, -1]])
    cfg = OmegaConf.create({"flexrec": {"uncertainty": {"enable": False}}})
    adv, _ = fn(tlr, mask, index=index, config=cfg, item_rewards=torch.tensor([[1.0], [3.0]]), item_token_pos=pos)
    s, i = 2.0 / (math.sqrt(8.0) + 1e-6), 1.0 / (math.sqrt(2.0) + 1e-6)
    torch.testing.assert_close(adv.double(), torch.tensor([[-s, -i, -s], [s, i, s]], dtype=torch.float64), rtol=1e-6, atol=1e-7)
    grpo_cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {"advantage": {"eps": 0.5}}})
    adv, _ = fn(tlr, mask, index=index, config=grpo_cfg)
    s = 2.0 / (math.sqrt(8.0) + 0.5)
    torch.testing.assert_close(adv.double(), torch.tensor([[-s] * 3, [s] * 3], dtype=torch.float64), rtol=1e-6, atol=1e-7)
    ref, _ = core_algos.compute_grpo_outcome_advantage(tlr, mask, index, epsilon=0.5)
    torch.testing.assert_close(adv, ref)
