"""Calibration report: NLL, RMSE, interval coverage and a reliability plot for a filler.

Metrics on held-out observed rewards ``y`` with Gaussian predictions ``(mean, var)``:

- ``nll``: mean Gaussian negative log-likelihood (nats, including ``0.5 log 2 pi``);
- ``rmse``, ``mae`` of the mean;
- ``coverage_50`` / ``coverage_90``: share of ``y`` inside the central 50 % / 90 % predictive
  interval (well calibrated: 0.5 / 0.9);
- ``mean_z2``: mean squared standardised error (1 when the variance is right on average);
- the same for the constant predictor (training mean and variance), the baseline to beat.

The PNG has two panels: expected vs observed coverage of central intervals at levels 5..95 %,
and RMSE vs predicted standard deviation in quantile bins (both on the diagonal when calibrated).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, write_text_atomic
from .data import Interactions

__all__ = ["coverage_curve", "evaluate_filler", "gaussian_metrics", "plot_reliability", "write_report"]

LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)


def _z_quantile(p: np.ndarray | float) -> np.ndarray:
    """Standard normal quantile (scipy-free: ``sqrt(2) erfinv(2p - 1)`` via torch)."""
    import torch

    return (math.sqrt(2.0) * torch.erfinv(torch.as_tensor(2 * np.asarray(p, dtype=np.float64) - 1))).numpy()


def coverage_curve(y, mean, var, levels=LEVELS) -> np.ndarray:
    """Observed share of ``y`` inside the central interval of each level."""
    z = np.abs(np.asarray(y) - np.asarray(mean)) / np.sqrt(np.asarray(var))
    half = _z_quantile(0.5 + np.asarray(levels) / 2)
    return (z[None, :] <= half[:, None]).mean(1) if len(z) else np.full(len(levels), np.nan)


def gaussian_metrics(y, mean, var) -> dict:
    y, mean, var = (np.asarray(a, dtype=np.float64) for a in (y, mean, var))
    if not len(y):
        return {"n": 0}
    var = np.maximum(var, 1e-12)
    err = y - mean
    cov = coverage_curve(y, mean, var, [0.5, 0.9])
    return {
        "n": int(len(y)),
        "nll": float(np.mean(0.5 * (np.log(2 * np.pi * var) + err**2 / var))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "coverage_50": float(cov[0]),
        "coverage_90": float(cov[1]),
        "mean_z2": float(np.mean(err**2 / var)),
        "mean_var": float(np.mean(var)),
    }


def variance_bins(y, mean, var, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted std, empirical RMSE) in quantile bins of the predicted std."""
    sd = np.sqrt(np.asarray(var))
    err2 = (np.asarray(y) - np.asarray(mean)) ** 2
    if len(sd) < bins:
        bins = max(1, len(sd))
    order = np.argsort(sd)
    groups = np.array_split(order, bins)
    return (
        np.array([sd[g].mean() for g in groups if len(g)]),
        np.array([math.sqrt(err2[g].mean()) for g in groups if len(g)]),
    )


def evaluate_filler(
    filler: Any,
    inter: Interactions,
    *,
    baseline: dict | None = None,
    exclude_train: bool = True,
    label: str | None = None,
) -> dict:
    """Metrics of ``filler`` on ``inter`` (optionally without pairs it trained on), by subset."""
    users, items = inter.user_ids, inter.item_ids
    keep = np.ones(len(inter), dtype=bool)
    if exclude_train and hasattr(filler, "seen_in_training"):
        keep = ~filler.seen_in_training(users, items)
    sub = inter.subset(keep)
    cats = [inter.item_categories.get(i) for i in sub.item_ids] if inter.item_categories else None
    if cats is not None and any(c is None for c in cats):
        cats = None  # let the filler use its own catalogue
    mean, var = filler.predict(sub.user_ids, sub.item_ids, need=sub.needs, categories=cats)
    y = sub.interest
    report: dict = {
        "points_in_data": int(len(inter)),
        "points_excluded_as_training": int((~keep).sum()),
        "filler": label or type(filler).__name__,
        "metrics": gaussian_metrics(y, mean, var),
        "coverage_curve": {f"{lv:.2f}": float(c) for lv, c in zip(LEVELS, coverage_curve(y, mean, var))},
    }
    if baseline is not None:
        bm = np.full(len(y), float(baseline["mean"]))
        bv = np.full(len(y), float(baseline["var"]))
        report["baseline_constant"] = gaussian_metrics(y, bm, bv)
        report["_baseline"] = {"mean": float(baseline["mean"]), "var": float(baseline["var"])}
    if hasattr(filler, "users") and hasattr(filler, "items"):
        seen_u = np.array([u in filler.users for u in sub.user_ids], dtype=bool)
        seen_i = np.array([i in filler.items for i in sub.item_ids], dtype=bool)
        groups = {
            "known_user_known_item": seen_u & seen_i,
            "unseen_user": ~seen_u,
            "unseen_item": ~seen_i,
        }
        report["by_group"] = {k: gaussian_metrics(y[m], mean[m], var[m]) for k, m in groups.items()}
    report["_arrays"] = (y, mean, var)
    return report


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Two-panel reliability PNG for ``{label: (y, mean, var)}``; written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    ax1.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    top = 0.0
    for label, (y, mean, var) in curves.items():
        if not len(y):
            continue
        ax1.plot(LEVELS, coverage_curve(y, mean, var), "o-", ms=3, label=label)
        sd, rmse = variance_bins(y, mean, var)
        ax2.plot(sd, rmse, "o-", ms=3, label=label)
        top = max(top, float(sd.max()), float(rmse.max()))
    ax1.set(
        xlabel="nominal central-interval level",
        ylabel="observed coverage",
        xlim=(0, 1),
        ylim=(0, 1),
        title="interval coverage",
    )
    ax2.plot([0, top or 1], [0, top or 1], "k--", lw=1, label="ideal")
    ax2.set(xlabel="predicted std (bin mean)", ylabel="empirical RMSE", title="variance reliability")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def write_report(report: dict, out_dir: str | Path, *, title: str = "") -> dict[str, str]:
    """``metrics.json`` + ``reliability.png`` in ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y, mean, var = report["_arrays"]
    curves = {report.get("filler", "filler"): (y, mean, var)}
    b = report.get("_baseline")
    if b is not None and len(y):
        curves["constant"] = (y, np.full(len(y), b["mean"]), np.full(len(y), b["var"]))
    png = plot_reliability(curves, out_dir / "reliability.png", title=title)
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    js = out_dir / "metrics.json"
    write_text_atomic(js, json.dumps(clean, indent=2, sort_keys=False))
    return {"metrics": str(js), "plot": str(png)}
