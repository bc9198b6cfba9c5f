"""FlexRec training metrics of one batch (logged by the ``flexrec_sync`` trainer every step).

Inputs are the reward manager's ``reward_extra_info`` of each real rollout and, when the
``flexrec`` estimator ran, its per-rollout uncertainty scale ``c_i`` and clip flags. Names follow
verl's ``MetricsAggregator`` rules (a name containing ``min``/``max`` is reduced by min/max):

======================================  ===================================================
flexrec/valid_ratio                     share of rollouts that are a valid full permutation
flexrec/ndcg/mean                       mean list NDCG (0 for invalid rollouts)
flexrec/item_reward/mean, /std          mean and population std of all item rewards of
                                        valid rollouts (0 when there are none)
flexrec/uncertainty/mean                mean reward variance u_i
flexrec/uncertainty_scale/mean|min|max  the scale c_i the estimator applied
flexrec/uncertainty_scale/clipped_ratio share of rollouts whose c_i hit min_scale/max_scale
flexrec/error/<code>                    share of rollouts with each parse error code
======================================  ===================================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .item_data import decode_item_rewards

__all__ = ["flexrec_training_metrics"]


def flexrec_training_metrics(
    infos: Sequence[Mapping[str, Any]],
    scale: torch.Tensor | None = None,
    clipped: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics over the rollouts in ``infos`` (``scale``/``clipped``: the same rollouts, in order)."""
    if not infos:
        return {}
    n = len(infos)
    valid = np.array([float(i["flexrec_valid"]) for i in infos])
    valid_rows = [decode_item_rewards(i) for i in infos if float(i["flexrec_valid"])]
    item_rewards = np.concatenate(valid_rows).astype(np.float64) if valid_rows else np.zeros(0)
    out = {
        "flexrec/valid_ratio": float(valid.mean()),
        "flexrec/ndcg/mean": float(np.mean([float(i["flexrec_ndcg"]) for i in infos])),
        "flexrec/item_reward/mean": float(item_rewards.mean()) if item_rewards.size else 0.0,
        "flexrec/item_reward/std": float(item_rewards.std()) if item_rewards.size else 0.0,
        "flexrec/uncertainty/mean": float(np.mean([float(i["flexrec_uncertainty"]) for i in infos])),
    }
    if scale is not None:
        s = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
        if s.numel() != n:
            raise ValueError(f"{s.numel()} uncertainty scales for {n} rollouts")
        out["flexrec/uncertainty_scale/mean"] = float(s.mean())
        out["flexrec/uncertainty_scale/min"] = float(s.min())
        out["flexrec/uncertainty_scale/max"] = float(s.max())
        c = torch.zeros(n, dtype=torch.bool) if clipped is None else torch.as_tensor(clipped).reshape(-1).bool()
        out["flexrec/uncertainty_scale/clipped_ratio"] = float(c.double().mean())
    errors = Counter(str(i.get("flexrec_error", "")) for i in infos)
    for code, count in sorted(errors.items()):
        if code:
            out[f"flexrec/error/{code}"] = count / n
    return out
