"""A synthetic need-conditioned ranking world for the learning benchmark (numpy + the package's math).

The truth is known, so a policy's rankings are scored on true gains::

    m(u, i)        = mean + b_i + <p_u, q_i> + <p_u, k_cat(i)>      user x item and user x category
    interest(u, i) = max(0, m(u, i))                                 need-free base signal
    gain(u, i | n) = interest(u, i) * w_n(u, i)                      the package's need definitions

with the built-in needs (:mod:`verl_flexrec.needs`): ``maximize_interest`` (w = 1),
``explore_new_topics`` (w = 1 when the item's category is absent from the user's history) and
``trend_promotion`` (w = popularity / the most popular candidate's). The policy sees the raw
factors, never their products, so the target is non-linear in what it sees: it has to learn the
bilinear user x item and user x category terms, the rectifier and the need's multiplicative
weight. Candidate features::

    [q_i, p_u, b_i, onehot(cat_i), history share of cat_i, novel_topic, popularity, onehot(need)]

and a prompt-level context ``[p_u, history category profile, onehot(need)]`` for the policy's
reasoning tokens.

Item ids are catalogue ids spelled as two tokens, ``id // id_base`` and ``id % id_base`` (ids are a
random permutation of the items, so a token says nothing about the item).

Sparse feedback (FlexRec §3.4, Table 8). A share ``density`` of (user, item) pairs is observed, and
the observed values are exact. Observation is missing-not-at-random and uneven, so that a filler
trained on it errs systematically and more where data is thin:

    P(observe u, i) = sigmoid(alpha + log activity_u + log exposure_i + mnar * z(m(u, i)))

with log-normal user activity (cold users), item exposure ``popularity**0.5`` times
``niche_exposure`` for a ``niche_share`` of the categories (rarely shown topics), ``mnar`` > 0
(people see more of what they like) and ``alpha`` set so the mean is ``density``. Unobserved
pairs are filled by a model fitted on the observed ones (the project's critic or a KNN filler):
gain ``w * max(mean, 0)``, variance ``w**2 * var``, exactly as ``verl_flexrec.critic.fill`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verl_flexrec.needs import get_need
from verl_flexrec.ranking import ndcg, recall, top_n_relevant

__all__ = ["NEEDS", "Episodes", "World", "WorldConfig", "rank_metrics"]

NEEDS = ("maximize_interest", "explore_new_topics", "trend_promotion")


@dataclass(frozen=True)
class WorldConfig:
    n_users: int = 400
    n_items: int = 800
    n_factors: int = 6
    n_categories: int = 10
    n_candidates: int = 20
    history_len: int = 10
    id_base: int = 32  # second id token's vocabulary; first token: id // id_base
    mean: float = 0.1
    bias_sd: float = 0.3
    factor_sd: float = 0.55
    category_sd: float = 0.5  # user x category affinity scale
    # sparse feedback
    density: float = 0.1
    activity_sd: float = 1.0
    niche_share: float = 0.4
    niche_exposure: float = 0.08
    mnar: float = 1.0
    seed: int = 0

    @property
    def n_prefix(self) -> int:
        return -(-self.n_items // self.id_base)

    @property
    def num_features(self) -> int:
        return 2 * self.n_factors + 1 + self.n_categories + 3 + len(NEEDS)

    @property
    def num_context(self) -> int:
        return self.n_factors + self.n_categories + len(NEEDS)


@dataclass
class Episodes:
    """A fixed set of prompts (user, need, K candidates); leading dimension = episode."""

    users: np.ndarray  # (E,)
    needs: np.ndarray  # (E,) index into NEEDS
    items: np.ndarray  # (E, K) item indices
    features: torch.Tensor  # (E, K, F) float32
    context: torch.Tensor  # (E, C) float32
    id_prefix: torch.Tensor  # (E, K) long, first id token of each candidate
    id_suffix: torch.Tensor  # (E, K) long, second id token
    gains: torch.Tensor  # (E, K) float64, true need gains
    train_gains: torch.Tensor  # (E, K) float64, what the reward sees (= gains when dense)
    train_var: torch.Tensor  # (E, K) float64, variance of train_gains (0 = observed / dense)

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx) -> Episodes:
        idx = np.asarray(idx)
        t = torch.as_tensor(idx, dtype=torch.long)
        return Episodes(
            self.users[idx],
            self.needs[idx],
            self.items[idx],
            *(getattr(self, f)[t] for f in ("features", "context", "id_prefix", "id_suffix", "gains", "train_gains", "train_var")),
        )

    def with_train_gains(self, train_gains: np.ndarray, train_var: np.ndarray) -> Episodes:
        out = Episodes(**self.__dict__)
        out.train_gains = torch.as_tensor(train_gains, dtype=torch.float64)
        out.train_var = torch.as_tensor(train_var, dtype=torch.float64)
        return out


def rank_metrics(gains_ranked: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """Per-list NDCG@k and Recall@k of ranked gains ``(..., K)`` (relevant = the top-k gains)."""
    return {f"ndcg@{k}": ndcg(gains_ranked, k), f"recall@{k}": recall(top_n_relevant(gains_ranked, k), k)}


class World:
    """Users, items, needs, sparse observations and episodes; see the module docstring."""

    def __init__(self, config: WorldConfig | None = None):
        self.cfg = c = config or WorldConfig()
        rng = np.random.default_rng(c.seed)
        self.P = rng.normal(0, c.factor_sd, (c.n_users, c.n_factors))
        self.Q = rng.normal(0, c.factor_sd, (c.n_items, c.n_factors))
        self.Kc = rng.normal(0, c.category_sd, (c.n_categories, c.n_factors)) / np.sqrt(c.n_factors) * 2
        self.b = rng.normal(0, c.bias_sd, c.n_items)
        self.category = rng.integers(0, c.n_categories, c.n_items)
        self.catalog_id = rng.permutation(c.n_items)
        pop = rng.lognormal(0.0, 1.0, c.n_items)
        self.popularity = pop / pop.max()
        self.need_defs = [get_need(n) for n in NEEDS]
        m = self.mean_matrix()
        self.interest_matrix = np.maximum(0.0, m)
        # history: each user's most liked items (a noisy top); its categories count as "seen"
        hist = np.argsort(-(m + rng.normal(0, 0.5, m.shape)), axis=1)[:, : c.history_len]
        self.history_share = np.zeros((c.n_users, c.n_categories))
        np.add.at(self.history_share, (np.arange(c.n_users)[:, None], self.category[hist]), 1.0 / c.history_len)
        self.seen = self.history_share > 0
        # sparse feedback: uneven, missing-not-at-random exposure; exact observed values
        activity = rng.lognormal(0.0, c.activity_sd, c.n_users)
        niche = rng.permutation(c.n_categories) < round(c.niche_share * c.n_categories)
        self.niche_category = niche
        exposure = np.sqrt(self.popularity) * np.where(niche[self.category], c.niche_exposure, 1.0)
        z = (m - m.mean()) / m.std()
        logit = np.log(activity)[:, None] + np.log(exposure)[None, :] + c.mnar * z
        alpha = _bisect(lambda a: _sigmoid(a + logit).mean() - c.density, -30.0, 30.0)
        self.observed = rng.random(m.shape) < _sigmoid(alpha + logit)

    # -- truth -------------------------------------------------------------------------------
    def mean_matrix(self) -> np.ndarray:
        c = self.cfg
        return c.mean + self.b[None, :] + self.P @ self.Q.T + self.P @ self.Kc[self.category].T

    def need_weights(self, users: np.ndarray, needs: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``w_n(u, i)`` of each episode's candidates, ``(E, K)``."""
        novel = (~self.seen[users[:, None], self.category[items]]).astype(np.float64)
        pop = self.popularity[items]
        feats = {"novel_topic": novel, "popularity": pop / pop.max(-1, keepdims=True)}
        w = np.ones(items.shape)
        for j, need in enumerate(self.need_defs):
            rows = needs == j
            if rows.any() and need.weights:
                w[rows] = need.weight({k: v[rows] for k, v in feats.items()})
        return w

    # -- episodes ----------------------------------------------------------------------------
    def sample_episodes(self, n: int, rng: np.random.Generator) -> Episodes:
        c = self.cfg
        users = rng.integers(0, c.n_users, n)
        needs = rng.integers(0, len(NEEDS), n)
        items = np.argsort(rng.random((n, c.n_items)), axis=1)[:, : c.n_candidates]
        w = self.need_weights(users, needs, items)
        gains = self.interest_matrix[users[:, None], items] * w
        ids = self.catalog_id[items]
        g = torch.as_tensor(gains, dtype=torch.float64)
        return Episodes(
            users,
            needs,
            items,
            torch.as_tensor(self._features(users, needs, items), dtype=torch.float32),
            torch.as_tensor(self._context(users, needs), dtype=torch.float32),
            torch.as_tensor(ids // c.id_base, dtype=torch.long),
            torch.as_tensor(ids % c.id_base, dtype=torch.long),
            g,
            g.clone(),
            torch.zeros_like(g),
        )

    def _features(self, users, needs, items) -> np.ndarray:
        c = self.cfg
        E, K = items.shape
        cat = self.category[items]
        pop = self.popularity[items]
        cols = [
            self.Q[items],
            np.broadcast_to(self.P[users][:, None, :], (E, K, c.n_factors)),
            self.b[items][..., None],
            np.eye(c.n_categories)[cat],
            self.history_share[users[:, None], cat][..., None],
            (~self.seen[users[:, None], cat]).astype(np.float64)[..., None],
            (pop / pop.max(-1, keepdims=True))[..., None],
            np.broadcast_to(np.eye(len(NEEDS))[needs][:, None, :], (E, K, len(NEEDS))),
        ]
        return np.concatenate(cols, -1)

    def _context(self, users, needs) -> np.ndarray:
        return np.concatenate([self.P[users], self.history_share[users], np.eye(len(NEEDS))[needs]], -1)

    # -- fillers -----------------------------------------------------------------------------
    def observed_interactions(self):
        """The observed pairs as critic ``Interactions`` (ids ``u<n>`` / ``i<n>``, category ``c<k>``)."""
        from verl_flexrec.critic import Interactions

        u, i = np.nonzero(self.observed)
        items = np.char.add("i", np.arange(self.cfg.n_items).astype(str))
        return Interactions(
            np.char.add("u", u.astype(str)).astype(object),
            items[i].astype(object),
            np.full(len(u), "maximize_interest", dtype=object),
            self.interest_matrix[u, i],
            {str(items[j]): (f"c{self.category[j]}",) for j in range(self.cfg.n_items)},
            ["sim"],
            {"observed_points": len(u)},
        )

    def fill_episodes(self, episodes: Episodes, filler) -> tuple[Episodes, dict]:
        """Observed-or-filled train gains from a fitted filler (``predict(user_ids, item_ids)``),
        and the filler's errors on the episodes' unobserved candidates (:func:`filler_errors`)."""
        uu = np.broadcast_to(episodes.users[:, None], episodes.items.shape)
        pair, inverse = np.unique(uu * self.cfg.n_items + episodes.items, return_inverse=True)
        pu, pi = pair // self.cfg.n_items, pair % self.cfg.n_items
        mean, var = filler.predict(np.char.add("u", pu.astype(str)).astype(object), list(np.char.add("i", pi.astype(str))))
        mean = np.asarray(mean, dtype=np.float64)[inverse].reshape(uu.shape)
        var = np.asarray(var, dtype=np.float64)[inverse].reshape(uu.shape)
        obs = self.observed[uu, episodes.items]
        w = self.need_weights(episodes.users, episodes.needs, episodes.items)
        base = np.where(obs, self.interest_matrix[uu, episodes.items], np.maximum(mean, 0.0))
        base_var = np.where(obs, 0.0, np.maximum(var, 0.0))
        filled = episodes.with_train_gains(base * w, base_var * w**2)
        err = (np.maximum(mean, 0.0) - self.interest_matrix[uu, episodes.items])[~obs]
        return filled, {"error": err, "sd": np.sqrt(np.maximum(var, 0.0))[~obs], "category": self.category[episodes.items][~obs]}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bisect(f, lo: float, hi: float, iters: int = 60) -> float:
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)
