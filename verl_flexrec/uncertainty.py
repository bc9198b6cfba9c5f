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
    "group_ids_array",
    "rollout_uncertainty",
    "scale_array",
    "uncertainty_scale",
]

UNCERTAINTY_WEIGHTINGS = ("discount", "sum")
SCALE_NORMALIZATIONS = ("batch", "group", "none")


def group_ids(index) -> torch.Tensor:
    """Dense group id per rollout from verl's ``index`` (prompt uid strings / ints), numbered in
    order of first appearance; labels that print the same are one group."""
    return torch.from_numpy(group_ids_array(index))


def group_ids_array(index) -> np.ndarray:
    """:func:`group_ids` as an int64 numpy array."""
    labels = np.asarray(index, dtype=object).reshape(-1)
    if len(labels) and set(map(type, labels)) == {str}:  # plain str labels are equal iff they print the same
        # verl repeats each prompt's uid over its rollouts: one run per label numbers in one pass
        starts = np.ones(len(labels), dtype=bool)
        starts[1:] = labels[1:] != labels[:-1]
        firsts = labels[starts]
        if len(set(firsts)) == len(firsts):
            return np.cumsum(starts, dtype=np.int64) - 1
    labels = list(map(str, labels))
    first = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    return np.fromiter(map(first.__getitem__, labels), np.int64, len(labels))


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
    u = (u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u)).astype(np.float64).reshape(-1)
    gid = None
    if normalize == "group":
        if index is None:
            raise ValueError("normalize='group' needs the group index (prompt uid) of every rollout")
        gid = group_ids_array(index)
    return torch.from_numpy(np.clip(scale_array(u, eps, normalize, gid), min_scale, max_scale))


def scale_array(u: np.ndarray, eps: float, normalize: str, gid: np.ndarray | None) -> np.ndarray:
    """:func:`uncertainty_scale` before clipping, on float64 numpy ``u`` and group ids ``gid``
    (:func:`group_ids_array`; used by ``normalize="group"``). The batch mean is torch's (its
    summation order), the group sums add in row order (``np.bincount``, as ``index_add_``)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if normalize not in SCALE_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {SCALE_NORMALIZATIONS}, got {normalize!r}")
    u = np.where(np.isfinite(u) & (u > 0), u, 0.0)
    c = 1.0 / (u + eps)
    if normalize == "batch" and len(c):
        c = c / torch.from_numpy(c).mean().item()
    elif normalize == "group" and len(c):
        sums = np.bincount(gid, c)
        counts = np.bincount(gid).astype(np.float64)
        c = c / (sums / counts)[gid]
    return c
