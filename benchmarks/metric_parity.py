"""Largest disagreement between verl_flexrec.ranking and pytrec_eval / ranx on random judgements.

    python benchmarks/metric_parity.py [--lists 2000]

Integer graded gains 0..4 with ties and zeros (both references read integer judgements), list
lengths 1..30, cut-offs 5/10/30. Our metrics are computed twice, from numpy arrays (one list per
call, as the reward manager does) and from torch tensors; prints the max absolute difference per
metric against each reference, over both.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytrec_eval
import torch
from ranx import Qrels, Run, evaluate
from tqdm import tqdm

from verl_flexrec.ranking import mrr, ndcg, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    qrels, run, ours = {}, {}, {}
    for q in tqdm(range(args.lists), desc="lists"):
        k = int(rng.integers(1, 31))
        gains = rng.integers(0, 5, size=k) * (rng.random(k) < 0.7)
        if not gains.any():
            gains[rng.integers(0, k)] = 1
        qid = f"q{q:06d}"
        qrels[qid] = {f"d{i}": int(g) for i, g in enumerate(gains)}
        run[qid] = {f"d{i}": float(k - i) for i in range(k)}
        per_library = []
        for g in (gains.astype(np.float64), torch.tensor(gains, dtype=torch.float64)):
            rel = g > 0
            per_library.append({
                **dict(zip((f"ndcg@{c}" for c in (5, 10, 30)), ndcg(g, (5, 10, 30)).tolist())),
                **{f"ndcg_burges@{c}": float(ndcg(g, c, gain="exponential")) for c in (5, 10, 30)},
                **{f"recall@{c}": float(recall(rel, c)) for c in (5, 10, 30)},
                "mrr@5": float(mrr(rel, 5)),
            })
        ours[qid] = per_library
    metrics = sorted(next(iter(ours.values()))[0])
    ranx_scores = evaluate(Qrels(qrels), Run(run), metrics, return_mean=False)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10,30", "recall.5,10,30"}).evaluate(run)
    qids = sorted(ours)
    print(f"{'metric':<16}{'max |ours - ranx|':>20}{'max |ours - pytrec_eval|':>26}")
    for m in metrics:
        mine = np.array([[ours[q][lib][m] for q in qids] for lib in range(2)])  # (numpy, torch) x lists
        d_ranx = float(np.max(np.abs(mine - np.asarray(ranx_scores[m]))))
        key = {"ndcg": "ndcg_cut_", "recall": "recall_"}.get(m.split("@")[0])
        d_trec = float(np.max(np.abs(mine - np.array([trec[q][f"{key}{m.split('@')[1]}"] for q in qids])))) if key else float("nan")
        print(f"{m:<16}{d_ranx:>20.2e}{d_trec:>26.2e}")


if __name__ == "__main__":
    main()
