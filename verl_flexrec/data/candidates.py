"""Candidate sampling: a user's recent history before a time and the fresh items after it."""

from __future__ import annotations

import numpy as np

from .events import EventLog, Task

__all__ = ["candidate_pool", "make_task", "recent_history"]


def recent_history(all_inter: EventLog, user: int, before: float, length: int):
    """Last ``length`` distinct items of ``user`` strictly before ``before``, oldest first."""
    items, ts, interest = all_inter.of(user)
    n = int(np.searchsorted(ts, before, side="left"))
    rev_items = items[:n][::-1]
    _, first = np.unique(rev_items, return_index=True)  # most recent occurrence of each item
    keep = np.sort(first)[:length]
    idx = (n - 1 - keep)[::-1]
    return items[idx], ts[idx], interest[idx], len(first)


def candidate_pool(source: EventLog, all_inter: EventLog, user: int, start: float, end: float):
    """Distinct items of ``user`` in ``source`` with start <= time < end (first occurrence),
    leaving out items the user met before ``start`` (so no candidate repeats a past item)."""
    items, ts, interest = source.of(user)
    lo = int(np.searchsorted(ts, start, side="left"))
    hi = int(np.searchsorted(ts, end, side="left"))
    w_items, w_ts, w_int = items[lo:hi], ts[lo:hi], interest[lo:hi]
    _, first = np.unique(w_items, return_index=True)
    first = np.sort(first)
    w_items, w_ts, w_int = w_items[first], w_ts[first], w_int[first]
    seen_items, seen_ts, _ = all_inter.of(user)
    seen = seen_items[: int(np.searchsorted(seen_ts, start, side="left"))]
    fresh = ~np.isin(w_items, seen)
    return w_items[fresh], w_ts[fresh], w_int[fresh]


def make_task(split, user, cutoff, hist, pool, k, rng) -> Task:
    pick = rng.choice(len(pool[0]), size=k, replace=False)
    return Task(split, int(user), float(cutoff), hist[0], hist[1], hist[2],
                pool[0][pick], pool[1][pick], pool[2][pick])
