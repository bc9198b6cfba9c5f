"""User-KNN and Item-KNN collaborative-filtering fillers (the paper's Table 8 baselines).

Classic mean-centred neighbourhood CF (Herlocker et al. 1999; Sarwar et al. 2001). For User-KNN
the "rows" are users and the "columns" items; Item-KNN swaps them. Each row's observed values are
centred by the row mean, the ``k`` most similar rows are found with scikit-learn's
``NearestNeighbors`` (cosine distance on the centred sparse rows, i.e. a Pearson-style
similarity), and a query (row r, column c) is predicted as

    mean(r, c) = rowmean_r + sum_{v in N(r), v saw c} s_rv * res_vc / sum |s_rv|

(only positive similarities are used). The variance is the similarity-weighted dispersion of the
neighbours' residuals, shrunk toward the global residual variance with ``shrink`` pseudo-counts,
so a prediction from few neighbours is uncertain. Unknown rows fall back to the column mean and
unknown columns to the row mean, both with the corresponding marginal variance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .data import Interactions, Vocab

__all__ = ["ItemKNNFiller", "KNNFiller", "UserKNNFiller"]


class KNNFiller:
    """Neighbourhood CF filler with the critic's ``predict`` interface."""

    def __init__(self, kind: str = "user", k: int = 50, shrink: float = 2.0):
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.kind, self.k, self.shrink = kind, int(k), float(shrink)
        self._fitted = False

    def fit(self, inter: Interactions) -> "KNNFiller":
        import scipy.sparse as sp
        from sklearn.neighbors import NearestNeighbors

        if len(inter) == 0:
            raise ValueError("KNN filler needs at least one observed interaction")
        users, items = Vocab(sorted(set(inter.user_ids))), Vocab(sorted(set(inter.item_ids)))
        u, i = users.lookup(inter.user_ids) - 1, items.lookup(inter.item_ids) - 1
        rows, cols = (u, i) if self.kind == "user" else (i, u)
        self.row_vocab, self.col_vocab = (users, items) if self.kind == "user" else (items, users)
        n_rows, n_cols = len(self.row_vocab), len(self.col_vocab)
        y = inter.interest.astype(np.float64)
        self.global_mean = float(y.mean())
        self.global_var = float(y.var()) if len(y) > 1 else 1.0
        cnt_r = np.bincount(rows, minlength=n_rows)
        self.row_mean = np.bincount(rows, weights=y, minlength=n_rows) / np.maximum(cnt_r, 1)
        cnt_c = np.bincount(cols, minlength=n_cols)
        self.col_mean = np.bincount(cols, weights=y, minlength=n_cols) / np.maximum(cnt_c, 1)
        res = y - self.row_mean[rows]
        self.res_var = float(res.var()) if len(res) > 1 else self.global_var
        col_res = y - self.col_mean[cols]
        self.col_res_var = float(col_res.var()) if len(col_res) > 1 else self.global_var
        # keep only one value per cell (the mean of duplicates is done upstream by Interactions.dedupe)
        mat = sp.csr_matrix((res, (rows, cols)), shape=(n_rows, n_cols))
        mat.sum_duplicates()
        self._res = mat
        # position matrix: data = index + 1 into mat.data, for O(1) cell lookups
        self._pos = sp.csr_matrix(
            (np.arange(1, mat.nnz + 1, dtype=np.float64), mat.indices, mat.indptr), shape=mat.shape
        )
        k = min(self.k + 1, n_rows)
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
        nn.fit(mat)
        dist, nb = nn.kneighbors(mat)
        sim = 1.0 - dist
        sim[nb == np.arange(n_rows)[:, None]] = 0.0  # never your own neighbour
        sim[~np.isfinite(sim) | (sim < 0)] = 0.0
        self._nb, self._sim = nb.astype(np.int64), sim
        self._fitted = True
        return self

    def predict(
        self, user_ids: Any, item_ids: Sequence[str], need: Any = None, categories: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, var)`` per (user, item); ``need`` and ``categories`` are ignored."""
        if not self._fitted:
            raise RuntimeError("KNNFiller.predict before fit")
        item_ids = [str(i) for i in item_ids]
        n = len(item_ids)
        if isinstance(user_ids, (str, bytes)) or np.isscalar(user_ids):
            user_ids = [str(user_ids)] * n
        if self.kind == "user":
            r, c = self.row_vocab.lookup(user_ids) - 1, self.col_vocab.lookup(item_ids) - 1
        else:
            r, c = self.row_vocab.lookup(item_ids) - 1, self.col_vocab.lookup(user_ids) - 1
        mean = np.full(n, self.global_mean)
        var = np.full(n, self.global_var)
        known_r, known_c = r >= 0, c >= 0
        only_c = ~known_r & known_c
        mean[only_c] = self.col_mean[c[only_c]]
        var[only_c] = self.col_res_var
        q = np.flatnonzero(known_r)
        if len(q):
            rq, cq = r[q], c[q]
            base = self.row_mean[rq]
            nb, sim = self._nb[rq], self._sim[rq]  # (Q, k)
            kk = nb.shape[1]
            res_q = np.zeros((len(q), kk))
            has = np.zeros((len(q), kk), dtype=bool)
            ok = cq >= 0
            if ok.any():
                rows = nb[ok].ravel()
                cols = np.repeat(cq[ok], kk)
                pos = np.asarray(self._pos[rows, cols]).ravel().astype(np.int64)
                h = pos > 0
                vals = np.zeros(len(pos))
                vals[h] = self._res.data[pos[h] - 1]
                res_q[ok] = vals.reshape(-1, kk)
                has[ok] = h.reshape(-1, kk)
            w = sim * has
            denom = w.sum(1)
            pred_res = np.divide((w * res_q).sum(1), denom, out=np.zeros(len(q)), where=denom > 0)
            disp = np.divide(
                (w * (res_q - pred_res[:, None]) ** 2).sum(1), denom, out=np.zeros(len(q)), where=denom > 0
            )
            n_eff = (w > 0).sum(1)  # neighbours that contribute: a non-positive similarity is not used
            mean[q] = base + pred_res
            var[q] = (n_eff * disp + self.shrink * self.res_var) / (n_eff + self.shrink)
        return mean, np.maximum(var, 1e-12)


class UserKNNFiller(KNNFiller):
    def __init__(self, k: int = 50, shrink: float = 2.0):
        super().__init__("user", k, shrink)


class ItemKNNFiller(KNNFiller):
    def __init__(self, k: int = 50, shrink: float = 2.0):
        super().__init__("item", k, shrink)
