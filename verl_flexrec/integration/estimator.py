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
  as the sequence reward (so verl's in-reward KL penalty, when on, is included);
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

__all__ = ["FLEXREC_INPUT_KEYS", "collate_flexrec_inputs", "compute_flexrec_advantage", "estimator_options"]

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
    provided = handoff.current()
    if provided is not None and provided.options is not None and provided.options[0] is config:
        _, cfg, norm_by_std = provided.options  # the trainer's reading of this same config object
    else:
        cfg, norm_by_std = estimator_options(config)
    if all(x is None for x in (item_rewards, item_token_pos, item_tokens, seq_reward, uncertainty)):
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


def estimator_options(config: Any) -> tuple[FlexRecConfig, bool]:
    """``algorithm.flexrec`` of verl's algorithm config and the GRPO std switch (its
    ``advantage.norm_by_std`` if set, else verl's ``norm_adv_by_std_in_grpo``)."""
    cfg = FlexRecConfig.from_algorithm_config(config)
    norm_by_std = bool(config_get(config, "norm_adv_by_std_in_grpo", True))
    if cfg.advantage.norm_by_std is not None:
        norm_by_std = cfg.advantage.norm_by_std
    return cfg, norm_by_std


def _advantage_of_provided_batch(
    provided: handoff.FlexRecBatch,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    cfg: FlexRecConfig,
    norm_by_std: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexRec advantages of the rows the trainer provided.

    Group statistics over the real final outputs (one per session, as verl's GRPO in
    ``compute_advantage_for_multi_trajectories``); earlier outputs of a multi-output session get
    their final output's sequence advantage ``c_i A^seq_i`` on every token; verl's padding rows
    get zeros. ``response_mask`` is verl's, after its rollout correction: rejected tokens get 0.
    """
    provided.check_aligned(index, response_mask)
    n = len(provided)
    if provided.final_rows is None and all(provided.real):  # the common case: every row real and final
        final_of, rows, followers = None, np.arange(n), np.zeros(0, dtype=np.int64)
    else:
        real = np.asarray(provided.real, dtype=bool)
        final_of = np.arange(n) if provided.final_rows is None else np.asarray(provided.final_rows, dtype=np.int64)
        rows = np.flatnonzero(real & (final_of == np.arange(n)))
        followers = np.flatnonzero(real & (final_of != np.arange(n)))
    every_row = len(rows) == n
    adv = None if every_row else torch.zeros_like(token_level_rewards)
    if len(rows):
        sel = None if every_row else torch.from_numpy(rows)
        mask = response_mask if every_row else response_mask[sel]
        infos = provided.infos if every_row else [provided.infos[i] for i in rows]
        inputs = collate_flexrec_inputs(infos)
        _check_item_tokens_in_response(inputs["item_tokens"], provided, rows)
        out = flexrec_advantages(
            mask,
            index if every_row else np.asarray(index, dtype=object).reshape(-1)[rows],
            token_level_rewards.sum(-1) if every_row else token_level_rewards.sum(-1)[sel],
            inputs["item_rewards"],
            None,
            inputs["uncertainty"],
            item_tokens=inputs["item_tokens"],
            options=cfg.advantage,
            uncertainty_options=cfg.uncertainty,
            norm_by_std=norm_by_std,
        )
        if every_row:
            adv = out.advantages.to(token_level_rewards.dtype)
        else:
            adv[sel] = out.advantages.to(adv.dtype)
        if len(followers):
            position = np.full(n, -1, dtype=np.int64)
            position[rows] = np.arange(len(rows))
            seq = out.seq_token_advantage[torch.from_numpy(position[final_of[followers]])]
            take = torch.from_numpy(followers)
            adv[take] = (seq[:, None] * response_mask[take]).to(adv.dtype)
        provided.result, provided.result_rows = out, rows.tolist()
    provided.consumed = True
    return adv, adv


def _check_item_tokens_in_response(item_tokens: torch.Tensor, provided: handoff.FlexRecBatch, rows) -> None:
    """Every item token must lie in its rollout's response (a reward manager that mapped ids onto
    another tokenisation would otherwise credit the wrong tokens)."""
    if not item_tokens.numel():
        return
    triples = item_tokens.numpy()  # (T, 3) (row, token, k), columns contiguous as collated
    lengths = provided.response_length_array[np.asarray(rows, dtype=np.int64)]
    past = triples[:, 1] >= lengths[triples[:, 0]]
    if past.any():
        local, token, k = triples[int(past.argmax())].tolist()
        row = int(rows[local])
        raise ValueError(
            f"row {row} (uid={provided.uids[row]!r}): reward_extra_info puts ranked item {k} on response token {token}, "
            f"but the response has {provided.response_lengths[row]} tokens; the reward manager mapped the ids onto "
            "other tokens than the rollout's (verl_flexrec.integration.item_data)"
        )
