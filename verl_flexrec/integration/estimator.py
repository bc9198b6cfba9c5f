"""The ``flexrec`` advantage estimator in verl's registry.

verl calls estimators as ``fn(token_level_rewards, response_mask, index, config, **kwargs)``.
FlexRec's extra inputs — ``item_rewards`` (bs, K), ``item_tokens`` (T, 3) (or the dense
``item_token_pos`` (bs, L)), ``seq_reward`` (bs,), ``uncertainty`` (bs,) — are stacked by
:func:`~verl_flexrec.integration.item_data.collate_flexrec_inputs` from the reward manager's
``reward_extra_info`` (numbers in fixed-width binary, read with ``np.frombuffer``) and reach the
estimator one of two ways:

* inside verl's trainer: the ``flexrec_sync`` trainer fetches every rollout's
  ``reward_extra_info`` from TransferQueue and provides it through
  :mod:`verl_flexrec.integration.handoff` while verl's own ``_compute_advantage`` runs; the
  estimator checks the rows match (uid, response length) and uses ``token_level_rewards.sum(-1)``
  as the sequence reward (so verl's in-reward KL penalty, when on, is included); of a
  multi-output trajectory only the final output enters the statistics, the earlier ones get its
  sequence advantage (verl's GRPO does the same);
* called directly, as keyword arguments.

With neither, the estimator is verl's GRPO, exactly (it calls verl's function).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo import core_algos

from ..advantage import flexrec_advantages
from ..config import FlexRecConfig, config_get
from . import handoff
from .item_data import collate_flexrec_inputs

__all__ = ["FLEXREC_INPUT_KEYS", "collate_flexrec_inputs", "compute_flexrec_advantage"]

FLEXREC_INPUT_KEYS = ("item_rewards", "item_token_pos", "item_tokens", "seq_reward", "uncertainty")


def compute_flexrec_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    item_rewards: torch.Tensor | None = None,
    item_token_pos: torch.Tensor | None = None,
    seq_reward: torch.Tensor | None = None,
    uncertainty: torch.Tensor | None = None,
    item_tokens: torch.Tensor | None = None,
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
    if all(x is None for x in (item_rewards, item_token_pos, item_tokens, seq_reward, uncertainty)):
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
        item_tokens=item_tokens,
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
    """FlexRec advantages of the final outputs the trainer provided; an earlier output of a
    multi-output trajectory gets its session's sequence advantage on every token (as verl's
    GRPO broadcasts it); verl's padding rows get zeros."""
    provided.check_aligned(index, response_mask)
    rows = [i for i, real in enumerate(provided.real) if real and provided.is_final(i)]
    all_real = len(rows) == len(provided)
    adv = None if all_real else torch.zeros_like(token_level_rewards)
    if rows:
        sel = None if all_real else torch.tensor(rows, dtype=torch.long)
        inputs = collate_flexrec_inputs(provided.infos if all_real else [provided.infos[i] for i in rows])
        out = flexrec_advantages(
            response_mask if all_real else response_mask[sel],
            index if all_real else np.asarray(index, dtype=object).reshape(-1)[rows],
            token_level_rewards.sum(-1) if all_real else token_level_rewards.sum(-1)[sel],
            inputs["item_rewards"],
            None,
            inputs["uncertainty"],
            item_tokens=inputs["item_tokens"],
            options=cfg.advantage,
            uncertainty_options=cfg.uncertainty,
            norm_by_std=norm_by_std,
        )
        if all_real:
            adv = out.advantages.to(token_level_rewards.dtype)
        else:
            adv[sel] = out.advantages.to(adv.dtype)
            earlier = [i for i, real in enumerate(provided.real) if real and not provided.is_final(i)]
            if earlier:
                pos = {row: j for j, row in enumerate(rows)}
                final = torch.tensor([pos[provided.final_rows[i]] for i in earlier], dtype=torch.long)
                seq = (out.seq_advantage.double() * out.scale.double()).to(torch.float32)[final]
                at = torch.tensor(earlier, dtype=torch.long)
                adv[at] = (seq[:, None] * response_mask[at].to(torch.float32)).to(adv.dtype)
        provided.result, provided.result_rows = out, rows
    provided.consumed = True
    return adv, adv
