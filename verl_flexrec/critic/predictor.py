"""Loading a trained critic and predicting gain means and variances (CPU, numpy in / numpy out).

This is the "uncertainty critic worker" for live serving: the FlexRec reward manager (which verl
already runs inside its reward-loop Ray actors) calls :func:`get_predictor` once when the worker
starts and then :meth:`CriticPredictor.fill` / :meth:`CriticPredictor.predict` per rollout.

Serving. :func:`get_predictor` loads a file once per process however many threads ask at once
(a lock around the load; an ``lru_cache`` alone lets every concurrent first call load its own
copy), reads the file's bytes once, records their SHA-256 (``predictor.sha256``) and loads those
same bytes, so the hash always describes what is served. It loads in *serving* form: without the
training pairs (``seen_pairs``, one int64 per observed (user, item) — 88 MB at KuaiRec's 11M
points — and the training history), which scoring never reads. :func:`write_serving_file` writes
that form to disk, so workers also copy and read less; it stays a ``verl_flexrec.critic/2``
checkpoint that any reader loads. Only :meth:`CriticPredictor.seen_pairs` (``critic evaluate``,
which leaves training points out) needs the full file, and refuses a serving one.
No verl import.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..schema import GroundTruth
from ..threads import torch_threads
from .data import Vocab, split_categories
from .features import SupportFeatures
from .model import CriticConfig, CriticEnsemble, ensemble_moments

__all__ = ["CHECKPOINT_FORMAT", "CriticPredictor", "get_predictor", "write_serving_file"]

CHECKPOINT_FORMAT = "verl_flexrec.critic/2"
# /1 (an id-embedding ensemble without support features) cannot be mapped onto /2: retrain
OLD_FORMATS = {"verl_flexrec.critic/1"}


# Batches up to this many (user, item) pairs run on one torch thread: an OpenMP fork/join per op
# costs more than the op itself at this size, and on a busy CPU (several reward-loop workers) each
# parallel region can wait a whole scheduler slice (measured: 35 ms vs 0.5 ms per 30-candidate list).
SINGLE_THREAD_MAX_PAIRS = 8192


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
        features: SupportFeatures,
        users: Vocab,
        items: Vocab,
        categories: Vocab,
        needs: Vocab,
        catalog: Vocab,
        catalog_categories: np.ndarray,
        target_std: float,
        var_scale: float = 1.0,
        seen_pairs: np.ndarray | None = None,
        meta: dict | None = None,
        history: list | None = None,
        serving: bool = False,
    ):
        self.model = model.eval()
        self.features = features
        self.users, self.items, self.categories, self.needs, self.catalog = users, items, categories, needs, catalog
        self.catalog_categories = np.asarray(catalog_categories, dtype=np.int64)
        self.target_std, self.var_scale = float(target_std), float(var_scale)
        self.seen_keys = np.asarray(seen_pairs if seen_pairs is not None else [], dtype=np.int64)
        self.meta = dict(meta or {})
        self.history = list(history or [])
        # serving form: no training pairs or history (see the module docstring)
        self.serving = bool(serving)
        if self.serving:
            self.seen_keys, self.history = np.zeros(0, dtype=np.int64), []
        self.sha256: str | None = None  # of the file it was loaded from (CriticPredictor.load)

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
        x, base = self.features.transform(u, i)
        mus, ales, epis = [], [], []
        threads = 1 if n <= SINGLE_THREAD_MAX_PAIRS else None
        with torch.inference_mode(), torch_threads(threads):
            for s in range(0, n, batch_size):
                sl = slice(s, s + batch_size)
                mu, var = self.model(torch.from_numpy(x[sl]), torch.from_numpy(c[sl]), torch.from_numpy(k[sl]))
                mean, total = ensemble_moments(mu.double(), var.double())
                ale = var.double().mean(0)
                mus.append(mean)
                ales.append(ale)
                epis.append(total - ale)
        if n == 0:
            z = np.zeros(0)
            return {"mean": z, "var": z.copy(), "aleatoric": z.copy(), "epistemic": z.copy()}
        scale = self.target_std**2 * self.var_scale
        mean = base + torch.cat(mus).numpy() * self.target_std
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

    def _need_training_pairs(self) -> None:
        if self.serving:
            raise ValueError(
                "this critic was loaded in serving form, without the (user, item) pairs it was trained on; "
                "load the full checkpoint (`python -m verl_flexrec.critic train` output) to tell training points apart"
            )

    def seen_in_training(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """True where the (user, item) pair was one of the observed points the critic learned from."""
        self._need_training_pairs()
        if not len(self.seen_keys):
            return np.zeros(len(item_ids), dtype=bool)
        return np.isin(self.pair_keys(user_ids, item_ids), self.seen_keys)

    def seen_pairs(self) -> set[tuple[str, str]]:
        """``(user_id, item_id)`` of every observed point the critic learned from."""
        self._need_training_pairs()
        width = len(self.items) + 1
        return {(self.users.values[k // width - 1], self.items.values[k % width - 1]) for k in self.seen_keys.tolist()}

    # -- persistence ---------------------------------------------------------------------------
    def state(self, serving: bool | None = None) -> dict:
        """The checkpoint dict; ``serving=True`` leaves out the training pairs and history."""
        serving = self.serving if serving is None else serving
        if self.serving and not serving:
            self._need_training_pairs()
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
            "features": self.features.state(),
            "n_features": int(self.model.n_features),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "target_std": self.target_std,
            "var_scale": self.var_scale,
            "seen_pairs": torch.zeros(0, dtype=torch.int64) if serving else torch.from_numpy(self.seen_keys),
            "meta": self.meta,
            "history": [] if serving else self.history,
            "serving": bool(serving),
        }

    def save(self, path: str | Path, *, serving: bool | None = None) -> Path:
        """Write the checkpoint atomically (temp file + rename); ``serving=True``: the serving form."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self.state(serving), tmp)
        return path

    @classmethod
    def from_state(cls, state: dict, source: str = "<state>", *, serving: bool = False) -> CriticPredictor:
        """Build from a checkpoint dict; ``serving=True`` drops the training pairs and history."""
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        if got in OLD_FORMATS:
            raise ValueError(
                f"{source}: critic checkpoint format {got!r} was written by an older verl-flexrec (an id-embedding "
                f"critic); this version reads {CHECKPOINT_FORMAT!r}: retrain it with `python -m verl_flexrec.critic "
                "train` (a few seconds on MovieLens-100k)"
            )
        if got != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{source}: not a FlexRec critic checkpoint (format {got!r}, expected {CHECKPOINT_FORMAT!r})"
            )
        config = CriticConfig.from_dict(state["config"])
        vocab = {k: Vocab(v) for k, v in state["vocab"].items()}
        model = CriticEnsemble(config, int(state["n_features"]), len(vocab["categories"]), len(vocab["needs"]))
        model.load_state_dict(state["state_dict"])
        return cls(
            model,
            features=SupportFeatures.from_state(state["features"]),
            users=vocab["users"],
            items=vocab["items"],
            categories=vocab["categories"],
            needs=vocab["needs"],
            catalog=vocab["catalog"],
            catalog_categories=state["catalog_categories"].numpy(),
            target_std=state["target_std"],
            var_scale=state["var_scale"],
            seen_pairs=state["seen_pairs"].numpy(),
            meta=state.get("meta"),
            history=state.get("history"),
            serving=serving or bool(state.get("serving", False)),
        )

    @classmethod
    def load(cls, path: str | Path, *, serving: bool = False) -> CriticPredictor:
        """Load a checkpoint written by ``python -m verl_flexrec.critic train`` (CPU, safe unpickling).

        The file is read once; ``sha256`` is the SHA-256 of exactly the bytes loaded."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"critic checkpoint not found: {path}")
        data = path.read_bytes()
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt file
            raise ValueError(f"{path}: cannot read critic checkpoint: {e}") from None
        predictor = cls.from_state(state, str(path), serving=serving)
        predictor.sha256 = hashlib.sha256(data).hexdigest()
        return predictor


def write_serving_file(src: str | Path, dst: str | Path) -> Path:
    """Write ``src``'s serving form (no training pairs or history) to ``dst``, atomically."""
    return CriticPredictor.load(src).save(dst, serving=True)


_LOAD_LOCK = threading.Lock()
# resolved path -> ((mtime_ns, size), predictor): the newest load of each file
_SERVED: dict[str, tuple[tuple[int, int], CriticPredictor]] = {}


def get_predictor(path: str | Path) -> CriticPredictor:
    """The process's serving-form :class:`CriticPredictor` of ``path``, loaded once.

    Concurrent first calls wait for one load (a lock around it). A file rewritten since the last
    load (new mtime or size) is loaded again by the next call; callers that must serve one
    version for a whole run (the reward manager) keep the object they got.
    """
    path = Path(path).resolve()
    with _LOAD_LOCK:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"critic checkpoint not found: {path}") from None
        version = (stat.st_mtime_ns, stat.st_size)
        hit = _SERVED.get(str(path))
        if hit is None or hit[0] != version:
            hit = (version, CriticPredictor.load(path, serving=True))
            _SERVED[str(path)] = hit
        return hit[1]
