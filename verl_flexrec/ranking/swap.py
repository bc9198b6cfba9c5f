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

import torch

from .metrics import _as_float, discounts, ideal_dcg, transform_gains

__all__ = ["SWAP_MODES", "swap_item_rewards"]

SWAP_MODES = ("causal", "noncausal", "independent", "rank")


def _suffix_sum_exclusive(x: torch.Tensor) -> torch.Tensor:
    """sum_{j>k} x_j along the last dim."""
    return torch.flip(torch.cumsum(torch.flip(x, (-1,)), -1), (-1,)) - x


def swap_item_rewards(gains, mode: str = "causal", cutoff: int | None = None, *, gain: str = "linear") -> torch.Tensor:
    """Per-position item rewards ``(..., K)`` for ranked ``gains`` ``(..., K)``.

    Args:
        gains: need-specific gains in the order the model ranked the items.
        mode: one of :data:`SWAP_MODES`.
        cutoff: truncate NDCG at this rank (``None`` = whole list, the default: with a cut-off
            every position past it gets no causal signal from swaps among the tail).
        gain: ``"linear"`` (default) or ``"exponential"`` (2**g - 1), as in :func:`ndcg`.
    """
    if mode not in SWAP_MODES:
        raise ValueError(f"mode must be one of {SWAP_MODES}, got {mode!r}")
    raw = _as_float(gains)
    out_dtype = raw.dtype
    g = transform_gains(raw.to(torch.float64), gain)
    K = g.shape[-1]
    if K == 0:
        return torch.zeros_like(raw)
    d = discounts(K, cutoff, dtype=torch.float64, device=g.device)
    idcg = ideal_dcg(raw.to(torch.float64), cutoff, gain=gain).unsqueeze(-1)
    safe_idcg = torch.where(idcg > 0, idcg, torch.ones_like(idcg))

    if mode == "independent":
        num, den = g * d, safe_idcg
    elif mode == "rank":
        gd = g * d
        num, den = gd + _suffix_sum_exclusive(gd), safe_idcg
    elif mode == "causal":
        count = torch.arange(K - 1, -1, -1, dtype=torch.float64, device=g.device)  # K - k
        S = _suffix_sum_exclusive(d).expand_as(g)
        T = _suffix_sum_exclusive(g)
        U = _suffix_sum_exclusive(g * d)
        num = count * g * d - g * S - d * T + U
        den = torch.where(count > 0, count, torch.ones_like(count)) * safe_idcg
    else:  # noncausal: the j = k term is zero, so sum over all j and divide by K - 1
        D, G, GD = d.sum(), g.sum(-1, keepdim=True), (g * d).sum(-1, keepdim=True)
        num = K * g * d - g * D - d * G + GD
        den = max(K - 1, 1) * safe_idcg
    r = num / den
    r = torch.where(idcg > 0, r, torch.zeros_like(r))
    if mode == "causal":
        r[..., -1] = 0.0  # cancellation leaves ~1e-17 where the exact value is 0
    if mode == "noncausal" and K == 1:
        r = torch.zeros_like(r)
    return r.to(out_dtype)
