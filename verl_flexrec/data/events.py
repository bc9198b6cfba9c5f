"""The interaction log of a dataset and the ranking contexts cut from it.

:class:`EventLog`: timestamped user-item events with an interest value (a star rating, a capped
watch ratio), as read from the raw files. Not to be confused with the critic's training points
(:class:`verl_flexrec.critic.data.Interactions`, string ids, no time), which data preparation
writes as ``interactions.parquet`` (:mod:`.interactions`).

:class:`Task`: one ranking context, a user's history before a cut-off and the candidates at or
after it (:mod:`.candidates` samples them, :mod:`.split` decides the cut-offs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EventLog", "Task"]


class EventLog:
    """User-item events with a time and an interest value, sorted by (user, time, item)."""

    def __init__(self, user, item, ts, interest):
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        interest = np.asarray(interest, dtype=np.float64)
        order = np.lexsort((item, ts, user))
        self.user, self.item, self.ts, self.interest = user[order], item[order], ts[order], interest[order]
        self.users, starts = np.unique(self.user, return_index=True)
        ends = np.append(starts[1:], len(self.user))
        self._range = {int(u): (int(s), int(e)) for u, s, e in zip(self.users, starts, ends)}

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def concat(cls, a: "EventLog", b: "EventLog") -> "EventLog":
        return cls(np.concatenate([a.user, b.user]), np.concatenate([a.item, b.item]),
                   np.concatenate([a.ts, b.ts]), np.concatenate([a.interest, b.interest]))

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, times, interest) of one user, in time order (empty if unknown)."""
        s, e = self._range.get(int(user), (0, 0))
        return self.item[s:e], self.ts[s:e], self.interest[s:e]


@dataclass
class Task:
    """One ranking context: a user's history before ``cutoff`` and candidates at/after it."""

    split: str
    user: int
    cutoff: float
    hist_items: np.ndarray
    hist_ts: np.ndarray
    hist_interest: np.ndarray
    cand_items: np.ndarray
    cand_ts: np.ndarray
    cand_interest: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.split}:{self.user}:{self.cutoff!r}"
