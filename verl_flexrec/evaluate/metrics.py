"""Per-list evaluation metrics and their exact expectation under a uniformly random ranking.

Framework-free (numpy through :mod:`verl_flexrec.ranking`, no verl import). For one closed candidate
set with evaluation gains ``g`` (prompt order, see :func:`evaluation_gains`) and a ranking
``order`` (candidate indices, best first):

    NDCG@k   = DCG@k(g[order]) / IDCG@k(g)       gain "linear": g itself (trec_eval ndcg_cut);
                                                 "exponential": 2**g - 1 (Burges; ranx ndcg_burges)
    Recall@5 = |R in top 5| / |R|     R = top_n_relevant(g, 5): the 5 largest gains (ties at the
                                          boundary included, zero gains never relevant)
    MRR@5    = 1 / rank of the first item of R within the top 5 (0 if none)

Expected value under a uniformly random permutation of K candidates (the "random floor"):

    E[NDCG@k]   = mean(G) * sum_{r<=min(k,K)} d_r / IDCG@k    (each item is at rank r w.p. 1/K;
                                                               G = the transformed gains)
    E[Recall@k] = min(k, K) / K                               (|R| > 0)
    E[MRR@k]    = sum_{r<=min(k,K)} (1/r) * C(K-r, |R|-1) / C(K, |R|)
                  (the first relevant item is at rank r w.p. C(K-r, |R|-1) / C(K, |R|))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from verl_flexrec.ranking import discounts, mrr, ndcg, recall, top_n_relevant, transform_gains
from verl_flexrec.schema import GroundTruth

__all__ = [
    "GAINS",
    "METRICS",
    "RELEVANT_TOP_N",
    "evaluation_gains",
    "expected_random_metrics",
    "has_gain",
    "ranking_metrics",
    "zero_metrics",
]

METRICS = ("ndcg@5", "ndcg@10", "ndcg@30", "recall@5", "mrr@5")
"""Metric names, in table order."""

GAINS = ("linear", "exponential")
"""Gain functions of NDCG (``--gain``); Recall@5 and MRR@5 do not depend on it (same top 5)."""

RELEVANT_TOP_N = 5
"""Recall@5 / MRR@5 count an item relevant when its gain is among the 5 largest (FlexRec)."""

_NDCG_CUTS = {"ndcg@5": 5, "ndcg@10": 10, "ndcg@30": 30}


def evaluation_gains(truth: GroundTruth) -> np.ndarray:
    """Ground-truth gains for metrics: ``gains`` where ``observed``, 0 elsewhere.

    A filled (critic / KNN) gain is an estimate, not ground truth, so an unobserved candidate
    counts as not relevant, as trec_eval treats an unjudged document.
    """
    gains = truth.gains_array()
    observed = np.asarray(truth.observed, dtype=bool)
    return np.where(observed, gains, 0.0)


def has_gain(gains: np.ndarray) -> bool:
    """A list can be scored only if some candidate has a positive gain (IDCG > 0)."""
    return bool(np.any(np.asarray(gains) > 0))


def zero_metrics() -> dict[str, float]:
    """What an invalid response scores under the ``strict`` policy."""
    return {name: 0.0 for name in METRICS}


def ranking_metrics(order: Sequence[int], gains: np.ndarray, gain: str = "linear") -> dict[str, float]:
    """Every metric of :data:`METRICS` for ``order`` (a permutation of ``range(len(gains))``);
    ``gain`` is NDCG's gain function (:data:`GAINS`)."""
    g = np.asarray(gains, dtype=np.float64)
    idx = np.asarray(order, dtype=np.int64)
    if idx.size != g.size or np.unique(idx).size != g.size or (idx.size and (idx.min() < 0 or idx.max() >= g.size)):
        raise ValueError(f"order must be a permutation of {g.size} candidates, got {list(order)[:10]}...")
    relevant = top_n_relevant(g, RELEVANT_TOP_N)
    ranked_relevant = relevant[idx]
    out = dict(zip(_NDCG_CUTS, ndcg(g[idx], tuple(_NDCG_CUTS.values()), gain=gain, ideal_gains=g).tolist()))
    out["recall@5"] = float(recall(ranked_relevant, 5, num_relevant=relevant.sum()))
    out["mrr@5"] = float(mrr(ranked_relevant, 5))
    return out


def expected_random_metrics(gains: np.ndarray, gain: str = "linear") -> dict[str, float]:
    """Exact expectation of every metric over the K! equally likely rankings (module docstring)."""
    g = np.asarray(gains, dtype=np.float64)
    K = len(g)
    d = discounts(K)
    out = {}
    transformed = transform_gains(g, gain)
    ideal = np.sort(transformed)[::-1]
    for name, k in _NDCG_CUTS.items():
        idcg = float(np.sum(ideal[:k] * d[:k]))
        out[name] = float(transformed.mean() * d[:k].sum() / idcg) if idcg > 0 else 0.0
    num_relevant = int(top_n_relevant(g, RELEVANT_TOP_N).sum())
    cut = min(5, K)
    out["recall@5"] = cut / K if num_relevant else 0.0
    if num_relevant:
        total = math.comb(K, num_relevant)
        out["mrr@5"] = sum(math.comb(K - r, num_relevant - 1) / total / r for r in range(1, cut + 1))
    else:
        out["mrr@5"] = 0.0
    return out
