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

The code is written once against the Python array API standard (through ``array-api-compat``):
a numpy array in gives numpy out, a torch tensor in gives torch out (same dtype family, same
device). The reward manager scores one list per call, where numpy's per-call overhead is a
fraction of torch's; the simulator and the benchmarks pass batched tensors. Lists and other
sequences are read as numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

__all__ = ["GAINS", "dcg", "discounts", "ideal_dcg", "mrr", "ndcg", "recall", "top_n_relevant", "transform_gains"]

GAINS = ("linear", "exponential")


def as_array(x):
    """``(x, its array namespace)``: numpy's own namespace for numpy arrays (array-API compliant
    since numpy 2; the compat wrapper costs ~10 µs a call, more than the math of one list),
    ``array_api_compat``'s for other arrays (torch); anything else is read as numpy."""
    if isinstance(x, np.ndarray):
        return x, np
    if is_array_api_obj(x) and not isinstance(x, np.generic):
        return x, array_namespace(x)
    return np.asarray(x), np


def as_float(x):
    """``(x as a floating array, namespace)``: float64 unless ``x`` is floating already."""
    x, xp = as_array(x)
    floating = x.dtype.kind == "f" if xp is np else xp.isdtype(x.dtype, "real floating")
    return (x if floating else xp.astype(x, xp.float64)), xp


def sort_descending(x, xp):
    """``x`` sorted along its last axis, largest first.

    numpy's ``sort`` has no ``descending``; a CPU tensor is sorted by numpy too, ~10x faster than
    torch's CPU sort on many short rows (the 4,096 x 30 lists of ``benchmarks/bench_cost.py``).
    """
    if xp is np:
        return np.sort(x, axis=-1)[..., ::-1]
    if str(x.device) == "cpu" and x.dtype in (xp.float32, xp.float64) and not getattr(x, "requires_grad", False):
        return xp.asarray(np.sort(np.asarray(x), axis=-1)[..., ::-1].copy())
    return xp.sort(x, axis=-1, descending=True)


@lru_cache(maxsize=512)
def _discounts(num_positions: int, cutoff: int | None, xp, dtype, device):
    """:func:`discounts` for one (K, cut-off, library, dtype, device), computed once (read-only)."""
    ranks = xp.arange(1, num_positions + 1, dtype=dtype, device=device)
    d = 1.0 / xp.log2(ranks + 1.0)
    if cutoff is not None:
        d = xp.where(ranks <= cutoff, d, 0.0)
    if xp is np:
        d.flags.writeable = False
    return d


def _discounts_like(x, xp, cutoff: int | None = None):
    return _discounts(x.shape[-1], cutoff, xp, x.dtype, x.device)


def discounts(num_positions: int, cutoff: int | None = None, *, like=None):
    """``d_i = 1 / log2(i + 1)`` for ranks i = 1..K; zero past ``cutoff``.

    The result follows ``like`` (an array: its library, floating dtype and device); numpy
    float64 without it.
    """
    _check_cutoff(cutoff)
    like, xp = (np.empty(0), np) if like is None else as_float(like)
    return xp.asarray(_discounts(num_positions, cutoff, xp, like.dtype, like.device), copy=True)


def _check_cutoff(cutoff) -> None:
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be >= 1, got {cutoff}")


def transform_gains(gains, gain: str = "linear"):
    """``g`` (linear) or ``2**g - 1`` (exponential)."""
    if gain == "linear":
        return gains
    if gain == "exponential":
        return 2.0**gains - 1.0
    raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")


def _dcg(transformed, xp, k: int | None):
    return xp.sum(transformed * _discounts_like(transformed, xp, k), axis=-1)


def dcg(gains, k: int | None = None, *, gain: str = "linear"):
    """DCG@k of ranked gains ``(..., K)`` → ``(...)``."""
    _check_cutoff(k)
    g, xp = as_float(gains)
    return _dcg(transform_gains(g, gain), xp, k)


def ideal_dcg(gains, k: int | None = None, *, gain: str = "linear"):
    """DCG@k of the same gains sorted descending (the ideal ordering of the closed set)."""
    _check_cutoff(k)
    g, xp = as_float(gains)
    return _dcg(transform_gains(sort_descending(g, xp), gain), xp, k)


def ndcg(gains, k: int | None | Sequence[int | None] = None, *, gain: str = "linear", ideal_gains=None):
    """NDCG@k of ranked gains ``(..., K)``; ``ideal_gains`` (any order) defaults to ``gains``.

    ``k`` may be a tuple or list of cut-offs (``None`` = the whole list): the result then has a last
    dimension with one NDCG per cut-off, from one sort and two running sums.
    """
    several = isinstance(k, (tuple, list))
    cuts = list(k) if several else [k]
    for c in cuts:
        _check_cutoff(c)
    g, xp = as_float(gains)
    ideal = g if ideal_gains is None else xp.astype(as_float(ideal_gains)[0], g.dtype)
    K, Ki = g.shape[-1], ideal.shape[-1]
    if K == 0 or Ki == 0:
        return xp.zeros(g.shape[:-1] + ((len(cuts),) if several else ()), dtype=g.dtype, device=g.device)
    # DCG@c is the running sum of gain * discount at position min(c, K)
    t, ti = transform_gains(g, gain), transform_gains(sort_descending(ideal, xp), gain)
    num = xp.cumulative_sum(t * _discounts_like(t, xp), axis=-1)
    den = xp.cumulative_sum(ti * _discounts_like(ti, xp), axis=-1)
    num = xp.take(num, xp.asarray([(K if c is None else min(c, K)) - 1 for c in cuts], device=g.device), axis=-1)
    den = xp.take(den, xp.asarray([(Ki if c is None else min(c, Ki)) - 1 for c in cuts], device=g.device), axis=-1)
    out = xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)
    return out if several else out[..., 0]


def recall(relevant, k: int, *, num_relevant=None):
    """Recall@k from a boolean ``relevant`` mask in ranked order ``(..., K)``."""
    rel, xp = as_array(relevant)
    hits = xp.astype(xp.sum(rel[..., :k], axis=-1), xp.float64)
    total = xp.sum(rel, axis=-1) if num_relevant is None else as_array(num_relevant)[0]
    return hits / xp.where(total > 0, total, 1)  # nothing relevant: no hits, 0


def mrr(relevant, k: int):
    """Reciprocal rank of the first relevant item within the top ``k`` (0 when none)."""
    rel, xp = as_array(relevant)
    rel = rel[..., :k]
    n = rel.shape[-1]
    if n == 0:
        return xp.zeros(rel.shape[:-1], dtype=xp.float64, device=rel.device)
    return xp.max(xp.where(rel != 0, _reciprocal_ranks(n, xp, rel.device), 0.0), axis=-1)


@lru_cache(maxsize=512)
def _reciprocal_ranks(n: int, xp, device):
    """``1 / r`` for ranks r = 1..n (read-only for numpy, computed once)."""
    r = 1.0 / xp.arange(1, n + 1, dtype=xp.float64, device=device)
    if xp is np:
        r.flags.writeable = False
    return r


def top_n_relevant(gains, n: int):
    """Boolean mask of the items whose gain is among the ``n`` largest of their list (ties at the
    boundary included, zero gains never relevant) — FlexRec's Recall@5 ground truth."""
    g, xp = as_float(gains)
    n = min(n, g.shape[-1])
    if n < 1:
        return xp.zeros(g.shape, dtype=xp.bool, device=g.device)
    threshold = sort_descending(g, xp)[..., n - 1 : n]
    return (g >= threshold) & (g > 0)
