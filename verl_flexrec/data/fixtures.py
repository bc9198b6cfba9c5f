"""Small raw datasets in each release's OFFICIAL file format, generated in code (no real data).

The tiny CPU job (:mod:`verl_flexrec.cpu.tiny_setup`), the tests and the data-prep benchmark use
them; each writer returns the folder to pass as ``--raw-dir``.

Formats follow the publishers' documentation:

* KuaiRec 2.0 (``KuaiRec 2.0/data/`` in ``KuaiRec.zip``, README of chongminggao/KuaiRec):
  ``small_matrix.csv`` / ``big_matrix.csv`` with ``user_id,video_id,play_duration,video_duration,
  time,date,timestamp,watch_ratio`` (like the real small matrix, a few rows have empty
  time/date/timestamp); ``item_categories.csv`` (``video_id,feat`` with ``feat`` like ``[27, 9]``);
  ``item_daily_features.csv`` (58 columns, one row per video and day); and
  ``kuairec_caption_category.csv`` (captions and three category levels, UTF-8 Chinese text, one
  quoted multi-line caption and one broken row as in the real file).
* MovieLens-1M (``ml-1m/`` in ``ml-1m.zip``, its README): ``ratings.dat``
  (``UserID::MovieID::Rating::Timestamp``), ``movies.dat`` (``MovieID::Title::Genres``) and
  ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``), latin-1, no header.
* Amazon ESCI (``shopping_queries_dataset/`` of amazon-science/esci-data):
  ``shopping_queries_dataset_examples.parquet`` (``example_id, query, query_id, product_id,
  product_locale, esci_label, small_version, large_version, split``),
  ``shopping_queries_dataset_products.parquet`` (``product_id, product_title,
  product_description, product_bullet_point, product_brand, product_color, product_locale``) and
  ``shopping_queries_dataset_sources.csv`` (``query_id, source``).

Every generator is deterministic for its seed and scales (the benchmark builds an ML-1M-sized
input with :func:`write_movielens`).
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

BEIJING = timezone(timedelta(hours=8))

# ---------------------------------------------------------------------------------------------
# MovieLens-1M
# ---------------------------------------------------------------------------------------------
ML_GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
             "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
             "Western"]
ML_TITLE_WORDS = ["Café", "Noël", "Star Wars: Episode", "\"Great Performances\" Cats", "Amélie", "Señor",
                  "Return", "Night", "City", "Love", "Ghost", "River", "Man, The", "Dog's Life, A"]


def write_movielens(root: Path, *, n_users: int = 10, n_movies: int = 60, ratings_per_user: int = 45,
                    seed: int = 0, layout: str = "ml-1m", n_ratings: int | None = None) -> Path:
    """Write ``root/layout/{ratings,movies,users}.dat``; returns that folder.

    ``n_ratings`` (benchmark) spreads that many ratings over the users instead of a fixed count.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / layout
    folder.mkdir(parents=True, exist_ok=True)

    movie_ids = np.sort(rng.choice(np.arange(1, n_movies * 2 + 1), size=n_movies, replace=False))
    with open(folder / "movies.dat", "w", encoding="latin-1", newline="\n") as f:
        for m in movie_ids:
            words = rng.choice(len(ML_TITLE_WORDS), size=2, replace=False)
            title = f"{ML_TITLE_WORDS[words[0]]} {ML_TITLE_WORDS[words[1]]} {m} ({1950 + m % 50})"
            genres = "|".join(ML_GENRES[g] for g in sorted(rng.choice(len(ML_GENRES), size=1 + m % 3, replace=False)))
            f.write(f"{m}::{title}::{genres}\n")

    with open(folder / "users.dat", "w", encoding="latin-1", newline="\n") as f:
        ages = [1, 18, 25, 35, 45, 50, 56]
        for u in range(1, n_users + 1):
            f.write(f"{u}::{'FM'[u % 2]}::{ages[u % 7]}::{u % 21}::{10000 + u:05d}\n")

    if n_ratings is None:
        per_user = np.full(n_users, ratings_per_user)
    else:
        per_user = np.maximum(20, rng.poisson(n_ratings / n_users, size=n_users))
        per_user = np.minimum(per_user, n_movies)
    start = int(datetime(2000, 5, 1, tzinfo=timezone.utc).timestamp())
    users, movies, stars, times = [], [], [], []
    for u, n in enumerate(per_user, start=1):
        users.append(np.full(n, u))
        movies.append(rng.choice(movie_ids, size=n, replace=False))
        stars.append(rng.integers(1, 6, size=n))
        t0 = start + int(rng.integers(0, 200 * 86400))
        t = np.sort(t0 + rng.integers(0, 60 * 86400, size=n))
        t[1::7] = t[0::7][: len(t[1::7])]  # ties, as in the real file (several ratings per second)
        times.append(np.sort(t))
    cols = [np.concatenate(c) for c in (users, movies, stars, times)]
    lines = "".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in zip(*(c.tolist() for c in cols)))
    (folder / "ratings.dat").write_text(lines, encoding="latin-1")
    return folder


# ---------------------------------------------------------------------------------------------
# KuaiRec 2.0
# ---------------------------------------------------------------------------------------------
KUAIREC_MATRIX_COLUMNS = ["user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
                          "watch_ratio"]
KUAIREC_DAILY_COLUMNS = [
    "video_id", "date", "author_id", "video_type", "upload_dt", "upload_type", "visible_status", "video_duration",
    "video_width", "video_height", "music_id", "video_tag_id", "video_tag_name", "show_cnt", "show_user_num",
    "play_cnt", "play_user_num", "play_duration", "complete_play_cnt", "complete_play_user_num", "valid_play_cnt",
    "valid_play_user_num", "long_time_play_cnt", "long_time_play_user_num", "short_time_play_cnt",
    "short_time_play_user_num", "play_progress", "comment_stay_duration", "like_cnt", "like_user_num",
    "click_like_cnt", "double_click_cnt", "cancel_like_cnt", "cancel_like_user_num", "comment_cnt",
    "comment_user_num", "direct_comment_cnt", "reply_comment_cnt", "delete_comment_cnt", "delete_comment_user_num",
    "comment_like_cnt", "comment_like_user_num", "follow_cnt", "follow_user_num", "cancel_follow_cnt",
    "cancel_follow_user_num", "share_cnt", "share_user_num", "download_cnt", "download_user_num", "report_cnt",
    "report_user_num", "reduce_similar_cnt", "reduce_similar_user_num", "collect_cnt", "collect_user_num",
    "cancel_collect_cnt", "cancel_collect_user_num",
]
KUAIREC_CAPTION_COLUMNS = ["video_id", "manual_cover_text", "caption", "topic_tag", "first_level_category_id",
                           "first_level_category_name", "second_level_category_id", "second_level_category_name",
                           "third_level_category_id", "third_level_category_name"]
KUAIREC_CATEGORIES = [(17, "宠物", 233, "宠物日常记录"), (9, "美食", 120, "美食教程"), (5, "穿搭", 121, "搭配展示"),
                      (3, "游戏", 88, "手游"), (11, "旅游", 140, "风景"), (2, "音乐", 61, "翻唱"),
                      (7, "运动", 99, "健身"), (13, "亲子", 150, "育儿")]


def _beijing(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, BEIJING)


def _write_matrix(path: Path, users, items, times, durations, rng, blank_time_every: int = 0,
                  chunk: int = 1_000_000) -> None:
    """One KuaiRec interaction matrix, vectorised and written in chunks (the benchmark writes millions)."""
    import pandas as pd

    with open(path, "w", encoding="utf-8", newline="") as f:
        for lo in range(0, len(items), chunk):
            sl = slice(lo, lo + chunk)
            ts = np.round(times[sl], 3)
            video_duration = durations[items[sl]]
            play = (video_duration * rng.gamma(2.0, 0.5, size=len(ts))).astype(np.int64)
            local = (ts * 1000).astype("int64").astype("datetime64[ms]") + np.timedelta64(8, "h")  # Beijing time
            frame = pd.DataFrame({
                "user_id": users[sl], "video_id": items[sl], "play_duration": play, "video_duration": video_duration,
                "time": np.char.replace(np.datetime_as_string(local, unit="ms"), "T", " "),
                "date": np.char.replace(np.datetime_as_string(local, unit="D"), "-", "").astype(float),
                "timestamp": ts, "watch_ratio": play / video_duration,
            })
            if blank_time_every:  # like the real small matrix: a few rows without time/date/timestamp
                blank = (lo + np.arange(len(frame))) % blank_time_every == blank_time_every - 1
                frame.loc[blank, ["time", "date", "timestamp"]] = np.nan
            frame.to_csv(f, index=False, header=lo == 0, na_rep="", lineterminator="\n")


def write_kuairec(root: Path, *, n_items: int = 180, small_items: int = 80, small_users: int = 6,
                  big_users: int = 10, big_per_user: int = 90, big_first_item: int = 60, days: int = 20, seed: int = 0,
                  layout: str = "KuaiRec 2.0/data", captions: bool = True) -> Path:
    """Write the KuaiRec 2.0 files; small-matrix users are a subset of the big matrix's users.

    The small matrix holds videos ``0..small_items-1`` for every small user (fully observed); the
    big matrix draws ``big_per_user`` videos per user from ``big_first_item..n_items-1``, so the two
    overlap on a few videos, as the real matrices do.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / layout
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2020, 7, 5, tzinfo=BEIJING).timestamp()
    durations = rng.integers(3000, 60000, size=n_items)

    users = np.repeat(np.arange(small_users), small_items)
    items = np.concatenate([rng.permutation(small_items) for _ in range(small_users)])
    times = np.sort(start + rng.uniform(0, days * 86400, size=(small_users, small_items)), axis=1).ravel()
    _write_matrix(folder / "small_matrix.csv", users, items, times, durations, rng, blank_time_every=97)

    big_items = np.arange(big_first_item, n_items)
    users = np.repeat(np.arange(big_users), big_per_user)
    items = np.concatenate([rng.choice(big_items, size=big_per_user, replace=False) for _ in range(big_users)])
    times = np.sort(start + rng.uniform(0, days * 86400, size=(big_users, big_per_user)), axis=1).ravel()
    _write_matrix(folder / "big_matrix.csv", users, items, times, durations, rng)

    with open(folder / "item_categories.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["video_id", "feat"])
        for v in range(n_items):
            tags = sorted(rng.choice(31, size=1 + v % 2, replace=False).tolist())
            w.writerow([v, "[" + ", ".join(map(str, tags)) + "]"])

    import pandas as pd

    video = np.repeat(np.arange(n_items), days + 1)
    day = np.tile(np.arange(days + 1), n_items)
    plays = rng.integers(0, 20000, size=len(video))
    dates = [f"{_beijing(start + d * 86400):%Y%m%d}" for d in range(days + 1)]
    daily = pd.DataFrame({c: np.zeros(len(video), dtype=np.int64) for c in KUAIREC_DAILY_COLUMNS})
    daily = daily.assign(
        video_id=video, date=np.array(dates)[day], author_id=1000 + video % 17, video_type="NORMAL",
        upload_dt="2020-06-30", upload_type="ShortImport", visible_status="public",
        video_duration=durations[video].astype(float), video_width=720, video_height=1280, music_id=989206467,
        video_tag_id=2522, video_tag_name="祝福", show_cnt=plays + 15, show_user_num=plays, play_cnt=plays,
        play_user_num=plays // 2, play_progress=0.5,
        collect_cnt=np.where(day < 3, np.nan, 0.0),  # empty in the first days, as in the real file
    )
    daily.to_csv(folder / "item_daily_features.csv", index=False, na_rep="", lineterminator="\n")

    if captions:
        with open(folder / "kuairec_caption_category.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(KUAIREC_CAPTION_COLUMNS)
            for v in range(n_items):
                c1, n1, c2, n2 = KUAIREC_CATEGORIES[v % len(KUAIREC_CATEGORIES)]
                caption = f"这是视频{v}的简介 #喜欢的双击加关注"
                if v == 3:
                    caption = "第一行\n第二行"  # a quoted multi-line caption
                if v == 5:
                    f.write(f"{v},封面,坏行,多余,字段,[],1,2,3,4,5,6\n")  # a broken row, as in the real file
                    continue
                w.writerow([v, f"封面{v}", caption, "[直播,萌宠驾到]", c1, n1, c2, n2, c2 * 10, f"{n2}细分"])
    return folder


# ---------------------------------------------------------------------------------------------
# Amazon ESCI (Shopping Queries Dataset)
# ---------------------------------------------------------------------------------------------
ESCI_EXAMPLE_COLUMNS = ["example_id", "query", "query_id", "product_id", "product_locale", "esci_label",
                        "small_version", "large_version", "split"]
ESCI_PRODUCT_COLUMNS = ["product_id", "product_title", "product_description", "product_bullet_point",
                        "product_brand", "product_color", "product_locale"]


def write_esci(root: Path, *, n_queries: int = 30, min_products: int = 8, max_products: int = 40,
               seed: int = 0, layout: str = "shopping_queries_dataset") -> Path:
    """Write the two ESCI parquet files and the sources CSV; ~2/3 train queries, some 'es' locale."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder = Path(root) / layout
    folder.mkdir(parents=True, exist_ok=True)
    examples = {c: [] for c in ESCI_EXAMPLE_COLUMNS}
    products = {c: [] for c in ESCI_PRODUCT_COLUMNS}
    seen_products = set()
    example_id = 0
    for q in range(n_queries):
        locale = "es" if q % 5 == 4 else "us"
        split = "test" if q % 3 == 2 else "train"
        n = int(rng.integers(min_products, max_products + 1))
        labels = rng.choice(list("ESCI"), size=n, p=[0.45, 0.3, 0.1, 0.15])
        if q == 0:
            labels[:] = "E"  # one query whose products are all equally relevant
        for j in range(n):
            pid = f"B0{rng.integers(0, 10**8):08d}"
            examples["example_id"].append(example_id)
            examples["query"].append(f"query {q} {'zapatos' if locale == 'es' else 'running shoes'}")
            examples["query_id"].append(q)
            examples["product_id"].append(pid)
            examples["product_locale"].append(locale)
            examples["esci_label"].append(str(labels[j]))
            examples["small_version"].append(int(q % 7 != 6))
            examples["large_version"].append(1)
            examples["split"].append(split)
            example_id += 1
            if (pid, locale) in seen_products or j == n - 1 and q % 4 == 0:
                continue  # the last product of some queries has no product row (left join gives nulls)
            seen_products.add((pid, locale))
            products["product_id"].append(pid)
            products["product_title"].append(f"Product {pid} for query {q}")
            products["product_description"].append(None if j % 3 else f"<p>Description of {pid}</p>")
            products["product_bullet_point"].append(f"Feature A\nFeature B of {pid}")
            products["product_brand"].append(None if j % 5 == 0 else f"Brand{j % 4}")
            products["product_color"].append(None if j % 2 else "Black")
            products["product_locale"].append(locale)
    int_cols = {"example_id", "query_id", "small_version", "large_version"}
    ex_schema = pa.schema([(c, pa.int64() if c in int_cols else pa.string()) for c in ESCI_EXAMPLE_COLUMNS])
    pq.write_table(pa.table(examples, schema=ex_schema), folder / "shopping_queries_dataset_examples.parquet")
    pr_schema = pa.schema([(c, pa.string()) for c in ESCI_PRODUCT_COLUMNS])
    pq.write_table(pa.table(products, schema=pr_schema), folder / "shopping_queries_dataset_products.parquet")
    with open(folder / "shopping_queries_dataset_sources.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["query_id", "source"])
        for q in range(n_queries):
            w.writerow([q, "other" if q % 2 else "negations"])
    return folder
