"""Ranking metrics for closed candidate sets, batched over leading dimensions.

Every function takes the candidates' values **in the order the model ranked them**, shape
``(..., K)``; the ranked list holds the whole closed set, so the ideal ordering is a sort of the
same values (pass ``ideal_gains`` when the ranked list is partial).

    DCG@k  = sum_{i<=k} gain(g_i) / log2(i + 1)
    NDCG@k = DCG@k / IDCG@k            (0 when IDCG@k = 0)
    Recall@k = |relevant in top k| / |relevant|   (0 when nothing is relevant)
    MRR@k  = 1 / rank of the first relevant item within the top k (0 if none)

``gain="linear"`` uses g itself (trec_eval / pytrec_eval ``ndcg_cut``, ranx ``ndcg``);
``gain="exponential"`` uses 2**g - 1 (Burges et al., ranx ``ndcg_burges``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["discounts", "transform_gains", "dcg", "ideal_dcg", "ndcg", "recall", "mrr", "top_n_relevant"]

GAINS = ("linear", "exponential")
_NUMPY_SORTABLE = (torch.float64, torch.float32)


def discounts(num_positions: int, cutoff: int | None = None, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """``d_i = 1 / log2(i + 1)`` for ranks i = 1..K; zero past ``cutoff``."""
    ranks = torch.arange(1, num_positions + 1, dtype=dtype, device=device)
    d = 1.0 / torch.log2(ranks + 1.0)
    if cutoff is not None:
        if cutoff < 1:
            raise ValueError(f"cutoff must be >= 1, got {cutoff}")
        d = torch.where(ranks <= cutoff, d, torch.zeros_like(d))
    return d


def transform_gains(gains: torch.Tensor, gain: str = "linear") -> torch.Tensor:
    if gain == "linear":
        return gains
    if gain == "exponential":
        return torch.exp2(gains) - 1.0
    raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")


def _as_float(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.float64)


def dcg(gains, k: int | None = None, *, gain: str = "linear") -> torch.Tensor:
    """DCG@k of ranked gains ``(..., K)`` → ``(...)``."""
    g = transform_gains(_as_float(gains), gain)
    d = discounts(g.shape[-1], k, dtype=g.dtype, device=g.device)
    return (g * d).sum(-1)


def ideal_dcg(gains, k: int | None = None, *, gain: str = "linear") -> torch.Tensor:
    """DCG@k of the same gains sorted descending (the ideal ordering of the closed set)."""
    g = _as_float(gains)
    return dcg(sort_descending(g), k, gain=gain)


def sort_descending(values: torch.Tensor) -> torch.Tensor:
    """``torch.sort(values, -1, descending=True).values``; on CPU via numpy's sort, several times
    faster for many short rows (the same values: sorting is exact)."""
    if values.device.type == "cpu" and values.dim() >= 1 and values.dtype in _NUMPY_SORTABLE and not values.requires_grad:
        return torch.from_numpy(np.sort(values.resolve_neg().numpy(), axis=-1)[..., ::-1].copy())
    return torch.sort(values, dim=-1, descending=True).values


def ndcg(gains, k: int | None = None, *, gain: str = "linear", ideal_gains=None) -> torch.Tensor:
    """NDCG@k of ranked gains ``(..., K)``; ``ideal_gains`` (any order) defaults to ``gains``."""
    g = _as_float(gains)
    idcg = ideal_dcg(g if ideal_gains is None else _as_float(ideal_gains).to(g.dtype), k, gain=gain)
    num = dcg(g, k, gain=gain)
    return torch.where(idcg > 0, num / torch.where(idcg > 0, idcg, torch.ones_like(idcg)), torch.zeros_like(num))


def recall(relevant, k: int, *, num_relevant=None) -> torch.Tensor:
    """Recall@k from a boolean ``relevant`` mask in ranked order ``(..., K)``."""
    rel = torch.as_tensor(relevant).to(torch.float64)
    hits = rel[..., :k].sum(-1)
    total = rel.sum(-1) if num_relevant is None else torch.as_tensor(num_relevant, dtype=torch.float64)
    return torch.where(total > 0, hits / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(hits))


def mrr(relevant, k: int) -> torch.Tensor:
    """Reciprocal rank of the first relevant item within the top ``k`` (0 when none)."""
    rel = torch.as_tensor(relevant).to(torch.bool)[..., :k]
    ranks = torch.arange(1, rel.shape[-1] + 1, dtype=torch.float64)
    rr = torch.where(rel, 1.0 / ranks, torch.zeros_like(ranks))
    return rr.max(-1).values if rel.shape[-1] else torch.zeros(rel.shape[:-1], dtype=torch.float64)


def top_n_relevant(gains, n: int) -> torch.Tensor:
    """Boolean mask of the items whose gain is among the ``n`` largest of their list (ties at the
    boundary included, zero gains never relevant) — FlexRec's Recall@5 ground truth."""
    g = _as_float(gains)
    n = min(n, g.shape[-1])
    threshold = torch.topk(g, n, dim=-1).values[..., -1:]
    return (g >= threshold) & (g > 0)
