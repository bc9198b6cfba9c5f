"""Rendering one (context, need) pair into a verl row: candidate features, need targets (gains),
the prompt and the ground truth.

Row layout (verl's RLHFDataset schema, identical for every dataset so files can be mixed)::

    data_source   str       "flexrec/kuairec" | "flexrec/ml-1m" | "flexrec/ml-100k" | "flexrec/esci"
    prompt        list<{role: str, content: str}>   system + user message
    ability       str       "recommendation"
    reward_model  {style: "rule", ground_truth: GroundTruth}  (verl_flexrec.schema)
    extra_info    {split, index, dataset, need, user_id, query, cutoff_ts, history_item_ids,
                   history_ts, candidate_ts, sparse, observed_frac, id_style, seed}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..needs import Need
from ..prompt import Candidate, HistoryItem, build_messages, candidate_ids
from ..schema import GroundTruth
from .events import EventLog, Task
from .seeded import observed_mask, rng_for
from .split import training_limits

__all__ = ["ABILITY", "ItemSource", "RecentCounts", "extra_info", "make_row", "render_interaction_row"]


ABILITY = "recommendation"


@dataclass
class ItemSource:
    """What an interaction dataset knows about its items and users, for prompts and features."""

    name: str                      # "kuairec"
    data_source: str               # "flexrec/kuairec"
    item_noun: str                 # "video"
    history_heading: str           # "Videos I watched"
    popularity_unit: str           # "plays in the last day"
    titles: Mapping[int, str]
    categories: Mapping[int, tuple[str, ...]]
    feedback: Callable[[float], str]                       # interest -> "rated 4/5"
    popularity: Callable[[np.ndarray, float], np.ndarray]  # (items, cutoff) -> counts
    profile: Callable[[int], str | None] = lambda user: None
    # The dataset's own ids of users and items whose ids are not integers (a user's own data,
    # :mod:`.own`): the event log holds codes 0..n-1, rows and interactions.parquet show these.
    user_labels: Sequence[str] | None = None
    item_labels: Sequence[str] | None = None
    # Implicit feedback (no rating): the candidates' interest of a context, from their times
    # (:func:`.own.engagement_order_gain`); None: the logged interest value.
    grade: Callable[[Task], np.ndarray] | None = None

    FEATURES = ("interest", "novel_topic", "popularity")
    SIDE_INFO = ("title", "category", "popularity")

    def user_id(self, user: int) -> str:
        return str(user) if self.user_labels is None else self.user_labels[int(user)]

    def item_id(self, item: int) -> str:
        return str(item) if self.item_labels is None else self.item_labels[int(item)]

    def title(self, item: int) -> str:
        return self.titles.get(int(item)) or f"{self.item_noun} {self.item_id(item)}"

    def cats(self, item: int) -> tuple[str, ...]:
        return self.categories.get(int(item), ())


class RecentCounts:
    """Popularity as interactions per item in the ``days`` before a cut-off (MovieLens).

    Counts only interactions training may see: :meth:`hide_test` drops every interaction at or
    after its user's test cut-off, so no test interaction reaches a training row even as a count.
    """

    def __init__(self, inter: EventLog, days: float):
        self.window = float(days) * 86400.0
        self._inter = inter
        self._index(np.ones(len(inter), dtype=bool))

    def _index(self, keep: np.ndarray) -> None:
        # One sorted int64 key per interaction, item-major: item * n_times + rank of its time.
        # A window count is then two vectorised searchsorted calls per row.
        self._times = np.unique(self._inter.ts)
        rank = np.searchsorted(self._times, self._inter.ts[keep])
        self._keys = np.sort(self._inter.item[keep] * len(self._times) + rank)

    def hide_test(self, cutoffs: Mapping[int, float], default_cutoff: float) -> None:
        self._index(self._inter.ts < training_limits(self._inter, cutoffs, default_cutoff))

    def __call__(self, items: np.ndarray, cutoff: float) -> np.ndarray:
        base = np.asarray(items, dtype=np.int64) * len(self._times)
        hi = np.searchsorted(self._times, cutoff, side="left")
        lo = np.searchsorted(self._times, cutoff - self.window, side="left")
        return np.searchsorted(self._keys, base + hi) - np.searchsorted(self._keys, base + lo)


def novelty(cand_cats: Sequence[tuple[str, ...]], history_cats: set[str]) -> np.ndarray:
    """1.0 where none of the candidate's categories appears in the history (0.0 if it has none)."""
    return np.array([1.0 if cats and not (set(cats) & history_cats) else 0.0 for cats in cand_cats])


def normalised(counts: np.ndarray) -> np.ndarray:
    top = float(np.max(counts)) if len(counts) else 0.0
    return counts / top if top > 0 else np.zeros(len(counts))


def extra_info(*, split: str, index: int, dataset: str, need: str, user_id: str, query: str = "",
               cutoff_ts: float = math.nan, history_item_ids=(), history_ts=(), candidate_ts=(),
               sparse: bool = False, observed_frac: float = 1.0, id_style: str = "index", seed: int = 0) -> dict:
    return {
        "split": split, "index": int(index), "dataset": dataset, "need": need, "user_id": user_id,
        "query": query, "cutoff_ts": float(cutoff_ts),
        "history_item_ids": [str(i) for i in history_item_ids],
        "history_ts": [float(t) for t in history_ts],
        "candidate_ts": [float(t) for t in candidate_ts],
        "sparse": bool(sparse), "observed_frac": float(observed_frac), "id_style": id_style, "seed": int(seed),
    }


def make_row(data_source: str, messages: list[dict], gt: GroundTruth, info: dict) -> dict:
    # The same mapping as gt.to_dict(), without dataclasses.asdict's per-element deep copy
    # (that copy was half of the preparation time); the values are already plain lists.
    ground_truth = {f.name: getattr(gt, f.name) for f in dataclasses.fields(gt)}
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": info,
    }


def render_interaction_row(src: ItemSource, task: Task, need: Need, *, index: int, id_style: str,
                           sparse_frac: float | None, seed: int, novelty_window: int | None = None) -> dict:
    """One verl row: shuffled candidates, need-specific gains, the prompt.

    ``novelty_window``: the familiar categories are those of the last N history items (None: all).
    """
    order = rng_for(seed, "order", task.key, need.name).permutation(len(task.cand_items))
    items, ts, interest = task.cand_items[order], task.cand_ts[order], task.cand_interest[order].copy()
    cand_cats = [src.cats(i) for i in items]
    recent = task.hist_items if novelty_window is None else task.hist_items[-novelty_window:]  # oldest first
    hist_cats = {c for i in recent for c in src.cats(i)}
    counts = np.asarray(src.popularity(items, task.cutoff), dtype=np.int64)
    features = {"interest": interest, "novel_topic": novelty(cand_cats, hist_cats), "popularity": normalised(counts)}
    with np.errstate(divide="ignore", invalid="ignore"):  # a non-finite gain is reported by GroundTruth
        gains = need.gain(features)
        weight = need.weight(features)

    sparse = sparse_frac is not None and task.split == "train"
    if sparse:
        observed = observed_mask(seed, task.user, items.tolist(), sparse_frac)
        hist_observed = observed_mask(seed, task.user, task.hist_items.tolist(), sparse_frac)
        interest[~observed] = 0.0
        gains = np.where(observed, gains, 0.0)
    else:
        observed = np.ones(len(items), dtype=bool)
        hist_observed = np.ones(len(task.hist_items), dtype=bool)

    item_ids = [src.item_id(i) for i in items]
    ids = candidate_ids(item_ids, id_style)
    candidates = [
        Candidate(id=cid, title=src.title(i), category=", ".join(cats), popularity=int(c))
        for cid, i, cats, c in zip(ids, items, cand_cats, counts)
    ]
    history = [
        HistoryItem(title=src.title(i), category=", ".join(src.cats(i)), feedback=src.feedback(x) if obs else "")
        for i, x, obs in zip(task.hist_items, task.hist_interest, hist_observed)
    ]
    messages = build_messages(
        need, candidates, history=history, user_profile=src.profile(task.user), item_noun=src.item_noun,
        history_heading=src.history_heading, popularity_unit=src.popularity_unit,
    )
    gt = GroundTruth(
        candidates=ids, gains=gains.tolist(), observed=observed.tolist(), gain_var=[], need=need.name,
        user_id=src.user_id(task.user), item_ids=item_ids, interest=interest.tolist(), need_weight=weight.tolist(),
        categories=["|".join(c) for c in cand_cats],
    )
    info = extra_info(
        split=task.split, index=index, dataset=src.name, need=need.name, user_id=src.user_id(task.user),
        cutoff_ts=task.cutoff, history_item_ids=[src.item_id(i) for i in task.hist_items], history_ts=task.hist_ts.tolist(),
        candidate_ts=ts.tolist(), sparse=sparse, observed_frac=sparse_frac if sparse else 1.0,
        id_style=id_style, seed=seed,
    )
    return make_row(src.data_source, messages, gt, info)
