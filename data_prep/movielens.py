"""MovieLens-1M -> FlexRec verl parquet (train.parquet, test.parquet, interactions.parquet, prep_info.json).

Raw input: the GroupLens ``ml-1m.zip`` release, unpacked so that ``RAW/ml-1m/`` (or ``RAW/``)
holds ``ratings.dat``, ``movies.dat`` and ``users.dat`` (``::``-separated, latin-1, no header):

    ratings.dat  UserID::MovieID::Rating::Timestamp      (rating 1-5, Unix seconds)
    movies.dat   MovieID::Title::Genres                  (genres '|'-separated)
    users.dat    UserID::Gender::Age::Occupation::Zip-code   (optional: a one-line user profile)

Each row ranks ``--num-candidates`` movies the user rated (so every gain is known):

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

Usage (from the repository root)::

    # single need, dense (Table 1 setting)
    python data_prep/movielens.py --raw-dir data/raw --out-dir data/ml-1m/interest --seed 0
    # train on Maximizing Interest, test on unseen needs
    python data_prep/movielens.py --raw-dir data/raw --out-dir data/ml-1m/generalise \\
        --train-needs maximize_interest --test-needs explore_new_topics,trend_promotion
    # one universal model: uniform mix over (user, need)
    python data_prep/movielens.py --raw-dir data/raw --out-dir data/ml-1m/multi --needs all
    # sparse feedback: 10 % of training ratings observed
    python data_prep/movielens.py --raw-dir data/raw --out-dir data/ml-1m/sparse --sparse-frac 0.1
    # ... and the critic trained on every observed training rating, not only the rows' candidates
    python -m verl_flexrec.critic train --data data/ml-1m/sparse/interactions.parquet \\
        data/ml-1m/sparse/train.parquet --out data/ml-1m/sparse/critic.pt
    # fetch the official archive first (MD5-verified, resumable)
    python data_prep/movielens.py --raw-dir data/raw --out-dir data/ml-1m/interest --download
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from data_prep.common import (
    Column,
    DataPrepError,
    Interactions,
    ItemSource,
    RecentCounts,
    add_interaction_args,
    base_parser,
    find_file,
    log,
    read_csv_checked,
    run_interaction_pipeline,
    run_main,
    split_needs,
)
from data_prep.download import Source, fetch_sources

DATASET = "ml-1m"
SOURCES = [
    Source(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        dest="ml-1m.zip",
        checksum="md5:c4d9eecfca2ab87c1945afe126590906",  # published in ml-1m.zip.md5
        extract=True,
    )
]
ENCODING = "latin-1"
SEP = "\x1f"  # '::' is rewritten to this single character so pandas' C parser can read the files

AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
OCCUPATIONS = [
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]


def _double_colon(text: str) -> str:
    return text.replace("::", SEP)


def _dat(raw_dir: Path, name: str, *, required: bool = True) -> Path | None:
    return find_file(raw_dir, [f"ml-1m/{name}", name], what=f"MovieLens-1M {name}", required=required)


def read_ratings(path: Path, progress: bool) -> Interactions:
    cols = [Column("UserID", "int"), Column("MovieID", "int"), Column("Rating", "int", low=1, high=5),
            Column("Timestamp", "float")]
    df, _ = read_csv_checked(path, cols, sep=SEP, names=[c.name for c in cols], encoding=ENCODING,
                             text_transform=_double_colon, progress=progress)
    return Interactions(df["UserID"], df["MovieID"], df["Timestamp"], df["Rating"].astype(float))


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


def build_parser():
    p = base_parser(__doc__.split("\n\n")[0], default_needs="maximize_interest", train_size=None, test_size=1000)
    p.epilog = __doc__[__doc__.index("Usage"):]
    add_interaction_args(p, split="user", test_time_frac=0.2)
    p.add_argument("--popularity-days", type=float, default=30.0,
                   help="trend window: ratings in this many days before the cut-off (default: 30)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    progress = not args.no_progress
    train_needs, test_needs = split_needs(args, features=ItemSource.FEATURES, side_info=ItemSource.SIDE_INFO,
                                          dataset=DATASET)
    if args.download:
        fetch_sources(args.raw_dir, SOURCES, mirror=args.download_url, checksum_mode=args.download_checksum,
                      progress=progress)

    ratings = read_ratings(_dat(args.raw_dir, "ratings.dat"), progress)
    titles, genres = read_movies(_dat(args.raw_dir, "movies.dat"))
    profiles = read_profiles(_dat(args.raw_dir, "users.dat", required=False))
    unknown = len(set(np.unique(ratings.item).tolist()) - set(titles))
    if unknown:
        log(f"note: {unknown} rated movies are missing from movies.dat; they show as 'movie <id>' with no genre")
    window = int(args.popularity_days) if float(args.popularity_days).is_integer() else args.popularity_days
    src = ItemSource(
        name=DATASET, data_source=f"flexrec/{DATASET}", item_noun="movie", history_heading="Movies I rated",
        popularity_unit=f"ratings in the last {window} days", titles=titles, categories=genres,
        feedback=lambda r: f"rated {int(r)}/5", popularity=RecentCounts(ratings, args.popularity_days),
        profile=profiles.get,
    )
    run_interaction_pipeline(args, src, ratings, ratings, ratings, train_needs, test_needs)


if __name__ == "__main__":
    sys.exit(run_main(main))
