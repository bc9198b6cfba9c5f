"""The ranking math of :mod:`.metrics` and :mod:`.swap` for ONE list, in numpy.

The reward manager scores one response at a time; for a single list of K ~ 30 items the batched
torch functions spend their time in per-op dispatch (~60 tiny ops). These are the same formulas,
float64, a dozen numpy calls on a ``(K,)`` array; tests compare them with the torch versions
and with brute force. ``gains`` are in ranked order, as everywhere in this package.

    d_i = 1/log2(i+1) (0 past the cut-off)        DCG@k = sum_{i<=k} gain(g_i) d_i
    NDCG@k = DCG@k / IDCG@k (0 when IDCG@k = 0)   IDCG = DCG of the gains sorted descending
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["at", "list_dcg_prefix", "list_discounts", "list_mrr", "list_recall", "list_swap_rewards", "list_top_n_relevant", "ratio", "transform"]


@lru_cache(maxsize=256)
def list_discounts(num_positions: int, cutoff: int | None = None) -> np.ndarray:
    """``d_i = 1 / log2(i + 1)`` for i = 1..K, zero past ``cutoff`` (read-only, cached)."""
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be >= 1, got {cutoff}")
    ranks = np.arange(1, num_positions + 1, dtype=np.float64)
    d = 1.0 / np.log2(ranks + 1.0)
    if cutoff is not None:
        d[ranks > cutoff] = 0.0
    d.flags.writeable = False
    return d


def transform(gains: np.ndarray, gain: str = "linear") -> np.ndarray:
    """``g`` (linear) or ``2**g - 1`` (exponential)."""
    if gain == "linear":
        return gains
    if gain == "exponential":
        return np.exp2(gains) - 1.0
    raise ValueError(f"gain must be one of ('linear', 'exponential'), got {gain!r}")


def list_dcg_prefix(gains: np.ndarray, gain: str = "linear") -> np.ndarray:
    """``DCG@k`` for k = 1..K (no cut-off): the running sum of ``gain(g_i) d_i``."""
    return np.cumsum(transform(gains, gain) * list_discounts(len(gains)))


def at(prefix: np.ndarray, k: int | None) -> float:
    """``prefix[min(k, K) - 1]``: the value of a running sum at cut-off k (k=None: whole list)."""
    n = len(prefix)
    return float(prefix[n - 1 if k is None else min(k, n) - 1]) if n else 0.0


def ratio(num: float, den: float) -> float:
    """``num / den``, 0 when ``den <= 0`` (NDCG of a list without gain)."""
    return num / den if den > 0 else 0.0


def _suffix_exclusive(x: np.ndarray) -> np.ndarray:
    """sum_{j>k} x_j."""
    return np.cumsum(x[::-1])[::-1] - x


@lru_cache(maxsize=256)
def _causal_constants(K: int, cutoff: int | None):
    """c_k = K - k, S_k = sum_{j>k} d_j and max(c_k, 1) of the causal closed form (cached)."""
    count = np.arange(K - 1, -1, -1, dtype=np.float64)
    out = (count, _suffix_exclusive(list_discounts(K, cutoff)), np.maximum(count, 1.0))
    for a in out:
        a.flags.writeable = False
    return out


def list_swap_rewards(gains: np.ndarray, mode: str, idcg: float, cutoff: int | None = None, *, gain: str = "linear") -> np.ndarray:
    """:func:`~verl_flexrec.ranking.swap_item_rewards` of one list, given its ``idcg`` (with the
    same cut-off and gain); float64 ``(K,)``."""
    K = len(gains)
    if K == 0 or not idcg > 0:
        return np.zeros(K)
    g = transform(gains, gain)
    d = list_discounts(K, cutoff)
    gd = g * d
    if mode == "independent":
        return gd / idcg
    if mode == "rank":
        return (gd + _suffix_exclusive(gd)) / idcg
    if mode == "causal":
        count, S, den = _causal_constants(K, cutoff)
        num = count * g * d - g * S - d * _suffix_exclusive(g) + _suffix_exclusive(gd)
        r = num / (den * idcg)
        r[-1] = 0.0  # cancellation leaves ~1e-17 where the exact value is 0
        return r
    if mode == "noncausal":
        if K == 1:
            return np.zeros(1)
        num = K * g * d - g * d.sum() - d * g.sum() + gd.sum()
        return num / ((K - 1) * idcg)
    raise ValueError(f"unknown swap mode {mode!r}")


def list_top_n_relevant(gains: np.ndarray, n: int, sorted_desc: np.ndarray | None = None) -> np.ndarray:
    """Items whose gain is among the ``n`` largest (boundary ties in, zero gains out);
    ``sorted_desc`` (the gains sorted descending), when the caller has it, saves a partition."""
    K = len(gains)
    if K == 0:
        return np.zeros(0, dtype=bool)
    n = min(n, K)
    threshold = sorted_desc[n - 1] if sorted_desc is not None else np.partition(gains, K - n)[K - n]
    return (gains >= threshold) & (gains > 0)


def list_recall(relevant: np.ndarray, k: int) -> float:
    """|relevant in top k| / |relevant| (0 when nothing is relevant)."""
    total = int(np.count_nonzero(relevant))
    return int(np.count_nonzero(relevant[:k])) / total if total else 0.0


def list_mrr(relevant: np.ndarray, k: int) -> float:
    """1 / rank of the first relevant item within the top k (0 if none)."""
    hits = np.flatnonzero(relevant[:k])
    return 1.0 / (int(hits[0]) + 1) if len(hits) else 0.0
