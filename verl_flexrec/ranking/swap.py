"""Item-level counterfactual swap rewards (FlexRec §2), exact and O(K) per list.

For a ranked list y with gains g_1..g_K (need-specific, in the model's order) and NDCG discounts
d_i = 1/log2(i+1) (zero past ``cutoff``), swapping positions k and j changes the DCG by
-(g_k - g_j)(d_k - d_j). The **causal** reward of the item at position k is the mean NDCG it
would lose by trading places with each item still in the remaining pool (positions k+1..K):

    r_k = 1/(K-k) * sum_{j>k} (g_k - g_j)(d_k - d_j) / IDCG ,      r_K = 0

Expanding the product with suffix sums S_k = sum_{j>k} d_j, T_k = sum_{j>k} g_j,
U_k = sum_{j>k} g_j d_j and c_k = K - k gives the closed form used here:

    r_k = (c_k g_k d_k - g_k S_k - d_k T_k + U_k) / (c_k IDCG)

so a list costs O(K) after the O(K log K) sort for IDCG (the paper evaluates the K(K-1)/2 swaps).
Higher is better; every reward is 0 when IDCG = 0.

Modes:
    causal       swap partners = later positions (FlexRec default, "remaining candidate pool").
    noncausal    swap partners = every other position (Table 7 ablation).
    independent  the item's own NDCG term g_k d_k / IDCG (Table 7 "independent contribution").
    rank         Rank-GRPO's causal rank reward DCG@k:K / IDCG = sum_{j>=k} g_j d_j / IDCG.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .metrics import _dcg, _discounts, _discounts_like, _check_cutoff, as_float, sort_descending, transform_gains

__all__ = ["SWAP_MODES", "swap_item_rewards"]

SWAP_MODES = ("causal", "noncausal", "independent", "rank")


def _suffix_sum_exclusive(x, xp):
    """sum_{j>k} x_j along the last dim: the total minus the running sum (0 at the last position)."""
    running = xp.cumulative_sum(x, axis=-1)
    return running[..., -1:] - running


@lru_cache(maxsize=512)
def _causal_constants(K: int, cutoff: int | None, xp, device):
    """Per-position parts of the causal closed form that depend only on K and the cut-off:
    ``c_k d_k - S_k`` and ``1 / max(c_k, 1)`` (c_k = K - k, S_k = sum_{j>k} d_j), float64."""
    d = _discounts(K, cutoff, xp, xp.float64, device)
    count = xp.arange(K - 1, -1, -1, dtype=xp.float64, device=device)
    out = (count * d - _suffix_sum_exclusive(d, xp), 1.0 / xp.where(count > 0, count, 1.0))
    if xp is np:
        for a in out:
            a.flags.writeable = False
    return out


def swap_item_rewards(gains, mode: str = "causal", cutoff: int | None = None, *, gain: str = "linear"):
    """Per-position item rewards ``(..., K)`` for ranked ``gains`` ``(..., K)``, computed in float64
    and returned in the floating dtype of ``gains`` (numpy in, numpy out; torch in, torch out).

    Args:
        gains: need-specific gains in the order the model ranked the items.
        mode: one of :data:`SWAP_MODES`.
        cutoff: truncate NDCG at this rank (``None`` = whole list, the default: with a cut-off
            every position past it gets no causal signal from swaps among the tail).
        gain: ``"linear"`` (default) or ``"exponential"`` (2**g - 1), as in :func:`ndcg`.
    """
    if mode not in SWAP_MODES:
        raise ValueError(f"mode must be one of {SWAP_MODES}, got {mode!r}")
    _check_cutoff(cutoff)
    raw, xp = as_float(gains)
    g = xp.astype(raw, xp.float64, copy=False)
    K = g.shape[-1]
    if K == 0:
        return xp.zeros_like(raw)
    d = _discounts_like(g, xp, cutoff)
    idcg = _dcg(transform_gains(sort_descending(g, xp), gain), xp, cutoff)[..., None]
    g = transform_gains(g, gain)
    safe_idcg = xp.where(idcg > 0, idcg, 1.0)

    if mode == "independent":
        num, den = g * d, safe_idcg
    elif mode == "rank":
        gd = g * d
        num, den = gd + _suffix_sum_exclusive(gd, xp), safe_idcg
    elif mode == "causal":  # (g_k (c_k d_k - S_k) - d_k T_k + U_k) / c_k / IDCG
        cd_minus_S, inv_count = _causal_constants(K, cutoff, xp, g.device)
        num = (g * cd_minus_S - d * _suffix_sum_exclusive(g, xp) + _suffix_sum_exclusive(g * d, xp)) * inv_count
        den = safe_idcg
    else:  # noncausal: the j = k term is zero, so sum over all j and divide by K - 1
        D, G, GD = xp.sum(d), xp.sum(g, axis=-1, keepdims=True), xp.sum(g * d, axis=-1, keepdims=True)
        num = K * g * d - g * D - d * G + GD
        den = max(K - 1, 1) * safe_idcg
    r = xp.where(idcg > 0, num / den, 0.0)
    if mode == "causal":
        r[..., -1] = 0.0  # cancellation leaves ~1e-17 where the exact value is 0
    if mode == "noncausal" and K == 1:
        r = xp.zeros_like(r)
    return xp.astype(r, raw.dtype, copy=False)
