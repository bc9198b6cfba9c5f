"""Reading the critic's training signal from FlexRec parquet files.

Every row's ``reward_model.ground_truth`` (:class:`verl_flexrec.schema.GroundTruth`) lists its
candidates' dataset ``item_ids``, the row's ``user_id`` and ``need``, the base ``interest`` signal
and the ``observed`` mask. The critic trains on ``(user_id, item_id, interest)`` where observed;
the same pair seen in several rows (several needs or lists per user) is one training point (its
mean interest). Item categories (``|``-joined per candidate) are collected from every candidate,
observed or not: side information is known for the whole catalogue.

Bad input raises :class:`CriticDataError` naming the file, the row and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..schema import GroundTruth, GroundTruthError

__all__ = [
    "CriticDataError",
    "Interactions",
    "Vocab",
    "iter_ground_truths",
    "load_interactions",
    "read_reward_column",
    "split_categories",
    "validation_split",
]


class CriticDataError(ValueError):
    """Input data the critic cannot use; the message names the file, row and field."""


def split_categories(value: Any) -> tuple[str, ...]:
    """``"a|b"`` -> ``("a", "b")``; empty / None -> ``()``."""
    if value is None:
        return ()
    return tuple(c for c in (p.strip() for p in str(value).split("|")) if c)


class Vocab:
    """String ids -> dense indices ``1..n``; anything unknown maps to 0."""

    def __init__(self, values: Iterable[str] = ()):
        self.values: list[str] = []
        self._index: dict[str, int] = {}
        for v in values:
            v = str(v)
            if v not in self._index:
                self.values.append(v)
                self._index[v] = len(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: str) -> bool:
        return str(value) in self._index

    def lookup(self, values: Iterable[Any]) -> np.ndarray:
        get = self._index.get
        if isinstance(values, np.ndarray) and values.dtype.kind in "US":
            values = values.tolist()
        return np.fromiter((get(v if isinstance(v, str) else str(v), 0) for v in values), dtype=np.int64)


@dataclass
class Interactions:
    """Observed ``(user, item, need, interest)`` points plus item side information.

    ``timestamps`` (seconds; NaN where unknown) orders a user's points in time, for the critic's
    time-later validation slice; ``cutoffs`` is the training cut-off of the row a held-out point
    came from (``extra_info.cutoff_ts``), for the evaluation's "time since cut-off" breakdown.
    """

    user_ids: np.ndarray  # object array of str
    item_ids: np.ndarray
    needs: np.ndarray
    interest: np.ndarray  # float64
    item_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    timestamps: np.ndarray | None = None  # float64, NaN = unknown
    cutoffs: np.ndarray | None = None  # float64, NaN = unknown

    def __post_init__(self):
        n = len(self.interest)
        self.user_ids = np.asarray(self.user_ids, dtype=object).astype(str).astype(object)
        self.item_ids = np.asarray(self.item_ids, dtype=object).astype(str).astype(object)
        if self.needs is None or len(self.needs) == 0:
            self.needs = np.full(n, "", dtype=object)
        self.needs = np.asarray(self.needs, dtype=object).astype(str).astype(object)
        self.interest = np.asarray(self.interest, dtype=np.float64)
        for name in ("timestamps", "cutoffs"):
            value = getattr(self, name)
            setattr(self, name, np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64))
        for name in ("user_ids", "item_ids", "needs", "timestamps", "cutoffs"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has {len(getattr(self, name))} entries, interest has {n}")
        if n and not np.isfinite(self.interest).all():
            raise ValueError("Interactions.interest has non-finite values")

    def __len__(self) -> int:
        return len(self.interest)

    def subset(self, mask_or_idx) -> "Interactions":
        return Interactions(
            self.user_ids[mask_or_idx],
            self.item_ids[mask_or_idx],
            self.needs[mask_or_idx],
            self.interest[mask_or_idx],
            self.item_categories,
            list(self.sources),
            dict(self.stats),
            self.timestamps[mask_or_idx],
            self.cutoffs[mask_or_idx],
        )

    @property
    def has_time(self) -> bool:
        """True when every point has a timestamp."""
        return bool(len(self)) and bool(np.isfinite(self.timestamps).all())

    def dedupe(self, by_need: bool = False) -> "Interactions":
        """One point per (user, item[, need]): the mean interest of its duplicates (their latest
        timestamp and cut-off)."""
        if not len(self):
            return self
        import pandas as pd

        keys = ["user", "item"] + (["need"] if by_need else [])
        df = pd.DataFrame({"user": self.user_ids, "item": self.item_ids, "need": self.needs, "y": self.interest,
                           "ts": self.timestamps, "cut": self.cutoffs})
        agg = {"y": ["mean", "std"], "ts": ["max"], "cut": ["max"]}
        if not by_need:
            agg["need"] = "first"
        g = df.groupby(keys, sort=False).agg(agg).reset_index()
        g.columns = [
            c if isinstance(c, str) else (c[0] if c[1] in ("", "first", "max") else f"{c[0]}_{c[1]}") for c in g.columns
        ]
        stats = dict(self.stats)
        stats["duplicates_merged"] = int(len(df) - len(g))
        stats["conflicting_duplicates"] = int((g["y_std"].fillna(0) > 1e-9).sum())
        return Interactions(
            g["user"].to_numpy(object),
            g["item"].to_numpy(object),
            g["need"].to_numpy(object),
            g["y_mean"].to_numpy(np.float64),
            self.item_categories,
            list(self.sources),
            stats,
            g["ts"].to_numpy(np.float64),
            g["cut"].to_numpy(np.float64),
        )


def read_reward_column(path: str | Path, *, full_table: bool = False):
    """Read a parquet file; returns ``(table, ground_truth_values)`` (python objects, one per row).

    ``table`` is the whole file when ``full_table`` (for rewriting it), else ``None``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CriticDataError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CriticDataError(f"{path}: not a readable parquet file: {e}") from None
    if "reward_model" not in schema.names:
        raise CriticDataError(f"{path}: no column 'reward_model' (columns: {schema.names})")
    try:
        table = pq.read_table(path) if full_table else pq.read_table(path, columns=["reward_model"])
    except (pa.ArrowInvalid, OSError) as e:
        raise CriticDataError(f"{path}: cannot read parquet: {e}") from None
    values = []
    for row, rm in enumerate(table.column("reward_model").to_pylist()):
        if isinstance(rm, str):  # a JSON-string reward_model
            import json

            try:
                rm = json.loads(rm)
            except json.JSONDecodeError as e:
                raise CriticDataError(f"{path}: row {row}: reward_model is a string but not JSON: {e}") from None
        if not isinstance(rm, dict) or rm.get("ground_truth") is None:
            raise CriticDataError(f"{path}: row {row}: reward_model.ground_truth is missing")
        values.append(rm["ground_truth"])
    return (table if full_table else None), values


def parse_ground_truth(value: Any, path: str | Path, row: int) -> GroundTruth:
    """:meth:`GroundTruth.from_any` with the file and row in the error message."""
    try:
        return GroundTruth.from_any(value)
    except (GroundTruthError, TypeError) as e:
        raise CriticDataError(
            f"{path}: row {row}: reward_model.{e}"
            if str(e).startswith("ground_truth")
            else f"{path}: row {row}: reward_model.ground_truth: {e}"
        ) from None


def check_critic_fields(gt: GroundTruth, path: str | Path, row: int, *, need_interest: bool = True) -> None:
    """The fields the critic reads must be present and finite."""
    where = f"{path}: row {row}: reward_model.ground_truth"
    if not gt.item_ids:
        raise CriticDataError(f"{where}.item_ids is empty (the critic needs the candidates' dataset item ids)")
    if not gt.user_id:
        raise CriticDataError(f"{where}.user_id is empty (the critic needs the dataset user id)")
    if need_interest and any(gt.observed):
        if not gt.interest:
            raise CriticDataError(f"{where}.interest is empty but {sum(gt.observed)} candidates are observed")
        for j, (o, x) in enumerate(zip(gt.observed, gt.interest)):
            if o and not math.isfinite(x):
                raise CriticDataError(f"{where}.interest[{j}] = {x!r}: must be finite where observed")


def iter_ground_truths(path: str | Path) -> Iterator[tuple[int, GroundTruth]]:
    """``(row, GroundTruth)`` for every row of a FlexRec parquet file."""
    _, values = read_reward_column(path)
    for row, value in enumerate(values):
        yield row, parse_ground_truth(value, path, row)


INTERACTION_COLUMNS = ("user_id", "item_id", "interest")


def _interactions_table(path: str | Path) -> dict | None:
    """Columns of a plain interactions table, validated; None for a FlexRec row file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CriticDataError(f"{path}: file not found")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise CriticDataError(f"{path}: not a readable parquet file: {e}") from None
    if "reward_model" in names or not all(c in names for c in INTERACTION_COLUMNS):
        return None
    optional = [c for c in ("need", "categories", "observed", "timestamp") if c in names]
    t = pq.read_table(path, columns=[*INTERACTION_COLUMNS, *optional])
    n = t.num_rows
    out = {}
    for col in ("user_id", "item_id"):
        vals = t.column(col).to_pylist()
        bad = next((r for r, v in enumerate(vals) if v is None or str(v) == ""), None)
        if bad is not None:
            raise CriticDataError(f"{path}: row {bad}: {col} is empty")
        out[col] = [str(v) for v in vals]
    try:
        y = t.column("interest").to_numpy(zero_copy_only=False).astype(np.float64)
    except (TypeError, ValueError, pa.ArrowInvalid) as e:
        raise CriticDataError(f"{path}: column interest is not numeric: {e}") from None
    obs = np.asarray(t.column("observed").to_pylist(), dtype=bool) if "observed" in optional else np.ones(n, bool)
    bad = np.flatnonzero(obs & ~np.isfinite(y))
    if len(bad):
        raise CriticDataError(f"{path}: row {bad[0]}: interest = {y[bad[0]]!r} must be finite")
    out["interest"] = y
    out["observed"] = obs
    out["need"] = [str(v or "") for v in t.column("need").to_pylist()] if "need" in optional else [""] * n
    out["categories"] = t.column("categories").to_pylist() if "categories" in optional else [None] * n
    ts = np.full(n, np.nan)
    if "timestamp" in optional:
        try:
            ts = t.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64)
        except (TypeError, ValueError, pa.ArrowInvalid):
            pass  # timestamps are optional side information: unusable ones count as unknown
    out["timestamp"] = ts
    return out


def _row_times(path: str | Path) -> list[tuple[list, float]] | None:
    """Per row ``(candidate timestamps, cut-off)`` from ``extra_info`` when data prep wrote them."""
    import pyarrow.parquet as pq

    if "extra_info" not in pq.read_schema(path).names:
        return None
    out = []
    for info in pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist():
        info = info if isinstance(info, dict) else {}
        ts, cut = info.get("candidate_ts"), info.get("cutoff_ts")
        out.append((list(ts) if ts is not None else [], float(cut) if cut is not None else np.nan))
    return out


def load_interactions(
    paths: str | Path | Sequence[str | Path], *, dedupe: bool = True, by_need: bool = False
) -> Interactions:
    """Observed interactions of one or more parquet files (validated, deduplicated).

    Each file is either a FlexRec row file (``reward_model.ground_truth``: its observed candidates
    are the points) or a plain *interactions table* with columns ``user_id``, ``item_id``,
    ``interest`` and optionally ``need``, ``categories`` (``|``-joined) and ``observed`` (rows with
    ``observed == False`` are skipped): the way to give the critic every observed training
    interaction, not only those that appear as candidates.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    users, items, needs, ys, times, cutoffs = [], [], [], [], [], []
    cats: dict[str, tuple[str, ...]] = {}
    n_rows = 0
    for path in paths:
        table = _interactions_table(path)
        if table is not None:
            n_rows += len(table["interest"])
            for item, c in zip(table["item_id"], table["categories"]):
                if c is not None and item not in cats:
                    cats[item] = split_categories(c)
            keep = table["observed"]
            users.extend(np.asarray(table["user_id"], dtype=object)[keep])
            items.extend(np.asarray(table["item_id"], dtype=object)[keep])
            needs.extend(np.asarray(table["need"], dtype=object)[keep])
            ys.extend(table["interest"][keep])
            times.extend(table["timestamp"][keep])
            cutoffs.extend(np.full(int(keep.sum()), np.nan))
            continue
        row_times = _row_times(path)
        for row, gt in iter_ground_truths(path):
            n_rows += 1
            check_critic_fields(gt, path, row)
            if gt.categories:
                for item, c in zip(gt.item_ids, gt.categories):
                    if item not in cats:
                        cats[item] = split_categories(c)
            for j, o in enumerate(gt.observed):
                if o:
                    users.append(gt.user_id)
                    items.append(gt.item_ids[j])
                    needs.append(gt.need)
                    ys.append(gt.interest[j])
                    ts, cut = row_times[row] if row_times is not None else ([], np.nan)
                    times.append(float(ts[j]) if j < len(ts) and ts[j] is not None else np.nan)
                    cutoffs.append(cut)
    stats = {"rows": n_rows, "observed_points": len(ys)}
    inter = Interactions(
        np.asarray(users, dtype=object),
        np.asarray(items, dtype=object),
        np.asarray(needs, dtype=object),
        np.asarray(ys, dtype=np.float64),
        cats,
        [str(p) for p in paths],
        stats,
        np.asarray(times, dtype=np.float64),
        np.asarray(cutoffs, dtype=np.float64),
    )
    return inter.dedupe(by_need=by_need) if dedupe else inter


def validation_split(inter: Interactions, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: a validation slice that looks like the held-out future.

    With timestamps on every point: each user's most recent ``ceil(frac * n_u)`` points, for users
    with at least 2 (a user's only point stays in training); ties in time are broken at random.
    Held-out data in FlexRec is always *later* than the training data (a per-user or a global
    cut-off), and a user's latest points are the closest stand-in; they also weigh users more
    evenly, as a test set with K candidates per user does. Without timestamps (or when that
    leaves nothing): a uniformly random ``frac`` of the points. ``frac = 0``: no validation slice.
    At least one point stays on each side when there are 2 or more.
    """
    n = len(inter)
    if frac <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5A11])
    val = np.zeros(n, dtype=bool)
    if inter.has_time:
        import pandas as pd

        order = rng.permutation(n)  # random tie-breaking
        df = pd.DataFrame({"u": inter.user_ids[order], "t": inter.timestamps[order]}, index=order)
        rank = df.groupby("u", sort=False)["t"].rank(method="first", ascending=False)
        size = df.groupby("u", sort=False)["u"].transform("size")
        take = np.where(size >= 2, np.ceil(frac * size), 0)
        val[df.index.to_numpy()[(rank <= take).to_numpy()]] = True
    if not val.any():
        val[rng.permutation(n)[: max(1, int(round(frac * n)))]] = True
    if val.all():
        val[rng.integers(n)] = False
    return np.flatnonzero(~val), np.flatnonzero(val)
