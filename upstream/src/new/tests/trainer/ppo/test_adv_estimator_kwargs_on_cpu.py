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
"""compute_advantage hands non_tensor_batch / batch to every estimator whose signature takes them."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import accepts_kwarg, compute_advantage


def _data(extra: dict | None = None) -> DataProto:
    tensors = {
        "token_level_rewards": torch.tensor([[0.0, 1.0], [0.0, 0.5], [0.0, 2.0]]),
        "response_mask": torch.ones(3, 2, dtype=torch.int64),
    }
    non_tensors = {"uid": np.array(["a", "a", "b"], dtype=object)}
    non_tensors.update(extra or {})
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def test_accepts_kwarg():
    def declared(token_level_rewards, response_mask, non_tensor_batch=None):
        pass

    def keyword_only(token_level_rewards, *, non_tensor_batch=None):
        pass

    def catch_all(token_level_rewards, response_mask, **kwargs):
        pass

    def fixed(token_level_rewards, response_mask, index=None, config=None):
        pass

    assert accepts_kwarg(declared, "non_tensor_batch")
    assert accepts_kwarg(keyword_only, "non_tensor_batch")
    assert accepts_kwarg(catch_all, "non_tensor_batch")
    assert not accepts_kwarg(fixed, "non_tensor_batch")
    assert not accepts_kwarg(min, "non_tensor_batch")  # a builtin without a signature does not raise


def test_registered_estimator_receives_non_tensor_batch_rows_in_order():
    seen = {}

    @core_algos.register_adv_est("test_kwargs_reads_extra_info")
    def _estimator(token_level_rewards, response_mask, index=None, config=None, non_tensor_batch=None, **kwargs):
        seen["non_tensor_batch"], seen["batch"] = non_tensor_batch, kwargs.get("batch")
        weight = torch.tensor([float(w) for w in non_tensor_batch["weight"]])
        advantages = token_level_rewards * weight[:, None] * response_mask
        return advantages, advantages

    data = compute_advantage(
        _data({"weight": np.array([1.0, -1.0, 3.0], dtype=object)}), adv_estimator="test_kwargs_reads_extra_info"
    )

    assert list(seen["non_tensor_batch"]["uid"]) == ["a", "a", "b"]
    assert seen["batch"] is not None and "response_mask" in seen["batch"].keys()
    torch.testing.assert_close(data.batch["advantages"], torch.tensor([[0.0, 1.0], [0.0, -0.5], [0.0, 6.0]]))


def test_estimator_with_a_fixed_signature_is_called_without_the_extra_keys():
    calls = []

    @core_algos.register_adv_est("test_kwargs_fixed_signature")
    def _estimator(token_level_rewards, response_mask, index=None, config=None):
        calls.append(index)
        return token_level_rewards, token_level_rewards

    compute_advantage(_data({"weight": np.array([1, 2, 3], dtype=object)}), adv_estimator="test_kwargs_fixed_signature")

    assert len(calls) == 1 and list(calls[0]) == ["a", "a", "b"]


def test_grpo_vectorized_unchanged():
    data = _data()
    expected, _ = core_algos.compute_grpo_vectorized_outcome_advantage(
        data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch["uid"]
    )
    result = compute_advantage(_data(), adv_estimator="grpo_vectorized", config=OmegaConf.create({}))
    assert torch.equal(result.batch["advantages"], expected)


@pytest.mark.parametrize("weights", [None, [2.0, 0.5]])
def test_gdpo_still_reads_its_reward_components(weights):
    """GDPO lost its named case in compute_advantage; it must get the same inputs through the general rule."""
    n, prompt_len, response_len = 4, 3, 5
    lengths = torch.tensor([5, 3, 4, 2])
    response_mask = (torch.arange(response_len)[None, :] < lengths[:, None]).long()
    attention_mask = torch.cat([torch.ones(n, prompt_len, dtype=torch.long), response_mask], dim=1)
    batch = {
        "token_level_rewards": torch.zeros(n, response_len),
        "response_mask": response_mask,
        "prompts": torch.zeros(n, prompt_len, dtype=torch.long),
        "attention_mask": attention_mask,
    }
    non_tensors = {
        "uid": np.array(["p", "p", "q", "q"], dtype=object),
        "accuracy_reward": np.array([1.0, 0.0, 1.0, 1.0], dtype=object),
        "format_reward": np.array([0.5, 1.0, 0.0, 1.0], dtype=object),
    }
    config = OmegaConf.create(
        {"gdpo_reward_keys": ["accuracy_reward", "format_reward"], "gdpo_reward_weights": weights}
    )
    data = DataProto.from_dict(tensors=batch, non_tensors=non_tensors)

    result = compute_advantage(data, adv_estimator="gdpo", config=config)

    expected, _ = core_algos.compute_gdpo_outcome_advantage(
        token_level_rewards=batch["token_level_rewards"],
        response_mask=response_mask,
        index=non_tensors["uid"],
        config=config,
        non_tensor_batch=non_tensors,
        batch=batch,
    )
    assert torch.equal(result.batch["advantages"], expected)
    assert result.batch["advantages"].abs().sum() > 0  # the components were read, not the zero token rewards
