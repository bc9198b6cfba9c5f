"""Per-seed learning-curve statistics: area under the curve, steps to a threshold, t intervals.

Every statistic is computed per seed first, then summarised over seeds with a two-sided 95 %
Student-t interval of the mean; a comparison between two arms is the t interval of the per-seed
*paired* differences (same seed = same world, same initial policy, same prompts).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["auc", "mean_ci", "paired", "pearson", "steps_to_threshold", "trailing_mean"]


def auc(steps, curve) -> np.ndarray:
    """Normalised area under each curve ``(..., T)`` over ``steps (T,)`` (trapezoids): the curve's
    average value over training, in the metric's own units."""
    steps = np.asarray(steps, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    return np.trapezoid(curve, steps, axis=-1) / (steps[-1] - steps[0])


def trailing_mean(curve, window: int) -> np.ndarray:
    """Mean of the last ``window`` points up to each point (fewer at the start), along the last axis."""
    c = np.asarray(curve, dtype=np.float64)
    cs = np.cumsum(c, -1)
    out = cs.copy()
    out[..., window:] = cs[..., window:] - cs[..., :-window]
    n = np.minimum(np.arange(1, c.shape[-1] + 1), window)
    return out / n


def steps_to_threshold(steps, curve, threshold) -> np.ndarray:
    """First step at which each curve ``(S, T)`` reaches its seed's ``threshold (S,)``; NaN if never."""
    curve = np.asarray(curve, dtype=np.float64)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), curve.shape[:-1])
    hit = curve >= thr[..., None] - 1e-12
    first = np.argmax(hit, -1)
    return np.where(hit.any(-1), np.asarray(steps, dtype=np.float64)[first], np.nan)


def mean_ci(x, level: float = 0.95) -> dict:
    """Mean and t-interval half-width over seeds of ``x (S,)``; NaNs (e.g. never reached) dropped
    and counted."""
    x = np.asarray(x, dtype=np.float64)
    ok = x[np.isfinite(x)]
    n = len(ok)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * ok.std(ddof=1) / np.sqrt(n)) if n >= 2 else float("nan")
    return {"mean": float(ok.mean()) if n else float("nan"), "ci95": half, "n": int(n)}


def paired(x, y, level: float = 0.95) -> dict:
    """Per-seed differences ``x - y``: mean, t-interval half-width, and whether the interval excludes 0."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    out = mean_ci(d, level)
    out["separates"] = bool(np.isfinite(out["ci95"]) and abs(out["mean"]) > out["ci95"])
    return out


def pearson(x, y) -> float:
    """Pearson correlation (NaN when either side is constant or too short)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
