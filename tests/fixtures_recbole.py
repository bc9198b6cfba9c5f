"""Interaction logs in RecBole's atomic-file layout, written by the tests (never shipped).

:func:`ml100k_as_recbole` writes MovieLens-100k (the widedeep parquet frames: the generated
fixture of ``fixtures_ml100k`` or the real release) as RecBole's own ``ml-100k`` dataset is laid
out: ``ml-100k.inter`` (``user_id:token item_id:token rating:float timestamp:float``),
``ml-100k.item`` (``item_id:token movie_title:token_seq release_year:token class:token_seq``, genres
space-separated) and ``ml-100k.user`` (``user_id:token age:token gender:token occupation:token
zip_code:token``).

:func:`make_own_data` / :func:`write_own_recbole`: a generated log whose ids are not integers,
with and without ratings, categories as ``token_seq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from verl_flexrec.data.recbole import write_atomic

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def ml100k_as_recbole(folder: Path, ratings: pd.DataFrame, movies: pd.DataFrame, users: pd.DataFrame) -> Path:
    """Write ``folder/ml-100k.{inter,item,user}`` from the widedeep frames; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "ml-100k.inter", {
        "user_id": ("token", ratings["user_id"].tolist()), "item_id": ("token", ratings["movie_id"].tolist()),
        "rating": ("float", ratings["rating"].tolist()), "timestamp": ("float", ratings["timestamp"].tolist()),
    })
    # ML-100k's "unknown" flag means no genre; the placeholder movie titled "unknown" has no title
    genres = [[g for g in GENRES[1:] if row[g]] for _, row in movies.iterrows()]
    titles = [[] if t in (None, "", "unknown") else str(t).split() for t in movies["movie_title"]]
    years = [str(d)[-4:] if isinstance(d, str) and d else "" for d in movies["release_date"]]
    write_atomic(folder / "ml-100k.item", {
        "item_id": ("token", movies["movie_id"].tolist()), "movie_title": ("token_seq", titles),
        "release_year": ("token", years), "class": ("token_seq", genres),
    })
    write_atomic(folder / "ml-100k.user", {
        "user_id": ("token", users["user_id"].tolist()), "age": ("token", users["age"].tolist()),
        "gender": ("token", users["gender"].tolist()), "occupation": ("token", users["occupation"].tolist()),
        "zip_code": ("token", users["zip_code"].tolist()),
    })
    return folder


@dataclass
class OwnData:
    """A generated log with text ids: ``ratings`` rows are (user, item, rating, time)."""

    ratings: list[tuple[str, str, float, int]]
    items: dict[str, tuple[str, tuple[str, ...]]]   # item -> (title, categories)
    users: dict[str, tuple[str, str]]               # user -> (age group, country)


CATEGORIES = ["Science Fiction", "Drama", "Film Noir", "Comedy", "Documentary", "Action", "Kids"]


def make_own_data(*, n_users: int = 14, n_items: int = 70, seed: int = 0) -> OwnData:
    """Users ``u01``.., items ``sku-001``.. (ids that are not integers), half-star ratings, 1-3
    categories per item (some with a space in the name), shared timestamps within a burst."""
    rng = np.random.default_rng(seed)
    items = {}
    for j in range(1, n_items + 1):
        cats = tuple(CATEGORIES[c] for c in sorted(rng.choice(len(CATEGORIES), size=1 + j % 3, replace=False)))
        items[f"sku-{j:03d}"] = (f"Product {j} édition", cats)
    users = {f"u{u:02d}": (["18-24", "25-34", "35+"][u % 3], ["FR", "DE", "New Zealand"][u % 3])
             for u in range(1, n_users + 1)}
    ratings = []
    for u in users:
        n = int(rng.integers(25, 50))
        t = 1_600_000_000 + int(rng.integers(0, 30 * 86400))
        for j, i in enumerate(rng.choice(list(items), size=n, replace=False)):
            t += 0 if j % 4 == 1 else int(rng.integers(60, 2 * 86400))
            ratings.append((u, str(i), float(rng.integers(2, 11)) / 2, t))
    order = rng.permutation(len(ratings))
    return OwnData([ratings[k] for k in order], items, users)


def write_own_recbole(folder: Path, data: OwnData, *, name: str = "shop", implicit: bool = False,
                      seq_sep: str = " ") -> Path:
    """``folder/NAME.{inter,item,user}``; categories as token_seq split at ``seq_sep`` (with the
    default space, "Science Fiction" is two categories, as RecBole reads it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inter = {"user_id": ("token", [r[0] for r in data.ratings]), "item_id": ("token", [r[1] for r in data.ratings])}
    if not implicit:
        inter["rating"] = ("float", [r[2] for r in data.ratings])
    inter["timestamp"] = ("float", [r[3] for r in data.ratings])
    write_atomic(folder / f"{name}.inter", inter)
    split = (lambda c: c.split()) if seq_sep == " " else (lambda c: [c])
    write_atomic(folder / f"{name}.item", {
        "item_id": ("token", list(data.items)),
        "title": ("token_seq", [t.split() for t, _ in data.items.values()]),
        "class": ("token_seq", [[p for c in cats for p in split(c)] for _, cats in data.items.values()]),
        "price": ("float_seq", [[9.5, 12] for _ in data.items]),
    }, seq_sep=seq_sep)
    write_atomic(folder / f"{name}.user", {
        "user_id": ("token", list(data.users)), "age": ("token", [a for a, _ in data.users.values()]),
        "country": ("token_seq", [c.split() for _, c in data.users.values()]),
    })
    return folder
