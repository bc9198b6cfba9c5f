"""flexrec estimator: verl GRPO parity, per-position item normalisation, degenerate groups."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos

import verl_flexrec.register  # noqa: F401 - binds the registry names
from verl_flexrec.advantage import flexrec_advantages, group_ids, group_normalize
from verl_flexrec.config import AdvantageOptions, FlexRecConfig, UncertaintyOptions

RNG = np.random.default_rng(2)


def _batch(groups=4, n=8, L=40, K=6, invalid_frac=0.25):
    bs = groups * n
    index = np.array([f"uid-{i // n}" for i in range(bs)], dtype=object)
    lengths = RNG.integers(K * 3 + 2, L + 1, size=bs)
    mask = (torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]).float()
    seq = torch.tensor(RNG.normal(size=bs), dtype=torch.float32)
    valid = RNG.random(bs) > invalid_frac
    items = torch.tensor(RNG.normal(size=(bs, K)), dtype=torch.float32)
    items[~torch.tensor(valid)] = float("nan")
    pos = torch.full((bs, L), -1, dtype=torch.long)
    for i in range(bs):
        start = 2
        for k in range(K):
            width = int(RNG.integers(1, 3))
            pos[i, start : start + width] = k
            start += width + 1  # a separator token between ids
    return index, mask, seq, items, pos


def _grpo(seq, mask, index, norm=True):
    tlr = torch.zeros_like(mask)
    last = mask.sum(-1).long() - 1
    tlr[torch.arange(len(seq)), last] = seq
    return core_algos.compute_grpo_outcome_advantage(tlr, mask, index, norm_adv_by_std_in_grpo=norm)[0], tlr


@pytest.mark.parametrize("norm", [True, False])
def test_without_flexrec_inputs_the_estimator_is_verl_grpo_exactly(norm):
    index, mask, seq, *_ = _batch()
    ref, tlr = _grpo(seq, mask, index, norm)
    fn = core_algos.get_adv_estimator_fn("flexrec")
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": norm})
    adv, ret = fn(token_level_rewards=tlr, response_mask=mask, index=index, config=cfg)
    assert torch.equal(adv, ref) and torch.equal(ret, ref)


@pytest.mark.parametrize("norm", [True, False])
def test_sequence_part_matches_verl_grpo(norm):
    index, mask, seq, items, pos = _batch()
    ref, _ = _grpo(seq, mask, index, norm)
    out = flexrec_advantages(mask, index, seq, norm_by_std=norm)  # no items: every token gets A^seq
    torch.testing.assert_close(out.advantages, ref, atol=1e-6, rtol=0)
    rec_r1 = flexrec_advantages(mask, index, seq, items, pos, options=AdvantageOptions(mode="rec_r1"), norm_by_std=norm)
    torch.testing.assert_close(rec_r1.advantages, ref, atol=1e-6, rtol=0)


def _reference_item_advantages(index, seq, items, eps=1e-6, pooled=False, floor=0.0):
    """Loop-by-loop definition (verl's conventions: <2 values -> mean 0, std 1, unbiased std);
    ``floor``: per-position std at least ``floor`` x the RMS of the group's per-position stds."""
    bs, K = items.shape
    out = torch.full((bs, K), float("nan"), dtype=torch.float64)
    for uid in set(index.tolist()):
        rows = [i for i in range(bs) if index[i] == uid]
        cols = [list(range(K))] if pooled else [[k] for k in range(K)]
        moments = []
        for ks in cols:
            vals = [(i, k, float(items[i, k])) for i in rows for k in ks if np.isfinite(float(items[i, k]))]
            xs = torch.tensor([v for *_, v in vals], dtype=torch.float64)
            mean, std = (torch.tensor(0.0), torch.tensor(1.0)) if len(xs) < 2 else (xs.mean(), xs.std())
            moments.append((vals, mean, std, len(xs) >= 2))
        stds = [float(std) for _, _, std, counted in moments if counted]
        typical = float(np.sqrt(np.mean(np.square(stds)))) if stds else 0.0
        for vals, mean, std, counted in moments:
            std = max(float(std), floor * typical) if counted and not pooled else float(std)
            for i, k, v in vals:
                out[i, k] = (v - mean) / (std + eps)
    return out


@pytest.mark.parametrize("item_norm,floor", [("position", 0.0), ("position", 1.0), ("position", 0.3), ("pooled", 1.0)])
def test_item_tokens_get_their_positions_group_normalised_reward(item_norm, floor):
    index, mask, seq, items, pos = _batch()
    items[:, -1] *= 1e-3  # a near-constant tail position, where the floor binds
    opts = AdvantageOptions(item_norm=item_norm, item_std_floor=floor)
    out = flexrec_advantages(mask, index, seq, items, pos, options=opts)
    ref_items = _reference_item_advantages(index, seq, items, pooled=item_norm == "pooled", floor=floor)
    torch.testing.assert_close(out.item_advantage.double(), ref_items, atol=1e-5, rtol=0, equal_nan=True)
    seq_ref, _ = _grpo(seq, mask, index)
    for i in range(len(seq)):
        for t in range(mask.shape[1]):
            k = int(pos[i, t])
            if mask[i, t] == 0:
                expected = 0.0
            elif k >= 0 and np.isfinite(float(items[i, k])):
                expected = float(ref_items[i, k])
            else:
                expected = float(seq_ref[i, t])
            assert abs(float(out.advantages[i, t]) - expected) < 1e-5, (i, t)


def test_std_floor_keeps_small_tail_differences_small():
    """Hand-computed: 3 rollouts, positions with spreads 0.1, 0.002 and 0 (causal's last position)."""
    index = np.array(["a"] * 3, dtype=object)
    items = torch.tensor([[0.30, 0.010, 0.0], [0.10, 0.012, 0.0], [0.20, 0.014, 0.0]], dtype=torch.float64)
    pos = torch.tensor([[-1, 0, 0, 1, 1, 2, 2]]).expand(3, 7)
    mask = torch.ones(3, 7)
    typical = np.sqrt((0.1**2 + 0.002**2 + 0.0) / 3)  # RMS of the unbiased per-position stds = 0.0577
    for rho in (1.0, 0.1):  # 0.1 = the default; both floors bind at position 1 (std 0.002)
        opts = AdvantageOptions(item_std_floor=rho)
        floored = flexrec_advantages(mask, index, torch.zeros(3), items, pos, options=opts).item_advantage.double()
        t = 0.002 / (rho * typical + 1e-6)  # verl's eps is still added
        expected = torch.tensor([[1.0, -t, 0.0], [-1.0, 0.0, 0.0], [0.0, t, 0.0]], dtype=torch.float64)
        torch.testing.assert_close(floored, expected, atol=1e-5, rtol=1e-4)
        assert floored[:, 1].abs().max() < 0.35  # not blown up to unit size
    default = flexrec_advantages(mask, index, torch.zeros(3), items, pos).item_advantage.double()
    assert default[2, 1] == pytest.approx(0.002 / (0.1 * typical + 1e-6), rel=1e-5)
    old = flexrec_advantages(mask, index, torch.zeros(3), items, pos, options=AdvantageOptions(item_std_floor=0.0))
    torch.testing.assert_close(old.item_advantage[:, 1].double(), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), atol=1e-3, rtol=0)
    # the last position (identical rewards) gets 0 either way, on both of its tokens
    assert (floored[:, 2] == 0).all() and (old.advantages[:, 5:] == 0).all()
    with pytest.raises(ValueError, match="item_std_floor"):
        AdvantageOptions(item_std_floor=-1.0)
    # a batch whose lists are all empty (every output invalid): no item columns, sequence advantages only
    empty = flexrec_advantages(mask, index, torch.tensor([1.0, 0.0, 0.5]), torch.zeros(3, 0), torch.full((3, 7), -1))
    assert empty.item_advantage.shape == (3, 0) and torch.isfinite(empty.advantages).all()
    torch.testing.assert_close(empty.advantages, empty.seq_advantage[:, None].expand(3, 7))


def test_items_are_not_summed_away():
    """Two rollouts with the same item-reward sum but different placements get different item advantages."""
    index = np.array(["a", "a"], dtype=object)
    mask = torch.ones(2, 4)
    items = torch.tensor([[0.3, -0.1], [-0.1, 0.3]])
    pos = torch.tensor([[0, 0, 1, -1], [0, 0, 1, -1]])
    out = flexrec_advantages(mask, index, torch.zeros(2), items, pos)
    assert out.advantages[0, 0] > 0 > out.advantages[1, 0]
    assert out.advantages[0, 2] < 0 < out.advantages[1, 2]


def test_add_seq_adv_to_items_and_center_only():
    index, mask, seq, items, pos = _batch()
    base = flexrec_advantages(mask, index, seq, items, pos)
    added = flexrec_advantages(mask, index, seq, items, pos, options=AdvantageOptions(add_seq_adv_to_items=True))
    on_items = (pos >= 0) & torch.isfinite(torch.gather(items, 1, pos.clamp(min=0))) & (mask > 0)
    diff = (added.advantages - base.advantages)[on_items]
    expected = base.seq_advantage[:, None].expand_as(mask)[on_items]
    torch.testing.assert_close(diff, expected, atol=1e-5, rtol=0)
    centred = flexrec_advantages(mask, index, seq, items, pos, options=AdvantageOptions(item_norm="none"))
    finite = torch.isfinite(centred.item_advantage)
    # per group and position the centred advantages sum to zero
    gid = group_ids(index)
    for g in gid.unique():
        rows = gid == g
        col = torch.where(finite[rows], centred.item_advantage[rows], torch.zeros(1)).sum(0)
        assert col.abs().max() < 1e-5


@pytest.mark.parametrize(
    "case",
    ["n1", "all_equal", "all_invalid", "u_zero", "u_equal", "single_valid"],
)
def test_degenerate_groups_give_finite_advantages(case):
    L, K = 12, 4
    if case == "n1":
        index = np.array(["a", "b", "c"], dtype=object)
    else:
        index = np.array(["a"] * 4, dtype=object)
    bs = len(index)
    mask = torch.ones(bs, L)
    seq = torch.full((bs,), 0.7) if case == "all_equal" else torch.tensor(RNG.normal(size=bs), dtype=torch.float32)
    items = torch.full((bs, K), 0.2) if case == "all_equal" else torch.tensor(RNG.normal(size=(bs, K)), dtype=torch.float32)
    if case == "all_invalid":
        items[:] = float("nan")
        seq[:] = -2.0
    if case == "single_valid":
        items[1:] = float("nan")
    pos = torch.arange(L).remainder(K + 1).sub(1).expand(bs, L).clone()  # -1,0,1,2,3,-1,...
    u = torch.zeros(bs) if case in ("u_zero", "all_invalid") else torch.full((bs,), 0.05) if case == "u_equal" else torch.rand(bs)
    out = flexrec_advantages(mask, index, seq, items, pos, u)
    assert torch.isfinite(out.advantages).all()
    assert torch.isfinite(out.scale).all()
    if case in ("all_equal", "all_invalid"):
        assert out.advantages.abs().max() < 1e-6  # nothing to prefer
    if case in ("u_zero", "u_equal"):
        assert torch.allclose(out.scale, torch.ones(bs))


def test_uncertainty_scales_whole_rollouts_and_can_be_disabled():
    index, mask, seq, items, pos = _batch()
    u = torch.tensor(RNG.random(len(seq)) * 0.05, dtype=torch.float32)
    plain = flexrec_advantages(mask, index, seq, items, pos)
    scaled = flexrec_advantages(mask, index, seq, items, pos, u)
    c = 1 / (u.double() + 1e-2)
    c = (c / c.mean()).clamp(0, 3).float()
    torch.testing.assert_close(scaled.scale, c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled.advantages, plain.advantages * c[:, None], atol=1e-5, rtol=1e-5)
    raw = flexrec_advantages(mask, index, seq, items, pos, u, uncertainty_options=UncertaintyOptions(enable=False))
    assert torch.equal(raw.advantages, plain.advantages)
    tight = flexrec_advantages(mask, index, seq, items, pos, u, uncertainty_options=UncertaintyOptions(max_scale=1.05))
    assert tight.scale.max() <= 1.05 + 1e-6 and tight.clipped.any()


def test_registered_estimator_reads_algorithm_flexrec_config():
    index, mask, seq, items, pos = _batch()
    _, tlr = _grpo(seq, mask, index)
    fn = core_algos.get_adv_estimator_fn("flexrec")
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {"advantage": {"item_norm": "pooled"}}})
    adv, _ = fn(tlr, mask, index=index, config=cfg, item_rewards=items, item_token_pos=pos, seq_reward=seq)
    # reference: pooled item normalisation written out, verl's GRPO elsewhere (not the function itself)
    ref_items = _reference_item_advantages(index, seq, items, pooled=True)
    seq_ref, _ = _grpo(seq, mask, index)
    item_value = torch.gather(ref_items, 1, pos.clamp(min=0))
    on_item = (pos >= 0) & torch.isfinite(item_value)
    expected = torch.where(on_item, item_value, seq_ref.double()) * mask
    torch.testing.assert_close(adv.double(), expected, atol=1e-5, rtol=0)
    position = _reference_item_advantages(index, seq, items, floor=0.1)  # the default would differ
    assert (torch.gather(position, 1, pos.clamp(min=0)) - item_value)[on_item].abs().max() > 1e-3
    with pytest.raises(ValueError, match="unknown key"):
        fn(tlr, mask, index=index, config=OmegaConf.create({"flexrec": {"advantage": {"itemnorm": 1}}}), seq_reward=seq)
    with pytest.raises(ValueError, match="index"):
        fn(tlr, mask, index=None, config=cfg)


def test_group_normalize_is_verl_grpo_on_scores():
    scores = torch.tensor(RNG.normal(size=30), dtype=torch.float32)
    index = np.array([str(i % 7) for i in range(30)], dtype=object)
    mask = torch.ones(30, 1)
    ref = core_algos.compute_grpo_outcome_advantage(scores[:, None].clone(), mask, index)[0][:, 0]
    torch.testing.assert_close(group_normalize(scores, group_ids(index)).float(), ref, atol=1e-6, rtol=0)


def test_config_defaults_and_validation():
    cfg = FlexRecConfig.from_any(None)
    assert cfg.reward.swap_mode == "causal" and cfg.uncertainty.enable and cfg.advantage.item_norm == "position"
    with pytest.raises(ValueError, match="swap_mode"):
        FlexRecConfig.from_any({"reward": {"swap_mode": "sideways"}})
    with pytest.raises(ValueError, match="unknown key"):
        FlexRecConfig.from_any({"rewards": {}})
    assert FlexRecConfig.from_any(OmegaConf.create({"uncertainty": {"eps": 0.5}})).uncertainty.eps == 0.5
