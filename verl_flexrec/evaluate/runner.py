"""Evaluate an LLM ranker or baselines on a FlexRec test parquet; returns the results dict.

Flow: load rows -> (optionally) build candidate-order shuffles -> for every system and every
order: rank each row -> per-row metrics under both invalid-output policies -> summaries with
user-bootstrap intervals, per-need / per-dataset breakdowns, the random floor, the oracle
ceiling and the spread over shuffles. NDCG uses the gain function ``gain`` (``linear``: the
gain itself; ``exponential``: ``2**g - 1``) everywhere: systems, floor and ceiling. :func:`evaluate` is the Python API behind ``python -m verl_flexrec.evaluate``.
"""

from __future__ import annotations

import platform
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from verl_flexrec.parsing import complete_ranking, parse_ranking

from ..paths import portable_paths_in
from .baselines import Ranker, has_signal, make_ranker, rank_by_scores, resolve_baselines, tie_keys
from .data import EvalRow, TrainingInteractions, load_rows, load_training_interactions
from .metrics import GAINS, METRICS, evaluation_gains, expected_random_metrics, has_gain, ranking_metrics, zero_metrics
from .shuffle import row_permutation, shuffle_row
from .stats import cluster_bootstrap, spread

__all__ = ["GAIN_TEXT", "POLICIES", "RowResult", "evaluate", "score_order", "score_response"]

GAIN_TEXT = {
    "linear": "linear: NDCG's gain is the need-specific gain itself (trec_eval ndcg_cut, ranx ndcg)",
    "exponential": "exponential: NDCG's gain is 2^g - 1 of the need-specific gain g (Burges et al.; ranx ndcg_burges)",
}

POLICIES = {
    "strict": "an invalid output (not a permutation of the candidates, see verl_flexrec.parsing) scores 0 on "
              "every metric, as in the FlexRec paper and the RL reward",
    "complete": "the ids an output does rank, in its order (first occurrences, unknown ids dropped), then every "
                "candidate it left out in prompt order (verl_flexrec.parsing.complete_ranking); equals 'strict' "
                "for valid outputs",
}


@dataclass
class RowResult:
    """Metrics of one row under each policy, and whether the output was valid."""

    metrics: dict[str, dict[str, float]]  # policy -> metric -> value
    valid: bool
    error: str = ""
    signal: bool = True                   # baselines: the scores were not all tied


def _indices(row: EvalRow, ids: Sequence[str]) -> list[int]:
    position = row.truth.index_of()
    return [position[c] for c in ids]


def score_order(row: EvalRow, order: Sequence[int], gain: str = "linear") -> RowResult:
    """A full ranking (candidate indices) is valid by construction: both policies agree."""
    m = ranking_metrics(order, evaluation_gains(row.truth), gain)
    return RowResult({"strict": m, "complete": dict(m)}, valid=True)


def score_response(row: EvalRow, response: str, *, require_think: bool = True, gain: str = "linear") -> RowResult:
    """Parse an LLM response with the package parser and score it under both policies."""
    gains = evaluation_gains(row.truth)
    response = response if isinstance(response, str) else ""  # a backend that returned nothing: invalid
    parsed = parse_ranking(response, row.truth.candidates, require_think=require_think)
    completed = ranking_metrics(_indices(row, complete_ranking(parsed, row.truth.candidates)), gains, gain)
    strict = dict(completed) if parsed.valid else zero_metrics()
    return RowResult({"strict": strict, "complete": completed}, valid=parsed.valid,
                     error=parsed.error.value if parsed.error is not None else "")


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------
def _metric_matrix(results: Sequence[RowResult], policy: str) -> np.ndarray:
    return np.array([[r.metrics[policy][m] for m in METRICS] for r in results], dtype=np.float64).reshape(-1, len(METRICS))


def _interval_table(results, clusters, n_boot, seed) -> dict:
    out = {}
    for policy in POLICIES:
        boot = cluster_bootstrap(_metric_matrix(results, policy), clusters, n_boot=n_boot, seed=seed)
        out[policy] = {m: {"mean": float(boot["mean"][j]), "ci_low": float(boot["low"][j]),
                           "ci_high": float(boot["high"][j])} for j, m in enumerate(METRICS)}
    return out


def _group_summary(rows, results, scored, n_boot, seed) -> dict:
    """Counts, ValidRatio (all rows) and metrics with intervals (rows with a positive gain)."""
    keep = [i for i in range(len(rows)) if scored[i]]
    out = {
        "rows": len(rows),
        "scored_rows": len(keep),
        "users": len({r.user for r in rows}),
        "valid_ratio": float(np.mean([r.valid for r in results])) if results else 0.0,
    }
    out.update(_interval_table([results[i] for i in keep], [rows[i].user for i in keep], n_boot, seed))
    return out


def _by(rows: Sequence[EvalRow], attr: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[getattr(r, attr)].append(i)
    return dict(sorted(groups.items()))


def summarise_system(rows, variants_results, scored, *, n_boot, seed, kind, notes=()) -> dict:
    """Overall / per-need / per-dataset tables of the original order, plus the shuffle spread."""
    results = variants_results[0]
    summary: dict[str, Any] = {"kind": kind, "overall": _group_summary(rows, results, scored, n_boot, seed)}
    for attr, key in (("need", "by_need"), ("dataset", "by_dataset")):
        summary[key] = {
            name: _group_summary([rows[i] for i in idx], [results[i] for i in idx], [scored[i] for i in idx],
                                 n_boot, seed)
            for name, idx in _by(rows, attr).items()
        }
    summary["errors"] = dict(sorted(Counter(r.error for r in results if not r.valid).items()))
    summary["coverage"] = float(np.mean([r.signal for r in results])) if results else 0.0
    if len(variants_results) > 1:
        keep = [i for i in range(len(rows)) if scored[i]]
        bias: dict[str, Any] = {"orders": len(variants_results)}
        for policy in POLICIES:
            per_order = [_metric_matrix([res[i] for i in keep], policy).mean(0) if keep else np.zeros(len(METRICS))
                         for res in variants_results]
            bias[policy] = {m: {"per_order": [float(p[j]) for p in per_order], **spread([p[j] for p in per_order])}
                            for j, m in enumerate(METRICS)}
        bias["valid_ratio"] = spread([np.mean([r.valid for r in res]) for res in variants_results])
        summary["position_bias"] = bias
    summary["notes"] = list(notes)
    return summary


def _floor(rows, scored, gain: str = "linear") -> dict:
    """Exact expected metric under a uniformly random ranking, averaged like the systems."""
    return _reference(rows, scored, [expected_random_metrics(evaluation_gains(r.truth), gain) for r in rows])


def _ceiling(rows, scored, gain: str = "linear") -> dict:
    """Metrics of the oracle ranking (true gains, descending), averaged like the systems: 1 for
    NDCG and MRR; Recall@5 is below 1 where ties at the 5th gain make more than 5 items relevant."""
    per_row = []
    for r in rows:
        g = evaluation_gains(r.truth)
        per_row.append(ranking_metrics(np.argsort(-g, kind="stable"), g, gain))
    return _reference(rows, scored, per_row)


def _reference(rows, scored, per_row: list[dict[str, float]]) -> dict:
    """Means of per-row reference values over the scored rows: overall, by need, by dataset."""

    def mean_of(idx):
        idx = [i for i in idx if scored[i]]
        return {m: float(np.mean([per_row[i][m] for i in idx])) if idx else 0.0 for m in METRICS}

    everything = list(range(len(rows)))
    return {
        "overall": mean_of(everything),
        "by_need": {k: mean_of(v) for k, v in _by(rows, "need").items()},
        "by_dataset": {k: mean_of(v) for k, v in _by(rows, "dataset").items()},
    }


# ---------------------------------------------------------------------------------------------
# running systems
# ---------------------------------------------------------------------------------------------
def _variants(rows: list[EvalRow], shuffle_seeds: int, seed: int) -> list[list[EvalRow]]:
    out = [rows]
    for s in range(1, shuffle_seeds + 1):
        out.append([shuffle_row(r, row_permutation(seed, s, r.key, r.truth.num_candidates)) for r in rows])
    return out


def _run_ranker(ranker: Ranker, variants, seed: int, progress: bool, gain: str = "linear") -> list[list[RowResult]]:
    out = []
    with tqdm(total=sum(len(v) for v in variants), desc=f"rank {ranker.name}", disable=not progress,
              unit="row") as bar:
        for rows in variants:
            results = []
            for row in rows:
                scores = ranker.score(row)
                order = rank_by_scores(scores, tie_keys(seed, row.key, row.item_ids))
                res = score_order(row, order, gain)
                res.signal = has_signal(scores)
                results.append(res)
                bar.update()
            out.append(results)
    return out


def _run_model(generate, variants, require_think: bool, records: list | None, gain: str = "linear") -> list[list[RowResult]]:
    out = []
    for v, rows in enumerate(variants):
        responses = generate([r.messages for r in rows])
        if len(responses) != len(rows):
            raise RuntimeError(f"generator returned {len(responses)} responses for {len(rows)} prompts")
        results = [score_response(r, text, require_think=require_think, gain=gain) for r, text in zip(rows, responses)]
        out.append(results)
        if records is not None:
            for r, text, res in zip(rows, responses, results):
                records.append({"row": r.index, "order": v, "need": r.need, "dataset": r.dataset,
                                "candidates": r.truth.candidates, "response": text, "valid": res.valid,
                                "error": res.error, "metrics": res.metrics})
    return out


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("verl-flexrec", "torch", "transformers", "implicit", "cornac", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def evaluate(
    data: str | Path,
    *,
    model: str | None = None,
    backend: str = "auto",
    baselines: Sequence[str] = (),
    train_data: str | Path | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    shuffle_seeds: int = 0,
    n_boot: int = 1000,
    generator: Callable[[Sequence[list[dict]]], list[str]] | None = None,
    model_name: str | None = None,
    generation: Mapping[str, Any] | None = None,
    baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    require_think: bool = True,
    progress: bool = True,
    command: str | None = None,
    gain: str = "linear",
) -> dict:
    """Evaluate ``model`` (or ``generator``) and/or ``baselines`` on the test parquet ``data``.

    Args:
        data: test parquet written by data prep.
        model: checkpoint path or hub name, generated with ``backend`` (``auto``/``hf``/``vllm``).
        baselines: names or comma lists (``"all"`` = every baseline); see ``baselines.py``.
        train_data: training parquet for the baselines (default: ``train.parquet`` next to ``data``).
        out_dir: if given, write ``results.json``, ``results.md``, ``results.png`` (and
            ``responses.jsonl`` for a model) there.
        limit: evaluate the first ``limit`` rows only.
        sample: evaluate a random subset of this many rows, drawn with ``seed``.
        seed: seeds tie-breaking, the random baseline, learned baselines, shuffles and the bootstrap.
        shuffle_seeds: evaluate every system on this many extra candidate orders.
        n_boot: bootstrap replicates (0 = no intervals).
        generator: ``list[messages] -> list[str]`` used instead of loading ``model``.
        generation: keyword arguments of the backend (``batch_size``, ``max_new_tokens``, ...).
        baseline_options: ``{baseline: {option: value}}`` overriding defaults (e.g. epochs).
        gain: NDCG's gain function, ``linear`` (the gain itself) or ``exponential`` (``2**g - 1``).
    """
    started = time.perf_counter()
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    names = resolve_baselines(baselines)
    if model is None and generator is None and not names:
        raise ValueError("nothing to evaluate: give a model (or generator) and/or at least one baseline")
    rows = load_rows(data, limit, sample=sample, seed=seed)
    scored = [has_gain(evaluation_gains(r.truth)) for r in rows]
    variants = _variants(rows, shuffle_seeds, seed)
    systems: dict[str, Any] = {}
    responses: list | None = None

    if model is not None or generator is not None:
        name = model_name or (Path(model).name if model and Path(model).exists() else model) or "model"
        if generator is None:
            generator = _model_generator(model, backend, dict(generation or {}), seed, progress)
        responses = []
        gen_started = time.perf_counter()
        results = _run_model(generator, variants, require_think, responses, gain)
        gen_s = time.perf_counter() - gen_started
        used = getattr(generator, "backend", "custom generator")
        systems[name] = summarise_system(rows, results, scored, n_boot=n_boot, seed=seed, kind="model",
                                         notes=[f"backend: {used}", *(f"{k}: {v}" for k, v in (generation or {}).items()),
                                                f"generation {gen_s:.1f} s for {sum(len(v) for v in variants)} prompts"])
        systems[name]["seconds"] = round(gen_s, 2)

    train: TrainingInteractions | None = None
    train_notes: list[str] = []
    for b in names:
        ranker = make_ranker(b, (baseline_options or {}).get(b))
        ranker.progress = progress
        if ranker.needs_training and train is None:
            train_path = Path(train_data) if train_data is not None else Path(data).parent / "train.parquet"
            train = load_training_interactions(train_path)
            train_notes = list(train.notes)
        fit_started = time.perf_counter()
        ranker.fit(train, seed)
        fit_s = time.perf_counter() - fit_started
        results = _run_ranker(ranker, variants, seed, progress, gain)
        notes = [*ranker.notes, f"fit {fit_s:.1f} s"]
        if getattr(ranker, "no_cutoff_rows", 0):
            notes.append("rows without a cut-off time ranked by all-time popularity")
        if ranker.needs_training and not any(r.signal for r in results[0]):
            notes.append("NO SIGNAL on any row: it knew neither the rows' users/histories nor their candidates (ESCI: "
                         "every test query is new and has no history), so its ranking is the random tie-break")
        systems[b] = summarise_system(rows, results, scored, n_boot=n_boot, seed=seed, kind="baseline", notes=notes)

    out = {
        "meta": {
            "data": str(data),
            "rows": len(rows),
            "scored_rows": int(sum(scored)),
            "users": len({r.user for r in rows}),
            "needs": sorted({r.need for r in rows}),
            "datasets": sorted({r.dataset for r in rows}),
            "candidates_per_row": sorted({r.truth.num_candidates for r in rows}),
            "observed_fraction": float(np.mean([np.mean(r.truth.observed) for r in rows])),
            "seed": seed,
            "gain": gain,
            "sample": sample,
            "bootstrap": {"replicates": n_boot, "level": 0.95, "unit": "user (dataset, user_id)"},
            "shuffle_seeds": shuffle_seeds,
            "train_interactions": None if train is None else {"source": train.source, "pairs": int(len(train.frame)),
                                                              "notes": train_notes},
            "machine": f"{platform.machine()} {platform.system()}, {_device()}",
            "versions": _versions(),
            "command": command,
            "seconds": None,
        },
        "metrics": list(METRICS),
        "policies": POLICIES,
        "scoring": "metrics average over rows with at least one positive observed gain (an all-zero list has no "
                   "ideal ranking); ValidRatio over all rows; unobserved candidates count as gain 0",
        "gain": GAIN_TEXT[gain],
        "floor": _floor(rows, scored, gain),
        "ceiling": _ceiling(rows, scored, gain),
        "systems": systems,
    }
    out["meta"]["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        from .report import write_outputs

        # the files hold paths relative to out_dir (data, training file, command line), none absolute
        local = [data, out_dir, *([] if train is None else [train_path, Path(train_path).parent / "interactions.parquet"]),
                 *([model] if model is not None and Path(model).exists() else [])]
        out = portable_paths_in(out, out_dir, local)
        write_outputs(out, out_dir, responses=responses)
    return out


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "CPU only"


def _model_generator(model: str, backend: str, generation: dict, seed: int, progress: bool):
    from .backends import make_generator

    return make_generator(model, backend, seed=seed, progress=progress, **generation)


