"""The time split: which users get a test context, each user's cut-off, the training contexts.

Training data of a user lies strictly before that user's test cut-off (``--split user``) or the
one global cut-off (``--split global``); :mod:`.leakage` verifies it before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from tqdm import tqdm

from .candidates import candidate_pool, make_task, recent_history
from .events import EventLog, Task
from .seeded import rng_for, sample_sorted

__all__ = ["SplitConfig", "build_test_tasks", "build_train_tasks", "split_config", "training_limits"]


@dataclass
class SplitConfig:
    mode: str
    num_candidates: int
    history_len: int
    min_history: int
    test_time_frac: float
    train_per_user: int
    train_size: int | None
    test_size: int | None
    seed: int
    progress: bool = False


def split_config(args) -> SplitConfig:
    return SplitConfig(
        mode=args.split, num_candidates=args.num_candidates, history_len=args.history_len,
        min_history=args.min_history, test_time_frac=args.test_time_frac, train_per_user=args.train_per_user,
        train_size=args.train_size, test_size=args.test_size, seed=args.seed, progress=not args.no_progress,
    )


def build_test_tasks(test_src: EventLog, all_inter: EventLog, cfg: SplitConfig):
    """Test contexts and the per-user cut-offs they impose on training.

    Returns ``(tasks, cutoffs, default_cutoff)``: training data of user ``u`` must lie strictly
    before ``cutoffs.get(u, default_cutoff)``.
    """
    k = cfg.num_candidates
    if cfg.mode == "global":
        default_cutoff = float(np.quantile(test_src.ts, 1.0 - cfg.test_time_frac)) if len(test_src) else math.inf
    else:
        default_cutoff = math.inf
    eligible = []
    for user in tqdm(test_src.users, desc="test users", disable=not cfg.progress, leave=False):
        _, ts, _ = test_src.of(user)
        if cfg.mode == "global":
            cutoff = default_cutoff
        elif len(ts) >= k:
            cutoff = float(ts[len(ts) - k])  # the K-th most recent interaction starts the test window
        else:
            continue
        pool = candidate_pool(test_src, all_inter, user, cutoff, math.inf)
        if len(pool[0]) < k:
            continue
        hist = recent_history(all_inter, user, cutoff, cfg.history_len)
        if hist[3] < cfg.min_history:
            continue
        eligible.append((user, cutoff, hist[:3], pool))
    chosen = sample_sorted(rng_for(cfg.seed, "test-users"), len(eligible), cfg.test_size)
    tasks, cutoffs = [], {}
    for i in chosen:
        user, cutoff, hist, pool = eligible[i]
        tasks.append(make_task("test", user, cutoff, hist, pool, k, rng_for(cfg.seed, "test", user)))
        cutoffs[int(user)] = cutoff
    return tasks, cutoffs, default_cutoff


def build_train_tasks(train_src: EventLog, all_inter: EventLog, cutoffs: Mapping[int, float],
                      default_cutoff: float, cfg: SplitConfig) -> list[Task]:
    """Training contexts: per user, ``train_per_user`` anchors drawn before the user's cut-off.

    An anchor is the time of one of the user's training interactions; the history is what came
    strictly before it, the candidates are drawn from the user's training interactions between
    the anchor and the cut-off.
    """
    k = cfg.num_candidates
    tasks = []
    for user in tqdm(train_src.users, desc="train users", disable=not cfg.progress, leave=False):
        cutoff = cutoffs.get(int(user), default_cutoff)
        _, ts, _ = train_src.of(user)
        n_pre = int(np.searchsorted(ts, cutoff, side="left"))
        if n_pre < k:
            continue
        _, all_ts, _ = all_inter.of(user)
        if len(all_ts) < cfg.min_history:
            continue
        # Anchor positions leaving >= min_history interactions before and >= k training ones after.
        lo = int(np.searchsorted(ts[:n_pre], all_ts[cfg.min_history - 1], side="right"))
        hi = n_pre - k
        if lo > hi:
            continue
        rng = rng_for(cfg.seed, "train", user)
        positions = np.sort(rng.choice(np.arange(lo, hi + 1), size=min(cfg.train_per_user, hi - lo + 1), replace=False))
        for pos in positions:
            anchor = float(ts[pos])
            hist = recent_history(all_inter, user, anchor, cfg.history_len)
            pool = candidate_pool(train_src, all_inter, user, anchor, cutoff)
            if hist[3] < cfg.min_history or len(pool[0]) < k:
                continue
            tasks.append(make_task("train", user, anchor, hist[:3], pool, k, rng))
    chosen = sample_sorted(rng_for(cfg.seed, "train-contexts"), len(tasks), cfg.train_size)
    return [tasks[i] for i in chosen]


def training_limits(inter: EventLog, cutoffs: Mapping[int, float], default_cutoff: float) -> np.ndarray:
    """Per interaction: the time its user's training data must lie strictly before."""
    limit = np.full(len(inter), default_cutoff, dtype=np.float64)
    if cutoffs and len(inter):
        users = np.array(sorted(cutoffs), dtype=np.int64)
        values = np.array([cutoffs[int(u)] for u in users], dtype=np.float64)
        pos = np.clip(np.searchsorted(users, inter.user), 0, len(users) - 1)
        hit = users[pos] == inter.user
        limit[hit] = values[pos[hit]]
    return limit
