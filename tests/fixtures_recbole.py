"""Interaction logs in RecBole's atomic-file layout, written by the tests (never shipped).

:func:`ml100k_as_recbole` writes MovieLens-100k (the widedeep parquet frames: the generated
fixture of ``fixtures_ml100k`` or the real release) as RecBole's own ``ml-100k`` dataset is laid
out: ``ml-100k.inter`` (``user_id:token item_id:token rating:float timestamp:float``),
``ml-100k.item`` (``item_id:token movie_title:token_seq release_year:token class:token_seq``, genres
space-separated) and ``ml-100k.user`` (``user_id:token age:token gender:token occupation:token
zip_code:token``).
"""

from __future__ import annotations

from pathlib import Path

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
