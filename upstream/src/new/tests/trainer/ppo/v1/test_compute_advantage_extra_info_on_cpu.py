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
"""PPOTrainer._compute_advantage (V1) hands each rollout's reward_extra_info to estimators that take it.

TransferQueue is replaced by an in-memory store that returns what kv_batch_get returns in a run:
jagged nested tensors for per-token fields, NonTensorStack for uid and extra_fields.
"""

from unittest.mock import patch

import numpy as np
import pytest
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from tensordict import NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta

from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.trainer.ppo.v1.utils import estimator_reads_non_tensor_batch, reward_extra_info_columns


class _StubTrainer(PPOTrainer):
    def on_step_end(self):
        pass

    def on_sample_end(self):
        pass


class _InMemoryTQ:
    def __init__(self, rows: dict[str, dict]):
        self.rows = rows
        self.requested: list[list[str]] = []
        self.written: dict[str, torch.Tensor] = {}

    def kv_batch_get(self, keys, partition_id, select_fields):
        self.requested.append(list(select_fields))
        fields = {}
        for name in select_fields:
            if not all(name in self.rows[k] for k in keys):
                continue  # TransferQueue leaves out a field that is not stored for every key
            values = [self.rows[k][name] for k in keys]
            if isinstance(values[0], torch.Tensor):
                fields[name] = torch.nested.as_nested_tensor(values, layout=torch.jagged)
            else:
                fields[name] = NonTensorStack.from_list(values)
        return TensorDict(fields, batch_size=[len(keys)])

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        for name in fields.keys():
            self.written[name] = fields[name].to_padded_tensor(0.0)
        return KVBatchMeta(keys=list(keys), tags=[{} for _ in keys], partition_id=partition_id)


def _rows(extra_infos):
    """Four rollouts of two prompts with response lengths 3, 2, 4, 1 and the score on the last token."""
    uids, lengths, scores = ["p", "p", "q", "q"], [3, 2, 4, 1], [1.0, 0.0, 0.5, 2.0]
    rows = {}
    for i, (uid, length, score) in enumerate(zip(uids, lengths, scores, strict=True)):
        rm_scores = torch.zeros(length)
        rm_scores[-1] = score
        rows[f"{uid}_{i}_0"] = {
            "uid": uid,
            "response_mask": torch.ones(length, dtype=torch.int64),
            "rm_scores": rm_scores,
        }
        if extra_infos is not None:
            rows[f"{uid}_{i}_0"]["extra_fields"] = {"reward_extra_info": extra_infos[i], "other": i}
    return rows


def _run(adv_estimator, rows):
    trainer = _StubTrainer.__new__(_StubTrainer)
    trainer.config = OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": adv_estimator,
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
                "use_kl_in_reward": False,
            },
            "actor_rollout_ref": {"rollout": {"n": 2}},
        }
    )
    store = _InMemoryTQ(rows)
    batch = KVBatchMeta(keys=list(rows), tags=[{} for _ in rows], partition_id="train")
    with patch.object(tq, "kv_batch_get", store.kv_batch_get), patch.object(tq, "kv_batch_put", store.kv_batch_put):
        trainer._compute_advantage(batch, metrics={})
    return store


SEEN = {}


@core_algos.register_adv_est("test_v1_reads_reward_extra_info")
def _weighted_outcome(token_level_rewards, response_mask, index=None, config=None, non_tensor_batch=None, **kwargs):
    SEEN["non_tensor_batch"] = {k: list(v) for k, v in non_tensor_batch.items()}
    weight = torch.tensor([1.0 if w is None else float(w) for w in non_tensor_batch.get("weight", [None] * len(index))])
    advantages = token_level_rewards.sum(-1, keepdim=True) * weight[:, None] * response_mask
    return advantages, advantages


def test_reward_extra_info_reaches_the_estimator_row_by_row():
    infos = [
        {"weight": 2.0, "acc": 1},
        {"weight": -1.0, "acc": 0, "uid": "not-the-uid"},
        {"acc": 1},  # no weight
        {"weight": 0.5, "acc": 0, "items": [3, 1]},
    ]
    store = _run("test_v1_reads_reward_extra_info", _rows(infos))

    seen = SEEN["non_tensor_batch"]
    assert "extra_fields" in store.requested[0]
    assert seen["uid"] == ["p", "p", "q", "q"]  # a reward_extra_info key never replaces uid
    assert seen["weight"] == [2.0, -1.0, None, 0.5]
    assert seen["acc"] == [1, 0, 1, 0]
    assert seen["items"] == [None, None, None, [3, 1]]
    expected = torch.tensor([[2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(store.written["advantages"], expected)


def test_no_extra_fields_in_transfer_queue_gives_only_uid():
    _run("test_v1_reads_reward_extra_info", _rows(None))
    assert list(SEEN["non_tensor_batch"]) == ["uid"]


def test_grpo_does_not_fetch_extra_fields_and_is_unchanged():
    rows = _rows([{"acc": 1}] * 4)
    store = _run("grpo", rows)

    assert "extra_fields" not in store.requested[0]
    response_mask = torch.nested.as_nested_tensor(
        [r["response_mask"] for r in rows.values()], layout=torch.jagged
    ).to_padded_tensor(0)
    rewards = torch.nested.as_nested_tensor([r["rm_scores"] for r in rows.values()], layout=torch.jagged)
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        rewards.to_padded_tensor(0.0), response_mask, np.array(["p", "p", "q", "q"], dtype=object)
    )
    torch.testing.assert_close(store.written["advantages"], expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gae", False),
        ("grpo", False),
        ("grpo_vectorized", False),
        ("gdpo", True),
        ("test_v1_reads_reward_extra_info", True),
    ],
)
def test_estimator_reads_non_tensor_batch(name, expected):
    assert estimator_reads_non_tensor_batch(name) is expected


def test_reward_extra_info_columns_are_one_dimensional():
    columns = reward_extra_info_columns(
        [{"reward_extra_info": {"spans": [[0, 1], [1, 2]]}}, {"reward_extra_info": {"spans": [[2, 3], [3, 4]]}}, None]
    )
    assert columns["spans"].shape == (3,)
    assert columns["spans"][1] == [[2, 3], [3, 4]] and columns["spans"][2] is None
