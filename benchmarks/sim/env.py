"""A synthetic need-conditioned ranking environment (numpy + the package's framework-free math).

World (all parameters kept, so the truth is known)::

    m(u, i)        = mu + b_i + <p_u, q_i>                    latent interest mean
    interest(u, i) = max(0, m(u, i))                          the true base signal
    gain(u, i | n) = interest(u, i) * w_n(u, i)               the need's gain (verl_flexrec.needs)

with the package's built-in needs: ``maximize_interest`` (w = 1), ``explore_new_topics``
(w = novel_topic: 1 when the item's category is not in the user's history) and
``trend_promotion`` (w = the item's popularity divided by the most popular candidate's).

An *episode* (one prompt) is a (user, need, K candidates) triple. The policy sees, per candidate,
the features ``[q_i, p_u, p_u * q_i, b_i, novel_topic, popularity, onehot(need)]``; the test
metrics (NDCG@5, Recall@5 of the top-5 gains) always use the true gains.

Sparse mode (FlexRec §3.4, Table 8): only a ``density`` share of (user, item) pairs is observed,
each once, with heteroscedastic noise ``y = max(0, m + sd_i * eps)``. Training gains then use
the observed value where there is one and a *filler* elsewhere, each with a variance that feeds
the rollout uncertainty (0 where observed):

    noisy      a calibrated critic stand-in: mean max(0, m + sd_i * eps'), variance sd_i**2
    user_knn   verl_flexrec.critic.knn.UserKNNFiller fitted on the observed pairs
    item_knn   verl_flexrec.critic.knn.ItemKNNFiller fitted on the observed pairs
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verl_flexrec.needs import get_need
from verl_flexrec.ranking import ndcg, recall, top_n_relevant

__all__ = ["FILLERS", "EnvConfig", "Episodes", "RankingEnv", "rank_metrics"]

FILLERS = ("noisy", "user_knn", "item_knn")
NEEDS = ("maximize_interest", "explore_new_topics", "trend_promotion")


@dataclass
class EnvConfig:
    n_users: int = 400
    n_items: int = 800
    n_factors: int = 8
    n_categories: int = 8
    n_candidates: int = 20
    history_len: int = 8
    needs: tuple[str, ...] = NEEDS
    mean: float = 0.3
    bias_sd: float = 0.4
    factor_sd: float = 0.45
    noise_sd: tuple[float, float] = (0.1, 1.2)  # per-category observation noise range
    density: float = 0.1  # sparse mode: observed share of (user, item) pairs
    seed: int = 0


@dataclass
class Episodes:
    """A fixed set of prompts: arrays with a leading episode dimension."""

    users: np.ndarray  # (E,)
    needs: np.ndarray  # (E,) index into EnvConfig.needs
    items: np.ndarray  # (E, K)
    features: torch.Tensor  # (E, K, F) float32
    gains: torch.Tensor  # (E, K) float64, true need gains
    train_gains: torch.Tensor  # (E, K) float64, what the reward sees (= gains when dense)
    train_var: torch.Tensor  # (E, K) float64, variance of train_gains (0 = observed / dense)

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx) -> Episodes:
        idx = np.asarray(idx)
        t = torch.as_tensor(idx, dtype=torch.long)
        return Episodes(
            self.users[idx], self.needs[idx], self.items[idx], self.features[t], self.gains[t], self.train_gains[t], self.train_var[t]
        )


def rank_metrics(gains_ranked: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """Per-list NDCG@k and Recall@k of ranked gains ``(..., K)``; relevant = the items whose gain
    is among the list's top k (FlexRec's Recall@5). Both are order-free set properties of the
    list, so the ranked gains alone suffice."""
    return {
        f"ndcg@{k}": ndcg(gains_ranked, k),
        f"recall@{k}": recall(top_n_relevant(gains_ranked, k), k),
    }


class RankingEnv:
    """Users, items, needs and episodes; see the module docstring for the model."""

    def __init__(self, config: EnvConfig | None = None):
        self.cfg = c = config or EnvConfig()
        rng = np.random.default_rng(c.seed)
        self.rng = rng
        self.need_defs = [get_need(n) for n in c.needs]
        self.P = rng.normal(0, c.factor_sd, (c.n_users, c.n_factors))
        self.Q = rng.normal(0, c.factor_sd, (c.n_items, c.n_factors))
        self.b = rng.normal(0, c.bias_sd, c.n_items)
        self.category = rng.integers(0, c.n_categories, c.n_items)
        self.noise_sd = rng.permutation(np.linspace(*c.noise_sd, c.n_categories))[self.category]  # per item
        pop = rng.lognormal(0.0, 1.0, c.n_items)
        self.popularity = pop / pop.max()
        # history: each user's most liked items (a noisy top), whose categories count as "seen"
        m = self.mean_interest_matrix()
        noisy = m + rng.normal(0, 0.5, m.shape)
        hist = np.argsort(-noisy, axis=1)[:, : c.history_len]
        self.seen = np.zeros((c.n_users, c.n_categories), dtype=bool)
        np.put_along_axis(self.seen, self.category[hist], True, axis=1)
        # sparse observations: one noisy draw per observed pair
        self.observed = rng.random((c.n_users, c.n_items)) < c.density
        self.obs_value = np.maximum(0.0, m + self.noise_sd[None, :] * rng.normal(size=m.shape))
        self._fill_draw = rng.normal(size=m.shape)  # the noisy filler's error, fixed per pair

    # -- truth -------------------------------------------------------------------------------
    def mean_interest_matrix(self) -> np.ndarray:
        return self.cfg.mean + self.b[None, :] + self.P @ self.Q.T

    def interest(self, users, items) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        m = self.cfg.mean + self.b[items] + np.einsum("...f,...f->...", self.P[users], self.Q[items])
        return np.maximum(0.0, m)

    def need_features(self, users, items) -> dict[str, np.ndarray]:
        """Candidate features the needs read, ``(E, K)`` each."""
        users, items = np.asarray(users), np.asarray(items)
        novel = (~self.seen[users[:, None], self.category[items]]).astype(np.float64)
        pop = self.popularity[items]
        return {"novel_topic": novel, "popularity": pop / pop.max(-1, keepdims=True)}

    def need_weight(self, needs, feats: dict[str, np.ndarray]) -> np.ndarray:
        w = np.ones_like(feats["novel_topic"])
        for j, need in enumerate(self.need_defs):
            rows = np.asarray(needs) == j
            if rows.any() and need.weights:  # no weights = w 1
                w[rows] = need.weight({k: v[rows] for k, v in feats.items()})
        return w

    # -- episodes ----------------------------------------------------------------------------
    def sample_episodes(self, n: int, *, sparse: bool = False, filler: str = "noisy", rng=None, filler_model=None) -> Episodes:
        """``n`` prompts; in sparse mode the train gains are observed-or-filled (see module doc)."""
        c = self.cfg
        rng = rng or self.rng
        users = rng.integers(0, c.n_users, n)
        needs = rng.integers(0, len(c.needs), n)
        items = np.stack([rng.choice(c.n_items, c.n_candidates, replace=False) for _ in range(n)])
        nf = self.need_features(users, items)
        w = self.need_weight(needs, nf)
        gains = self.interest(users[:, None], items) * w
        train_gains, train_var = gains.copy(), np.zeros_like(gains)
        if sparse:
            train_gains, train_var = self._sparse_gains(users, items, w, filler, filler_model)
        feats = self._features(users, needs, items, nf)
        return Episodes(
            users,
            needs,
            items,
            torch.as_tensor(feats, dtype=torch.float32),
            torch.as_tensor(gains, dtype=torch.float64),
            torch.as_tensor(train_gains, dtype=torch.float64),
            torch.as_tensor(train_var, dtype=torch.float64),
        )

    def _features(self, users, needs, items, nf) -> np.ndarray:
        c = self.cfg
        E, K = items.shape
        p = np.broadcast_to(self.P[users][:, None, :], (E, K, c.n_factors))
        q = self.Q[items]
        onehot = np.zeros((E, K, len(c.needs)))
        onehot[np.arange(E), :, needs] = 1.0
        return np.concatenate(
            [q, p, p * q, self.b[items][..., None], nf["novel_topic"][..., None], nf["popularity"][..., None], onehot], -1
        )

    @property
    def num_features(self) -> int:
        return 3 * self.cfg.n_factors + 3 + len(self.cfg.needs)

    def observed_interactions(self):
        """The observed pairs as critic ``Interactions`` (string ids ``u<n>`` / ``i<n>``)."""
        from verl_flexrec.critic.data import Interactions

        u, i = np.nonzero(self.observed)
        return Interactions(
            np.char.add("u", u.astype(str)).astype(object),
            np.char.add("i", i.astype(str)).astype(object),
            np.full(len(u), "maximize_interest", dtype=object),
            self.obs_value[u, i],
            {},
            ["sim"],
            {"observed_points": len(u)},
        )

    def fit_filler(self, filler: str):
        """The KNN filler model fitted on the observed pairs (None for ``noisy``)."""
        if filler not in FILLERS:
            raise ValueError(f"filler must be one of {FILLERS}, got {filler!r}")
        if filler == "noisy":
            return None
        from verl_flexrec.critic.knn import ItemKNNFiller, UserKNNFiller

        model = UserKNNFiller() if filler == "user_knn" else ItemKNNFiller()
        return model.fit(self.observed_interactions())

    def _sparse_gains(self, users, items, w, filler, filler_model):
        uu = np.broadcast_to(users[:, None], items.shape)
        obs = self.observed[uu, items]
        if filler == "noisy":
            sd = self.noise_sd[items]
            m = self.cfg.mean + self.b[items] + np.einsum("ekf,ekf->ek", self.P[uu], self.Q[items])
            mean = np.maximum(0.0, m + sd * self._fill_draw[uu, items])
            var = sd**2
        else:
            if filler_model is None:
                raise ValueError(f"filler {filler!r} needs a fitted model (RankingEnv.fit_filler)")
            mean, var = filler_model.predict(
                np.char.add("u", uu.ravel().astype(str)).astype(object), list(np.char.add("i", items.ravel().astype(str)))
            )
            mean, var = np.maximum(0.0, mean.reshape(items.shape)), var.reshape(items.shape)
        base = np.where(obs, self.obs_value[uu, items], mean)
        base_var = np.where(obs, 0.0, var)
        return base * w, base_var * w**2
