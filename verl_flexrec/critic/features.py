"""Support statistics the critic network reads: ridge biases, support counts, residual spread.

Everything here works on dense integer codes (``1..n``; 0 = unknown user / item) so the
cross-fitting of :mod:`.train` can refit it a few times cheaply. No torch, no verl.

:class:`BiasModel` -- the ridge-regularised bias model (also the ``bias`` baseline)::

    y(u, i) ~ g + b_u + b_i
    minimise  sum_obs (y - g - b_u - b_i)^2 + reg_user * sum_u b_u^2 + reg_item * sum_i b_i^2

solved exactly by block coordinate descent (each block -- g, all b_i, all b_u -- has a closed
form given the others: ``b_i = sum_{u in R(i)} (y - g - b_u) / (reg_item + n_i)``), to a tolerance.

:class:`SupportFeatures` -- per (user, item), from a reference set of observed points:

    b_u, b_i                         the bias model's terms (0 for an unknown user / item)
    log(1 + n_u), log(1 + n_i)       support: how many observed points the user / item has
    log s2_u, log s2_i               the user's / item's mean squared bias-model residual, shrunk
                                     toward the global one with ``prior`` pseudo-points:
                                     ``s2_u = (sum_{i in R(u)} r^2 + prior * s2) / (n_u + prior)``
    mf                               optional: the dot product of cornac MF factors fitted on the
                                     bias-model residuals' data (0 for an unknown user / item)

and the bias model's mean ``g + b_u + b_i`` (the network predicts a correction to it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BiasModel", "FEATURE_NAMES", "SupportFeatures", "mf_factors"]

FEATURE_NAMES = ("user_bias", "item_bias", "log1p_user_count", "log1p_item_count", "log_user_s2", "log_item_s2")


class BiasModel:
    """Ridge-regularised ``g + b_u + b_i`` on integer codes (index 0 = unknown, bias 0)."""

    def __init__(self, reg_user: float = 5.0, reg_item: float = 5.0, max_iter: int = 100, tol: float = 1e-7):
        if reg_user < 0 or reg_item < 0:
            raise ValueError(f"bias regularisation must be >= 0, got reg_user={reg_user}, reg_item={reg_item}")
        self.reg_user, self.reg_item, self.max_iter, self.tol = float(reg_user), float(reg_item), max_iter, tol

    def fit(self, users: np.ndarray, items: np.ndarray, y: np.ndarray, n_users: int, n_items: int) -> "BiasModel":
        users, items, y = np.asarray(users), np.asarray(items), np.asarray(y, dtype=np.float64)
        if not len(y):
            raise ValueError("the bias model needs at least one observed point")
        cnt_u = np.bincount(users, minlength=n_users + 1).astype(np.float64)
        cnt_i = np.bincount(items, minlength=n_items + 1).astype(np.float64)
        # a zero regulariser with an unobserved id would divide by zero: those biases stay 0
        den_u, den_i = cnt_u + self.reg_user, cnt_i + self.reg_item
        den_u[den_u == 0], den_i[den_i == 0] = 1.0, 1.0
        bu, bi, g = np.zeros(n_users + 1), np.zeros(n_items + 1), float(y.mean())
        for _ in range(self.max_iter):
            old = (g, bu.copy(), bi.copy())
            bi = np.bincount(items, weights=y - g - bu[users], minlength=n_items + 1) / den_i
            bu = np.bincount(users, weights=y - g - bi[items], minlength=n_users + 1) / den_u
            g = float(np.mean(y - bu[users] - bi[items]))
            bu[0] = bi[0] = 0.0
            step = max(abs(g - old[0]), np.abs(bu - old[1]).max(), np.abs(bi - old[2]).max())
            if step < self.tol:
                break
        self.global_mean, self.user_bias, self.item_bias = g, bu, bi
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.global_mean + self.user_bias[users] + self.item_bias[items]


def mf_factors(users, items, residual, n_users, n_items, k: int, reg: float, seed: int):
    """cornac MF (SGD, no biases) on bias-model residuals: ``(P (n_users+1, k), Q (n_items+1, k))``."""
    import cornac
    from cornac.data import Dataset

    ds = Dataset.from_uir(list(zip(users.tolist(), items.tolist(), residual.tolist())), seed=seed)
    mf = cornac.models.MF(
        k=k, max_iter=50, learning_rate=0.01, lambda_reg=reg, use_bias=False, early_stop=False, seed=seed, verbose=False
    )
    mf.fit(ds)
    p, q = np.zeros((n_users + 1, k)), np.zeros((n_items + 1, k))
    uid = np.fromiter(ds.uid_map.keys(), dtype=np.int64, count=len(ds.uid_map))
    iid = np.fromiter(ds.iid_map.keys(), dtype=np.int64, count=len(ds.iid_map))
    p[uid] = mf.u_factors[np.fromiter(ds.uid_map.values(), dtype=np.int64, count=len(uid))]
    q[iid] = mf.i_factors[np.fromiter(ds.iid_map.values(), dtype=np.int64, count=len(iid))]
    return p, q


class SupportFeatures:
    """Per-user and per-item statistics of a reference set; :meth:`transform` -> feature matrix.

    ``mf_dim = 0`` leaves the MF feature out.
    """

    def __init__(
        self,
        bias_reg: float = 5.0,
        prior: float = 5.0,
        mf_dim: int = 0,
        mf_reg: float = 0.1,
        seed: int = 0,
    ):
        self.bias_reg, self.prior, self.mf_dim, self.mf_reg, self.seed = bias_reg, prior, mf_dim, mf_reg, seed

    @property
    def names(self) -> tuple[str, ...]:
        return FEATURE_NAMES + (("mf",) if self.mf_dim else ())

    def fit(self, users: np.ndarray, items: np.ndarray, y: np.ndarray, n_users: int, n_items: int) -> "SupportFeatures":
        self.bias = BiasModel(self.bias_reg, self.bias_reg).fit(users, items, y, n_users, n_items)
        resid = np.asarray(y, dtype=np.float64) - self.bias.predict(users, items)
        s2 = float(np.mean(resid**2))
        self.count_u = np.bincount(users, minlength=n_users + 1).astype(np.float64)
        self.count_i = np.bincount(items, minlength=n_items + 1).astype(np.float64)
        self.count_u[0] = self.count_i[0] = 0.0
        prior = self.prior * max(s2, 1e-12)
        self.s2_u = (np.bincount(users, weights=resid**2, minlength=n_users + 1) + prior) / (self.count_u + self.prior)
        self.s2_i = (np.bincount(items, weights=resid**2, minlength=n_items + 1) + prior) / (self.count_i + self.prior)
        self.s2_u[0] = self.s2_i[0] = max(s2, 1e-12)
        if self.mf_dim:
            self.mf_p, self.mf_q = mf_factors(
                users, items, resid, n_users, n_items, self.mf_dim, self.mf_reg, self.seed)
        return self

    def transform(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features (n, F) float32, bias-model mean (n,) float64)``."""
        b = self.bias
        cols = [
            b.user_bias[users],
            b.item_bias[items],
            np.log1p(self.count_u[users]),
            np.log1p(self.count_i[items]),
            np.log(self.s2_u[users]),
            np.log(self.s2_i[items]),
        ]
        if self.mf_dim:
            cols.append(np.einsum("nf,nf->n", self.mf_p[users], self.mf_q[items]))
        return np.column_stack(cols).astype(np.float32), b.predict(users, items)

    def cross_fit(
        self, users: np.ndarray, items: np.ndarray, y: np.ndarray, n_users: int, n_items: int, folds: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold features: each point's features come from the other ``folds - 1`` folds, so the
        network sees the same kind of estimation error on its training points as on new ones."""
        n = len(y)
        fold = np.random.default_rng([seed, 0xF01D]).permutation(n) % max(2, folds)
        feats, base = np.zeros((n, len(self.names)), np.float32), np.zeros(n)
        for f in range(max(2, folds)):
            out, into = fold != f, fold == f
            if not out.any() or not into.any():
                continue
            part = SupportFeatures(self.bias_reg, self.prior, self.mf_dim, self.mf_reg, self.seed)
            part.fit(users[out], items[out], y[out], n_users, n_items)
            feats[into], base[into] = part.transform(users[into], items[into])
        return feats, base

    # -- persistence (plain tensors / floats, for torch.load(weights_only=True)) ----------------
    def state(self) -> dict:
        import torch

        arrays = {
            "user_bias": self.bias.user_bias,
            "item_bias": self.bias.item_bias,
            "count_u": self.count_u,
            "count_i": self.count_i,
            "s2_u": self.s2_u,
            "s2_i": self.s2_i,
        }
        if self.mf_dim:
            arrays.update(mf_p=self.mf_p, mf_q=self.mf_q)
        return {
            "settings": {"bias_reg": self.bias_reg, "prior": self.prior, "mf_dim": self.mf_dim, "mf_reg": self.mf_reg,
                         "seed": self.seed},
            "global_mean": self.bias.global_mean,
            "arrays": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> "SupportFeatures":
        self = cls(**state["settings"])
        a = {k: v.numpy() for k, v in state["arrays"].items()}
        self.bias = BiasModel(self.bias_reg, self.bias_reg)
        self.bias.global_mean, self.bias.user_bias, self.bias.item_bias = (
            float(state["global_mean"]), a["user_bias"], a["item_bias"])
        self.count_u, self.count_i, self.s2_u, self.s2_i = a["count_u"], a["count_i"], a["s2_u"], a["s2_i"]
        if self.mf_dim:
            self.mf_p, self.mf_q = a["mf_p"], a["mf_q"]
        return self
