"""Write an evaluation's results: ``results.json``, ``results.md`` (tables), ``results.png`` (bars).

The markdown leads with the overall table under the ``strict`` policy (invalid output = 0), then
the ``complete`` policy, per-need and per-dataset NDCG@10, the position-bias spread and notes.
Each cell is ``mean [95 % CI low, high]``; the first two rows are the exact random-ranking floor
and the oracle ceiling on the same rows, and the header names NDCG's gain function.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_path, write_text_atomic
from .metrics import METRICS

__all__ = ["markdown_report", "plot_results", "write_outputs"]

_LABELS = {"ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "ndcg@30": "NDCG@30", "recall@5": "Recall@5", "mrr@5": "MRR@5"}
_FLOOR = "random floor (expected)"
_CEILING = "oracle ceiling"


def _cell(stat: dict, ci: bool = True) -> str:
    if ci and stat["ci_high"] > stat["ci_low"]:
        return f"{stat['mean']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"
    return f"{stat['mean']:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _overall(results: dict, policy: str) -> list[str]:
    header = ["system", "ValidRatio", *(_LABELS[m] for m in METRICS)]
    rows = [[label, "–", *(f"{ref['overall'][m]:.3f}" for m in METRICS)] for label, ref in _references(results)]
    for name, s in results["systems"].items():
        o = s["overall"]
        rows.append([name, f"{o['valid_ratio']:.3f}", *(_cell(o[policy][m]) for m in METRICS)])
    return _table(header, rows)


def _breakdown(results: dict, key: str, metric: str = "ndcg@10") -> list[str]:
    groups = list(results["floor"][key])
    header = ["system", *groups]
    rows = [[label, *(f"{ref[key][g][metric]:.3f}" if g in ref[key] else "–" for g in groups)]
            for label, ref in _references(results)]
    for name, s in results["systems"].items():
        rows.append([name, *(_cell(s[key][g]["strict"][metric]) if g in s[key] else "–" for g in groups)])
    counts = ["rows (scored)", *(f"{_group_rows(results, key, g)}" for g in groups)]
    return _table(header, [*rows, counts])


def _references(results: dict) -> list[tuple[str, dict]]:
    """(label, values) of the reference rows every table starts with: floor, then ceiling."""
    out = [(_FLOOR, results["floor"])]
    if results.get("ceiling"):
        out.append((_CEILING, results["ceiling"]))
    return out


def _gain_line(meta: dict) -> str:
    gain = meta.get("gain", "linear")
    formula = "2^g − 1 of the need-specific gain g" if gain == "exponential" else "the need-specific gain itself"
    return (f"- **gain: {gain}** — NDCG's gain is {formula} (`--gain linear|exponential`); Recall@5 and MRR@5 "
            "do not depend on it")


def _group_rows(results: dict, key: str, group: str) -> str:
    for s in results["systems"].values():
        if group in s[key]:
            return f"{s[key][group]['rows']} ({s[key][group]['scored_rows']})"
    return "–"


def _bias(results: dict, metric: str = "ndcg@10") -> list[str]:
    header = ["system", "original order", "mean over orders", "std", "spread (max − min)",
              "spread, policy `complete`", "ValidRatio spread"]
    rows = []
    for name, s in results["systems"].items():
        b = s.get("position_bias")
        if not b:
            continue
        st, co = b["strict"][metric], b["complete"][metric]
        rows.append([name, f"{st['per_order'][0]:.4f}", f"{st['mean']:.4f}", f"{st['std']:.4f}", f"{st['spread']:.4f}",
                     f"{co['spread']:.4f}", f"{b['valid_ratio']['spread']:.3f}"])
    return _table(header, rows) if rows else []


def markdown_report(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# FlexRec evaluation",
        "",
        f"- data: `{meta['data']}` — {meta['rows']} rows ({meta['scored_rows']} with a positive gain are scored), "
        f"{meta['users']} users, needs: {', '.join(meta['needs'])}, datasets: {', '.join(meta['datasets'])}, "
        f"candidates per row: {meta['candidates_per_row']}",
        *([f"- a random sample of {meta['sample']} rows of the file, drawn with seed {meta['seed']}"]
          if meta.get("sample") else []),
        _gain_line(meta),
        f"- seed {meta['seed']}; 95 % intervals: percentile bootstrap over users, "
        f"{meta['bootstrap']['replicates']} replicates; machine: {meta['machine']}",
    ]
    if meta.get("train_interactions"):
        t = meta["train_interactions"]
        lines.append(f"- baselines trained on {t['pairs']} observed pairs from `{t['source']}`")
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    lines += ["", "Scoring: " + results["scoring"] + ".", ""]
    for policy, text in results["policies"].items():
        lines += [f"## Overall — policy `{policy}`", "", f"Invalid outputs: {text}.", "", *_overall(results, policy), ""]
    lines += ["## NDCG@10 by need (policy `strict`)", "", *_breakdown(results, "by_need"), ""]
    lines += ["## NDCG@10 by dataset (policy `strict`)", "", *_breakdown(results, "by_dataset"), ""]
    bias = _bias(results)
    if bias:
        lines += ["## Position bias: NDCG@10 over candidate orders", "",
                  f"Original order plus {meta['shuffle_seeds']} seeded shuffles of every prompt's candidates "
                  "(re-rendered prompt, renumbered ids); policy `strict` unless noted. Baselines rank by item, "
                  "not position, so their spread is 0 by construction.", "", *bias, ""]
    notes = []
    for name, s in results["systems"].items():
        extra = [f"coverage {s['coverage']:.2f} (rows where the scores were not all tied)"] if s["kind"] == "baseline" else []
        if s["errors"]:
            extra.append("invalid outputs: " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
        extra += s["notes"]
        notes.append(f"- **{name}**: " + "; ".join(extra))
    if meta.get("train_interactions") and meta["train_interactions"]["notes"]:
        notes += [f"- training data: {n}" for n in meta["train_interactions"]["notes"]]
    lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def plot_results(results: dict, path: str | Path, policy: str = "strict") -> None:
    """Grouped bars (systems) per metric with 95 % interval whiskers; black ticks: dashed = random floor,
    dotted = oracle ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = list(results["systems"])
    x = np.arange(len(METRICS))
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(9.0, 1.6 * len(METRICS) + 0.4 * len(systems) + 2.0), 4.2))
    for j, name in enumerate(systems):
        o = results["systems"][name]["overall"][policy]
        means = np.array([o[m]["mean"] for m in METRICS])
        err = np.array([[means[i] - o[m]["ci_low"], o[m]["ci_high"] - means[i]] for i, m in enumerate(METRICS)]).T
        ax.bar(x - 0.4 + width * (j + 0.5), means, width, yerr=np.clip(err, 0, None), capsize=2, label=name)
    for (label, ref), style in zip(_references(results), ("dashed", "dotted")):
        for i, m in enumerate(METRICS):
            ax.hlines(ref["overall"][m], i - 0.42, i + 0.42, colors="black", linestyles=style, linewidth=1.2,
                      label=label if i == 0 else None)
    ax.set_xticks(x, [_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over users' lists")
    ax.set_title(f"FlexRec evaluation ({results['meta']['rows']} rows, {results['meta'].get('gain', 'linear')} gain, "
                 f"policy '{policy}', 95 % user-bootstrap CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finite(value: Any) -> Any:
    """The same structure with NaN / inf replaced by None, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_outputs(results: dict, out_dir: str | Path, responses: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write the three result files (and ``responses.jsonl`` when given); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "png": out_dir / "results.png"}
    write_text_atomic(paths["json"], json.dumps(_finite(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    write_text_atomic(paths["md"], markdown_report(results))
    with atomic_path(paths["png"]) as tmp:
        plot_results(results, tmp)
    if responses is not None:
        paths["responses"] = out_dir / "responses.jsonl"
        write_text_atomic(paths["responses"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in responses))
    return paths
