"""``interactions.parquet``: the uncertainty critic's training interactions (KuaiRec, MovieLens).

Every interaction of the training period, one row per (user, item), in the plain-table layout
that ``verl_flexrec.critic.data.load_interactions`` reads (:data:`.parquet.INTERACTIONS_SCHEMA`)::

    user_id     str      dataset user id (as in ground_truth.user_id)
    item_id     str      dataset item id (as in ground_truth.item_ids)
    interest    float64  the base signal (capped watch ratio / star rating); 0.0 where not observed
    observed    bool     the sparse variant's per-pair coin (observed_mask); all True when dense
    categories  str      the item's categories, '|'-joined (as in ground_truth.categories)
    timestamp   float64  time of the pair's latest interaction before the user's cut-off
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .events import EventLog, Task
from .parquet import INTERACTIONS_SCHEMA
from .seeded import observed_mask
from .split import training_limits

__all__ = ["training_interactions"]


def _pair_codes(users: np.ndarray, items: np.ndarray, other_users: np.ndarray, other_items: np.ndarray):
    """One int64 code per (user, item) pair, comparable between the two sets of pairs."""
    u, _ = pd.factorize(np.concatenate([users, other_users]))
    i, item_values = pd.factorize(np.concatenate([items, other_items]))
    codes = u.astype(np.int64) * max(len(item_values), 1) + i
    return codes[: len(users)], codes[len(users):]


def training_interactions(all_inter: EventLog, cats: Callable[[int], Sequence[str]],
                          cutoffs: Mapping[int, float], default_cutoff: float, test_tasks: Sequence[Task], *,
                          sparse_frac: float | None, seed: int) -> tuple[pa.Table, dict]:
    """The critic's table (:data:`INTERACTIONS_SCHEMA`): every training-period interaction.

    Kept: each interaction of ``all_inter`` (the data every history and training candidate is
    drawn from) strictly before its user's training limit (the user's test cut-off, else the
    global cut-off, else no limit), whether or not a sampled training row shows it. Left out:
    every (user, item) pair that is a test candidate (the time split already excludes them; this
    makes sure). One row per (user, item): its latest interaction before the limit (the one a
    history shows). Rows are in (user, time, item) order, so the bytes depend only on the input
    and the seed.

    ``observed`` is :func:`observed_mask` -- the very coin the sparse rows use for that pair --
    or all True when dense. Where it is False, ``interest`` is written as 0.0 (as in the sparse
    rows' ground truth): the true value never reaches the file, so the critic cannot learn it.
    """
    keep = all_inter.ts < training_limits(all_inter, cutoffs, default_cutoff)
    user, item, ts, interest = (a[keep] for a in (all_inter.user, all_inter.item, all_inter.ts, all_inter.interest))
    pairs = np.array([(t.user, int(i)) for t in test_tasks for i in t.cand_items], dtype=np.int64).reshape(-1, 2)
    codes, test_codes = _pair_codes(user, item, pairs[:, 0], pairs[:, 1])
    # no test-candidate pair; rows are in (user, time, item) order, so the last duplicate of a pair
    # is its latest interaction
    codes = pd.Series(codes)
    keep = ~codes.isin(test_codes).to_numpy() & ~codes.duplicated(keep="last").to_numpy()
    user, item, ts, interest = user[keep], item[keep], ts[keep], interest[keep]

    starts = np.flatnonzero(np.diff(user, prepend=user[:1] - 1))  # user is sorted: where each user begins
    observed = np.ones(len(user), dtype=bool)
    if sparse_frac is not None:
        ends = np.append(starts[1:], len(user))
        for u, lo, hi in zip(user[starts].tolist(), starts.tolist(), ends.tolist()):
            observed[lo:hi] = observed_mask(seed, u, item[lo:hi].tolist(), sparse_frac)
        interest = np.where(observed, interest, 0.0)

    item_index, item_values = pd.factorize(item)
    cat_values = pa.array(["|".join(cats(int(i))) for i in item_values], type=pa.string())
    table = pa.table({
        "user_id": pc.cast(pa.array(user, type=pa.int64()), pa.string()),
        "item_id": pc.cast(pa.array(item, type=pa.int64()), pa.string()),
        "interest": pa.array(interest, type=pa.float64()),
        "observed": pa.array(observed, type=pa.bool_()),
        "categories": cat_values.take(pa.array(item_index.astype(np.int64))),
        "timestamp": pa.array(ts, type=pa.float64()),
    }, schema=INTERACTIONS_SCHEMA)
    summary = {"rows": table.num_rows, "observed": int(observed.sum()), "users": len(starts),
               "items": len(item_values), "unobserved_interest": "written as 0.0 (hidden)"}
    return table, summary
