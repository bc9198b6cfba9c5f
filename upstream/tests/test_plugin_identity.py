"""The plugin's estimator and the upstream patch series' estimator give identical advantages.

Runs only from ``upstream/check.sh``, which applies upstream/patches/ to pristine verl and puts that
tree first on PYTHONPATH (``FLEXREC_UPSTREAM_TREE``); verl's plugin loading is off there, so nothing
registers the plugin's ``flexrec`` over the upstream one.

Compared, with ``torch.equal`` on every token:

* keyword tensors: ``verl_flexrec.advantage.flexrec_advantages`` and
  ``verl_flexrec.integration.estimator.compute_flexrec_advantage`` against
  ``core_algos.compute_flexrec_outcome_advantage`` on the same tensors;
* the trainer path: the plugin's ``flexrec_sync`` handoff (``handoff.provide`` + the registered
  estimator, padding rows marked) against upstream ``compute_advantage`` and V1's
  ``compute_advantage_for_multi_trajectories`` reading the same reward_extra_info dicts from
  ``non_tensor_batch`` (verl's padding rows: empty response mask, a copy of a real row's info);
* no item data: both equal verl's GRPO.

Random batches hold invalid rollouts (no items), ragged lists, spans that overlap or (keyword
tensors only: the plugin's trainer path refuses them) run past the row's own response, single-rollout groups, tied and near-tied item rewards, and uncertainty
zero, positive and absent; every item_norm, uncertainty normalisation, add_seq and std setting.

Options are translated field by field from the plugin's dataclasses, so a plugin option the
upstream port does not know fails here instead of being dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

if not os.environ.get("FLEXREC_UPSTREAM_TREE"):
    pytest.skip("needs the patched verl tree: run `bash upstream/check.sh`", allow_module_level=True)

import verl  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.trainer.config import FlexRecConfig as UpstreamConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories  # noqa: E402

from verl_flexrec.advantage import flexrec_advantages  # noqa: E402
from verl_flexrec.config import AdvantageOptions, FlexRecConfig, UncertaintyOptions  # noqa: E402
from verl_flexrec.integration import handoff  # noqa: E402
from verl_flexrec.integration.estimator import compute_flexrec_advantage  # noqa: E402
from verl_flexrec.integration.item_data import encode_item_data  # noqa: E402

UPSTREAM = core_algos.compute_flexrec_outcome_advantage
LENGTH = 14


def test_the_patched_tree_is_the_verl_under_test():
    tree = Path(os.environ["FLEXREC_UPSTREAM_TREE"]).resolve()
    assert Path(verl.__file__).resolve().is_relative_to(tree)
    assert core_algos.get_adv_estimator_fn("flexrec") is UPSTREAM


# ----------------------------------------------------------------------------- option translation
# plugin field -> upstream FlexRecConfig field; None = not an estimator option upstream (see comment)
ADVANTAGE_FIELDS = {
    "mode": None,  # "rec_r1" is algorithm.adv_estimator=grpo upstream; only "flexrec" is compared
    "item_norm": "item_norm",
    "item_std_floor": "item_std_floor",
    "norm_by_std": None,  # upstream follows algorithm.norm_adv_by_std_in_grpo (passed below)
    "eps": None,  # the estimator's `epsilon` argument (verl's GRPO epsilon), checked below
    "add_seq_adv_to_items": "add_seq_adv_to_items",
}
UNCERTAINTY_FIELDS = {
    "enable": "use_uncertainty",
    "weighting": None,  # how the reward manager computes u; the estimator only reads u
    "eps": "uncertainty_eps",
    "normalize": "uncertainty_normalize",
    "min_scale": "uncertainty_min_scale",
    "max_scale": "uncertainty_max_scale",
}


def _translate(cfg: FlexRecConfig) -> dict:
    out = {}
    for options, table in ((cfg.advantage, ADVANTAGE_FIELDS), (cfg.uncertainty, UNCERTAINTY_FIELDS)):
        for f in dataclasses.fields(options):
            if f.name not in table:
                raise AssertionError(
                    f"plugin option {type(options).__name__}.{f.name} has no counterpart in the upstream port; "
                    "port it to upstream/src/fragments and map it here"
                )
            if table[f.name] is not None:
                out[table[f.name]] = getattr(options, f.name)
    return out


def _configs(cfg: FlexRecConfig, norm_by_std: bool):
    plugin = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std, "flexrec": cfg.to_dict()})
    upstream = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std, "flexrec": _translate(cfg)})
    return plugin, upstream


def test_plugin_defaults_are_upstream_defaults():
    translated = _translate(FlexRecConfig())
    defaults = UpstreamConfig()
    assert translated == {k: getattr(defaults, k) for k in translated}
    assert AdvantageOptions().eps == 1e-6  # upstream's epsilon default: compute_advantage passes none


PLUGIN_CONFIGS = [
    FlexRecConfig(
        advantage=AdvantageOptions(item_norm=item_norm, add_seq_adv_to_items=add_seq),
        uncertainty=UncertaintyOptions(**uncertainty),
    )
    for item_norm in ("position", "pooled", "none")
    for add_seq in (False, True)
    for uncertainty in (
        {"enable": False},
        {"normalize": "batch"},
        {"normalize": "group", "min_scale": 0.25, "max_scale": 2.0},
        {"normalize": "none", "eps": 0.05, "max_scale": 40.0},
    )
] + [
    FlexRecConfig(advantage=AdvantageOptions(item_std_floor=floor), uncertainty=UncertaintyOptions(normalize="group"))
    for floor in (0.0, 1.0)
]


def _config_id(cfg: FlexRecConfig) -> str:
    u = cfg.uncertainty
    return f"{cfg.advantage.item_norm}-floor{cfg.advantage.item_std_floor:g}-seq{int(cfg.advantage.add_seq_adv_to_items)}-" + (
        f"u_{u.normalize}" if u.enable else "u_off"
    )


# ----------------------------------------------------------------------------- random batches
def _reward_extra_info(
    rng: random.Random, ties: str, with_u: bool, length: int, within_response: bool = False
) -> tuple[dict, float, int]:
    """One rollout's reward_extra_info as the plugin's reward manager writes it, its score and length;
    ``within_response``: every span inside the row's own response (what the reward manager writes,
    and what the plugin's trainer path requires: it refuses item tokens past the response)."""
    n_items = rng.choice([0, 0, 3, 5, 6, 6])  # 0 = invalid response
    if ties == "ties":
        draw = lambda: rng.choice([-0.1, 0.0, 0.25])  # noqa: E731
    elif ties == "near":
        draw = lambda: 0.3 + rng.choice([0.0, 1e-7, 2e-6])  # noqa: E731
    else:
        draw = lambda: rng.gauss(0.0, 0.3)  # noqa: E731
    row_length = rng.randint(1, length)
    end_max = row_length if within_response else LENGTH
    spans = []
    for _ in range(n_items):  # inside the padded response; they may overlap (and pass the row's own length)
        first = rng.randint(0, end_max - 1)
        spans.append([first, min(first + rng.randint(0, 3), end_max)])
    rewards = [draw() for _ in range(n_items)]
    score = (0.1 + rng.random()) if n_items else -2.0
    info = {
        "flexrec_valid": float(n_items > 0),
        "flexrec_error": "" if n_items else "missing_tags",
        "flexrec_seq_reward": score,
        "flexrec_ndcg": rng.random(),
        "flexrec_uncertainty": rng.choice([0.0, 0.0, 0.003, 0.04, 0.5]) if with_u else 0.0,
        # the same numbers twice: the plugin's fixed-width binary form and the upstream port's JSON lists
        **encode_item_data(rewards, spans),
        "flexrec_item_rewards": json.dumps(rewards),
        "flexrec_item_token_spans": json.dumps(spans),
    }
    return info, score, row_length


def _random_batch(rng: random.Random, within_response: bool = False):
    uids, infos, scores, lengths = [], [], [], []
    ties = rng.choice(["ties", "near", "continuous"])
    with_u = rng.random() < 0.8
    for g in range(rng.randint(1, 5)):
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            info, score, length = _reward_extra_info(rng, ties, with_u, LENGTH, within_response)
            uids.append(f"uid-{g}-{rng.randint(0, 10**6)}" if g == 0 and rng.random() < 0.2 else f"uid-{g}")
            infos.append(info)
            scores.append(score)
            lengths.append(length)
    bs = len(uids)
    mask = (torch.arange(LENGTH)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)
    rewards = torch.zeros(bs, LENGTH)
    rewards[torch.arange(bs), torch.tensor(lengths) - 1] = torch.tensor(scores)
    return np.array(uids, dtype=object), infos, rewards, mask


def _dense_item_inputs(infos) -> tuple[torch.Tensor, torch.Tensor]:
    """``item_rewards`` (bs, K) float32, NaN-padded, and ``item_token_pos`` (bs, LENGTH), -1 off items
    (a later span wins where two overlap), written out from each rollout's JSON lists."""
    rewards = [json.loads(info["flexrec_item_rewards"]) for info in infos]
    item_rewards = torch.full((len(infos), max(map(len, rewards), default=0)), float("nan"))
    item_token_pos = torch.full((len(infos), LENGTH), -1, dtype=torch.long)
    for i, info in enumerate(infos):
        item_rewards[i, : len(rewards[i])] = torch.tensor(rewards[i], dtype=torch.float32)
        for k, (first, end) in enumerate(json.loads(info["flexrec_item_token_spans"])):
            item_token_pos[i, first:end] = k
    return item_rewards, item_token_pos


def _object_column(values) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        column[i] = v
    return column


# ----------------------------------------------------------------------------- keyword tensors
@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("cfg", PLUGIN_CONFIGS, ids=_config_id)
def test_keyword_tensors_identical(cfg, norm_by_std):
    plugin_config, upstream_config = _configs(cfg, norm_by_std)
    rng = random.Random(f"{_config_id(cfg)}-{norm_by_std}")
    for _ in range(12):
        index, infos, rewards, mask = _random_batch(rng)
        item_rewards, item_token_pos = _dense_item_inputs(infos)
        uncertainty = torch.tensor([info["flexrec_uncertainty"] for info in infos]) if rng.random() < 0.8 else None
        kwargs = dict(item_rewards=item_rewards, item_token_pos=item_token_pos, uncertainty=uncertainty)

        theirs, theirs_returns = UPSTREAM(rewards, mask, index, config=upstream_config, **kwargs)
        ours, _ = compute_flexrec_advantage(rewards, mask, index, config=plugin_config, **kwargs)
        core = flexrec_advantages(
            mask, index, rewards.sum(-1), **kwargs, options=cfg.advantage, uncertainty_options=cfg.uncertainty,
            norm_by_std=norm_by_std,
        )  # fmt: skip

        assert torch.isfinite(theirs).all()
        assert torch.equal(ours, theirs), (ours - theirs).abs().max()
        assert torch.equal(core.advantages, theirs)
        assert torch.equal(theirs_returns, theirs)


# ----------------------------------------------------------------------------- trainer path
def _plugin_trainer_path(index, infos, rewards, mask, real, config):
    """What the plugin's flexrec_sync trainer does: handoff.provide + verl calling the estimator."""
    provided = handoff.FlexRecBatch(
        uids=[str(u) for u in index],
        infos=[info if r else None for info, r in zip(infos, real)],
        response_lengths=mask.sum(-1).tolist(),
        real=real,
    )
    with handoff.provide(provided):
        adv, _ = compute_flexrec_advantage(rewards, mask, index, config=config)
    assert provided.consumed
    return adv


def _with_padding(index, infos, rewards, mask, pad: int):
    """verl's padding rows (upsample_batch_to_divisible_size): one fresh uid, no response tokens,
    zero rewards, the first real row's extra fields."""
    index = np.concatenate([index, np.array(["pad-uid"] * pad, dtype=object)])
    infos = infos + [dict(infos[0]) for _ in range(pad)]
    rewards = torch.cat([rewards, torch.zeros(pad, rewards.shape[1])])
    mask = torch.cat([mask, torch.zeros(pad, mask.shape[1], dtype=mask.dtype)])
    return index, infos, rewards, mask


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("cfg", PLUGIN_CONFIGS, ids=_config_id)
def test_trainer_path_identical(cfg, norm_by_std):
    plugin_config, upstream_config = _configs(cfg, norm_by_std)
    rng = random.Random(f"trainer-{_config_id(cfg)}-{norm_by_std}")
    for _ in range(8):
        batch = _random_batch(rng, within_response=True)
        pad = rng.choice([0, 0, 1, 3])
        index, infos, rewards, mask = _with_padding(*batch, pad) if pad else batch
        real = [True] * (len(index) - pad) + [False] * pad

        ours = _plugin_trainer_path(index, infos, rewards, mask, real, plugin_config)

        non_tensors = {"uid": index}
        for key in infos[0]:
            non_tensors[key] = _object_column([info[key] for info in infos])
        data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors=non_tensors)
        legacy = compute_advantage(data, adv_estimator="flexrec", config=upstream_config).batch["advantages"]
        keys = [f"{u}_{i}_0" for i, u in enumerate(index)]
        v1 = compute_advantage_for_multi_trajectories(
            data, batch_keys=keys, adv_estimator="flexrec", config=upstream_config
        ).batch["advantages"]

        assert torch.equal(ours, legacy), (ours - legacy).abs().max()
        assert torch.equal(ours, v1)


# ----------------------------------------------------------------------------- no item data
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_without_item_data_both_are_grpo(norm_by_std):
    rng = random.Random(3)
    plugin_config, upstream_config = _configs(FlexRecConfig(), norm_by_std)
    for _ in range(5):
        index, _, rewards, mask = _random_batch(rng)
        grpo, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm_by_std)
        ours, _ = compute_flexrec_advantage(rewards, mask, index, config=plugin_config)
        theirs, _ = UPSTREAM(rewards, mask, index, config=upstream_config)
        assert torch.equal(ours, grpo) and torch.equal(theirs, grpo)
