"""Held-out comparison of fillers: Gaussian metrics, variance information, breakdowns, bootstrap CIs.

Every filler (the critic and the baselines of :mod:`.baselines`) predicts a Gaussian ``(mean,
var)`` for the same held-out observed points ``y``. Per filler:

- ``nll``: mean Gaussian negative log-likelihood (nats, with ``0.5 log 2 pi``); ``rmse``, ``mae``;
- ``coverage_50`` / ``coverage_90``: share of ``y`` inside the central 50 % / 90 % interval
  (calibrated: 0.5 / 0.9); ``mean_z2``: mean squared standardised error (1 when calibrated);
- ``vs_reference``: ``nll`` and ``rmse`` of the filler minus the reference's (the critic), paired.

**Variance information** (:func:`variance_information`) -- does the predicted variance say which
fills are unreliable, or only how unreliable they are on average?

- ``nll_gain_vs_constant_var``: NLL with the best *single* variance in hindsight for the same
  means (``c* = mean((y - mean)^2)`` on these points, the constant no other constant beats) minus
  the NLL with the filler's own variance. > 0: its variance, as it is, beats any constant one.
- ``nll_gain_shape``: the same with the filler's variance also rescaled in hindsight
  (``var * mean(z^2)``): the information in the variance's *shape*, calibration aside.
- ``spearman``: rank correlation of predicted ``var`` with the squared error.
- ``rmse_top_decile`` / ``rmse_bottom_decile``: RMSE of the 10 % of points with the largest /
  smallest predicted variance, and their ratio (1 = the ranking says nothing).

A filler whose variance is one constant has none of these (``None``).

**Intervals**: percentile bootstrap over users (:func:`verl_flexrec.evaluate.stats.bootstrap_weights`,
the replicates every ranking evaluation uses), paired: all fillers share the replicates, so a
difference's interval accounts for their correlation. **Breakdowns**: known / cold user and item
(relative to the training data) and time since the row's training cut-off when the data has it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .data import Interactions

__all__ = [
    "LEVELS",
    "compare_fillers",
    "coverage_curve",
    "gaussian_metrics",
    "variance_bins",
    "variance_information",
]

LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)
TIME_BINS = ((0.0, "< 1 day"), (86400.0, "1-7 days"), (7 * 86400.0, "7-30 days"), (30 * 86400.0, "> 30 days"))


def _z_quantile(p) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(np.asarray(p, dtype=np.float64))


def coverage_curve(y, mean, var, levels=LEVELS) -> np.ndarray:
    """Observed share of ``y`` inside the central interval of each level."""
    z = np.abs(np.asarray(y) - np.asarray(mean)) / np.sqrt(np.asarray(var))
    half = _z_quantile(0.5 + np.asarray(levels) / 2)
    return (z[None, :] <= half[:, None]).mean(1) if len(z) else np.full(len(levels), np.nan)


def _pointwise(y, mean, var) -> dict[str, np.ndarray]:
    y, mean, var = (np.asarray(a, dtype=np.float64) for a in (y, mean, var))
    var = np.maximum(var, 1e-12)
    err2 = (y - mean) ** 2
    z = np.sqrt(err2 / var)
    half50, half90 = _z_quantile([0.75, 0.95])
    return {
        "nll": 0.5 * (np.log(2 * np.pi * var) + err2 / var),
        "mse": err2,
        "mae": np.sqrt(err2),
        "coverage_50": (z <= half50).astype(np.float64),
        "coverage_90": (z <= half90).astype(np.float64),
        "mean_z2": z**2,
    }


def gaussian_metrics(y, mean, var) -> dict:
    """Point estimates: n, nll, rmse, mae, coverage_50/90, mean_z2, mean_var."""
    if not len(y):
        return {"n": 0}
    p = {k: float(v.mean()) for k, v in _pointwise(y, mean, var).items()}
    return {"n": int(len(y)), "nll": p["nll"], "rmse": math.sqrt(p["mse"]), "mae": p["mae"],
            "coverage_50": p["coverage_50"], "coverage_90": p["coverage_90"], "mean_z2": p["mean_z2"],
            "mean_var": float(np.mean(var))}


def variance_bins(y, mean, var, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted std, empirical RMSE) in quantile bins of the predicted std (one bin when
    the variance is constant: any split of it would be arbitrary)."""
    sd = np.sqrt(np.asarray(var))
    err2 = (np.asarray(y) - np.asarray(mean)) ** 2
    bins = max(1, min(bins, len(sd))) if _has_own_variance(var) else 1
    groups = [g for g in np.array_split(np.argsort(sd, kind="stable"), bins) if len(g)]
    return np.array([sd[g].mean() for g in groups]), np.array([math.sqrt(err2[g].mean()) for g in groups])


def _has_own_variance(var) -> bool:
    var = np.asarray(var, dtype=np.float64)
    return len(var) > 1 and float(var.max() - var.min()) > 1e-9 * max(1.0, float(abs(var).max()))


def variance_information(y, mean, var) -> dict | None:
    """Point estimates of the variance-information figures (module doc); None for a constant variance."""
    if not _has_own_variance(var) or len(y) < 10:
        return None
    from scipy.stats import spearmanr

    y, mean, var = (np.asarray(a, dtype=np.float64) for a in (y, mean, var))
    err2 = (y - mean) ** 2
    c = max(float(err2.mean()), 1e-12)
    s = float(np.mean(err2 / var))
    nll_own = float(np.mean(0.5 * (np.log(2 * np.pi * var) + err2 / var)))
    nll_const = 0.5 * math.log(2 * math.pi * c) + 0.5
    nll_shape = float(np.mean(0.5 * (np.log(2 * np.pi * var * s) + err2 / (var * s))))
    order = np.argsort(var, kind="stable")
    k = max(1, len(y) // 10)
    bottom, top = math.sqrt(err2[order[:k]].mean()), math.sqrt(err2[order[-k:]].mean())
    return {
        "nll_gain_vs_constant_var": nll_const - nll_own,
        "nll_gain_shape": nll_const - nll_shape,
        "spearman": float(spearmanr(var, err2).statistic),
        "rmse_top_decile": top,
        "rmse_bottom_decile": bottom,
        "top_bottom_ratio": top / bottom if bottom > 0 else math.inf,
    }


class _Bootstrap:
    """Paired percentile bootstrap over users of means of pointwise columns."""

    def __init__(self, users: np.ndarray, n_boot: int, seed: int, level: float):
        from ..evaluate.stats import bootstrap_weights

        self.labels, self.codes = np.unique(np.asarray(users).astype(str), return_inverse=True)
        self.counts = np.bincount(self.codes, minlength=len(self.labels)).astype(np.float64)
        self.w = bootstrap_weights(len(self.labels), n_boot, seed) if n_boot > 0 else None
        self.alpha = (1 - level) / 2

    def replicates(self, values: np.ndarray) -> np.ndarray:
        """``(n_boot,)`` replicate means of ``values (n,)`` (the point estimate alone when n_boot = 0)."""
        if self.w is None:
            return np.array([values.mean()])
        sums = np.bincount(self.codes, weights=values, minlength=len(self.labels))
        return (self.w @ sums) / (self.w @ self.counts)

    def interval(self, point: float, reps: np.ndarray) -> dict:
        low, high = np.quantile(reps, [self.alpha, 1 - self.alpha]) if self.w is not None else (point, point)
        return {"mean": float(point), "low": float(low), "high": float(high)}


def _with_ci(boot: _Bootstrap, pw: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray] | None) -> tuple[dict, dict]:
    reps = {k: boot.replicates(v) for k, v in pw.items()}
    point = {k: float(v.mean()) for k, v in pw.items()}
    out = {k: boot.interval(point[k], reps[k]) for k in ("nll", "mae", "coverage_50", "coverage_90", "mean_z2")}
    out["rmse"] = boot.interval(math.sqrt(point["mse"]), np.sqrt(reps["mse"]))
    diff = {}
    if ref is not None:
        r_nll, r_mse = boot.replicates(ref["nll"]), boot.replicates(ref["mse"])
        diff["nll_diff"] = boot.interval(point["nll"] - float(ref["nll"].mean()), reps["nll"] - r_nll)
        diff["rmse_diff"] = boot.interval(
            math.sqrt(point["mse"]) - math.sqrt(float(ref["mse"].mean())), np.sqrt(reps["mse"]) - np.sqrt(r_mse)
        )
    return out, diff


def _variance_gain_ci(boot: _Bootstrap, pw: Mapping[str, np.ndarray], info: dict) -> dict:
    """Bootstrap interval of ``nll_gain_vs_constant_var`` (the hindsight constant recomputed per replicate)."""
    mse, nll = boot.replicates(pw["mse"]), boot.replicates(pw["nll"])
    reps = 0.5 * np.log(2 * np.pi * np.maximum(mse, 1e-12)) + 0.5 - nll
    return boot.interval(info["nll_gain_vs_constant_var"], reps)


def _groups(test: Interactions, known_users, known_items) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    if known_users is not None:
        ku = np.array([u in known_users for u in test.user_ids], dtype=bool)
        out["user"] = {"known": ku, "cold": ~ku}
    if known_items is not None:
        ki = np.array([i in known_items for i in test.item_ids], dtype=bool)
        out["item"] = {"known": ki, "cold": ~ki}
    since = test.timestamps - test.cutoffs
    if len(since) and np.isfinite(since).all():
        edges = [lo for lo, _ in TIME_BINS] + [math.inf]
        out["time_since_cutoff"] = {
            name: (since >= lo) & (since < hi) for (lo, name), hi in zip(TIME_BINS, edges[1:])
        }
    return out


def compare_fillers(
    fillers: Mapping[str, Any],
    test: Interactions,
    *,
    reference: str | None = None,
    known_users=None,
    known_items=None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    not_baselines: tuple[str, ...] = (),
) -> dict:
    """Score every filler on the same points of ``test``; see the module doc for the figures.

    ``known_users`` / ``known_items`` (sets of ids in the training data) define the cold groups;
    ``not_baselines`` are scored but are no competitors in the goals (e.g. a simulator's truth).
    Returns a JSON-able dict plus ``_arrays`` (``{name: (y, mean, var)}``) for plots.
    """
    if not len(test):
        raise ValueError("no held-out points to evaluate on")
    reference = reference if reference in fillers else None
    cats = [test.item_categories.get(i) for i in test.item_ids] if test.item_categories else None
    if cats is not None and any(c is None for c in cats):
        cats = None  # let each filler use its own catalogue
    y = test.interest
    preds = {}
    for name, f in fillers.items():
        mean, var = f.predict(test.user_ids, test.item_ids, need=test.needs, categories=cats)
        mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
        if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var > 0).all()):
            raise ValueError(f"filler {name!r} returned non-finite means or non-positive variances")
        preds[name] = (mean, var)
    boot = _Bootstrap(test.user_ids, n_boot, seed, level)
    pws = {name: _pointwise(y, *p) for name, p in preds.items()}
    report: dict = {
        "n": int(len(y)),
        "users": int(len(boot.labels)),
        "reference": reference,
        "bootstrap": {"unit": "user", "n_boot": int(n_boot), "level": level, "seed": seed},
        "fillers": {},
    }
    for name, (mean, var) in preds.items():
        ref = pws[reference] if reference is not None and name != reference else None
        metrics, diff = _with_ci(boot, pws[name], ref)
        info = variance_information(y, mean, var)
        if info is not None:
            info["nll_gain_vs_constant_var_ci"] = _variance_gain_ci(boot, pws[name], info)
        report["fillers"][name] = {
            "metrics": metrics,
            "vs_reference": diff,
            "variance_information": info,
            "coverage_curve": {f"{lv:.2f}": float(c) for lv, c in zip(LEVELS, coverage_curve(y, mean, var))},
            **({"info": dict(fillers[name].info)} if hasattr(fillers[name], "info") else {}),
        }
    report["groups"] = {
        kind: {
            label: {name: gaussian_metrics(y[m], preds[name][0][m], preds[name][1][m]) for name in preds}
            for label, m in parts.items() if m.any()
        }
        for kind, parts in _groups(test, known_users, known_items).items()
    }
    if reference is not None:
        report["goal"] = _goal(report, reference, set(not_baselines))
    report["_arrays"] = {name: (y, *p) for name, p in preds.items()}
    return report


def _goal(report: dict, ref: str, skip: set[str]) -> dict:
    """The critic's targets on real data: each a bool with the numbers it rests on."""
    f = report["fillers"]
    others = {n: v for n, v in f.items() if n != ref and n not in skip}
    out: dict = {}
    if others:
        best = min(others, key=lambda n: others[n]["metrics"]["nll"]["mean"])
        d = others[best]["vs_reference"]["nll_diff"]  # best baseline - critic: > 0 means the critic is better
        out["nll_below_best_baseline"] = {"best_baseline": best, "margin": d, "met": d["low"] > 0}
    if "bias" in f:
        d = f["bias"]["vs_reference"]["rmse_diff"]
        out["rmse_not_worse_than_bias"] = {"bias_minus_critic": d, "met": d["mean"] >= 0}
    m = f[ref]["metrics"]
    c50, c90 = m["coverage_50"]["mean"], m["coverage_90"]["mean"]
    out["coverage_within_3_points"] = {"coverage_50": c50, "coverage_90": c90,
                                       "met": abs(c50 - 0.5) <= 0.03 and abs(c90 - 0.9) <= 0.03}
    info = f[ref]["variance_information"]
    out["variance_beats_constant"] = {
        "gain": info["nll_gain_vs_constant_var_ci"] if info else None,
        "met": bool(info and info["nll_gain_vs_constant_var_ci"]["low"] > 0),
    }
    return out
