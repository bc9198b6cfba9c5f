"""Framework-free simulation for the learning-dynamics benchmark: environment and policy."""

from .env import FILLERS, EnvConfig, Episodes, RankingEnv, rank_metrics
from .policy import PointerPolicy

__all__ = ["FILLERS", "EnvConfig", "Episodes", "PointerPolicy", "RankingEnv", "rank_metrics"]
