"""FlexRec token advantages (numpy and torch, no verl import).

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

import numpy as np
import torch

from .config import AdvantageOptions, UncertaintyOptions
from .uncertainty import group_ids, group_ids_array, scale_array

__all__ = ["FlexRecAdvantages", "flexrec_advantages", "group_ids", "group_normalize"]

# The per-rollout math works on (bs,) and (bs, K) numpy arrays: a numpy call costs ~1-5 µs there,
# a torch call ~10-30 µs, and the estimator makes dozens (benchmarks/bench_cost.py). Every result
# is bitwise what the torch version gives: elementwise float64 ops round the same, group sums
# add each cell's values in row order from 0 (``np.bincount`` as ``index_add_``), and the two
# reductions whose order torch decides (the batch mean of the scale, the floor's row sums) stay
# in torch.


def _as_array(x, dtype=None) -> np.ndarray:
    """``x`` (a tensor, array or list) as numpy, in ``dtype`` if given (no copy when it already is)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a if dtype is None else a.astype(dtype, copy=False)


def _masked_group_stats(values: np.ndarray, valid: np.ndarray | None, cell: np.ndarray, num_cells: int):
    """Count, unbiased std and ``values - mean`` per cell id of ``values[valid]`` (``cell`` has
    ``values``' shape; ``valid`` None: all values), float64; a cell with fewer than 2 values has
    mean 0 and std 1. ``np.bincount`` adds each cell's values in row order, as verl's ``index_add_``."""
    c = cell.reshape(-1)
    if valid is None:
        n = np.bincount(c, minlength=num_cells).astype(np.float64)
        v = values.reshape(-1).astype(np.float64, copy=False)
    else:
        n = np.bincount(c, valid.reshape(-1), num_cells)
        v = np.where(valid, values, 0.0).astype(np.float64, copy=False).reshape(-1)
    few = n < 2
    mean = np.bincount(c, v, num_cells) / np.maximum(n, 1)
    mean[few] = 0.0  # the statistics of such cells are GRPO's 0 and 1, whatever the deviations
    centred = values - mean[cell]
    dev = centred.reshape(-1) if valid is None else np.where(valid, centred, 0.0).reshape(-1)
    std = np.sqrt(np.bincount(c, dev * dev, num_cells) / np.maximum(n - 1, 1))
    std[few] = 1.0
    return n, std, centred


def _group_normalize(scores: np.ndarray, gid: np.ndarray, eps: float, norm_by_std: bool) -> np.ndarray:
    _, std, centred = _masked_group_stats(scores, None, gid, int(gid.max()) + 1 if len(gid) else 0)
    return centred / (std[gid] + eps) if norm_by_std else centred


def group_normalize(scores: torch.Tensor, gid: torch.Tensor, *, eps: float = 1e-6, norm_by_std: bool = True):
    """verl's GRPO outcome normalisation of per-rollout ``scores`` within groups ``gid``."""
    out = _group_normalize(_as_array(scores, np.float64), _as_array(gid, np.int64), eps, norm_by_std)
    return torch.from_numpy(out)


def _item_advantages(r: np.ndarray, gid: np.ndarray, opts: AdvantageOptions, use_std: bool) -> np.ndarray:
    """A^item (bs, K) in float64 from float32 or float64 ``r``: group statistics per position (or
    pooled), NaN where ``r`` is."""
    bs, K = r.shape
    have = np.isfinite(r)
    num_groups = int(gid.max()) + 1
    all_valid = bool(have.all())  # every rollout valid with a full list: no masking needed
    n = _run_length(gid) if opts.item_norm != "pooled" else 0
    if n:  # groups are runs of n rows: (G, n, K) views instead of a scatter and two gathers
        valid = None if all_valid else have.reshape(num_groups, n, K)
        count, std, centred = _position_stats_in_runs(r.reshape(num_groups, n, K), valid)
        per_row = lambda x: x[:, None]  # noqa: E731  (G, 1, K) against (G, n, K)
    else:
        if opts.item_norm == "pooled":  # one cell per group: every (rollout, position) value of it
            cell, num_cells = np.repeat(gid, K).reshape(bs, K), num_groups
        else:  # one cell per (group, position)
            cell, num_cells = gid[:, None] * K + np.arange(K), num_groups * K
        count, std, centred = _masked_group_stats(r, None if all_valid else have, cell, num_cells)
        count, std = count.reshape(num_groups, -1), std.reshape(num_groups, -1)
        per_row = lambda x: x.reshape(-1)[cell]  # noqa: E731
    if opts.item_norm == "position" and use_std and opts.item_std_floor > 0 and K > 0:
        std = _floored_position_std(std, count >= 2, opts.item_std_floor)
    item_adv = (centred if opts.item_norm == "none" or not use_std else centred / (per_row(std) + opts.eps)).reshape(bs, K)
    return item_adv if all_valid else np.where(have, item_adv, np.nan)


# Groups of at most this many rows in runs use the (G, n, K) path: it adds the n rows one by one.
_MAX_RUN = 32


def _run_length(gid: np.ndarray) -> int:
    """``n`` when group ``g`` is rows ``g n .. g n + n - 1`` (verl's order: a prompt's rollouts
    in a row) and ``n <= _MAX_RUN``, else 0."""
    bs = len(gid)
    groups = int(gid[-1]) + 1 if bs else 0
    if not groups or bs % groups or bs // groups > _MAX_RUN:
        return 0
    n = bs // groups
    return n if np.array_equal(gid, np.arange(bs) // n) else 0


def _position_stats_in_runs(values: np.ndarray, valid: np.ndarray | None):
    """Count, std and ``values - mean`` per (group, column) of ``(G, n, K)`` values (``valid``
    None: all of them), as :func:`_masked_group_stats` (sums add the rows in order from 0, a loop
    over the n ``(G, K)`` slices; counts are integer sums, exact in any order)."""

    def row_sums(x):
        total = np.add(x[:, 0], 0.0, dtype=np.float64)
        for j in range(1, x.shape[1]):
            total += x[:, j]
        return total

    if valid is None:
        n = np.full((values.shape[0], values.shape[2]), float(values.shape[1]))
    else:
        n = valid.sum(1).astype(np.float64)
    few = n < 2
    mean = row_sums(values if valid is None else np.where(valid, values, 0.0)) / np.maximum(n, 1)
    mean[few] = 0.0  # the statistics of such cells are GRPO's 0 and 1, whatever the deviations
    centred = values - mean[:, None]
    dev = centred if valid is None else np.where(valid, centred, 0.0)
    std = np.sqrt(row_sums(dev * dev) / np.maximum(n - 1, 1))
    std[few] = 1.0
    return n, std, centred


def _floored_position_std(std: np.ndarray, counted: np.ndarray, floor: float) -> np.ndarray:
    """``max(std_{G,k}, floor * sigma_G)`` for the ``(group, position)`` cells ``counted`` (at
    least two values), sigma_G the root mean square of the group's stds over those cells; cells
    with fewer values keep GRPO's std 1. ``std`` and ``counted`` are ``(groups, K)``; the sums of
    squares in torch (its summation order, as verl's port)."""
    squares = torch.from_numpy(std * std * counted).sum(1, keepdim=True).numpy()
    sigma = np.sqrt(squares / np.maximum(counted.sum(1, keepdims=True), 1))  # counts: exact in any order
    return np.where(counted, np.maximum(std, floor * sigma), std)


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
    entry wins (as a later write to ``item_token_pos`` would). numpy on the three columns (views:
    contiguous when the triples are the transpose of a ``(3, T)`` array, as collated)."""
    if item_tokens.ndim != 2 or item_tokens.shape[1] != 3:
        raise ValueError(f"item_tokens has shape {tuple(item_tokens.shape)}, expected (T, 3)")
    triples = _as_array(item_tokens, np.int64)
    row, token, k = triples[:, 0], triples[:, 1], triples[:, 2]
    if len(triples) and (triples.min() < 0 or row.max() >= bs or token.max() >= length or k.max() >= K):
        lo, hi = [int(row.min()), int(token.min()), int(k.min())], [int(row.max()), int(token.max()), int(k.max())]
        raise ValueError(
            f"item_tokens must index rows < {bs}, tokens < {length} and item positions < {K}; got rows, tokens, "
            f"positions in [{lo}, {hi}]"
        )
    cell, slot = row * length + token, row * K + k
    if len(cell) > 1 and not (cell[1:] > cell[:-1]).all():  # repeated (or unsorted) tokens
        order = np.argsort(cell, kind="stable")  # equal cells keep their order
        cell, slot = cell[order], slot[order]
        last = np.ones(len(cell), dtype=bool)
        last[:-1] = cell[1:] != cell[:-1]
        cell, slot = cell[last], slot[last]
    return torch.from_numpy(cell), torch.from_numpy(slot)


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
    gid = group_ids_array(index) if bs else np.zeros(0, dtype=np.int64)
    if len(gid) != bs:
        raise ValueError(f"index has {len(gid)} entries for {bs} rollouts")
    seq = _as_array(seq_reward, np.float64).reshape(bs)
    seq = np.where(np.isfinite(seq), seq, 0.0)
    seq_adv = _group_normalize(seq, gid, opts.eps, use_std)

    scale = np.ones(bs, dtype=np.float64)
    clipped = np.zeros(bs, dtype=bool)
    if uopts.enable and uncertainty is not None and bs:
        raw = scale_array(_as_array(uncertainty, np.float64).reshape(-1), uopts.eps, uopts.normalize, gid)
        scale = np.clip(raw, uopts.min_scale, uopts.max_scale)
        clipped = (raw < uopts.min_scale) | (raw > uopts.max_scale)

    # every token gets c_i A^seq_i (times the mask, as verl's GRPO); item tokens are then
    # overwritten, a sparse write of ~K ids' tokens per row instead of a (bs, L) gather
    if response_mask.is_floating_point() and response_mask.dtype != torch.float32:
        response_mask = response_mask.to(torch.float32)
    seq_token = torch.from_numpy((seq_adv * scale).astype(np.float32))
    adv = (seq_token[:, None] * response_mask).contiguous()
    item_adv = np.full((bs, 0), np.nan)
    have_positions = item_token_pos is not None or item_tokens is not None
    if opts.mode == "flexrec" and item_rewards is not None and have_positions and bs:
        r = _as_array(item_rewards)  # float32 as it comes (exact in float64, half the bytes)
        item_adv = _item_advantages(r if r.dtype in (np.float32, np.float64) else r.astype(np.float64), gid, opts, use_std)
        K = item_adv.shape[-1]
        if item_tokens is not None:
            cell, slot = _cells_from_item_tokens(torch.as_tensor(item_tokens, dtype=torch.long), bs, length, K)
        else:
            pos = torch.as_tensor(item_token_pos, dtype=torch.long)
            if pos.shape != response_mask.shape:
                raise ValueError(f"item_token_pos has shape {tuple(pos.shape)}, response_mask {tuple(response_mask.shape)}")
            cell, slot = _cells_from_positions(pos, K)
        # value of a token that spells the item at position k: A^item_i,k (+ A^seq_i when
        # add_seq_adv_to_items), or A^seq_i where A^item is NaN (no reward at that position)
        seq_col = seq_adv[:, None]
        values = item_adv + seq_col if opts.add_seq_adv_to_items else item_adv
        absent = np.isnan(item_adv)
        if absent.any():
            values = np.where(absent, seq_col, values)
        values = torch.from_numpy((values * scale[:, None]).astype(np.float32))
        item_token_adv = values.view(-1).index_select(0, slot) * response_mask.reshape(-1).index_select(0, cell)
        adv.view(-1).scatter_(0, cell, item_token_adv)
    return FlexRecAdvantages(
        advantages=adv,
        seq_advantage=torch.from_numpy(seq_adv.astype(np.float32)),
        seq_token_advantage=seq_token,
        item_advantage=torch.from_numpy(item_adv.astype(np.float32)),
        scale=torch.from_numpy(scale.astype(np.float32)),
        clipped=torch.from_numpy(clipped),
    )
