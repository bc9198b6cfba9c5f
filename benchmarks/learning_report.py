"""Summaries, tables, plot and JSON of the learning benchmark (``benchmarks/learning_dynamics.py``).

Per arm and seed: AUC of the test NDCG@5 curve, final value (mean of the last ``TRAIL``
evaluations), steps to the baseline's final value (3-point trailing mean), collapse; then the
95 % t-interval over seeds and the paired differences against the setting's baseline
(:mod:`sim.stats`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sim import stats

__all__ = ["TRAIL", "dump_json", "markdown_report", "plot", "print_table", "summarise"]

TRAIL = 3  # evaluations averaged for "final" values and threshold crossings


def summarise(setting, runs: dict, seeds) -> dict:
    """Statistics of one setting (a ``learning_dynamics.Setting``) from its arms' per-seed curves."""
    base = runs[setting.baseline]
    steps = np.asarray(base["step"])
    final_of = lambda r: np.asarray(r["ndcg@5"])[:, -TRAIL:].mean(1)
    threshold = final_of(base)
    budget = float(steps[-1])
    arms = {}
    for name, r in runs.items():
        nd = np.asarray(r["ndcg@5"])
        auc = stats.auc(steps, nd)
        final = final_of(r)
        reach = stats.steps_to_threshold(steps, stats.trailing_mean(nd, TRAIL), threshold)
        censored = np.where(np.isfinite(reach), reach, budget + (steps[1] - steps[0]))  # never reached: a lower bound
        start = nd[:, 0]
        valid_end = np.asarray(r["valid_ratio"])[:, -1]
        collapsed = (final < start) | (valid_end < 0.9)
        e = {
            "seeds": list(seeds),
            "step": steps.tolist(),
            "curves": {k: r[k] for k in ("ndcg@5", "recall@5", "valid_ratio", "train_ndcg")},
            "final_ndcg@5": stats.mean_ci(final),
            "final_recall@5": stats.mean_ci(np.asarray(r["recall@5"])[:, -TRAIL:].mean(1)),
            "auc": stats.mean_ci(auc) | {"per_seed": auc.tolist()},
            "steps_to_threshold": stats.mean_ci(censored)
            | {"per_seed": [None if not np.isfinite(x) else float(x) for x in reach], "reached": int(np.isfinite(reach).sum())},
            "final_valid_ratio": stats.mean_ci(valid_end),
            "collapse_rate": float(collapsed.mean()),
        }
        if name != setting.baseline:
            b = runs[setting.baseline]
            b_reach = stats.steps_to_threshold(steps, stats.trailing_mean(np.asarray(b["ndcg@5"]), TRAIL), threshold)
            b_cens = np.where(np.isfinite(b_reach), b_reach, budget + (steps[1] - steps[0]))
            e[f"vs_{setting.baseline}"] = {
                "auc": stats.paired(auc, stats.auc(steps, np.asarray(b["ndcg@5"]))),
                "final_ndcg@5": stats.paired(final, threshold),
                "steps_to_threshold": stats.paired(censored, b_cens),
            }
        if "c_error" in r:
            ce = r["c_error"]
            e["c_vs_abs_error"] = {
                "pooled": stats.mean_ci(ce["pooled_per_seed"]) | {"per_seed": ce["pooled_per_seed"]},
                "within_group": stats.mean_ci(ce["within_group_per_seed"]) | {"per_seed": ce["within_group_per_seed"]},
            }
        arms[name] = e
    return {
        "K": setting.K,
        "group": setting.group,
        "sparse": setting.sparse,
        "baseline": setting.baseline,
        "note": setting.note,
        "threshold_per_seed": threshold.tolist(),
        "arm_configs": {a.name: asdict(a) | {"effective": a.effective_options()} for a in setting.arms},
        "arms": arms,
    }


def _fmt(ci: dict, digits: int = 3) -> str:
    return f"{ci['mean']:.{digits}f} ± {ci['ci95']:.{digits}f}"


def print_table(name: str, summary: dict) -> None:
    b = summary["baseline"]
    print(f"\n[{name}] K={summary['K']} group={summary['group']}  ({summary['note']}); baseline {b}")
    print(f"{'arm':26s} {'final NDCG@5':>16s} {'AUC NDCG@5':>16s} {'Δ AUC vs ' + b:>22s} {'steps to thr':>16s} {'reached':>7s} {'valid':>6s} {'collapse':>8s}")
    for arm, e in summary["arms"].items():
        d = e.get(f"vs_{b}", {}).get("auc")
        dd = f"{d['mean']:+.3f} ± {d['ci95']:.3f}{' *' if d['separates'] else '  '}" if d else "-"
        st = e["steps_to_threshold"]
        print(
            f"{arm:26s} {_fmt(e['final_ndcg@5']):>16s} {_fmt(e['auc']):>16s} {dd:>22s} {_fmt(st, 0):>16s} "
            f"{st['reached']:>4d}/{len(e['seeds'])} {e['final_valid_ratio']['mean']:6.3f} {e['collapse_rate']:8.2f}"
        )
        if "c_vs_abs_error" in e:
            c = e["c_vs_abs_error"]
            print(f"{'':26s} corr(c, |reward error|): pooled {_fmt(c['pooled'])}, within group {_fmt(c['within_group'])}")


def _md_ci(ci: dict, digits: int = 3, signed: bool = False) -> str:
    if ci.get("mean") is None:
        return "—"
    sign = "+" if signed else ""
    half = "—" if ci.get("ci95") is None else f"{ci['ci95']:.{digits}f}"
    return f"{ci['mean']:{sign}.{digits}f} ± {half}"


def markdown_report(results: dict) -> str:
    """The results as markdown tables (docs/benchmarks.md), one per setting; ``*`` marks a paired
    difference whose 95 % interval excludes 0."""
    out = []
    for name, s in results["settings"].items():
        b = s["baseline"]
        out.append(f"**{name}** (K={s['K']}, group={s['group']}; {s['note']}; Δ = paired difference vs `{b}`)\n")
        cols = ["arm", "final NDCG@5", "AUC NDCG@5", "Δ AUC", "steps to threshold (reached)", "Δ steps", "final valid", "collapse"]
        extra = s["sparse"]
        if extra:
            cols += ["corr(c, \\|err\\|) pooled", "within group"]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for arm, e in s["arms"].items():
            vs = e.get(f"vs_{b}")
            mark = lambda d: (" *" if d["separates"] else "") if d else ""
            st = e["steps_to_threshold"]
            row = [
                f"`{arm}`",
                _md_ci(e["final_ndcg@5"]),
                _md_ci(e["auc"]),
                (_md_ci(vs["auc"], signed=True) + mark(vs["auc"])) if vs else "—",
                f"{_md_ci(st, 0)} ({st['reached']}/{len(e['seeds'])})",
                (_md_ci(vs["steps_to_threshold"], 0, signed=True) + mark(vs["steps_to_threshold"])) if vs else "—",
                f"{e['final_valid_ratio']['mean']:.3f}",
                f"{e['collapse_rate']:.2f}",
            ]
            if extra:
                c = e.get("c_vs_abs_error")
                row += [_md_ci(c["pooled"], 2, True), _md_ci(c["within_group"], 2, True)] if c else ["—", "—"]
            out.append("| " + " | ".join(row) + " |")
        ref = "flexrec_causal"
        if ref in s["arms"] and ref != b and len(s["arms"]) > 2:
            out.append("")
            out.append(f"Paired against `{ref}` (same seeds): Δ AUC NDCG@5, Δ final NDCG@5, Δ final valid ratio\n")
            out.append("| arm | Δ AUC | Δ final NDCG@5 | Δ final valid |")
            out.append("|---|---|---|---|")
            r = s["arms"][ref]
            for arm, e in s["arms"].items():
                if arm in (ref, b):
                    continue
                cells = []
                for get in (
                    lambda x: x["auc"]["per_seed"],
                    lambda x: [np.mean(c[-TRAIL:]) for c in x["curves"]["ndcg@5"]],
                    lambda x: [c[-1] for c in x["curves"]["valid_ratio"]],
                ):
                    d = stats.paired(get(e), get(r))
                    cells.append(_md_ci(d, signed=True) + (" *" if d["separates"] else ""))
                out.append(f"| `{arm}` | " + " | ".join(cells) + " |")
        if s.get("filler_quality"):
            out.append("")
            out.append("| filler | RMSE | bias | per-category bias sd | corr(sd, \\|err\\|) | fit s |")
            out.append("|---|---|---|---|---|---|")
            for f, q in s["filler_quality"].items():
                out.append(f"| {f} | " + " | ".join(_md_ci(q[k], 3 if k != "fit_s" else 1) for k in ("rmse", "bias", "category_bias_sd", "corr_sd_abs_error", "fit_s")) + " |")
        out.append("")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["settings"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        s = results["settings"][name]
        for arm, e in s["arms"].items():
            x = np.asarray(e["step"])
            y = np.asarray(e["curves"]["ndcg@5"])
            m = y.mean(0)
            half = np.array([stats.mean_ci(col)["ci95"] for col in y.T])
            base = arm == s["baseline"]
            ax.plot(x, m, label=arm, lw=2.2 if base else 1.3, ls="--" if base else "-")
            if np.isfinite(half).all():
                ax.fill_between(x, m - half, m + half, alpha=0.12)
        ax.set_title(f"{name} (K={s['K']}, G={s['group']}): test NDCG@5, mean ± 95% CI, {len(e['seeds'])} seeds", fontsize=9)
        ax.set_xlabel("policy update step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _json_safe(x):
    """NaN / inf (an undefined correlation, a CI of one value) as JSON null; floats to 6 significant digits."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.6g}") if np.isfinite(x) else None
    return x


def dump_json(results: dict) -> str:
    """Indented JSON whose innermost lists of numbers (curves) stay on one line."""
    text = json.dumps(_json_safe(results), indent=1, allow_nan=False)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?|[-+0-9.eE,\snul]+?)\s+\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
