"""Ranking math (no verl import): metrics for closed candidate sets and item-level swap rewards.

One implementation, array-API code: numpy arrays in give numpy out, torch tensors give torch out.
"""

from .metrics import dcg, discounts, ideal_dcg, mrr, ndcg, recall, top_n_relevant, transform_gains
from .swap import SWAP_MODES, swap_item_rewards

__all__ = [
    "SWAP_MODES",
    "dcg",
    "discounts",
    "ideal_dcg",
    "mrr",
    "ndcg",
    "recall",
    "swap_item_rewards",
    "top_n_relevant",
    "transform_gains",
]
