"""Baseline rankers on the same closed candidate sets as the LLM.

Every ranker gives each candidate of a row a score (NaN = no signal for that candidate); the
ranking sorts by score, descending, NaN last, and breaks ties by a key hashed from
``(seed, row key, dataset item id)``. A ranking therefore never depends on the prompt order of
the candidates: a candidate-order shuffle leaves every baseline's metrics unchanged.

=================  ====================================================================  ============
name               score of candidate i for the row's user                               library
=================  ====================================================================  ============
random             none: the hashed tie key alone (a seeded uniform permutation)         --
popularity         observed training interactions of item i (all time)                   --
trending           observed training interactions of item i in the ``window`` before     --
                   the row's cut-off (default: data prep's popularity window, else 7
                   days; all time when the row has no cut-off, e.g. ESCI)
bpr                <u, v_i> of Bayesian Personalised Ranking matrix factorisation         implicit
als                <u, v_i> of implicit-feedback ALS (Hu, Koren & Volinsky 2008)          implicit
item_knn           sum over the user's items j of cosine(j, i) (item-item KNN)            implicit
sasrec             next-item score of a self-attentive sequential model fed the row's     cornac
                   history (Kang & McAuley 2018); option ``threads`` sets torch's CPU
                   threads (1 is much faster on a shared CPU), ``device=cuda`` a GPU
oracle             the true evaluation gain (a ceiling; not part of ``all``)             --
reversed_oracle    minus the true evaluation gain (the worst ranking; not in ``all``)    --
=================  ====================================================================  ============

Learned models train on the observed training interactions as binary implicit feedback
(:mod:`verl_flexrec.evaluate.data`). The user vector ``u`` is the trained one when the row's user
was seen in training, else the mean of the trained vectors of the row's history items (fold-in);
item-KNN's profile is the user's training items plus the row's history. A row whose user and
history are both unknown to a model (ESCI: every test query is new and has no history) gets no
signal: all candidates tie and the ranking is the random one; the report counts such rows
(``coverage``). Candidates the model never saw score NaN (ranked last). SASRec reads the row's
history (known items), else the user's training sequence.

Defaults (override with ``--baseline-option NAME.KEY=VALUE``, keys are the libraries' own):
bpr 64 factors, learning rate 0.01, regularisation 0.01, 100 iterations, 1 thread (Hogwild SGD is
reproducible only single-threaded); als 64 factors, regularisation 0.01, 15 iterations;
item_knn 100 neighbours (``neighbours``); sasrec 64 dimensions, 2 blocks, 20 epochs, history 50,
batch 128, 512 sampled negatives, learning rate 1e-3, dropout 0.2. Every model is seeded.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..threads import torch_threads
from .data import EvalRow, TrainingInteractions
from .metrics import evaluation_gains

__all__ = [
    "BASELINES",
    "EXTRA_LIBRARY",
    "REFERENCE_RANKERS",
    "BaselineError",
    "Ranker",
    "available",
    "make_ranker",
    "rank_by_scores",
    "resolve_baselines",
    "tie_keys",
]

BASELINES = ("random", "popularity", "trending", "bpr", "als", "item_knn", "sasrec")
"""Everything ``--baseline all`` evaluates, in table order."""

REFERENCE_RANKERS = ("oracle", "reversed_oracle")
"""Rankers that read the ground truth (ceiling and floor checks); by name only."""

EXTRA_LIBRARY = {"bpr": "implicit", "als": "implicit", "item_knn": "implicit", "sasrec": "cornac"}
"""The library each learned baseline needs; both come with ``pip install 'verl-flexrec[eval]'``."""

DEFAULT_TREND_WINDOW_S = 7 * 86400.0


class BaselineError(ValueError):
    """Unknown baseline, missing library, or no training data; the message says which."""


def resolve_baselines(specs: Sequence[str]) -> list[str]:
    """``["bpr,als", "random"]`` -> ``["bpr", "als", "random"]``; ``all`` -> :data:`BASELINES`."""
    names: list[str] = []
    for spec in specs:
        for name in (s.strip() for s in spec.split(",")):
            if not name:
                continue
            expanded = list(BASELINES) if name == "all" else [name]
            for n in expanded:
                if n not in BASELINES and n not in REFERENCE_RANKERS:
                    raise BaselineError(f"unknown baseline {n!r}; choose from {', '.join(BASELINES + REFERENCE_RANKERS)} or 'all'")
                if n not in names:
                    names.append(n)
    return names


def available(name: str) -> bool:
    """Whether baseline ``name`` can run here (its library of the ``eval`` extra is installed)."""
    import importlib.util

    library = EXTRA_LIBRARY.get(name)
    return library is None or importlib.util.find_spec(library) is not None


def _missing(name: str, error: Exception) -> BaselineError:
    return BaselineError(f"{name} needs the '{EXTRA_LIBRARY[name]}' package ({error}), which comes with the "
                         f"'eval' extra: pip install 'verl-flexrec[eval]'")


def tie_keys(seed: int, row_key: str, item_ids: Sequence[str]) -> np.ndarray:
    """Uniform [0, 1) key per candidate, a function of (seed, row, item id) only."""
    out = np.empty(len(item_ids))
    for i, item in enumerate(item_ids):
        digest = hashlib.blake2b(f"{seed}\x1f{row_key}\x1f{item}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def rank_by_scores(scores: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """Candidate indices by score descending (NaN last), ties by ``ties`` ascending."""
    s = np.asarray(scores, dtype=np.float64)
    primary = np.where(np.isnan(s), np.inf, -s)
    return np.lexsort((np.asarray(ties), primary))


def has_signal(scores: np.ndarray) -> bool:
    """At least two candidates differ in score (otherwise the ranking is the tie-break alone)."""
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    return bool(len(finite) and (len(finite) < len(s) or np.ptp(finite) > 0))


@dataclass
class Ranker:
    """A baseline: ``fit`` on training interactions, then ``score`` a row's candidates."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    needs_training: bool = True
    progress: bool = False  # show the library's own training progress bar, where it has one

    def fit(self, train: TrainingInteractions | None, seed: int) -> None:  # pragma: no cover - interface
        pass

    def score(self, row: EvalRow) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class RandomRanker(Ranker):
    def score(self, row: EvalRow) -> np.ndarray:
        return np.zeros(row.truth.num_candidates)


class OracleRanker(Ranker):
    sign = 1.0

    def score(self, row: EvalRow) -> np.ndarray:
        return self.sign * evaluation_gains(row.truth)


class ReversedOracleRanker(OracleRanker):
    sign = -1.0


class PopularityRanker(Ranker):
    def fit(self, train: TrainingInteractions | None, seed: int) -> None:
        self.counts = train.frame.groupby("item_id").size().to_dict()

    def score(self, row: EvalRow) -> np.ndarray:
        return np.array([float(self.counts.get(i, 0)) for i in row.item_ids])


class TrendingRanker(Ranker):
    def fit(self, train: TrainingInteractions | None, seed: int) -> None:
        days = self.options.get("window_days")
        self.window = float(days) * 86400.0 if days else (train.trend_window_s or DEFAULT_TREND_WINDOW_S)
        frame = train.frame.dropna(subset=["timestamp"])
        self.times = {item: np.sort(g.to_numpy()) for item, g in frame.groupby("item_id")["timestamp"]}
        self.counts = train.frame.groupby("item_id").size().to_dict()
        self.no_cutoff_rows = 0

    def score(self, row: EvalRow) -> np.ndarray:
        if not math.isfinite(row.cutoff):
            self.no_cutoff_rows += 1
            return np.array([float(self.counts.get(i, 0)) for i in row.item_ids])
        lo, hi = row.cutoff - self.window, row.cutoff
        out = np.zeros(len(row.item_ids))
        for j, item in enumerate(row.item_ids):
            t = self.times.get(item)
            if t is not None:
                out[j] = np.searchsorted(t, hi, side="left") - np.searchsorted(t, lo, side="left")
        return out


class _MatrixRanker(Ranker):
    """Shared by the implicit-library models: index maps and the user-item matrix."""

    def _index(self, train: TrainingInteractions):
        import scipy.sparse as sp

        frame = train.frame
        if frame.empty:
            raise BaselineError(f"{self.name}: no observed training interactions to learn from ({train.source})")
        self.users = {u: i for i, u in enumerate(sorted(frame["user_id"].unique()))}
        self.items = {v: i for i, v in enumerate(sorted(frame["item_id"].unique()))}
        rows = frame["user_id"].map(self.users).to_numpy()
        cols = frame["item_id"].map(self.items).to_numpy()
        self.matrix = sp.csr_matrix(
            (np.ones(len(frame), dtype=np.float32), (rows, cols)), shape=(len(self.users), len(self.items))
        )
        self.matrix.sum_duplicates()
        self.matrix.data[:] = 1.0

    def _known(self, ids: Sequence[str]) -> list[int]:
        return [self.items[i] for i in ids if i in self.items]


def _implicit(name: str, module: str):
    try:
        import importlib

        return importlib.import_module(module)
    except ImportError as e:
        raise _missing(name, e) from None


class FactorRanker(_MatrixRanker):
    """BPR or ALS from ``implicit`` (CPU classes, so results do not depend on a GPU)."""

    def fit(self, train: TrainingInteractions | None, seed: int) -> None:
        self._index(train)
        opts = dict(self.options)
        if self.name == "bpr":
            cls = _implicit("bpr", "implicit.cpu.bpr").BayesianPersonalizedRanking
            kwargs = {"factors": 64, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100,
                      "num_threads": 1}  # one thread: BPR's Hogwild SGD is only reproducible single-threaded
        else:
            cls = _implicit("als", "implicit.cpu.als").AlternatingLeastSquares
            kwargs = {"factors": 64, "regularization": 0.01, "iterations": 15, "num_threads": 1}
        kwargs.update(opts)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
            model = cls(random_state=seed, **kwargs)
            model.fit(self.matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def _user_vector(self, row: EvalRow) -> np.ndarray | None:
        if row.user_id in self.users:
            return self.user_factors[self.users[row.user_id]]
        known = self._known(row.history)
        if not known:
            return None
        vec = self.item_factors[known].mean(0)
        if self.name == "bpr":
            vec = vec.copy()
            vec[-1] = 1.0  # implicit's BPR keeps the item bias in the last factor, users hold 1 there
        return vec

    def score(self, row: EvalRow) -> np.ndarray:
        out = np.full(len(row.item_ids), np.nan)
        user = self._user_vector(row)
        if user is None:
            return out
        for j, item in enumerate(row.item_ids):
            if item in self.items:
                out[j] = float(self.item_factors[self.items[item]] @ user)
        return out


class ItemKNNRanker(_MatrixRanker):
    def fit(self, train: TrainingInteractions | None, seed: int) -> None:
        self._index(train)
        nn = _implicit(self.name, "implicit.nearest_neighbours")
        model = nn.CosineRecommender(K=int(self.options.get("neighbours", 100)))
        with warnings.catch_warnings():  # implicit converts internally and warns about its own COO
            warnings.simplefilter("ignore")
            model.fit(self.matrix, show_progress=False)
        self.similarity = model.similarity.tocsc()

    def score(self, row: EvalRow) -> np.ndarray:
        out = np.full(len(row.item_ids), np.nan)
        profile = set(self._known(row.history))
        if row.user_id in self.users:
            profile |= set(self.matrix[self.users[row.user_id]].indices.tolist())
        if not profile:
            return out
        profile_idx = np.fromiter(profile, dtype=np.int64)
        for j, item in enumerate(row.item_ids):
            if item in self.items:
                column = self.similarity[:, self.items[item]]
                out[j] = float(column[profile_idx].sum())
        return out


class SASRecRanker(Ranker):
    """SASRec from ``cornac``: one training sequence per user (its interactions in time order)."""

    def fit(self, train: TrainingInteractions | None, seed: int) -> None:
        try:
            from cornac.data import SequentialDataset
            from cornac.models import SASRec
        except ImportError as e:
            raise _missing("sasrec", e) from None
        frame = train.frame.sort_values(["user_id", "timestamp", "item_id"], na_position="first", kind="stable")
        if frame.empty:
            raise BaselineError(f"sasrec: no observed training interactions to learn from ({train.source})")
        ts = frame["timestamp"].fillna(0.0).to_numpy()
        data = list(zip(frame["user_id"], frame["user_id"], frame["item_id"], ts))
        dataset = SequentialDataset.build(data, fmt="USIT", seed=seed)
        kwargs = {"embedding_dim": 64, "n_epochs": 20, "max_len": 50, "batch_size": 128, "n_sample": 512,
                  "learning_rate": 1e-3, "dropout": 0.2}
        kwargs.update(self.options)
        self.threads = kwargs.pop("threads", None)
        kwargs.setdefault("verbose", self.progress)  # cornac's per-epoch progress bar
        self.model = SASRec(seed=seed, **kwargs)
        with torch_threads(self.threads):
            self.model.fit(dataset)
        self.items = dict(dataset.iid_map)
        self.user_sequences = {
            u: [self.items[i] for i in g.tolist()] for u, g in frame.groupby("user_id", sort=False)["item_id"]
        }

    def score(self, row: EvalRow) -> np.ndarray:
        out = np.full(len(row.item_ids), np.nan)
        history = [self.items[i] for i in row.history if i in self.items]
        if not history:
            history = self.user_sequences.get(row.user_id, [])
        if not history:
            return out
        import torch

        with torch.no_grad(), torch_threads(self.threads):
            scores = np.asarray(self.model.score(0, history), dtype=np.float64)
        for j, item in enumerate(row.item_ids):
            if item in self.items:
                out[j] = scores[self.items[item]]
        return out


_RANKERS: dict[str, Callable[..., Ranker]] = {
    "random": lambda **kw: RandomRanker("random", needs_training=False, **kw),
    "popularity": lambda **kw: PopularityRanker("popularity", **kw),
    "trending": lambda **kw: TrendingRanker("trending", **kw),
    "bpr": lambda **kw: FactorRanker("bpr", **kw),
    "als": lambda **kw: FactorRanker("als", **kw),
    "item_knn": lambda **kw: ItemKNNRanker("item_knn", **kw),
    "sasrec": lambda **kw: SASRecRanker("sasrec", **kw),
    "oracle": lambda **kw: OracleRanker("oracle", needs_training=False, **kw),
    "reversed_oracle": lambda **kw: ReversedOracleRanker("reversed_oracle", needs_training=False, **kw),
}


def make_ranker(name: str, options: Mapping[str, Any] | None = None) -> Ranker:
    """A fresh ranker by name (see the module table); ``options`` override its defaults."""
    if name not in _RANKERS:
        raise BaselineError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES + REFERENCE_RANKERS)}")
    return _RANKERS[name](options=dict(options or {}))
