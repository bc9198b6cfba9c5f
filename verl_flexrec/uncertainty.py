"""Rollout reward uncertainty and the advantage scale FlexRec derives from it (§3.4).

A rollout's list reward is NDCG = sum_k d_k g_k / IDCG. With independent per-item gain variances
s2_k (0 for observed gains, the critic's variance for filled ones) and IDCG held fixed, the
variance of the list reward is

    u = sum_k d_k**2 * s2_k / IDCG**2              (weighting="discount", default)
    u = sum_k s2_k                                 (weighting="sum", the unweighted option)

The scale applied to every advantage of the rollout is ``c = 1 / (u + eps)``, normalised to mean 1
over the batch (or each prompt group) and clipped to ``[min_scale, max_scale]`` — without the
normalisation a fully observed rollout (u = 0) would be scaled by 1/eps.
"""

from __future__ import annotations

import numpy as np
import torch

from .ranking.metrics import as_float, discounts, ideal_dcg

__all__ = [
    "UNCERTAINTY_WEIGHTINGS",
    "SCALE_NORMALIZATIONS",
    "group_ids",
    "rollout_uncertainty",
    "uncertainty_scale",
]

UNCERTAINTY_WEIGHTINGS = ("discount", "sum")
SCALE_NORMALIZATIONS = ("batch", "group", "none")


def group_ids(index) -> torch.Tensor:
    """Dense group id per rollout from verl's ``index`` (prompt uid strings / ints), numbered in
    order of first appearance; labels that print the same are one group."""
    index = np.asarray(index, dtype=object).reshape(-1)
    ids: dict[str, int] = {}
    return torch.from_numpy(np.fromiter((ids.setdefault(u, len(ids)) for u in map(str, index)), np.int64, len(index)))


def rollout_uncertainty(var_ranked, gains, *, weighting: str = "discount", cutoff: int | None = None):
    """Variance of each rollout's NDCG ``(...)`` from gain variances in ranked order ``(..., K)``,
    float64 (numpy in, numpy out; torch in, torch out — the array-API code of :mod:`.ranking`).

    ``gains`` (any order, same candidates) only sets IDCG; a list with IDCG = 0 gets u = 0.
    """
    var, xp = as_float(var_ranked)
    var = xp.astype(var, xp.float64)
    if weighting == "sum":
        return xp.sum(var, axis=-1)
    if weighting != "discount":
        raise ValueError(f"weighting must be one of {UNCERTAINTY_WEIGHTINGS}, got {weighting!r}")
    d = discounts(var.shape[-1], cutoff, like=var)
    idcg = ideal_dcg(xp.astype(as_float(gains)[0], xp.float64), cutoff)
    num = xp.sum(d * d * var, axis=-1)
    return xp.where(idcg > 0, num / xp.where(idcg > 0, idcg, 1.0) ** 2, 0.0)


def uncertainty_scale(
    u,
    *,
    eps: float = 1e-2,
    normalize: str = "batch",
    min_scale: float = 0.0,
    max_scale: float = 3.0,
    index=None,
) -> torch.Tensor:
    """Per-rollout advantage scale ``clip(normalise(1 / (u + eps)))``, shape ``(bs,)``.

    ``normalize="group"`` divides by the mean over rollouts sharing ``index`` (the prompt uid),
    ``"batch"`` by the batch mean, ``"none"`` keeps 1/(u+eps). Non-finite or negative ``u`` is a
    programming error upstream and is treated as 0.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if normalize not in SCALE_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {SCALE_NORMALIZATIONS}, got {normalize!r}")
    u = torch.as_tensor(u, dtype=torch.float64)
    u = torch.where(torch.isfinite(u) & (u > 0), u, torch.zeros_like(u))
    c = 1.0 / (u + eps)
    if normalize == "batch" and c.numel():
        c = c / c.mean()
    elif normalize == "group":
        if index is None:
            raise ValueError("normalize='group' needs the group index (prompt uid) of every rollout")
        inv = group_ids(index)
        sums = torch.zeros(int(inv.max()) + 1 if inv.numel() else 0, dtype=torch.float64).index_add_(0, inv, c)
        counts = torch.bincount(inv, minlength=sums.numel()).to(torch.float64)
        c = c / (sums / counts)[inv]
    return c.clamp(min=min_scale, max=max_scale)
