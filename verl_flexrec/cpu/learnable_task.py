"""A ranking task a tiny model can learn on a CPU in minutes: genre needs over a fixed catalogue.

The fixture data of the tiny CPU job has random ratings, so a policy has nothing to learn there.
This task has one prompt feature that decides the right order, so validation NDCG can rise:

* a catalogue of 10 movies, ids ``"0"``..``"9"``, two per genre (:data:`ITEM_GENRES`);
* each row shows all 10 as candidates, in a seeded random order, with their genre, in FlexRec's
  candidate line (``ID 7 | horror``, :func:`verl_flexrec.prompt.render_candidate`), then the
  need, last, right before the answer: "Need: horror first, then romance." (the second choice is
  the next genre of :data:`GENRES`). The prompt is short on purpose (~160 tiny-tokenizer tokens): every token
  costs warm-start and rollout time, and a tiny model learns not to repeat an id more easily when
  the answer is not diluted by a long prompt;
* ratings on a 1-5 scale: first-choice genre 5, second-choice genre 3, the other six movies 1.

So the best ranking puts the 2 first-choice movies first, then the 2 second-choice ones. With
exponential gains (``2**r - 1``: 31, 7, 1) a uniformly random ranking scores NDCG@5 ~0.42
(0.57 with linear gains; :func:`verl_flexrec.evaluate.metrics.expected_random_metrics`); the
oracle scores 1. Train and validation rows
share the 5 needs and differ in candidate order (and the draw of needs), so the validation
metric measures whether the policy learnt the need -> movies mapping, not the prompt order.

Framework-free (no verl import). ``write_task(out_dir, ...)`` writes ``train.parquet`` and
``test.parquet`` in the verl row format data prep uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..needs import Need
from ..prompt import Candidate, render_candidate
from ..schema import GroundTruth

__all__ = ["DATA_SOURCE", "GENRES", "ITEM_GENRES", "RATINGS", "build_rows", "need_for", "write_task"]

DATA_SOURCE = "flexrec/genre_task"
GENRES = ("comedy", "drama", "action", "horror", "romance")
# item id i -> genre; a fixed, arbitrary assignment (two movies per genre, not i % 5)
ITEM_GENRES = ("drama", "horror", "comedy", "romance", "action", "comedy", "drama", "romance", "action", "horror")
RATINGS = {"first": 5.0, "second": 3.0, "other": 1.0}
SYSTEM = "Rank all movie IDs."


def need_for(genre: str) -> Need:
    """The need whose first choice is ``genre`` (second choice: the next genre of :data:`GENRES`)."""
    second = GENRES[(GENRES.index(genre) + 1) % len(GENRES)]
    return Need(name=f"likes_{genre}", title=f"Likes {genre}", side_info=("category",),
                instruction=f"{genre} first, then {second}.")


def _ratings(genre: str) -> list[float]:
    second = GENRES[(GENRES.index(genre) + 1) % len(GENRES)]
    return [RATINGS["first"] if g == genre else RATINGS["second"] if g == second else RATINGS["other"]
            for g in ITEM_GENRES]


def _row(split: str, index: int, genre: str, order: np.ndarray) -> dict:
    ids = [str(i) for i in order]
    ratings = _ratings(genre)
    need = need_for(genre)
    # the genre as the title: "ID 7 | horror"
    lines = [render_candidate(Candidate(id=i, title=ITEM_GENRES[int(i)]), ("title",), "") for i in ids]
    # the need last, right before the answer: the first ranked id is a few tokens after it
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "\n".join(lines) + f"\nNeed: {need.instruction}"}]
    gains = [ratings[int(i)] for i in ids]
    truth = GroundTruth(candidates=ids, gains=gains, observed=[True] * len(ids), gain_var=[0.0] * len(ids),
                        need=need.name, user_id=f"{split}-{index}", item_ids=ids, interest=gains,
                        need_weight=[1.0] * len(ids), categories=[ITEM_GENRES[int(i)] for i in ids])
    return {
        "data_source": DATA_SOURCE,
        "prompt": messages,
        "ability": "recommendation",
        "reward_model": {"style": "rule", "ground_truth": truth.to_dict()},
        "extra_info": {"split": split, "index": index, "dataset": "genre_task", "need": need.name,
                       "user_id": f"{split}-{index}"},
    }


def build_rows(n: int, split: str, seed: int) -> list[dict]:
    """``n`` rows: needs balanced over :data:`GENRES` (shuffled), each with its own candidate order."""
    if n < 1:
        raise ValueError(f"build_rows: n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    genres = [GENRES[i % len(GENRES)] for i in range(n)]
    rng.shuffle(genres)
    return [_row(split, i, g, rng.permutation(len(ITEM_GENRES))) for i, g in enumerate(genres)]


def write_task(out_dir: str | Path, *, n_train: int = 640, n_val: int = 50, seed: int = 0) -> Path:
    """Write ``out_dir/train.parquet`` and ``out_dir/test.parquet``; returns ``out_dir``.

    Files appear complete or not at all (written under a temporary name, then renamed).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, split, n in (("train.parquet", "train", n_train), ("test.parquet", "test", n_val)):
        with atomic_path(out / name) as tmp:
            pq.write_table(pa.Table.from_pylist(build_rows(n, split, seed)), tmp)
    return out
