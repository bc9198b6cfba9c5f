"""Read what evaluation needs: the test rows, and the training interactions baselines learn from.

Test rows are the parquet rows data prep writes (``prompt`` chat messages,
``reward_model.ground_truth`` as :class:`verl_flexrec.schema.GroundTruth`, ``extra_info``).

Training interactions (a pandas frame ``user_id, item_id, interest, timestamp``, one row per
observed (user, item) pair) come from, in order of preference:

1. ``interactions.parquet`` next to the training parquet (KuaiRec, MovieLens): every
   training-period pair; pairs with ``observed == False`` (the sparse variant's hidden feedback)
   are dropped, so baselines see exactly the feedback the RL policy may see;
2. otherwise the training rows themselves (ESCI, hand-made data): each observed candidate with
   a positive interest (gain when no interest is stored), at its candidate time, plus each
   history item (interest 1.0: the user consumed it), at its history time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from verl_flexrec.schema import GroundTruth, GroundTruthError

__all__ = [
    "EvalDataError",
    "EvalRow",
    "TrainingInteractions",
    "interactions_from_rows",
    "load_rows",
    "load_training_interactions",
]

_REQUIRED = ("prompt", "reward_model")


class EvalDataError(ValueError):
    """Bad evaluation input; the message names the file, the row and the field."""


@dataclass(frozen=True)
class EvalRow:
    """One test ranking task as evaluation sees it."""

    index: int                         # row number in the parquet file
    key: str                           # stable id (tie-breaking and shuffles are keyed by it)
    messages: list[dict[str, str]]     # chat messages, candidates in prompt order
    truth: GroundTruth                 # candidates in prompt order
    dataset: str
    need: str
    user: str                          # bootstrap cluster: "dataset|user_id"
    user_id: str = ""                  # dataset user id (ESCI: the query id)
    cutoff: float = math.nan           # history is strictly before this time (nan: unknown)
    history: tuple[str, ...] = ()      # dataset item ids, oldest first
    history_ts: tuple[float, ...] = ()
    query: str = ""

    @property
    def item_ids(self) -> list[str]:
        """Dataset ids of the candidates (the prompt ids when the record has none)."""
        return self.truth.item_ids or self.truth.candidates

    def with_truth(self, truth: GroundTruth, messages: list[dict[str, str]]) -> "EvalRow":
        return replace(self, truth=truth, messages=messages)


def _messages(value: Any, path: Path, row: int) -> list[dict[str, str]]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise EvalDataError(f"{path}: row {row}: field 'prompt': expected a non-empty list of chat messages")
    out = []
    for m in value:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise EvalDataError(f"{path}: row {row}: field 'prompt': each message needs 'role' and 'content'")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def _row(record: dict, path: Path, number: int) -> EvalRow:
    for name in _REQUIRED:
        if record.get(name) is None:
            raise EvalDataError(f"{path}: row {number}: field '{name}' is missing")
    reward_model = record["reward_model"]
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") is None:
        raise EvalDataError(f"{path}: row {number}: field 'reward_model.ground_truth' is missing")
    try:
        truth = GroundTruth.from_any(reward_model["ground_truth"])
    except GroundTruthError as e:
        raise EvalDataError(f"{path}: row {number}: reward_model.{e}") from None
    info = record.get("extra_info") or {}
    dataset = str(info.get("dataset") or record.get("data_source") or "data")
    need = str(info.get("need") or truth.need)
    user = str(info.get("user_id") or truth.user_id or f"row{number}")
    index = int(info.get("index", number)) if info.get("index") is not None else number
    cutoff = info.get("cutoff_ts")
    return EvalRow(
        index=number,
        key=f"{dataset}|{user}|{need}|{index}|{number}",
        messages=_messages(record["prompt"], path, number),
        truth=truth,
        dataset=dataset,
        need=need,
        user=f"{dataset}|{user}",
        user_id=user,
        cutoff=float(cutoff) if cutoff is not None else math.nan,
        history=tuple(str(i) for i in (info.get("history_item_ids") or [])),
        history_ts=tuple(float(t) for t in (info.get("history_ts") or [])),
        query=str(info.get("query") or ""),
    )


def load_rows(path: str | Path, limit: int | None = None, *, sample: int | None = None, seed: int = 0) -> list[EvalRow]:
    """The first ``limit`` rows (all when None) of a FlexRec parquet file, or a seeded random
    ``sample`` of its rows (in file order; each keeps its row number, so keys do not change)."""
    if limit is not None and sample is not None:
        raise EvalDataError(f"{path}: give a row limit or a row sample, not both")
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise EvalDataError(f"{path}: cannot read as parquet: {e}") from None
    numbers = np.arange(table.num_rows)
    if limit is not None:
        numbers = numbers[:limit]
    if sample is not None and sample < table.num_rows:
        numbers = np.sort(np.random.default_rng([seed, 0x5A3]).choice(table.num_rows, size=sample, replace=False))
    records = table.take(numbers).to_pylist() if len(numbers) < table.num_rows else table.to_pylist()
    if not records:
        raise EvalDataError(f"{path}: no rows to evaluate")
    return [_row(r, path, int(i)) for i, r in zip(numbers, records)]


@dataclass
class TrainingInteractions:
    """Observed training interactions (``user_id, item_id, interest, timestamp``) and their origin."""

    frame: pd.DataFrame
    source: str
    notes: list[str] = field(default_factory=list)
    trend_window_s: float | None = None  # data prep's popularity window, when it recorded one


def interactions_from_rows(rows: Sequence[EvalRow], candidate_ts: Sequence[Sequence[float]] | None = None) -> pd.DataFrame:
    """Observed positive candidates and history items of training rows (module docstring, case 2)."""
    users, items, interest, times = [], [], [], []
    for n, row in enumerate(rows):
        t = row.truth
        signal = t.interest or t.gains
        cand_ts = list(candidate_ts[n]) if candidate_ts is not None else []
        for j, item in enumerate(row.item_ids):
            if t.observed[j] and signal[j] > 0:
                users.append(row.user_id)
                items.append(item)
                interest.append(float(signal[j]))
                times.append(cand_ts[j] if j < len(cand_ts) else row.cutoff)
        for item, ts in zip(row.history, row.history_ts or [math.nan] * len(row.history)):
            users.append(row.user_id)
            items.append(item)
            interest.append(1.0)
            times.append(ts)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "interest": interest, "timestamp": times})
    frame = frame.astype({"user_id": str, "item_id": str, "interest": float, "timestamp": float})
    # one row per pair: its latest interaction (NaN times sort first, so a dated one wins)
    frame = frame.sort_values(["user_id", "timestamp", "item_id"], na_position="first", kind="stable")
    return frame.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)


def _prep_window(folder: Path) -> float | None:
    """Popularity window (seconds) data prep recorded in prep_info.json, if any."""
    import json

    info = folder / "prep_info.json"
    if not info.is_file():
        return None
    try:
        days = json.loads(info.read_text()).get("settings", {}).get("popularity_days")
    except (ValueError, AttributeError):
        return None
    return float(days) * 86400.0 if days else None


def load_training_interactions(train_path: str | Path) -> TrainingInteractions:
    """Training interactions for the baselines (module docstring)."""
    train_path = Path(train_path)
    sibling = train_path.parent / "interactions.parquet"
    window = _prep_window(train_path.parent)
    if sibling.is_file():
        frame = pd.read_parquet(sibling)
        missing = [c for c in ("user_id", "item_id", "timestamp") if c not in frame.columns]
        if missing:
            raise EvalDataError(f"{sibling}: missing column(s) {missing}")
        hidden = 0
        if "observed" in frame.columns:
            hidden = int((~frame["observed"].astype(bool)).sum())
            frame = frame[frame["observed"].astype(bool)]
        if "interest" not in frame.columns:
            frame = frame.assign(interest=1.0)
        frame = frame[["user_id", "item_id", "interest", "timestamp"]].astype(
            {"user_id": str, "item_id": str, "interest": float, "timestamp": float}
        ).reset_index(drop=True)
        notes = [f"{hidden} unobserved (sparse) pairs left out"] if hidden else []
        return TrainingInteractions(frame, f"{sibling} (observed pairs)", notes, window)
    if not train_path.is_file():
        raise EvalDataError(f"{train_path}: training file not found (baselines learn from the training split)")
    table = pq.read_table(train_path)
    records = table.to_pylist()
    rows = [_row(r, train_path, i) for i, r in enumerate(records)]
    cand_ts = [list((r.get("extra_info") or {}).get("candidate_ts") or []) for r in records]
    frame = interactions_from_rows(rows, cand_ts)
    notes = [f"no interactions.parquet next to {train_path}: interactions derived from the training rows "
             "(observed candidates with positive interest + history items)"]
    return TrainingInteractions(frame, f"{train_path} (derived from rows)", notes, window)
