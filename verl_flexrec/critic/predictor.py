"""Loading a trained critic and predicting gain means and variances (CPU, numpy in / numpy out).

This is the "uncertainty critic worker" for live serving: the FlexRec reward manager (which verl
already runs inside its reward-loop Ray actors) calls :func:`get_predictor` once per process and
then :meth:`CriticPredictor.fill` / :meth:`CriticPredictor.predict` per rollout. No verl import.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..atomic import atomic_path
from ..schema import GroundTruth
from .data import Vocab, split_categories
from .model import CriticConfig, CriticEnsemble, ensemble_moments

__all__ = ["CHECKPOINT_FORMAT", "CriticPredictor", "get_predictor"]

CHECKPOINT_FORMAT = "verl_flexrec.critic/1"


# Batches up to this many (user, item) pairs run on one torch thread: an OpenMP fork/join per op
# costs more than the op itself at this size, and on a busy CPU (several reward-loop workers) each
# parallel region can wait a whole scheduler slice (measured: 35 ms vs 0.5 ms per 30-candidate list).
SINGLE_THREAD_MAX_PAIRS = 8192


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op threads (no-op for None or the current value)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pad_categories(cat_lists: Sequence[Sequence[int]], width: int | None = None) -> np.ndarray:
    """Ragged category-index lists -> ``(n, C)`` int64, 0-padded (C >= 1)."""
    width = max([1, *(len(c) for c in cat_lists)]) if width is None else max(1, width)
    out = np.zeros((len(cat_lists), width), dtype=np.int64)
    for r, c in enumerate(cat_lists):
        c = list(c)[:width]
        out[r, : len(c)] = c
    return out


class CriticPredictor:
    """A trained critic: id vocabularies, item catalogue, target scaling and the ensemble network.

    ``predict`` returns the base signal's (``interest``) mean and variance in the data's units;
    :meth:`fill` turns them into a ground truth's filled gains (``need_weight * mean``) and
    variances (``need_weight**2 * var``).
    """

    def __init__(
        self,
        model: CriticEnsemble,
        *,
        users: Vocab,
        items: Vocab,
        categories: Vocab,
        needs: Vocab,
        catalog: Vocab,
        catalog_categories: np.ndarray,
        target_mean: float,
        target_std: float,
        var_scale: float = 1.0,
        baseline: dict | None = None,
        train_pairs: np.ndarray | None = None,
        meta: dict | None = None,
        history: list | None = None,
    ):
        self.model = model.eval()
        self.users, self.items, self.categories, self.needs, self.catalog = users, items, categories, needs, catalog
        self.catalog_categories = np.asarray(catalog_categories, dtype=np.int64)
        self.target_mean, self.target_std, self.var_scale = float(target_mean), float(target_std), float(var_scale)
        self.baseline = dict(baseline or {"mean": self.target_mean, "var": self.target_std**2})
        self.train_pairs = np.asarray(train_pairs if train_pairs is not None else [], dtype=np.int64)
        self.meta = dict(meta or {})
        self.history = list(history or [])

    @property
    def config(self) -> CriticConfig:
        return self.model.config

    # -- prediction ----------------------------------------------------------------------------
    def _category_matrix(self, item_ids: Sequence[str], categories) -> np.ndarray:
        if categories is None:
            return self.catalog_categories[self.catalog.lookup(item_ids)]
        if len(categories) != len(item_ids):
            raise ValueError(f"categories has {len(categories)} entries, item_ids has {len(item_ids)}")
        rows = []
        for c in categories:
            names = split_categories(c) if c is None or isinstance(c, str) else tuple(str(x) for x in c)
            rows.append([k for k in self.categories.lookup(names) if k > 0])
        return pad_categories(rows)

    def _need_index(self, need, n: int) -> np.ndarray:
        if need is None:
            return np.zeros(n, dtype=np.int64)
        if isinstance(need, str):
            return np.full(n, self.needs.lookup([need])[0], dtype=np.int64)
        idx = self.needs.lookup(need)
        if len(idx) != n:
            raise ValueError(f"need has {len(idx)} entries, item_ids has {n}")
        return idx

    def predict_components(
        self,
        user_ids: Sequence[str] | str,
        item_ids: Sequence[str],
        need: str | Sequence[str] | None = None,
        categories: Sequence[str | Sequence[str] | None] | None = None,
        *,
        batch_size: int = 65536,
    ) -> dict[str, np.ndarray]:
        """Mean, total variance and its aleatoric / epistemic parts, each float64 ``(n,)``.

        ``user_ids`` may be one id for all items. ``categories`` (``|``-joined strings or lists)
        override the catalogue's categories, for items the critic never saw.
        """
        item_ids = [str(i) for i in item_ids]
        n = len(item_ids)
        if isinstance(user_ids, (str, bytes)) or np.isscalar(user_ids):
            u = np.full(n, self.users.lookup([str(user_ids)])[0], dtype=np.int64)
        else:
            u = self.users.lookup(user_ids)
            if len(u) != n:
                raise ValueError(f"user_ids has {len(u)} entries, item_ids has {n}")
        i = self.items.lookup(item_ids)
        c = self._category_matrix(item_ids, categories)
        k = self._need_index(need, n)
        mus, ales, epis = [], [], []
        threads = 1 if n <= SINGLE_THREAD_MAX_PAIRS else None
        with torch.inference_mode(), torch_threads(threads):
            for s in range(0, n, batch_size):
                sl = slice(s, s + batch_size)
                mu, var = self.model(
                    torch.from_numpy(u[sl]), torch.from_numpy(i[sl]), torch.from_numpy(k[sl]), torch.from_numpy(c[sl])
                )
                mean, total = ensemble_moments(mu.double(), var.double())
                ale = var.double().mean(0)
                mus.append(mean)
                ales.append(ale)
                epis.append(total - ale)
        if n == 0:
            z = np.zeros(0)
            return {"mean": z, "var": z.copy(), "aleatoric": z.copy(), "epistemic": z.copy()}
        scale = self.target_std**2 * self.var_scale
        mean = torch.cat(mus).numpy() * self.target_std + self.target_mean
        ale = torch.cat(ales).numpy() * scale
        epi = torch.cat(epis).numpy() * scale
        return {"mean": mean, "var": ale + epi, "aleatoric": ale, "epistemic": epi}

    def predict(
        self,
        user_ids: Sequence[str] | str,
        item_ids: Sequence[str],
        need: str | Sequence[str] | None = None,
        categories: Sequence[str | Sequence[str] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, var)`` of the base interest for each (user, item), float64 numpy arrays."""
        out = self.predict_components(user_ids, item_ids, need, categories)
        return out["mean"], out["var"]

    def fill(self, gt: GroundTruth | Any) -> GroundTruth:
        """A copy of ``gt`` with the critic's gains and variances at every unobserved candidate."""
        from .fill import fill_ground_truth

        return fill_ground_truth(gt, self)

    # -- bookkeeping ---------------------------------------------------------------------------
    def pair_keys(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """int64 key per (user, item) in this critic's vocabularies (-1 when either is unknown)."""
        u, i = self.users.lookup(user_ids), self.items.lookup(item_ids)
        keys = u * (len(self.items) + 1) + i
        return np.where((u > 0) & (i > 0), keys, -1)

    def seen_in_training(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """True where the (user, item) pair was a training point (not the held-out slice)."""
        if not len(self.train_pairs):
            return np.zeros(len(item_ids), dtype=bool)
        return np.isin(self.pair_keys(user_ids, item_ids), self.train_pairs)

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "vocab": {
                "users": self.users.values,
                "items": self.items.values,
                "categories": self.categories.values,
                "needs": self.needs.values,
                "catalog": self.catalog.values,
            },
            "catalog_categories": torch.from_numpy(self.catalog_categories),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "var_scale": self.var_scale,
            "baseline": self.baseline,
            "train_pairs": torch.from_numpy(self.train_pairs),
            "meta": self.meta,
            "history": self.history,
        }

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)
        return path

    @classmethod
    def from_state(cls, state: dict, source: str = "<state>") -> "CriticPredictor":
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{source}: not a FlexRec critic checkpoint (format {got!r}, expected {CHECKPOINT_FORMAT!r})"
            )
        config = CriticConfig.from_dict(state["config"])
        vocab = {k: Vocab(v) for k, v in state["vocab"].items()}
        sd = state["state_dict"]
        model = CriticEnsemble(
            config,
            n_users=len(vocab["users"]),
            n_items=len(vocab["items"]),
            n_categories=len(vocab["categories"]),
            n_needs=len(vocab["needs"]),
            item_categories=sd.get("item_categories"),
        )
        model.load_state_dict(sd)
        return cls(
            model,
            users=vocab["users"],
            items=vocab["items"],
            categories=vocab["categories"],
            needs=vocab["needs"],
            catalog=vocab["catalog"],
            catalog_categories=state["catalog_categories"].numpy(),
            target_mean=state["target_mean"],
            target_std=state["target_std"],
            var_scale=state["var_scale"],
            baseline=state.get("baseline"),
            train_pairs=state["train_pairs"].numpy(),
            meta=state.get("meta"),
            history=state.get("history"),
        )

    @classmethod
    def load(cls, path: str | Path) -> "CriticPredictor":
        """Load a checkpoint written by ``python -m verl_flexrec.critic train`` (CPU, safe unpickling)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"critic checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt file
            raise ValueError(f"{path}: cannot read critic checkpoint: {e}") from None
        return cls.from_state(state, str(path))


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> CriticPredictor:
    return CriticPredictor.load(path)


def get_predictor(path: str | Path) -> CriticPredictor:
    """Process-wide cached :meth:`CriticPredictor.load` (reloads when the file changes)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"critic checkpoint not found: {path}")
    return _cached(str(path), path.stat().st_mtime_ns)
