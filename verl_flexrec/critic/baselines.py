"""Rating-prediction baselines the critic is compared with, all with the critic's ``predict`` interface.

Mean predictors (each returns a *unit* variance; :func:`fit_baselines` gives it its variance):

``constant``  the training mean.
``bias``      ridge-regularised ``g + b_u + b_i`` (:class:`~verl_flexrec.critic.features.BiasModel`).
``mf``        explicit matrix factorisation, ``cornac.models.MF`` (SGD, ``g + b_u + b_i + p_u.q_i``);
              an unknown user or item contributes no bias and no factor.
``user_knn`` / ``item_knn`` (:mod:`.knn`) predict a variance of their own (neighbour spread).

How every baseline gets its variance (:func:`fit_baselines`), the same for all of them and the
same slice the critic calibrates on: fit on the training part ``T``; on the validation slice ``V``
(each user's most recent points, :func:`~verl_flexrec.critic.data.validation_split`) set the
variance to ``scale * native_variance`` with ``scale = mean((y - mean)^2 / native_variance)`` -- the
NLL-optimal scalar, i.e. the held-out residual variance for a mean predictor -- and choose the one
knob (grid in :data:`BASELINES`) with the best validation NLL (for a mean predictor: the best
MSE); then refit on ``T + V`` for the final means. A variance from *held-out* residuals matters: in-sample residuals
of a bias model are ~20 % smaller than its errors on new points, which alone costs ~0.05 nats.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .data import Interactions, Vocab
from .features import BiasModel

__all__ = ["BASELINES", "BiasFiller", "ConstantFiller", "MFFiller", "ScaledFiller", "fit_baselines"]


def _codes(vocab: Vocab, ids: Any, n: int) -> np.ndarray:
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        return np.full(n, vocab.lookup([str(ids)])[0], dtype=np.int64)
    return vocab.lookup(ids)


class _MeanFiller:
    """A mean predictor; ``predict`` returns ``(mean, ones)``."""

    def fit(self, inter: Interactions):
        if not len(inter):
            raise ValueError(f"{type(self).__name__} needs at least one observed interaction")
        self.users, self.items = Vocab(sorted(set(inter.user_ids))), Vocab(sorted(set(inter.item_ids)))
        self._fit(self.users.lookup(inter.user_ids), self.items.lookup(inter.item_ids), inter.interest)
        return self

    def predict(self, user_ids, item_ids: Sequence[str], need=None, categories=None) -> tuple[np.ndarray, np.ndarray]:
        item_ids = [str(i) for i in item_ids]
        u, i = _codes(self.users, user_ids, len(item_ids)), self.items.lookup(item_ids)
        mean = np.asarray(self._mean(u, i), dtype=np.float64)
        return mean, np.ones_like(mean)


class ConstantFiller(_MeanFiller):
    """The training mean for everything."""

    def _fit(self, u, i, y):
        self.mean = float(np.mean(y))

    def _mean(self, u, i):
        return np.full(len(u), self.mean)


class BiasFiller(_MeanFiller):
    """``g + b_u + b_i`` with ridge penalty ``reg`` on user and item biases."""

    def __init__(self, reg: float = 5.0):
        self.reg = float(reg)

    def _fit(self, u, i, y):
        self.model = BiasModel(self.reg, self.reg).fit(u, i, y, len(self.users), len(self.items))

    def _mean(self, u, i):
        return self.model.predict(u, i)


class MFFiller(_MeanFiller):
    """``cornac.models.MF``: ``g + b_u + b_i + p_u . q_i`` by SGD with L2 penalty ``reg``."""

    def __init__(self, reg: float = 0.1, k: int = 10, max_iter: int = 100, seed: int = 0):
        self.reg, self.k, self.max_iter, self.seed = float(reg), int(k), int(max_iter), seed

    def _fit(self, u, i, y):
        import cornac
        from cornac.data import Dataset

        ds = Dataset.from_uir(list(zip(u.tolist(), i.tolist(), np.asarray(y, dtype=float).tolist())), seed=self.seed)
        mf = cornac.models.MF(k=self.k, max_iter=self.max_iter, learning_rate=0.01, lambda_reg=self.reg,
                              use_bias=True, num_threads=1, seed=self.seed, verbose=False).fit(ds)
        n_u, n_i = len(self.users) + 1, len(self.items) + 1
        # cornac's internal indices -> our codes (0 = unknown: zero bias, zero factors)
        uid, ui = np.array(list(ds.uid_map.keys())), np.array(list(ds.uid_map.values()))
        iid, ii = np.array(list(ds.iid_map.keys())), np.array(list(ds.iid_map.values()))
        self.global_mean = float(mf.global_mean)
        self.bu, self.bi = np.zeros(n_u), np.zeros(n_i)
        self.p, self.q = np.zeros((n_u, self.k)), np.zeros((n_i, self.k))
        self.bu[uid], self.p[uid] = mf.u_biases[ui], mf.u_factors[ui]
        self.bi[iid], self.q[iid] = mf.i_biases[ii], mf.i_factors[ii]

    def _mean(self, u, i):
        return self.global_mean + self.bu[u] + self.bi[i] + np.einsum("nf,nf->n", self.p[u], self.q[i])


class ScaledFiller:
    """``filler``'s mean with its variance multiplied by ``scale`` (a calibrated baseline)."""

    def __init__(self, filler, scale: float, info: dict | None = None):
        self.filler, self.scale, self.info = filler, float(scale), dict(info or {})

    def predict(self, user_ids, item_ids, need=None, categories=None) -> tuple[np.ndarray, np.ndarray]:
        mean, var = self.filler.predict(user_ids, item_ids, need=need, categories=categories)
        return mean, np.asarray(var, dtype=np.float64) * self.scale

    def __getattr__(self, name):  # users / items vocabularies of the wrapped filler
        if name == "filler":
            raise AttributeError(name)
        return getattr(self.filler, name)


def _knn(kind: str) -> Callable[[float], Any]:
    def make(k):
        from .knn import KNNFiller

        return KNNFiller(kind, k=int(k))

    return make


# name -> (factory(knob), knob name, grid)
BASELINES: dict[str, tuple[Callable[[float], Any], str, tuple]] = {
    "constant": (lambda _: ConstantFiller(), "", (None,)),
    "bias": (BiasFiller, "reg", (1.0, 3.0, 10.0, 30.0)),
    "mf": (MFFiller, "reg", (0.01, 0.1, 1.0)),
    "user_knn": (_knn("user"), "k", (20, 50, 100)),
    "item_knn": (_knn("item"), "k", (20, 50, 100)),
}


def fit_baselines(
    train: Interactions,
    val: Interactions,
    names: Sequence[str] = tuple(BASELINES),
    *,
    progress: bool = False,
) -> dict[str, ScaledFiller]:
    """Each baseline tuned on ``val``, variance-scaled on ``val``, refitted on ``train + val``.

    ``ScaledFiller.info`` records the chosen knob, the validation MSE / NLL and the scale.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    if not len(train) or not len(val):
        raise ValueError(f"baselines need training and validation points (got {len(train)} and {len(val)})")
    both = Interactions(
        np.concatenate([train.user_ids, val.user_ids]), np.concatenate([train.item_ids, val.item_ids]),
        np.concatenate([train.needs, val.needs]), np.concatenate([train.interest, val.interest]),
        {**train.item_categories, **val.item_categories},
    )
    y = val.interest
    out = {}
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="baselines", unit="model", dynamic_ncols=True)
    for name in it:
        make, knob, grid = BASELINES[name]
        best = None
        for value in grid:
            mean, var = make(value).fit(train).predict(val.user_ids, val.item_ids)
            mse = float(np.mean((y - mean) ** 2))
            scale = float(np.mean((y - mean) ** 2 / var)) or 1e-12
            nll = float(np.mean(0.5 * (np.log(2 * np.pi * var * scale) + (y - mean) ** 2 / (var * scale))))
            if best is None or nll < best["val_nll"]:
                best = {knob or "knob": value, "val_mse": mse, "val_nll": nll, "scale": scale}
        best.pop("knob", None)
        out[name] = ScaledFiller(make(best.get(knob)).fit(both), best["scale"], {"grid": list(grid), **best})
    return out
