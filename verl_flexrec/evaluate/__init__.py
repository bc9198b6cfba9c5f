"""Evaluation of FlexRec rankers and baselines: ``python -m verl_flexrec.evaluate`` or :func:`evaluate`.

What is measured (per test row = one user, one need, one closed candidate set):

* **NDCG@5/10/30, Recall@5, MRR@5** from :mod:`verl_flexrec.ranking` on the observed gains
  (:mod:`.metrics`; unobserved candidates count as gain 0), averaged over rows with at least
  one positive gain; **ValidRatio** = share of all rows whose output parses as a permutation.
* **Invalid outputs**, both policies reported: ``strict`` scores them 0 (paper, RL reward);
  ``complete`` keeps the ids the model did rank and appends the missing candidates in prompt
  order (:func:`verl_flexrec.parsing.complete_ranking`).
* **95 % intervals**: percentile bootstrap over users (:mod:`.stats`), paired across systems.
* **Random floor**: the exact expected metric under a uniformly random ranking (:mod:`.metrics`).
* **Position bias**: the same system on ``shuffle_seeds`` re-rendered candidate orders
  (:mod:`.shuffle`); the spread of each metric over orders.
* **Baselines** (:mod:`.baselines`): random, popularity, trending, BPR, ALS, item-KNN
  (``implicit``), SASRec (``cornac``), trained on the training split.

Python API::

    from verl_flexrec.evaluate import evaluate
    results = evaluate("OUT/test.parquet", baselines=["all"], out_dir="eval/")
    results["systems"]["bpr"]["overall"]["strict"]["ndcg@10"]   # {"mean", "ci_low", "ci_high"}
"""

from .baselines import BASELINES, REFERENCE_RANKERS
from .metrics import METRICS
from .runner import POLICIES, evaluate

__all__ = ["BASELINES", "METRICS", "POLICIES", "REFERENCE_RANKERS", "evaluate"]
