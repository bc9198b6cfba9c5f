# Copyright 2026 verl-flexrec contributors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the ``flexrec`` advantage estimator.

The reference below restates the docstring's formula with Python loops and the ``statistics``
module (sample std, GRPO's mean 0 / std 1 for fewer than two values), one rollout and one token at
a time; the estimator is vectorised torch. Small cases are also worked out by hand.
"""

import json
import math
import random
import statistics
from collections import defaultdict

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.trainer.config import AlgoConfig, FlexRecConfig
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import compute_flexrec_outcome_advantage, compute_grpo_outcome_advantage
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.utils.config import omega_conf_to_dataclass

EPS = 1e-6


def _config(norm_by_std=True, **flexrec):
    return OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std, "flexrec": flexrec})


def _stats(values):
    if len(values) < 2:
        return 0.0, 1.0
    return statistics.fmean(values), statistics.stdev(values)


def _reference(
    batch,
    *,
    item_norm="position",
    floor=0.1,
    add_seq=False,
    norm_by_std=True,
    use_u=True,
    u_eps=0.01,
    normalize="batch",
    lo=0.0,
    hi=3.0,
):
    """Advantages per the docstring's formula, in plain Python (float64)."""
    rows, length = batch["rows"], batch["length"]
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["uid"]].append(i)

    def normalised(value, values, std_floor=0.0):
        mean, std = _stats(values)
        if len(values) >= 2:
            std = max(std, std_floor)
        return (value - mean) / (std + EPS) if norm_by_std else value - mean

    seq = [normalised(row["score"], [rows[j]["score"] for j in groups[row["uid"]]]) for row in rows]
    items = []
    for row in rows:
        peers = [rows[j]["items"] for j in groups[row["uid"]]]
        if item_norm == "pooled":
            pool = [r for p in peers for r in p]
            items.append([normalised(r, pool) for r in row["items"]])
        else:
            column = lambda k, peers=peers: [p[k] for p in peers if len(p) > k]  # noqa: E731
            if item_norm == "none":
                items.append([r - _stats(column(k))[0] for k, r in enumerate(row["items"])])
            else:
                # the floor: item_std_floor x the RMS of the group's stds over positions with >= 2 values
                width = max(len(p) for p in peers)
                stds = [_stats(column(k))[1] for k in range(width) if len(column(k)) >= 2]
                typical = math.sqrt(statistics.fmean([x * x for x in stds])) if stds else 0.0
                items.append([normalised(r, column(k), floor * typical) for k, r in enumerate(row["items"])])

    scale = [1.0] * len(rows)
    if use_u and batch.get("u") is not None:
        c = [1.0 / (max(u, 0.0) + u_eps) for u in batch["u"]]
        if normalize == "batch":
            real = [c[i] for i, row in enumerate(rows) if row["length"] > 0]
            c = [x / statistics.fmean(real) for x in c]
        elif normalize == "group":
            c = [c[i] / statistics.fmean([c[j] for j in groups[row["uid"]]]) for i, row in enumerate(rows)]
        scale = [min(max(x, lo), hi) for x in c]

    out = torch.zeros(len(rows), length, dtype=torch.float64)
    for i, row in enumerate(rows):
        value = [seq[i]] * length
        for k, (first, end) in enumerate(row["spans"]):  # a later span wins where two overlap
            for t in range(max(first, 0), min(end, length)):
                # a span past the rollout's list is not an item token
                value[t] = items[i][k] + (seq[i] if add_seq else 0.0) if k < len(items[i]) else seq[i]
        for t in range(row["length"]):
            out[i, t] = scale[i] * value[t]
    return out


def _random_batch(rng: random.Random, *, ties: bool, with_u: bool, length: int = 12):
    """Prompt groups of 1-5 rollouts; 0-5 ranked items each (0 = invalid response); spans may overlap,
    run past the response or stand beyond the list; item rewards with ties or continuous."""
    rows = []
    for g in range(rng.randint(1, 4)):
        for _ in range(rng.choice([1, 2, 3, 5])):
            n_items = rng.choice([0, 2, 3, 5, 5])
            draw = (lambda: rng.choice([0.0, 0.5, 1.0])) if ties else (lambda: rng.gauss(0.0, 1.0))
            spans = []
            for _ in range(n_items + rng.choice([0, 0, 1])):  # sometimes a span beyond the list
                first = rng.randint(-1, length)
                spans.append([first, first + rng.randint(1, 3)])
            rows.append(
                {
                    "uid": f"prompt-{g}",
                    "score": draw(),
                    "items": [draw() for _ in range(n_items)],
                    "spans": spans if n_items else [],
                    "length": rng.randint(1, length),
                }
            )
    u = [rng.choice([0.0, 0.0, 0.01, 0.2, 1.5, -1.0]) for _ in rows] if with_u else None
    return {"rows": rows, "length": length, "u": u}


def _tensors(batch):
    """The estimator's inputs, built directly from the lists."""
    rows, length = batch["rows"], batch["length"]
    k_max = max([len(r["items"]) for r in rows] + [0])
    token_level_rewards = torch.zeros(len(rows), length)
    response_mask = torch.zeros(len(rows), length, dtype=torch.int64)
    item_rewards = torch.full((len(rows), k_max), float("nan"))
    item_token_pos = torch.full((len(rows), length), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        response_mask[i, : row["length"]] = 1
        token_level_rewards[i, row["length"] - 1] = row["score"]
        item_rewards[i, : len(row["items"])] = torch.tensor(row["items"])
        for k, (first, end) in enumerate(row["spans"]):
            item_token_pos[i, max(first, 0) : min(end, length)] = k
    index = np.array([r["uid"] for r in rows], dtype=object)
    u = None if batch["u"] is None else torch.tensor(batch["u"])
    return token_level_rewards, response_mask, index, item_rewards, item_token_pos, u


def _non_tensor_batch(batch, as_json: bool):
    encode = json.dumps if as_json else (lambda x: x)
    rows = batch["rows"]
    columns = {
        "uid": [r["uid"] for r in rows],
        "flexrec_item_rewards": [encode(r["items"]) for r in rows],
        "flexrec_item_token_spans": [encode(r["spans"]) for r in rows],
    }
    if batch["u"] is not None:
        columns["flexrec_uncertainty"] = list(batch["u"])
    out = {}
    for key, values in columns.items():
        out[key] = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[key][i] = v
    return out


# ----------------------------------------------------------------------------- GRPO reduction
@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_without_item_data_equals_grpo_exactly(norm_by_std, seed):
    torch.manual_seed(seed)
    bs, length = 24, 9
    token_level_rewards = torch.randn(bs, length)
    response_mask = (torch.rand(bs, length) > 0.3).long()
    index = np.array([f"p{i % 5}" for i in range(bs)], dtype=object)
    index[-1] = "singleton"

    got, got_returns = compute_flexrec_outcome_advantage(
        token_level_rewards, response_mask, index, config=_config(norm_by_std, item_norm="pooled")
    )
    want, want_returns = compute_grpo_outcome_advantage(
        token_level_rewards, response_mask, index, norm_adv_by_std_in_grpo=norm_by_std
    )
    assert torch.equal(got, want) and torch.equal(got_returns, want_returns)


def test_registered_name():
    assert core_algos.get_adv_estimator_fn("flexrec") is compute_flexrec_outcome_advantage
    assert core_algos.AdvantageEstimator.FLEXREC == "flexrec"


# ----------------------------------------------------------------------------- hand-computed cases
def _two_rollouts(item_rewards, spans, scores=(1.0, 0.0), length=6):
    token_level_rewards = torch.zeros(2, length)
    token_level_rewards[:, -1] = torch.tensor(scores)
    item_token_pos = torch.full((2, length), -1, dtype=torch.long)
    for i, row in enumerate(spans):
        for k, (first, end) in enumerate(row):
            item_token_pos[i, first:end] = k
    return (
        token_level_rewards,
        torch.ones(2, length, dtype=torch.int64),
        np.array(["a", "a"], dtype=object),
        (
            torch.tensor(item_rewards, dtype=torch.float32),
            item_token_pos,
        ),
    )


def test_item_tokens_get_position_normalised_item_rewards():
    # two rollouts ranking two items; position 0 rewards (3, 1), position 1 rewards (1, 3)
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[3.0, 1.0], [1.0, 3.0]], [[(1, 2), (3, 5)], [(0, 1), (2, 3)]]
    )
    adv, _ = compute_flexrec_outcome_advantage(rewards, mask, index, item_rewards=item_rewards, item_token_pos=pos)

    a = 1.0 / (math.sqrt(2.0) + EPS)  # (3 - 2) / std(3, 1) = 1 / sqrt(2); sequence scores (1, 0) give the same
    want = torch.tensor([[a, a, a, -a, -a, a], [-a, -a, a, -a, -a, -a]])
    torch.testing.assert_close(adv, want)


def test_item_norm_modes_by_hand():
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[4.0, 0.0], [2.0, 2.0]], [[(0, 1), (1, 2)], [(0, 1), (1, 2)]]
    )
    run = (
        lambda **kw: compute_flexrec_outcome_advantage(  # noqa: E731
            rewards, mask, index, config=_config(**kw), item_rewards=item_rewards, item_token_pos=pos
        )[0][:, :2]
    )
    s = math.sqrt(2.0)  # std of (4, 2) and of (0, 2)
    torch.testing.assert_close(
        run(item_norm="position"), torch.tensor([[1 / s, -1 / s], [-1 / s, 1 / s]]) * s / (s + EPS)
    )
    # pooled: mean 2 and std of (4, 0, 2, 2) = sqrt(8/3)
    p = math.sqrt(8.0 / 3.0) + EPS
    torch.testing.assert_close(run(item_norm="pooled"), torch.tensor([[2 / p, -2 / p], [0.0, 0.0]]))
    torch.testing.assert_close(run(item_norm="none"), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    # Dr.GRPO: no std anywhere
    torch.testing.assert_close(run(item_norm="position", norm_by_std=False), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_add_seq_adv_to_items():
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[4.0, 0.0], [2.0, 2.0]], [[(0, 1), (1, 2)], [(0, 1), (1, 2)]]
    )
    plain, _ = compute_flexrec_outcome_advantage(rewards, mask, index, item_rewards=item_rewards, item_token_pos=pos)
    added, _ = compute_flexrec_outcome_advantage(
        rewards, mask, index, config=_config(add_seq_adv_to_items=True), item_rewards=item_rewards, item_token_pos=pos
    )
    seq = plain[:, 2:3]  # a token that spells no item carries the sequence advantage
    torch.testing.assert_close(added[:, :2], plain[:, :2] + seq)
    torch.testing.assert_close(added[:, 2:], plain[:, 2:])


def test_std_floor_by_hand():
    # position 0 rewards (3, 1): std sqrt(2); position 1 rewards (0.01, 0.03): std 0.01 * sqrt(2)
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[3.0, 0.01], [1.0, 0.03]], [[(0, 1), (1, 2)], [(0, 1), (1, 2)]]
    )
    run = (
        lambda **kw: compute_flexrec_outcome_advantage(  # noqa: E731
            rewards, mask, index, config=_config(**kw), item_rewards=item_rewards, item_token_pos=pos
        )[0][:, :2]
    )
    s0, s1 = math.sqrt(2.0), 0.01 * math.sqrt(2.0)
    typical = math.sqrt((s0**2 + s1**2) / 2)
    for floor in (0.1, 1.0):  # the floor binds at position 1 only
        a0, a1 = 1.0 / (s0 + EPS), 0.01 / (floor * typical + EPS)
        torch.testing.assert_close(run(item_std_floor=floor), torch.tensor([[a0, -a1], [-a0, a1]]))
    assert run()[0, 1] == run(item_std_floor=0.1)[0, 1]  # 0.1 is the default
    a1 = 0.01 / (s1 + EPS)  # no floor: a spread of 0.02 becomes a unit advantage
    torch.testing.assert_close(run(item_std_floor=0.0)[:, 1], torch.tensor([-a1, a1]))


def test_invalid_rollout_keeps_sequence_advantage_and_leaves_item_statistics():
    # rollout 2 is invalid (no items); position statistics use rollouts 0 and 1 only
    length = 4
    rewards = torch.zeros(3, length)
    rewards[:, -1] = torch.tensor([1.0, 0.5, -2.0])
    mask = torch.ones(3, length, dtype=torch.int64)
    index = np.array(["a", "a", "a"], dtype=object)
    nan = float("nan")
    item_rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [nan, nan]])
    pos = torch.tensor([[0, 1, -1, -1], [0, 1, -1, -1], [0, 1, -1, -1]])  # the invalid row's tokens map nowhere valid
    adv, _ = compute_flexrec_outcome_advantage(rewards, mask, index, item_rewards=item_rewards, item_token_pos=pos)

    seq, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    a = 0.5 / (math.sqrt(0.5) + EPS)  # (1 - 0.5) / std(1, 0)
    torch.testing.assert_close(adv[:2, :2], torch.tensor([[a, -a], [-a, a]]))
    torch.testing.assert_close(adv[:, 2:], seq[:, 2:])
    torch.testing.assert_close(adv[2], seq[2])


def test_single_rollout_group_follows_grpo_convention():
    # one rollout: mean 0 and std 1 for its sequence and item statistics
    rewards, mask = torch.tensor([[0.0, 0.0, 0.8]]), torch.ones(1, 3, dtype=torch.int64)
    adv, _ = compute_flexrec_outcome_advantage(
        rewards,
        mask,
        np.array(["solo"], dtype=object),
        item_rewards=torch.tensor([[0.3]]),
        item_token_pos=torch.tensor([[0, -1, -1]]),
    )
    torch.testing.assert_close(adv, torch.tensor([[0.3, 0.8, 0.8]]) / (1.0 + EPS))


# ----------------------------------------------------------------------------- uncertainty scale
def test_uncertainty_scale_by_hand():
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[3.0, 1.0], [1.0, 3.0]], [[(1, 2), (3, 5)], [(0, 1), (2, 3)]]
    )
    base, _ = compute_flexrec_outcome_advantage(rewards, mask, index, item_rewards=item_rewards, item_token_pos=pos)
    u = torch.tensor([0.0, 0.09])  # c = (100, 10), batch mean 55
    for normalize, scale in [("batch", (100 / 55, 10 / 55)), ("group", (100 / 55, 10 / 55)), ("none", (3.0, 3.0))]:
        adv, _ = compute_flexrec_outcome_advantage(
            rewards,
            mask,
            index,
            config=_config(uncertainty_normalize=normalize),
            item_rewards=item_rewards,
            item_token_pos=pos,
            uncertainty=u,
        )
        torch.testing.assert_close(adv, base * torch.tensor(scale)[:, None])
    off, _ = compute_flexrec_outcome_advantage(
        rewards,
        mask,
        index,
        config=_config(use_uncertainty=False),
        item_rewards=item_rewards,
        item_token_pos=pos,
        uncertainty=u,
    )
    assert torch.equal(off, base)


def test_clipping_and_group_normalisation():
    rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    mask = torch.ones(4, 1, dtype=torch.int64)
    index = np.array(["a", "a", "b", "b"], dtype=object)
    u = torch.tensor([0.0, 0.99, 0.0, 0.0])  # c = (100, 1, 100, 100)
    config = _config(uncertainty_normalize="group", uncertainty_min_scale=0.5, uncertainty_max_scale=1.5)
    adv, _ = compute_flexrec_outcome_advantage(rewards, mask, index, config=config, uncertainty=u)
    seq, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    # group a: c / 50.5 = (1.98 -> 1.5, 0.0198 -> 0.5); group b: 1
    torch.testing.assert_close(adv, seq * torch.tensor([[1.5], [0.5], [1.0], [1.0]]))


def test_padding_rows_do_not_shift_the_batch_scale():
    rng = random.Random(0)
    batch = _random_batch(rng, ties=False, with_u=True)
    rewards, mask, index, item_rewards, pos, u = _tensors(batch)
    real, _ = compute_flexrec_outcome_advantage(
        rewards, mask, index, item_rewards=item_rewards, item_token_pos=pos, uncertainty=u
    )
    # verl's padding rows: no response tokens, their own uid, a copy of a real row's extra info
    pad = 3
    padded, _ = compute_flexrec_outcome_advantage(
        torch.cat([rewards, torch.zeros(pad, rewards.shape[1])]),
        torch.cat([mask, torch.zeros(pad, mask.shape[1], dtype=mask.dtype)]),
        np.concatenate([index, np.array(["pad"] * pad, dtype=object)]),
        item_rewards=torch.cat([item_rewards, item_rewards[:1].expand(pad, -1)]),
        item_token_pos=torch.cat([pos, pos[:1].expand(pad, -1)]),
        uncertainty=torch.cat([u, torch.full((pad,), 5.0)]),
    )
    assert torch.equal(padded[: len(real)], real)
    assert not padded[len(real) :].any()


# ----------------------------------------------------------------------------- against the reference
CONFIGS = [
    dict(item_norm="position"),
    dict(item_norm="pooled"),
    dict(item_norm="none"),
    dict(item_norm="position", norm_by_std=False),
    dict(item_norm="position", add_seq=True),
    dict(item_norm="pooled", normalize="group"),
    dict(item_norm="position", normalize="none", lo=0.2, hi=50.0),
    dict(item_norm="position", use_u=False),
    dict(item_norm="position", floor=0.0),
    dict(item_norm="position", floor=1.0, normalize="group"),
]


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("ties", [True, False])
def test_random_batches_match_the_reference(options, ties):
    names = {
        "item_norm": "item_norm",
        "floor": "item_std_floor",
        "add_seq": "add_seq_adv_to_items",
        "use_u": "use_uncertainty",
        "normalize": "uncertainty_normalize",
        "lo": "uncertainty_min_scale",
        "hi": "uncertainty_max_scale",
    }
    flexrec = {names[k]: v for k, v in options.items() if k in names}
    config = _config(options.get("norm_by_std", True), **flexrec)
    rng = random.Random(hash((tuple(options.items()), ties)) % 2**32)
    for _ in range(30):
        batch = _random_batch(rng, ties=ties, with_u=rng.random() < 0.7)
        rewards, mask, index, item_rewards, pos, u = _tensors(batch)
        adv, returns = compute_flexrec_outcome_advantage(
            rewards, mask, index, config=config, item_rewards=item_rewards, item_token_pos=pos, uncertainty=u
        )
        want = _reference(batch, **options)
        assert torch.isfinite(adv).all()
        torch.testing.assert_close(adv.double(), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(adv, returns)


@pytest.mark.parametrize("as_json", [True, False])
def test_reward_extra_info_through_compute_advantage(as_json):
    """The trainer path: reward_extra_info columns in non_tensor_batch give the keyword-tensor result."""
    rng = random.Random(7)
    config = _config(item_norm="position")
    for _ in range(10):
        batch = _random_batch(rng, ties=False, with_u=True)
        rewards, mask, index, item_rewards, pos, u = _tensors(batch)
        data = DataProto.from_dict(
            tensors={"token_level_rewards": rewards, "response_mask": mask},
            non_tensors=_non_tensor_batch(batch, as_json),
        )
        result = compute_advantage(data, adv_estimator="flexrec", config=config)
        direct, _ = compute_flexrec_outcome_advantage(
            rewards, mask, index, config=config, item_rewards=item_rewards, item_token_pos=pos, uncertainty=u
        )
        assert torch.equal(result.batch["advantages"], direct)


def test_missing_reward_extra_info_is_an_error_not_grpo():
    data = DataProto.from_dict(
        tensors={"token_level_rewards": torch.ones(2, 3), "response_mask": torch.ones(2, 3, dtype=torch.int64)},
        non_tensors={"uid": np.array(["a", "a"], dtype=object)},
    )
    with pytest.raises(ValueError, match="flexrec_item_rewards"):
        compute_advantage(data, adv_estimator="flexrec", config=_config())


def test_malformed_spans_are_named():
    data = DataProto.from_dict(
        tensors={"token_level_rewards": torch.ones(1, 3), "response_mask": torch.ones(1, 3, dtype=torch.int64)},
        non_tensors={
            "uid": np.array(["a"], dtype=object),
            "flexrec_item_rewards": np.array(["[1.0]"], dtype=object),
            "flexrec_item_token_spans": np.array(["[[0, 1, 2]]"], dtype=object),
        },
    )
    with pytest.raises(ValueError, match="row 0: flexrec_item_token_spans"):
        compute_advantage(data, adv_estimator="flexrec", config=_config())


# ----------------------------------------------------------------------------- degenerate groups, config
def test_degenerate_groups_stay_finite():
    length = 3
    nan = float("nan")
    rewards = torch.zeros(5, length)  # all-equal scores
    mask = torch.ones(5, length, dtype=torch.int64)
    index = np.array(["equal", "equal", "invalid", "invalid", "solo"], dtype=object)
    item_rewards = torch.tensor([[0.5, 0.5], [0.5, 0.5], [nan, nan], [nan, nan], [1.0, nan]])
    pos = torch.tensor([[0, 1, -1]] * 5)
    for item_norm in ("position", "pooled", "none"):
        for normalize in ("batch", "group", "none"):
            adv, _ = compute_flexrec_outcome_advantage(
                rewards,
                mask,
                index,
                config=_config(item_norm=item_norm, uncertainty_normalize=normalize),
                item_rewards=item_rewards,
                item_token_pos=pos,
                uncertainty=torch.zeros(5),
            )
            assert torch.isfinite(adv).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"item_norm": "rank"}, "item_norm"),
        ({"uncertainty_normalize": "prompt"}, "uncertainty_normalize"),
        ({"uncertainty_eps": 0.0}, "uncertainty_eps"),
        ({"uncertainty_min_scale": 2.0, "uncertainty_max_scale": 1.0}, "min_scale"),
        ({"advantage": {"item_norm": "position"}}, "advantage"),
    ],
)
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        compute_flexrec_outcome_advantage(
            torch.ones(2, 2),
            torch.ones(2, 2),
            np.array(["a", "a"], dtype=object),
            config=_config(**bad),
            item_rewards=torch.ones(2, 1),
            item_token_pos=torch.zeros(2, 2, dtype=torch.long),
        )


def test_config_dataclass_defaults():
    cfg = FlexRecConfig()
    assert (cfg.item_norm, cfg.item_std_floor, cfg.uncertainty_normalize, cfg.item_rewards_key) == (
        "position",
        0.1,
        "batch",
        "flexrec_item_rewards",
    )


def test_config_as_algo_config_dataclass():
    rewards, mask, index, (item_rewards, pos) = _two_rollouts(
        [[4.0, 0.0], [2.0, 2.0]], [[(0, 1), (1, 2)], [(0, 1), (1, 2)]]
    )
    run = lambda config: compute_flexrec_outcome_advantage(  # noqa: E731
        rewards, mask, index, config=config, item_rewards=item_rewards, item_token_pos=pos
    )[0]
    converted = omega_conf_to_dataclass({"adv_estimator": "flexrec", "flexrec": {"item_norm": "none"}}, AlgoConfig)
    assert isinstance(converted.flexrec, FlexRecConfig)
    dataclass_config = AlgoConfig(adv_estimator="flexrec", flexrec=FlexRecConfig(item_norm="none"))
    want = run(_config(item_norm="none"))
    assert torch.equal(run(dataclass_config), want) and torch.equal(run(converted), want)
    assert not torch.equal(run(AlgoConfig(adv_estimator="flexrec")), want)  # default item_norm=position
