"""Framework-free simulation for the learning benchmark: world, token-level policy, statistics."""

from . import stats
from .policy import Rollouts, SeedBatchedPolicy, item_token_positions
from .world import NEEDS, Episodes, World, WorldConfig, rank_metrics

__all__ = ["NEEDS", "Episodes", "Rollouts", "SeedBatchedPolicy", "World", "WorldConfig", "item_token_positions", "rank_metrics", "stats"]
