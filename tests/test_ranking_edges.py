"""The ranking module's public helpers and edge cases, by hand (what the brute-force and
pytrec_eval/ranx comparisons in test_ranking_metrics.py / test_swap_rewards.py do not reach):
``discounts`` and ``ideal_dcg`` (the uncertainty's IDCG), cut-off validation everywhere,
exponential gains in ``dcg``, ``top_n_relevant`` at n = 1 and n = 0, float32 inputs computed
in float64, and results that are the caller's to modify."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verl_flexrec.ranking import (dcg, discounts, ideal_dcg, mrr, ndcg, recall, swap_item_rewards, top_n_relevant,
                                  transform_gains)

L3, L5 = 1 / math.log2(3), 1 / math.log2(5)  # discounts of ranks 2 and 4 (ranks 1 and 3: 1 and 1/2)


def test_discounts_by_hand_with_cut_off_and_like():
    np.testing.assert_allclose(discounts(4), [1.0, L3, 0.5, L5], rtol=1e-15)
    np.testing.assert_allclose(discounts(4, 2), [1.0, L3, 0.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(discounts(4, 9), [1.0, L3, 0.5, L5], rtol=1e-15)
    t = discounts(3, like=torch.zeros(2, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([1.0, L3, 0.5], dtype=torch.float32))
    assert discounts(3, like=np.zeros(1, dtype=np.float32)).dtype == np.float32
    # the result is the caller's: writing to it changes no later result
    d = discounts(3)
    d[0] = 7.0
    assert discounts(3)[0] == 1.0


def test_ideal_dcg_by_hand():
    gains = [1.0, 3.0, 0.0, 2.0]
    assert float(ideal_dcg(gains)) == pytest.approx(3.0 + 2.0 * L3 + 0.5, rel=1e-15)
    assert float(ideal_dcg(gains, 2)) == pytest.approx(3.0 + 2.0 * L3, rel=1e-15)
    assert float(ideal_dcg(gains, gain="exponential")) == pytest.approx(7.0 + 3.0 * L3 + 0.5, rel=1e-15)
    batch = ideal_dcg(torch.tensor([[1.0, 3.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(batch, torch.tensor([3.0 + L3, 0.0], dtype=torch.float64))


def test_dcg_exponential_gain_and_cut_off():
    assert float(dcg([3.0, 0.0, 1.0])) == pytest.approx(3.0 + 0.5, rel=1e-15)
    assert float(dcg([3.0, 0.0, 1.0], gain="exponential")) == pytest.approx(7.0 + 0.5, rel=1e-15)
    assert float(dcg([3.0, 0.0, 1.0], 2, gain="exponential")) == pytest.approx(7.0, rel=1e-15)
    assert float(ndcg([1.0, 3.0], gain="exponential")) == pytest.approx((1 + 7 * L3) / (7 + L3), rel=1e-15)


@pytest.mark.parametrize("call", [
    lambda: dcg([1.0, 2.0], 0), lambda: ndcg([1.0, 2.0], 0), lambda: ndcg([1.0, 2.0], (5, 0)),
    lambda: ideal_dcg([1.0, 2.0], 0), lambda: discounts(3, 0), lambda: swap_item_rewards([1.0, 2.0], cutoff=0),
], ids=["dcg", "ndcg", "ndcg_several", "ideal_dcg", "discounts", "swap"])
def test_every_cut_off_is_validated(call):
    with pytest.raises(ValueError, match="cutoff must be >= 1, got 0"):
        call()


def test_top_n_relevant_at_one_and_zero():
    g = np.array([0.5, 2.0, 2.0, 0.0, 1.0])
    assert top_n_relevant(g, 1).tolist() == [False, True, True, False, False]  # a tie at the top: both
    assert top_n_relevant(np.array([0.5, 2.0, 1.0]), 1).tolist() == [False, True, False]
    assert top_n_relevant(np.array([0.0, 0.0]), 1).tolist() == [False, False]  # zero gains never relevant
    none = top_n_relevant(np.ones((2, 3)), 0)
    assert none.shape == (2, 3) and none.dtype == np.bool_ and not none.any()
    t = top_n_relevant(torch.ones(2, 3), 0)
    assert t.dtype == torch.bool and t.shape == (2, 3) and not t.any()
    assert top_n_relevant(torch.tensor([1.0, 3.0]), 1).tolist() == [False, True]
    assert float(recall(top_n_relevant(g, 1), 2)) == 0.5 and float(mrr(top_n_relevant(g, 1), 5)) == 0.5


def test_swap_rewards_of_float32_gains_are_computed_in_float64():
    rng = np.random.default_rng(0)
    g64 = rng.random((50, 20)) * 3
    g32 = g64.astype(np.float32)
    for mode in ("causal", "noncausal", "independent", "rank"):
        want = swap_item_rewards(g32.astype(np.float64), mode)  # the float32 values, in float64
        got = swap_item_rewards(torch.from_numpy(g32), mode)
        assert got.dtype == torch.float32
        assert torch.equal(got, torch.from_numpy(want.astype(np.float32))), mode
        got_np = swap_item_rewards(g32, mode)
        assert got_np.dtype == np.float32 and np.array_equal(got_np, want.astype(np.float32)), mode


def test_integer_gains_are_read_as_float64_in_both_libraries():
    """Integer grades (the usual input) are computed in float64, not in torch's default float32
    or in integer arithmetic: 1/3 needs float64 to be exact to 1e-15."""
    for gains in (torch.tensor([[1, 3, 0, 2]]), np.array([[1, 3, 0, 2]])):
        got = ndcg(gains)
        assert got.dtype in (torch.float64, np.float64)
        want = (1.0 + 3.0 * L3 + 2.0 * L5) / (3.0 + 2.0 * L3 + 0.5)
        assert abs(float(got[0]) - want) < 1e-15
        assert float(dcg(gains)[0]) == pytest.approx(1.0 + 3.0 * L3 + 2.0 * L5, rel=1e-15)
        assert top_n_relevant(gains, 2).tolist() == [[False, True, False, True]]


def test_transform_gains_is_linear_by_default():
    g = np.array([0.0, 1.0, 3.0])
    assert transform_gains(g) is g
    np.testing.assert_array_equal(transform_gains(g, "exponential"), [0.0, 1.0, 7.0])


def test_gradient_carrying_tensors_are_sorted_along_the_last_axis():
    """A tensor that requires grad is sorted by torch (not via numpy); a 3-d batch shows the axis."""
    g = torch.tensor([[[1.0, 3.0, 2.0], [0.0, 2.0, 5.0]], [[4.0, 1.0, 0.0], [2.0, 2.0, 1.0]]], dtype=torch.float64,
                     requires_grad=True)
    ideal = ideal_dcg(g)
    want = torch.tensor([[3.0 + 2.0 * L3 + 0.5, 5.0 + 2.0 * L3], [4.0 + L3, 2.0 + 2.0 * L3 + 0.5]], dtype=torch.float64)
    torch.testing.assert_close(ideal.detach(), want, rtol=1e-15, atol=0)
    assert ideal.requires_grad
