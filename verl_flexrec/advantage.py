"""FlexRec token advantages (pure torch, no verl import).

For rollout i of prompt group G (rollouts sharing ``index``) with sequence reward R_i, item rewards
r_{i,k} (position k of its ranking) and reward uncertainty u_i:

    A^seq_i    = (R_i - mean_{G} R) / (std_{G} R + eps)                       (verl's GRPO)
    A^item_i,k = (r_i,k - mean_{i' in G} r_i',k) / (std_{i' in G} r_i',k + eps)  (item_norm="position")
    A_i,t      = c_i * (A^item_i,k(t)  if token t spells the id at position k, else A^seq_i)
    c_i        = clip(normalise(1 / (u_i + eps_u)))                               (uncertainty scale)

Groups follow verl's conventions: a statistic over fewer than two values uses mean 0 and std 1,
``torch.std`` is the unbiased estimate, and ``norm_by_std=False`` is Dr.GRPO's mean-centring.
Rollouts without item rewards (invalid output) are left out of the item statistics and keep the
sequence advantage on every token. ``item_norm="pooled"`` pools all (rollout, position) pairs of a
group; ``"none"`` only centres per position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import AdvantageOptions, UncertaintyOptions
from .uncertainty import group_ids, uncertainty_scale

__all__ = ["FlexRecAdvantages", "flexrec_advantages", "group_ids", "group_normalize"]


def _masked_group_stats(values: torch.Tensor, valid: torch.Tensor, cell: torch.Tensor, num_cells: int):
    """Mean and unbiased std of ``values[valid]`` per cell id; (<2 values → mean 0, std 1)."""
    v = torch.where(valid, values, torch.zeros_like(values)).to(torch.float64).reshape(-1)
    w = valid.to(torch.float64).reshape(-1)
    c = cell.reshape(-1)
    n = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, w)
    s = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, v)
    mean = s / n.clamp(min=1)
    dev = torch.where(w > 0, v - mean[c], torch.zeros_like(v))
    ss = torch.zeros(num_cells, dtype=torch.float64).index_add_(0, c, dev * dev)
    std = torch.sqrt(ss / (n - 1).clamp(min=1))
    few = n < 2
    return torch.where(few, torch.zeros_like(mean), mean), torch.where(few, torch.ones_like(std), std)


def group_normalize(scores: torch.Tensor, gid: torch.Tensor, *, eps: float = 1e-6, norm_by_std: bool = True):
    """verl's GRPO outcome normalisation of per-rollout ``scores`` within groups ``gid``."""
    num = int(gid.max()) + 1 if gid.numel() else 0
    mean, std = _masked_group_stats(scores, torch.ones_like(scores, dtype=torch.bool), gid, num)
    centred = scores.to(torch.float64) - mean[gid]
    return centred / (std[gid] + eps) if norm_by_std else centred


def _item_advantages(r: torch.Tensor, gid: torch.Tensor, opts: AdvantageOptions, use_std: bool) -> torch.Tensor:
    """A^item (bs, K) in float64: group statistics per position (or pooled), NaN where ``r`` is."""
    bs, K = r.shape
    have = torch.isfinite(r)
    if opts.item_norm == "pooled":
        cell = gid[:, None].expand(bs, K)
        num_cells = int(gid.max()) + 1
    else:
        cell = gid[:, None] * K + torch.arange(K)[None, :]
        num_cells = (int(gid.max()) + 1) * K
    mean, std = _masked_group_stats(r, have, cell, num_cells)
    centred = r - mean[cell]
    item_adv = centred if opts.item_norm == "none" or not use_std else centred / (std[cell] + opts.eps)
    return torch.where(have, item_adv, torch.full_like(item_adv, float("nan")))


def _token_value_table(item_adv: torch.Tensor, seq_adv: torch.Tensor, add_seq: bool) -> torch.Tensor:
    """Per-rollout table ``(bs, K + 2)`` of the value a token gets, by what it spells:

        column 0        A^seq_i                                (not an item token)
        column 1 + k    A^item_i,k (+ A^seq_i when ``add_seq``), or A^seq_i where A^item is NaN
        column K + 1    A^seq_i                                (position >= K: not an item of this list)
    """
    seq = seq_adv[:, None]
    items = item_adv + seq if add_seq else item_adv
    items = torch.where(torch.isfinite(item_adv), items, seq.expand_as(items))
    return torch.cat([seq, items, seq], 1)


def _table_column(pos: torch.Tensor, K: int) -> torch.Tensor:
    """Column of :func:`_token_value_table` for item positions ``pos`` (-1 or anything outside
    ``[0, K)`` means "not an item token"): ``clamp(pos + 1, 0, K + 1)``."""
    return (pos + 1).clamp_(0, K + 1)


@dataclass
class FlexRecAdvantages:
    advantages: torch.Tensor  # (bs, L), float32, zero outside response_mask
    seq_advantage: torch.Tensor  # (bs,)
    item_advantage: torch.Tensor  # (bs, K), NaN where the rollout has no reward at that position
    scale: torch.Tensor  # (bs,), the uncertainty scale c_i (1 when disabled / absent)
    clipped: torch.Tensor  # (bs,) bool, c_i hit min_scale or max_scale


def flexrec_advantages(
    response_mask: torch.Tensor,
    index,
    seq_reward: torch.Tensor,
    item_rewards: torch.Tensor | None = None,
    item_token_pos: torch.Tensor | None = None,
    uncertainty: torch.Tensor | None = None,
    *,
    options: AdvantageOptions | None = None,
    uncertainty_options: UncertaintyOptions | None = None,
    norm_by_std: bool = True,
) -> FlexRecAdvantages:
    """Token advantages for a batch of rollouts.

    Args:
        response_mask: ``(bs, L)`` 1 on response tokens.
        index: ``(bs,)`` prompt group id of each rollout (verl's ``uid``).
        seq_reward: ``(bs,)`` sequence reward R_i.
        item_rewards: ``(bs, K)`` item reward of each ranked position, NaN where absent (an
            invalid rollout, or padding past its list length).
        item_token_pos: ``(bs, L)`` long, ranked position k of the item a token spells, -1 elsewhere.
        uncertainty: ``(bs,)`` reward variance u_i (None → scale 1).
        options / uncertainty_options: ``algorithm.flexrec.advantage`` / ``.uncertainty``.
        norm_by_std: GRPO std normalisation when ``options.norm_by_std`` is None.
    """
    opts = options or AdvantageOptions()
    uopts = uncertainty_options or UncertaintyOptions()
    use_std = norm_by_std if opts.norm_by_std is None else opts.norm_by_std
    bs, length = response_mask.shape[0], response_mask.shape[-1]
    gid = group_ids(index) if bs else torch.zeros(0, dtype=torch.long)
    if gid.numel() != bs:
        raise ValueError(f"index has {gid.numel()} entries for {bs} rollouts")
    seq = torch.as_tensor(seq_reward, dtype=torch.float64).reshape(bs)
    seq = torch.where(torch.isfinite(seq), seq, torch.zeros_like(seq))
    seq_adv = group_normalize(seq, gid, eps=opts.eps, norm_by_std=use_std)

    scale = torch.ones(bs, dtype=torch.float64)
    clipped = torch.zeros(bs, dtype=torch.bool)
    if uopts.enable and uncertainty is not None and bs:
        raw = uncertainty_scale(
            uncertainty, eps=uopts.eps, normalize=uopts.normalize, min_scale=0.0, max_scale=float("inf"), index=index
        )
        scale = raw.clamp(min=uopts.min_scale, max=uopts.max_scale)
        clipped = (raw < uopts.min_scale) | (raw > uopts.max_scale)

    item_adv = torch.full((bs, 0), float("nan"), dtype=torch.float64)
    use_items = opts.mode == "flexrec" and item_rewards is not None and item_token_pos is not None
    if use_items and bs:
        r = torch.as_tensor(item_rewards, dtype=torch.float64)
        item_adv = _item_advantages(r, gid, opts, use_std)
        pos = torch.as_tensor(item_token_pos, dtype=torch.long)
        if pos.shape != response_mask.shape:
            raise ValueError(f"item_token_pos has shape {tuple(pos.shape)}, response_mask {tuple(response_mask.shape)}")
        table = _token_value_table(item_adv, seq_adv, opts.add_seq_adv_to_items) * scale[:, None]
        # the (bs, L) work is one index computation and one float32 gather
        adv = torch.gather(table.to(torch.float32), 1, _table_column(pos, item_adv.shape[-1]))
    else:
        adv = (seq_adv * scale).to(torch.float32)[:, None].expand(bs, length)
    adv = adv * response_mask.to(torch.float32)
    return FlexRecAdvantages(
        advantages=adv,
        seq_advantage=seq_adv.to(torch.float32),
        item_advantage=item_adv.to(torch.float32),
        scale=scale.to(torch.float32),
        clipped=clipped,
    )
