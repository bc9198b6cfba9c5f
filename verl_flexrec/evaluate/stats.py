"""Confidence intervals by bootstrap over users, and the spread of a metric over shuffles.

Cluster (user-level) percentile bootstrap: users are the independent units (one user can have
several rows: one per need, several contexts), so each replicate draws U users with replacement
and averages over all their rows::

    mean_b = sum_u w_bu * S_u / sum_u w_bu * n_u       w_b ~ Multinomial(U, 1/U)

with S_u the sum of the metric over user u's rows and n_u their count. The interval is the
(alpha/2, 1 - alpha/2) percentile of mean_b. The weights depend only on (seed, U, n_boot), so
every system evaluated on the same rows gets the same replicates (paired intervals).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["bootstrap_weights", "cluster_bootstrap", "spread"]


def bootstrap_weights(num_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, num_clusters)`` multinomial resampling counts."""
    rng = np.random.default_rng([seed, 0xB007])
    if num_clusters == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(num_clusters, np.full(num_clusters, 1.0 / num_clusters), size=n_boot).astype(np.float64)


def cluster_bootstrap(values: np.ndarray, clusters: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, np.ndarray]:
    """Mean and percentile interval of each column of ``values`` ``(n, m)`` over cluster resamples.

    Returns ``{"mean": (m,), "low": (m,), "high": (m,)}``; with no rows all are NaN-free zeros
    and ``low == high == mean``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n, m = values.shape
    if n == 0:
        z = np.zeros(m)
        return {"mean": z, "low": z.copy(), "high": z.copy()}
    labels, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.zeros((len(labels), m))
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=len(labels)).astype(np.float64)
    mean = values.mean(0)
    if n_boot <= 0:
        return {"mean": mean, "low": mean.copy(), "high": mean.copy()}
    w = bootstrap_weights(len(labels), n_boot, seed)
    replicates = (w @ sums) / (w @ counts)[:, None]  # every row of w sums to U >= 1, counts >= 1
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha], axis=0)
    return {"mean": mean, "low": low, "high": high}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof=0), min, max and max - min of a metric over shuffles."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "spread": 0.0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "spread": float(v.max() - v.min())}
