"""The ``flexrec`` advantage estimator in verl's registry, and the collation of its inputs.

verl calls estimators as ``fn(token_level_rewards, response_mask, index, config, **kwargs)``.
FlexRec's extra inputs — ``item_rewards`` (bs, K), ``item_token_pos`` (bs, L), ``seq_reward``
(bs,), ``uncertainty`` (bs,) — are built by :func:`collate_flexrec_inputs` from the reward
manager's ``reward_extra_info`` and reach the estimator one of two ways:

* inside verl's trainer: the ``flexrec_sync`` trainer fetches every rollout's
  ``reward_extra_info`` from TransferQueue and provides it through
  :mod:`verl_flexrec.integration.handoff` while verl's own ``_compute_advantage`` runs; the
  estimator checks the rows match (uid, response length) and uses ``token_level_rewards.sum(-1)``
  as the sequence reward (so verl's in-reward KL penalty, when on, is included);
* called directly, as keyword arguments.

With neither, the estimator is verl's GRPO, exactly (it calls verl's function).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from verl.trainer.ppo import core_algos

from ..advantage import flexrec_advantages
from ..config import FlexRecConfig, config_get
from . import handoff

__all__ = ["FLEXREC_INPUT_KEYS", "collate_flexrec_inputs", "compute_flexrec_advantage"]

FLEXREC_INPUT_KEYS = ("item_rewards", "item_token_pos", "seq_reward", "uncertainty")


def compute_flexrec_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    item_rewards: torch.Tensor | None = None,
    item_token_pos: torch.Tensor | None = None,
    seq_reward: torch.Tensor | None = None,
    uncertainty: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexRec advantages (see :mod:`verl_flexrec.advantage`); returns ``(advantages, returns)``.

    Options come from ``config.flexrec`` (``algorithm.flexrec`` in the trainer config); the GRPO
    std switch from ``config.norm_adv_by_std_in_grpo``. Without any FlexRec input the result is
    ``core_algos.compute_grpo_outcome_advantage`` on the same arguments.
    """
    if index is None:
        raise ValueError("the flexrec estimator groups rollouts by prompt: verl must pass `index` (the uid)")
    cfg = FlexRecConfig.from_algorithm_config(config)
    norm_by_std = bool(config_get(config, "norm_adv_by_std_in_grpo", True))
    if cfg.advantage.norm_by_std is not None:
        norm_by_std = cfg.advantage.norm_by_std
    if item_rewards is None and item_token_pos is None and seq_reward is None and uncertainty is None:
        provided = handoff.current()
        if provided is not None:
            return _advantage_of_provided_batch(provided, token_level_rewards, response_mask, index, cfg, norm_by_std)
        return core_algos.compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards,
            response_mask=response_mask,
            index=index,
            epsilon=cfg.advantage.eps,
            norm_adv_by_std_in_grpo=norm_by_std,
        )
    if seq_reward is None:
        seq_reward = token_level_rewards.sum(-1)
    out = flexrec_advantages(
        response_mask,
        index,
        seq_reward,
        item_rewards,
        item_token_pos,
        uncertainty,
        options=cfg.advantage,
        uncertainty_options=cfg.uncertainty,
        norm_by_std=norm_by_std,
    )
    adv = out.advantages.to(token_level_rewards.dtype)
    return adv, adv


def _advantage_of_provided_batch(
    provided: handoff.FlexRecBatch,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    cfg: FlexRecConfig,
    norm_by_std: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexRec advantages of the rows the trainer provided; verl's padding rows get zeros."""
    provided.check_aligned(index, response_mask)
    rows = [i for i, real in enumerate(provided.real) if real]
    adv = torch.zeros_like(token_level_rewards)
    if rows:
        sel = torch.tensor(rows, dtype=torch.long)
        inputs = collate_flexrec_inputs([provided.infos[i] for i in rows], response_mask.shape[-1])
        out = flexrec_advantages(
            response_mask[sel],
            np.asarray(index, dtype=object).reshape(-1)[rows],
            token_level_rewards[sel].sum(-1),
            inputs["item_rewards"],
            inputs["item_token_pos"],
            inputs["uncertainty"],
            options=cfg.advantage,
            uncertainty_options=cfg.uncertainty,
            norm_by_std=norm_by_std,
        )
        adv[sel] = out.advantages.to(adv.dtype)
        provided.result, provided.result_rows = out, rows
    provided.consumed = True
    return adv, adv


# A row without FlexRec signal (verl padding, a non-final output of a multi-output trajectory):
# no items, sequence advantage only, no uncertainty.
_NO_ITEMS = {
    "flexrec_item_rewards": "[]",
    "flexrec_item_token_spans": "[]",
    "flexrec_seq_reward": float("nan"),
    "flexrec_uncertainty": 0.0,
}


def _column(infos, key: str) -> list:
    if isinstance(infos, Mapping):
        return list(infos[key])
    return [(_NO_ITEMS if info is None else info)[key] for info in infos]


def collate_flexrec_inputs(
    reward_extra_infos: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], response_length: int
) -> dict[str, torch.Tensor]:
    """Estimator keyword arguments from the reward manager's ``reward_extra_info``.

    Accepts a list of per-rollout dicts (V1 ``extra_fields``; ``None`` = a row without item
    signal) or a dict of per-key arrays (the legacy ``non_tensor_batch`` layout). Lists of
    different lengths are padded: item rewards with NaN (absent), token positions with -1 (not an
    item token). Token spans past ``response_length`` are clipped.
    """
    rewards = [json.loads(s) if isinstance(s, str) else list(s) for s in _column(reward_extra_infos, "flexrec_item_rewards")]
    spans = [json.loads(s) if isinstance(s, str) else list(s) for s in _column(reward_extra_infos, "flexrec_item_token_spans")]
    bs = len(rewards)
    k_max = max((len(r) for r in rewards), default=0)
    item_rewards = torch.full((bs, k_max), float("nan"), dtype=torch.float32)
    item_token_pos = torch.full((bs, response_length), -1, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rewards, spans)):
        if r:
            item_rewards[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
        for k, (first, end) in enumerate(s):
            item_token_pos[i, max(0, first) : min(end, response_length)] = k
    seq = torch.tensor([float(x) for x in _column(reward_extra_infos, "flexrec_seq_reward")], dtype=torch.float32)
    u = torch.tensor([float(x) for x in _column(reward_extra_infos, "flexrec_uncertainty")], dtype=torch.float32)
    return {"item_rewards": item_rewards, "item_token_pos": item_token_pos, "seq_reward": seq, "uncertainty": u}
