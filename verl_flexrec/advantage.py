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

Per-position std floor (``item_std_floor`` = rho): a position with at least two values is divided
by ``max(std_{G,k}, rho * sigma_G)``, sigma_G the root mean square of the group's per-position stds.
Tail positions of a full-list NDCG move the reward very little (d_k - d_j is small), so dividing
by their own tiny std (eps 1e-6) would blow differences of 1e-4 up to unit advantages, as large
as the head's; with the floor they keep their size relative to the group's typical spread.
The last position's causal reward is 0 in every rollout (no remaining alternative), so its id
tokens get advantage 0: once the rest of the list is valid the last item is forced; a wrong id
there makes the rollout invalid, and then every token gets the sequence advantage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import AdvantageOptions, UncertaintyOptions
from .uncertainty import group_ids, uncertainty_scale

__all__ = ["FlexRecAdvantages", "flexrec_advantages", "group_ids", "group_normalize"]


def _masked_group_stats(values: torch.Tensor, valid: torch.Tensor, gid: torch.Tensor, num_groups: int):
    """Count, mean and unbiased std of ``values[valid]`` per group of rows: ``values`` is ``(bs,)``
    or ``(bs, K)`` (one statistic per group and column), ``gid`` ``(bs,)``; fewer than 2 values →
    mean 0, std 1. Row-wise ``index_add_`` of whole rows (~2x a flat per-cell scatter on CPU)."""
    v = torch.where(valid, values, 0.0).to(torch.float64)
    w = valid.to(torch.float64)
    zeros = torch.zeros((num_groups, *v.shape[1:]), dtype=torch.float64)
    n = zeros.index_add(0, gid, w)
    mean = zeros.index_add(0, gid, v) / n.clamp(min=1)
    dev = (v - mean.index_select(0, gid)) * w  # 0 where not valid (v is 0 there, never NaN)
    std = torch.sqrt(zeros.index_add(0, gid, dev * dev) / (n - 1).clamp(min=1))
    few = n < 2
    return n, mean.masked_fill(few, 0.0), std.masked_fill(few, 1.0)


def group_normalize(scores: torch.Tensor, gid: torch.Tensor, *, eps: float = 1e-6, norm_by_std: bool = True):
    """verl's GRPO outcome normalisation of per-rollout ``scores`` within groups ``gid``."""
    num = int(gid.max()) + 1 if gid.numel() else 0
    _, mean, std = _masked_group_stats(scores, torch.ones_like(scores, dtype=torch.bool), gid, num)
    centred = scores.to(torch.float64) - mean.index_select(0, gid)
    return centred / (std.index_select(0, gid) + eps) if norm_by_std else centred


def _item_advantages(r: torch.Tensor, gid: torch.Tensor, opts: AdvantageOptions, use_std: bool) -> torch.Tensor:
    """A^item (bs, K) in float64: group statistics per position (or pooled), NaN where ``r`` is."""
    bs, K = r.shape
    have = torch.isfinite(r)
    num_groups = int(gid.max()) + 1
    if opts.item_norm == "pooled":  # one cell per group: every (rollout, position) value of it
        _, mean, std = _masked_group_stats(r.reshape(-1), have.reshape(-1), gid.repeat_interleave(K), num_groups)
        mean, std = mean[:, None], std[:, None]
    else:  # one cell per (group, position)
        n, mean, std = _masked_group_stats(r, have, gid, num_groups)
        if opts.item_norm == "position" and use_std and opts.item_std_floor > 0 and K > 0:
            std = _floored_position_std(std, n >= 2, opts.item_std_floor)
    centred = r - mean.index_select(0, gid)
    item_adv = centred if opts.item_norm == "none" or not use_std else centred / (std.index_select(0, gid) + opts.eps)
    return torch.where(have, item_adv, float("nan"))


def _floored_position_std(std: torch.Tensor, counted: torch.Tensor, floor: float) -> torch.Tensor:
    """``max(std_{G,k}, floor * sigma_G)`` for the ``(group, position)`` cells ``counted`` (at
    least two values), sigma_G the root mean square of the group's stds over those cells; cells
    with fewer values keep GRPO's std 1. ``std`` and ``counted`` are ``(groups, K)``."""
    w = counted.to(torch.float64)
    sigma = ((std**2 * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)).sqrt()
    return torch.where(counted, torch.maximum(std, floor * sigma), std)


def _item_token_values(item_adv: torch.Tensor, seq_adv: torch.Tensor, add_seq: bool) -> torch.Tensor:
    """``(bs, K)`` value of a token that spells the item at position k: A^item_i,k (+ A^seq_i when
    ``add_seq``), or A^seq_i where A^item is NaN (the rollout has no reward at that position)."""
    seq = seq_adv[:, None].expand_as(item_adv)
    return torch.where(torch.isnan(item_adv), seq, item_adv + seq if add_seq else item_adv)  # A^item is finite or NaN


# Item tokens as (flat index into the (bs, L) advantages, flat index into the (bs, K) item values)
# pairs, with `index_select` throughout: torch's advanced indexing and integer division are ~10x
# slower on CPU (benchmarks/bench_cost.py).
def _cells_from_positions(pos: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens with ``0 <= pos < K``: ``(cell, slot)`` with ``slot = row * K + pos``."""
    length = pos.shape[-1]
    flat = pos.reshape(-1)
    cell = torch.nonzero((flat >= 0) & (flat < K)).squeeze(1)
    return cell, cell.div(length, rounding_mode="floor") * K + flat.index_select(0, cell)


def _cells_from_item_tokens(item_tokens: torch.Tensor, bs: int, length: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cell, slot)`` of ``(row, token, k)`` triples; where a token is listed twice the later
    entry wins (as a later write to ``item_token_pos`` would)."""
    if item_tokens.ndim != 2 or item_tokens.shape[1] != 3:
        raise ValueError(f"item_tokens has shape {tuple(item_tokens.shape)}, expected (T, 3)")
    if item_tokens.numel():
        lo, hi = (x.tolist() for x in item_tokens.aminmax(dim=0))
        if min(lo) < 0 or hi[0] >= bs or hi[1] >= length or hi[2] >= K:
            raise ValueError(
                f"item_tokens must index rows < {bs}, tokens < {length} and item positions < {K}; got rows, tokens, "
                f"positions in [{lo}, {hi}]"
            )
    row, token, k = item_tokens.unbind(1)
    cell, slot = torch.add(token, row, alpha=length), torch.add(k, row, alpha=K)  # row * length + token, row * K + k
    if cell.numel() > 1 and not bool((cell[1:] > cell[:-1]).all()):  # repeated (or unsorted) tokens
        order = torch.sort(cell, stable=True).indices  # equal cells keep their order
        cell, slot = cell.index_select(0, order), slot.index_select(0, order)
        last = torch.ones_like(cell, dtype=torch.bool)
        last[:-1] = cell[1:] != cell[:-1]
        cell, slot = cell[last], slot[last]
    return cell, slot


@dataclass
class FlexRecAdvantages:
    advantages: torch.Tensor  # (bs, L), float32, zero outside response_mask
    seq_advantage: torch.Tensor  # (bs,)
    seq_token_advantage: torch.Tensor  # (bs,) float32, c_i A^seq_i: the value of a non-item response token
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
    item_tokens: torch.Tensor | None = None,
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
        item_tokens: instead of ``item_token_pos``, the same information sparse: ``(T, 3)`` long
            ``(row, token index, k)`` of every token that spells an item (what the trainer collates
            from the reward manager's output); a token listed twice takes the later entry.
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

    # every token gets c_i A^seq_i (times the mask, as verl's GRPO); item tokens are then
    # overwritten, a sparse write of ~K ids' tokens per row instead of a (bs, L) gather
    if response_mask.is_floating_point() and response_mask.dtype != torch.float32:
        response_mask = response_mask.to(torch.float32)
    seq_token = (seq_adv * scale).to(torch.float32)
    adv = (seq_token[:, None] * response_mask).contiguous()
    item_adv = torch.full((bs, 0), float("nan"), dtype=torch.float64)
    have_positions = item_token_pos is not None or item_tokens is not None
    if opts.mode == "flexrec" and item_rewards is not None and have_positions and bs:
        r = torch.as_tensor(item_rewards, dtype=torch.float64)
        item_adv = _item_advantages(r, gid, opts, use_std)
        K = item_adv.shape[-1]
        if item_tokens is not None:
            cell, slot = _cells_from_item_tokens(torch.as_tensor(item_tokens, dtype=torch.long), bs, length, K)
        else:
            pos = torch.as_tensor(item_token_pos, dtype=torch.long)
            if pos.shape != response_mask.shape:
                raise ValueError(f"item_token_pos has shape {tuple(pos.shape)}, response_mask {tuple(response_mask.shape)}")
            cell, slot = _cells_from_positions(pos, K)
        values = (_item_token_values(item_adv, seq_adv, opts.add_seq_adv_to_items) * scale[:, None]).to(torch.float32)
        item_token_adv = values.reshape(-1).index_select(0, slot) * response_mask.reshape(-1).index_select(0, cell)
        adv.view(-1).index_copy_(0, cell, item_token_adv)
    return FlexRecAdvantages(
        advantages=adv,
        seq_advantage=seq_adv.to(torch.float32),
        seq_token_advantage=seq_token,
        item_advantage=item_adv.to(torch.float32),
        scale=scale.to(torch.float32),
        clipped=clipped,
    )
