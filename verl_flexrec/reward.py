"""Score one response: sequence reward, item rewards, item spans and reward uncertainty.

Framework-free: the verl reward manager (``verl_flexrec.integration.reward_manager``) decodes the
tokens, calls :func:`score_response`, and maps the character spans to tokens.

    valid permutation:  R_seq = format_bonus + NDCG(y)      items: swap_item_rewards(g_y)
    anything else:      R_seq = invalid_penalty             items: none (every token gets A^seq)

Evaluation metrics (NDCG@5/10, Recall@5 against the top-5 candidates by gain, MRR@5) are reported
beside the reward; an invalid response scores 0 on all of them.

:func:`compute_score` is the same sequence reward in verl's ``custom_reward_function`` signature,
so the stock ``naive`` reward manager can run a Rec-R1 (sequence-only) baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import FlexRecConfig, RewardOptions, UncertaintyOptions
from .parsing import parse_ranking
from .ranking import mrr, ndcg, recall, swap_item_rewards, top_n_relevant
from .schema import GroundTruth
from .uncertainty import rollout_uncertainty

__all__ = ["RolloutReward", "compute_score", "score_response"]

METRIC_CUTOFFS = {"ndcg@5": 5, "ndcg@10": 10, "recall@5": 5, "mrr@5": 5}


@dataclass
class RolloutReward:
    score: float  # sequence reward R_seq
    valid: bool
    error: str  # "" when valid, else a parsing.ParseError value
    ndcg: float  # list NDCG used in the reward (0 when invalid)
    item_rewards: list[float] = field(default_factory=list)  # ranked order; [] when invalid
    item_char_spans: list[tuple[int, int]] = field(default_factory=list)  # of each ranked id
    uncertainty: float = 0.0  # variance of the list reward under the gain variances
    metrics: dict[str, float] = field(default_factory=dict)


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _list_scores(gains: np.ndarray, ropts: RewardOptions) -> tuple[float, np.ndarray, dict[str, float]]:
    """NDCG reward, swap item rewards and evaluation metrics of one ranked list: the batched
    functions of :mod:`verl_flexrec.ranking` on a numpy batch of one (float64)."""
    reward_ndcg, ndcg5, ndcg10 = ndcg(gains, (ropts.cutoff, 5, 10), gain=ropts.gain).tolist()
    items = swap_item_rewards(gains, ropts.swap_mode, ropts.cutoff, gain=ropts.gain)
    relevant = top_n_relevant(gains, 5)
    metrics = {"ndcg@5": ndcg5, "ndcg@10": ndcg10, "recall@5": float(recall(relevant, 5)), "mrr@5": float(mrr(relevant, 5))}
    return reward_ndcg, items, metrics


def score_response(
    response: str,
    ground_truth: GroundTruth,
    reward_options: RewardOptions | None = None,
    uncertainty_options: UncertaintyOptions | None = None,
) -> RolloutReward:
    """Sequence reward, item rewards and uncertainty of one response (never raises on the text)."""
    ropts = reward_options or RewardOptions()
    uopts = uncertainty_options or UncertaintyOptions()
    parsed = parse_ranking(response, ground_truth.candidates, require_think=ropts.require_think)
    if not parsed.valid:
        return RolloutReward(
            score=float(ropts.invalid_penalty),
            valid=False,
            error=parsed.error.value if parsed.error is not None else "invalid",
            ndcg=0.0,
            metrics={name: 0.0 for name in METRIC_CUTOFFS},
        )
    position = ground_truth.index_of()
    order = [position[c] for c in parsed.order]
    gains = ground_truth.gains_array()[order]
    list_ndcg, items, metrics = _list_scores(gains, ropts)
    u = 0.0
    if ground_truth.gain_var:
        var = ground_truth.var_array()[order]
        u = float(rollout_uncertainty(var, gains, weighting=uopts.weighting, cutoff=ropts.cutoff))
    return RolloutReward(
        score=_finite(ropts.format_bonus + list_ndcg),
        valid=True,
        error="",
        ndcg=_finite(list_ndcg),
        item_rewards=np.where(np.isfinite(items), items, 0.0).tolist(),
        item_char_spans=list(parsed.spans),
        uncertainty=_finite(u),
        metrics={k: _finite(v) for k, v in metrics.items()},
    )


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl ``custom_reward_function`` entry: the FlexRec sequence reward for the naive manager.

    ``kwargs`` may carry ``reward.custom_reward_function.reward_kwargs``: a mapping in the shape
    of ``algorithm.flexrec`` (only ``reward`` and ``uncertainty`` are used).
    """
    cfg = FlexRecConfig.from_any(kwargs.get("flexrec")) if kwargs.get("flexrec") else FlexRecConfig()
    result = score_response(solution_str, GroundTruth.from_any(ground_truth), cfg.reward, cfg.uncertainty)
    return {"score": result.score, "valid": float(result.valid), "ndcg": result.ndcg, **result.metrics}
