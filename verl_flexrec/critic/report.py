"""The comparison report: a markdown table, a reliability plot and ``metrics.json``.

:func:`format_report` renders :func:`verl_flexrec.critic.evaluate.compare_fillers`'s result as
markdown (the table ``python -m verl_flexrec.critic evaluate`` prints and ``report.md`` holds);
:func:`plot_reliability` draws coverage and variance reliability for every filler;
:func:`write_report` writes all three atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_text_atomic
from .evaluate import LEVELS, coverage_curve, variance_bins

__all__ = ["format_report", "plot_reliability", "write_report"]


def _ci(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def _signed(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def format_report(report: dict, title: str = "") -> str:
    """Markdown: the filler table, variance information, breakdowns and the critic's goals."""
    f, ref = report["fillers"], report.get("reference")
    b = report["bootstrap"]
    lines = [f"## {title}" if title else "## Held-out comparison", ""]
    lines.append(
        f"{report['n']:,} held-out points of {report['users']:,} users; "
        f"{int(b['level'] * 100)} % intervals: bootstrap over users ({b['n_boot']} replicates, paired)."
    )
    lines.append("")
    diff_head = f" | NLL - {ref}" if ref else ""
    lines.append(f"| filler | NLL | RMSE | MAE | cov 50 % | cov 90 % | mean z² | knob{diff_head} |")
    lines.append("|---|---|---|---|---|---|---|---" + ("|---|" if ref else "|"))
    order = sorted(f, key=lambda n: (n != ref, f[n]["metrics"]["nll"]["mean"]))
    for name in order:
        m, info = f[name]["metrics"], f[name].get("info", {})
        knob = ", ".join(f"{k}={v:g}" for k, v in info.items() if k in ("reg", "k") and v is not None) or "—"
        row = (f"| {name} | {_ci(m['nll'])} | {_ci(m['rmse'])} | {m['mae']['mean']:.3f} | "
               f"{m['coverage_50']['mean']:.3f} | {m['coverage_90']['mean']:.3f} | {m['mean_z2']['mean']:.2f} | {knob}")
        if ref:
            d = f[name]["vs_reference"].get("nll_diff")
            row += f" | {_signed(d)}" if d else " | —"
        lines.append(row + " |")
    lines += ["", "### Does the variance carry information?", ""]
    lines.append("| filler | NLL gain vs best constant variance | shape-only gain | Spearman(σ², err²) | "
                 "RMSE top / bottom σ² decile |")
    lines.append("|---|---|---|---|---|")
    for name in order:
        v = f[name]["variance_information"]
        if v is None:
            lines.append(f"| {name} | — (one constant variance) | — | — | — |")
            continue
        verdict = "" if v["nll_gain_vs_constant_var_ci"]["low"] > 0 else " (does NOT beat a constant)"
        lines.append(
            f"| {name} | {_signed(v['nll_gain_vs_constant_var_ci'])}{verdict} | {v['nll_gain_shape']:+.3f} | "
            f"{v['spearman']:.3f} | {v['rmse_top_decile']:.3f} / {v['rmse_bottom_decile']:.3f} "
            f"(×{v['top_bottom_ratio']:.2f}) |"
        )
    for kind, parts in report.get("groups", {}).items():
        if not parts:
            continue
        names = order
        lines += ["", f"### NLL (RMSE) by {kind.replace('_', ' ')}", ""]
        lines.append("| group | n | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for label, per in parts.items():
            n = next(iter(per.values()))["n"]
            cells = [f"{per[nm]['nll']:.3f} ({per[nm]['rmse']:.3f})" for nm in names]
            lines.append(f"| {label} | {n:,} | " + " | ".join(cells) + " |")
    goal = report.get("goal")
    if goal:
        lines += ["", f"### Goals for `{ref}`", ""]
        g = goal.get("nll_below_best_baseline")
        if g:
            lines.append(f"- NLL below the best baseline ({g['best_baseline']}), CI of the margin excluding 0: "
                         f"{'met' if g['met'] else 'NOT met'} (margin {_signed(g['margin'])})")
        g = goal.get("rmse_not_worse_than_bias")
        if g:
            lines.append(f"- RMSE no worse than the bias model: {'met' if g['met'] else 'NOT met'} "
                         f"(bias − {ref} {_signed(g['bias_minus_critic'])})")
        g = goal["coverage_within_3_points"]
        lines.append(f"- 50 % / 90 % coverage within ±3 points: {'met' if g['met'] else 'NOT met'} "
                     f"({g['coverage_50']:.3f} / {g['coverage_90']:.3f})")
        g = goal["variance_beats_constant"]
        lines.append(f"- its variance beats a constant variance (NLL): {'met' if g['met'] else 'NOT met'}"
                     + (f" (gain {_signed(g['gain'])})" if g["gain"] else " (its variance is constant)"))
    return "\n".join(lines) + "\n"


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path,
                     title: str = "") -> Path:
    """Two-panel reliability PNG for ``{label: (y, mean, var)}``; written atomically.

    Left: observed vs nominal coverage of central intervals (5..95 %); right: empirical RMSE vs
    predicted std in deciles of the predicted std. Both lie on the diagonal when calibrated; a
    flat right-hand curve means the variance does not rank the errors.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax1.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    lo, hi = np.inf, 0.0
    for label, (y, mean, var) in curves.items():
        if not len(y):
            continue
        ax1.plot(LEVELS, coverage_curve(y, mean, var), "o-", ms=3, label=label)
        sd, rmse = variance_bins(y, mean, var)
        ax2.plot(sd, rmse, "o-", ms=3 if len(sd) > 1 else 7, label=label)
        lo, hi = min(lo, float(sd.min()), float(rmse.min())), max(hi, float(sd.max()), float(rmse.max()))
    ax1.set(xlabel="nominal central-interval level", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1),
            title="interval coverage")
    if hi > 0:
        ax2.plot([lo, hi], [lo, hi], "k--", lw=1, label="ideal")
    ax2.set(xlabel="predicted std (decile mean)", ylabel="empirical RMSE", title="variance reliability")
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
    """``metrics.json``, ``report.md`` and ``reliability.png`` in ``out_dir`` (each atomic)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_reliability(report["_arrays"], out_dir / "reliability.png", title=title)
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    js, md = out_dir / "metrics.json", out_dir / "report.md"
    write_text_atomic(js, json.dumps(clean, indent=2, default=float))
    write_text_atomic(md, format_report(report, title))
    return {"metrics": str(js), "report": str(md), "plot": str(png)}
