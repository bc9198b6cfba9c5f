"""Synthetic sparse user x item interest with known heteroscedastic noise, and FlexRec parquet rows.

Used by the critic's tests and benchmark so they do not depend on real datasets or on
the data-prep pipeline (:mod:`verl_flexrec.data`). The generative model (all parameters are kept, so the truth is known)::

    interest(u, i) = max(0, mean(u, i) + sd(u, i) * N(0, 1))
    mean(u, i)     = global + b_u + b_i + <p_u, q_i>
    sd(u, i)       = category_sd[cat(i)] * user_sd[u]          (heteroscedastic, known)

Observation is sparse and skewed: user ``u`` observes about ``density * n_items * activity_u``
items, drawn without replacement with probability proportional to item popularity (both
log-normal), so some users and items are well observed and others barely. ``cold_user_frac`` /
``cold_item_frac`` mark users / items whose interactions are all held out (never trained on).

:func:`make_rows` turns observations into parquet rows in the :class:`GroundTruth` schema
(``data_source``, ``prompt``, ``ability``, ``reward_model``, ``extra_info``) and
:func:`write_parquet` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from ..needs import get_need
from ..schema import GroundTruth
from .data import Interactions

__all__ = ["SyntheticMatrix", "make_rows", "make_synthetic", "write_parquet"]


@dataclass
class SyntheticMatrix:
    n_users: int
    n_items: int
    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_category: np.ndarray  # (n_items,) int
    category_sd: np.ndarray  # (n_categories,)
    user_sd: np.ndarray  # (n_users,)
    item_popularity: np.ndarray  # (n_items,), sums to 1
    obs_users: np.ndarray  # (n_obs,) int indices of observed pairs
    obs_items: np.ndarray
    obs_values: np.ndarray  # one noisy draw per observed pair
    cold_users: np.ndarray  # (n_users,) bool
    cold_items: np.ndarray  # (n_items,) bool

    # -- truth -----------------------------------------------------------------------------
    def true_mean(self, u, i) -> np.ndarray:
        u, i = np.asarray(u), np.asarray(i)
        dot = (
            np.einsum("nf,nf->n", self.user_factors[u], self.item_factors[i])
            if u.ndim
            else float(self.user_factors[u] @ self.item_factors[i])
        )
        return self.global_mean + self.user_bias[u] + self.item_bias[i] + dot

    def true_var(self, u, i) -> np.ndarray:
        return (self.category_sd[self.item_category[np.asarray(i)]] * self.user_sd[np.asarray(u)]) ** 2

    def sample(self, u, i, rng: np.random.Generator) -> np.ndarray:
        m = self.true_mean(u, i)
        return np.maximum(0.0, m + np.sqrt(self.true_var(u, i)) * rng.standard_normal(np.shape(m)))

    # -- ids ---------------------------------------------------------------------------------
    @staticmethod
    def user_id(u) -> np.ndarray:
        return np.char.add("u", np.asarray(u).astype(str)).astype(object)

    @staticmethod
    def item_id(i) -> np.ndarray:
        return np.char.add("i", np.asarray(i).astype(str)).astype(object)

    def category_name(self, i) -> np.ndarray:
        return np.char.add("c", self.item_category[np.asarray(i)].astype(str)).astype(object)

    def item_categories(self) -> dict[str, tuple[str, ...]]:
        names = self.category_name(np.arange(self.n_items))
        return {iid: (c,) for iid, c in zip(self.item_id(np.arange(self.n_items)), names)}

    # -- splits ------------------------------------------------------------------------------
    def interactions(self, mask: np.ndarray | None = None) -> Interactions:
        """Observed pairs (optionally a boolean subset) as critic :class:`Interactions`."""
        sel = np.ones(len(self.obs_values), bool) if mask is None else np.asarray(mask, bool)
        u, i = self.obs_users[sel], self.obs_items[sel]
        return Interactions(
            self.user_id(u),
            self.item_id(i),
            np.full(len(u), "maximize_interest", dtype=object),
            self.obs_values[sel],
            self.item_categories(),
            ["synthetic"],
            {"observed_points": int(sel.sum())},
        )

    def split(self, test_frac: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks ``(train, test)`` over observed pairs: cold users/items go to test only."""
        rng = np.random.default_rng(seed)
        cold = self.cold_users[self.obs_users] | self.cold_items[self.obs_items]
        test = cold | (rng.random(len(self.obs_values)) < test_frac)
        return ~test, test


def make_synthetic(
    n_users: int = 200,
    n_items: int = 300,
    density: float = 0.1,
    *,
    n_factors: int = 4,
    n_categories: int = 8,
    global_mean: float = 3.0,
    bias_sd: float = 0.5,
    factor_sd: float = 0.5,
    noise_sd: tuple[float, float] = (0.1, 1.0),
    activity_sigma: float = 0.8,
    cold_user_frac: float = 0.0,
    cold_item_frac: float = 0.0,
    seed: int = 0,
) -> SyntheticMatrix:
    """A sparse heteroscedastic interest matrix; ``density`` = observed share of all cells."""
    if not (0 < density <= 1):
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    item_category = rng.integers(0, n_categories, n_items)
    category_sd = rng.permutation(np.linspace(noise_sd[0], noise_sd[1], n_categories))
    user_sd = rng.uniform(0.6, 1.4, n_users)
    activity = rng.lognormal(0.0, activity_sigma, n_users)
    popularity = rng.lognormal(0.0, activity_sigma, n_items)
    popularity /= popularity.sum()
    counts = np.clip(np.round(activity / activity.mean() * density * n_items), 2, n_items).astype(int)
    # Gumbel top-k: per user, counts[u] items without replacement, P ~ popularity
    keys = np.log(popularity)[None, :] + rng.gumbel(size=(n_users, n_items))
    order = np.argsort(-keys, axis=1)
    take = np.arange(n_items)[None, :] < counts[:, None]
    obs_users = np.repeat(np.arange(n_users), counts)
    obs_items = order[take]
    m = SyntheticMatrix(
        n_users=n_users,
        n_items=n_items,
        global_mean=global_mean,
        user_bias=rng.normal(0, bias_sd, n_users),
        item_bias=rng.normal(0, bias_sd, n_items),
        user_factors=rng.normal(0, factor_sd, (n_users, n_factors)),
        item_factors=rng.normal(0, factor_sd, (n_items, n_factors)),
        item_category=item_category,
        category_sd=category_sd,
        user_sd=user_sd,
        item_popularity=popularity,
        obs_users=obs_users,
        obs_items=obs_items,
        obs_values=np.zeros(len(obs_users)),
        cold_users=rng.random(n_users) < cold_user_frac,
        cold_items=rng.random(n_items) < cold_item_frac,
    )
    m.obs_values = m.sample(obs_users, obs_items, rng)
    return m


def make_rows(
    matrix: SyntheticMatrix,
    observed_mask: np.ndarray | None = None,
    *,
    n_candidates: int = 30,
    lists_per_user: int = 1,
    need: str = "maximize_interest",
    split: str = "train",
    users: Sequence[int] | None = None,
    only_observed: bool = False,
    observed_share: float | None = None,
    seed: int = 0,
    data_source: str = "synthetic/flexrec",
) -> list[dict]:
    """FlexRec parquet rows: per user, ``lists_per_user`` lists of ``n_candidates`` items.

    ``observed_mask`` selects the observed pairs this split may reveal (default all). Candidates
    are drawn uniformly from the catalogue (or only among the user's observed items when
    ``only_observed``; ``observed_share`` draws that share from observed items, the rest from
    unobserved ones); a candidate is observed when its pair is revealed, with its noisy draw as
    ``interest``. Unobserved candidates carry interest 0, gain 0 (to be filled), no variance.
    """
    rng = np.random.default_rng(seed)
    mask = np.ones(len(matrix.obs_values), bool) if observed_mask is None else np.asarray(observed_mask, bool)
    need_def = get_need(need)
    by_user: dict[int, dict[int, float]] = {}
    for u, i, y in zip(matrix.obs_users[mask], matrix.obs_items[mask], matrix.obs_values[mask]):
        by_user.setdefault(int(u), {})[int(i)] = float(y)
    user_list = sorted(by_user) if users is None else [int(u) for u in users]
    rows = []
    all_items = np.arange(matrix.n_items)
    for u in user_list:
        seen = by_user.get(u, {})
        seen_items = np.fromiter(seen, dtype=np.int64, count=len(seen))
        for _ in range(lists_per_user):
            if only_observed:
                if not len(seen_items):
                    continue
                cand = rng.choice(seen_items, size=min(n_candidates, len(seen_items)), replace=False)
            elif observed_share is not None:
                k_obs = min(len(seen_items), int(round(observed_share * n_candidates)))
                rest = np.setdiff1d(all_items, seen_items, assume_unique=True)
                cand = np.concatenate(
                    [
                        rng.choice(seen_items, size=k_obs, replace=False) if k_obs else np.zeros(0, np.int64),
                        rng.choice(rest, size=min(len(rest), n_candidates - k_obs), replace=False),
                    ]
                )
                rng.shuffle(cand)
            else:
                cand = rng.choice(all_items, size=min(n_candidates, matrix.n_items), replace=False)
            observed = np.array([int(i) in seen for i in cand])
            interest = np.array([seen.get(int(i), 0.0) for i in cand])
            cats = matrix.category_name(cand)
            # need features: novelty w.r.t. the categories of the user's other observed items,
            # popularity normalised over the candidate set
            history_cats = (
                set(matrix.category_name(np.setdiff1d(seen_items, cand)).tolist()) if len(seen_items) else set()
            )
            pop = matrix.item_popularity[cand]
            features = {
                "interest": interest,
                "novel_topic": np.array([0.0 if c in history_cats else 1.0 for c in cats]),
                "popularity": pop / pop.max(),
            }
            weight = need_def.weight(features)
            item_ids = matrix.item_id(cand).tolist()
            gt = GroundTruth(
                candidates=[f"v{x}" for x in item_ids],
                gains=(interest * weight).tolist(),
                observed=observed.tolist(),
                gain_var=[0.0] * len(cand),
                need=need,
                user_id=str(matrix.user_id(u)),
                item_ids=item_ids,
                interest=interest.tolist(),
                need_weight=weight.tolist(),
                categories=cats.tolist(),
            )
            listing = "\n".join(f"- v{x} (category {c})" for x, c in zip(item_ids, cats))
            rows.append(
                {
                    "data_source": data_source,
                    "prompt": [
                        {"role": "system", "content": "You are a recommender. Rank every candidate."},
                        {"role": "user", "content": f"{need_def.instruction}\nCandidates:\n{listing}"},
                    ],
                    "ability": "recommendation",
                    "reward_model": {"style": "rule", "ground_truth": gt.to_dict()},
                    "extra_info": {"split": split, "index": len(rows), "need": need, "user_id": gt.user_id},
                }
            )
    return rows


def write_parquet(rows: list[dict], path: str | Path) -> Path:
    """Write rows (structs inferred by pyarrow) atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path
