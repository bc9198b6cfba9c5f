"""KuaiRec 2.0 -> FlexRec verl parquet (train.parquet, test.parquet, interactions.parquet, prep_info.json).

Raw input: ``KuaiRec.zip`` from the official Zenodo record, unpacked so that
``RAW/KuaiRec 2.0/data/`` (or ``RAW/``) holds:

    small_matrix.csv              fully observed: 1,411 users x 3,327 videos (test ground truth)
    big_matrix.csv                12.5 M interactions of 7,176 users (training; streamed in chunks)
    item_categories.csv           video_id, feat = tag ids such as "[27, 9]"
    item_daily_features.csv       one row per video and day; play_cnt = plays that day
    kuairec_caption_category.csv  optional: captions and 3 levels of category names (2024 addition)

Columns used: ``user_id, video_id, timestamp, watch_ratio`` of the matrices (rows with an empty
timestamp, which the real small matrix has, cannot be placed in time and are dropped with a note),
``video_id, date, play_cnt`` of the daily features.

Each row ranks ``--num-candidates`` videos with a known watch ratio:

* interest = watch_ratio, capped at ``--watch-ratio-cap`` (a few real values are in the hundreds);
  history = the user's last ``--history-len`` distinct videos before the cut-off (caption,
  category, "watch ratio 1.27");
* ``explore_new_topics``: a video is novel when none of its categories appears in the shown
  history (``--category``: caption-file category names, or the numeric tags);
* ``trend_promotion``: popularity = ``play_cnt`` of the last day before the cut-off (Beijing dates,
  as in the files), shown as "1,234 plays in the last day", divided by the maximum over the
  candidates for the gain.

Split (default ``--split global``): one cut-off time T, the ``--test-time-frac`` quantile of the
small matrix's timestamps. Test rows: small-matrix users, candidates drawn from their small-matrix
videos watched at or after T (videos they had met before T are left out), history from both
matrices before T. Training rows: ``--train-source`` interactions strictly before T. The script
verifies this and stops if any test interaction reaches a history, a training row or
interactions.parquet.

interactions.parquet is the uncertainty critic's training data: every interaction of the matrices
read (both; only the small one with ``--train-source small``) strictly before the cut-off that is
not a test candidate -- the pool all histories and training candidates are drawn from, not only
the sampled rows -- one row per (user, video) (its latest interaction), with ``user_id, item_id,
interest`` (capped watch ratio), ``observed``, ``categories`` and ``timestamp``. With
``--sparse-frac`` the ``observed`` flag is the same per-pair coin train.parquet uses, and an
unobserved pair's interest is written as 0.0 (hidden, so the critic never sees it); dense runs
mark everything observed. prep_info.json records its row count (``rows.interactions``).

Usage (the clone's ``data_prep`` scripts take the same flags)::

    python -m verl_flexrec.data kuairec --raw-dir data/raw --out-dir data/kuairec/interest --seed 0
    # train on Maximizing Interest, test on unseen needs
    python -m verl_flexrec.data kuairec --raw-dir data/raw --out-dir data/kuairec/generalise \\
        --train-needs maximize_interest --test-needs explore_new_topics,trend_promotion
    # one universal model: uniform mix over (user, need)
    python -m verl_flexrec.data kuairec --raw-dir data/raw --out-dir data/kuairec/multi --needs all
    # sparse feedback (Table 8): 10 % of training interactions observed, the rest for the critic
    python -m verl_flexrec.data kuairec --raw-dir data/raw --out-dir data/kuairec/sparse --sparse-frac 0.1
    # ... whose critic learns from every observed training interaction, not only the rows' candidates
    python -m verl_flexrec.critic train --data data/kuairec/sparse/interactions.parquet \\
        data/kuairec/sparse/train.parquet --out data/kuairec/sparse/critic.pt
    # fetch KuaiRec.zip from Zenodo first (MD5 from the Zenodo record, resumable)
    python -m verl_flexrec.data kuairec --raw-dir data/raw --out-dir data/kuairec/interest --download
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import add_interaction_args, base_parser
from .download import Source, fetch_sources, zenodo_checksum
from .events import EventLog
from .io import Column, DataPrepError, check_columns, find_file, log, read_csv_checked, report_drops, run_main
from .pipeline import run_interaction_pipeline
from .rows import ItemSource
from .targets import split_needs

DATASET = "kuairec"
ZENODO_RECORD = "18164998"
SOURCES = [
    Source(
        url=f"https://zenodo.org/records/{ZENODO_RECORD}/files/KuaiRec.zip",
        dest="KuaiRec.zip",
        extract=True,
        lookup=lambda: zenodo_checksum(ZENODO_RECORD, "KuaiRec.zip"),
    )
]
BEIJING = timezone(timedelta(hours=8))  # KuaiRec's `date` columns are Beijing dates
LAYOUTS = ("KuaiRec 2.0/data", "KuaiRec/data", "data", ".")
CATEGORY_CHOICES = ("auto", "first_level", "second_level", "third_level", "tags")
NO_CATEGORY = {"", "UNKNOWN", "nan", "None"}
_FEAT = re.compile(r"^\[\s*(\d+(\s*,\s*\d+)*)?\s*\]$")


def _file(raw_dir: Path, name: str, *, required: bool = True) -> Path | None:
    return find_file(raw_dir, [f"{layout}/{name}" for layout in LAYOUTS], what=f"KuaiRec {name}", required=required)


def read_matrix(path: Path, cap: float | None, progress: bool) -> EventLog:
    cols = [Column("user_id", "int"), Column("video_id", "int"), Column("timestamp", "float", missing="drop"),
            Column("watch_ratio", "float", low=0.0)]
    df, report = read_csv_checked(path, cols, progress=progress)
    report_drops(path, report, "no time: cannot be placed before or after the cut-off")
    interest = df["watch_ratio"].to_numpy()
    if cap is not None:
        interest = np.minimum(interest, cap)
    inter = EventLog(df["user_id"], df["video_id"], df["timestamp"], interest)
    del df
    return inter


class DailyPlays:
    """Popularity: ``play_cnt`` of each video on the last day (Beijing date) before a cut-off."""

    def __init__(self, path: Path, progress: bool):
        cols = [Column("video_id", "int"), Column("date", "int"), Column("play_cnt", "int", missing="fill", fill=0, low=0)]
        df, _ = read_csv_checked(path, cols, progress=progress)
        df = df.groupby(["date", "video_id"], sort=True)["play_cnt"].sum().reset_index()
        self.dates = np.unique(df["date"].to_numpy())
        self._plays = {int(d): g.set_index("video_id")["play_cnt"] for d, g in df.groupby("date", sort=True)}

    def day_before(self, cutoff: float) -> int | None:
        day = int(datetime.fromtimestamp(cutoff, BEIJING).strftime("%Y%m%d"))
        pos = int(np.searchsorted(self.dates, day, side="left")) - 1
        return int(self.dates[pos]) if pos >= 0 else None

    def __call__(self, items: np.ndarray, cutoff: float) -> np.ndarray:
        day = self.day_before(cutoff)
        if day is None:
            return np.zeros(len(items), dtype=np.int64)
        return self._plays[day].reindex(items, fill_value=0).to_numpy(dtype=np.int64)


def read_tags(path: Path) -> dict[int, tuple[str, ...]]:
    """item_categories.csv: ``feat`` is a list of tag ids such as ``[27, 9]``."""
    df, _ = read_csv_checked(path, [Column("video_id", "int"), Column("feat", "str")])
    tags = {}
    for i, (video, feat) in enumerate(zip(df["video_id"].tolist(), df["feat"].tolist())):
        if not _FEAT.match(feat.strip()):
            raise DataPrepError(f"{path}: line {i + 2}: field 'feat': expected a list like [27, 9], got {feat!r}")
        tags[int(video)] = tuple(f"tag {t}" for t in re.findall(r"\d+", feat))
    return tags


def read_captions(path: Path | None) -> pd.DataFrame | None:
    """kuairec_caption_category.csv, read leniently: the real file has a few broken rows (skipped)."""
    if path is None:
        return None
    skipped = []
    try:
        df = pd.read_csv(path, engine="python", dtype=str, keep_default_na=False, encoding="utf-8",
                         on_bad_lines=lambda fields: skipped.append(fields) and None)
    except UnicodeDecodeError as e:
        raise DataPrepError(f"{path}: not valid UTF-8 text ({e.reason})") from None
    except (ValueError, pd.errors.ParserError) as e:
        raise DataPrepError(f"{path}: cannot parse: {e}") from None
    check_columns(path, df.columns, ["video_id", "caption", "manual_cover_text", "first_level_category_name",
                                     "second_level_category_name", "third_level_category_name"])
    df["video_id"] = pd.to_numeric(df["video_id"], errors="coerce")
    broken = int(df["video_id"].isna().sum()) + len(skipped)
    df = df.dropna(subset=["video_id"]).astype({"video_id": np.int64}).drop_duplicates("video_id")
    if broken:
        log(f"note: {path.name}: skipped {broken} broken rows (their videos show as 'video <id>')")
    return df.set_index("video_id")


def _clean(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def titles_from(captions: pd.DataFrame | None, limit: int) -> dict[int, str]:
    if captions is None:
        return {}
    titles = {}
    for video, caption, cover in zip(captions.index, captions["caption"], captions["manual_cover_text"]):
        text = caption if caption.strip() else cover
        if text.strip() and text.strip() not in NO_CATEGORY:
            titles[int(video)] = _clean(text, limit)
    return titles


def categories_from(choice: str, tags: dict, captions: pd.DataFrame | None) -> tuple[str, dict]:
    if choice == "auto":
        choice = "first_level" if captions is not None else "tags"
    if choice == "tags":
        return choice, tags
    if captions is None:
        raise DataPrepError(f"--category {choice} needs kuairec_caption_category.csv, which is missing")
    names = captions[f"{choice}_category_name"]
    return choice, {int(v): (n.strip(),) for v, n in zip(names.index, names) if n.strip() not in NO_CATEGORY}


def build_parser(prog: str | None = None):
    p = base_parser(__doc__.split("\n\n")[0], default_needs="maximize_interest", train_size=None, test_size=None,
                    prog=prog)
    p.epilog = __doc__[__doc__.index("Usage"):]
    add_interaction_args(p, split="global", test_time_frac=0.2)
    p.add_argument("--train-source", choices=("big", "small"), default="big",
                   help="matrix the training rows come from (default: big; test rows always use the small one)")
    p.add_argument("--category", choices=CATEGORY_CHOICES, default="auto",
                   help="topic of a video: a caption-file category level, or the numeric tags of "
                        "item_categories.csv; auto = first_level if the caption file exists, else tags")
    p.add_argument("--watch-ratio-cap", type=float, default=5.0,
                   help="cap on watch_ratio used as interest; 0 = no cap (default: 5.0)")
    p.add_argument("--title-chars", type=int, default=60, help="captions are cut to this length (default: 60)")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    """Prepare KuaiRec from the command-line flags ``argv``; a DataPrepError on bad input."""
    started = time.perf_counter()
    args = build_parser(prog).parse_args(argv)
    progress = not args.no_progress
    train_needs, test_needs = split_needs(args, features=ItemSource.FEATURES, side_info=ItemSource.SIDE_INFO,
                                          dataset=DATASET)
    if args.download:
        fetch_sources(args.raw_dir, SOURCES, mirror=args.download_url, checksum_mode=args.download_checksum,
                      progress=progress)

    # Locate every file first, so a missing one fails before any slow reading.
    small_path = _file(args.raw_dir, "small_matrix.csv")
    big_path = _file(args.raw_dir, "big_matrix.csv") if args.train_source == "big" else None
    daily_path = _file(args.raw_dir, "item_daily_features.csv")
    tags_path = _file(args.raw_dir, "item_categories.csv")
    caption_path = _file(args.raw_dir, "kuairec_caption_category.csv", required=False)

    cap = args.watch_ratio_cap if args.watch_ratio_cap > 0 else None
    tags = read_tags(tags_path)
    captions = read_captions(caption_path)
    category, categories = categories_from(args.category, tags, captions)
    daily = DailyPlays(daily_path, progress)
    small = read_matrix(small_path, cap, progress)
    if big_path is not None:
        big = read_matrix(big_path, cap, progress)
        all_inter = EventLog.concat(big, small)
    else:
        big = all_inter = small
    log(f"KuaiRec: {len(small):,} small-matrix and {len(big) if big is not small else 0:,} big-matrix "
        f"interactions; categories from {category}")

    src = ItemSource(
        name=DATASET, data_source=f"flexrec/{DATASET}", item_noun="video", history_heading="Videos I watched",
        popularity_unit="plays in the last day", titles=titles_from(captions, args.title_chars),
        categories=categories, feedback=lambda r: f"watch ratio {r:.2f}", popularity=daily,
    )
    run_interaction_pipeline(args, src, big, small, all_inter, train_needs, test_needs, started=started)


if __name__ == "__main__":
    sys.exit(run_main(main))
