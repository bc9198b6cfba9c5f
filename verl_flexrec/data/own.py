"""Your own interaction log -> FlexRec verl parquet (train.parquet, test.parquet, interactions.parquet, prep_info.json).

Two inputs, one pipeline (the one MovieLens and KuaiRec use: time split, leakage check, needs,
sparse feedback, the critic's interactions table):

``--recbole-dir DIR``: RecBole atomic files (:mod:`.recbole`): ``DIR/NAME.inter`` and, if present,
``DIR/NAME.item`` and ``DIR/NAME.user`` (``--dataset NAME`` when DIR holds several). Fields by
name: ``--user-col`` (default ``user_id``), ``--item-col`` (``item_id``), ``--time-col``
(``timestamp``), ``--rating-col`` (``rating`` if the file has it); in NAME.item ``--title-col``
(default: the first of title, movie_title, item_name, name) and ``--category-col`` (default: the
first of class, genre, genres, category, categories; a ``token_seq`` field gives one category per
token, split at ``--seq-sep``, a space by default as in RecBole); NAME.user gives a one-line
profile of its other fields.

``--table FILE``: one CSV (``.tsv``: tab-separated; ``--sep``) or parquet file, one row per
interaction, columns named by the same flags (defaults as above; the title and category columns
may sit in the table itself or in ``--item-table FILE``, keyed by the item column; ``--category-sep``
splits a category column, default ``|``); ``--user-table FILE`` (keyed by the user column) gives
the profiles (``--profile-cols``, default every other column). Ids are text, kept as written.

Time: a number, Unix seconds (``--time-unit ms``, ``us``, ``ns`` for finer units; ``iso`` for ISO
8601 text in a table); parquet date and timestamp columns are converted. Ratings: any
numbers (shown as "rated 4/5", 5 being the largest rating in the log). Without a rating column the
log is implicit feedback: every interaction has interest 1.0 (interactions.parquet says so), and a
ranking context's candidates -- all items the user went on to engage with -- are graded by the
order of engagement, ``gain = 1 / log2(1 + r)`` with ``r`` the rank of the candidate's time among
the context's candidates (1 = engaged first; ties share the better rank): Max Interest asks the
model which of them the user goes to first, i.e. next-items prediction with graded relevance.

Everything else is as for MovieLens (``python -m verl_flexrec.data movielens --help``):
``explore_new_topics`` from the categories, ``trend_promotion`` from interactions in the last
``--popularity-days`` days before the cut-off, the ``--split user`` default (per user the last
``--num-candidates`` items are the test candidates), ``--sparse-frac``, ``--needs-yaml``.

Bad input -- a missing or mistyped header, a mapped column that is not there, a non-numeric rating
or time, an item side table that misses items (unless ``--missing-items keep``), nothing left to
prepare -- stops with one message naming the file, the line and the field (exit code 2), and
nothing is written.

Usage (the clone's ``data_prep/interactions.py`` takes the same flags)::

    python -m verl_flexrec.data interactions --recbole-dir data/recbole/ml-100k --out-dir data/own --needs all
    python -m verl_flexrec.data interactions --table clicks.parquet --user-col visitor --item-col product \\
        --time-col ts --item-table products.csv --title-col name --category-col department --out-dir data/own
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import add_interaction_args, base_parser
from .events import EventLog, Task
from .io import (
    Column,
    DataPrepError,
    log,
    read_csv_checked,
    read_parquet_checked,
    run_main,
)
from .pipeline import run_interaction_pipeline
from .recbole import AtomicFile, find_atomic, read_atomic, split_seq
from .rows import ItemSource, RecentCounts
from .targets import split_needs

__all__ = ["OwnLog", "build_parser", "engagement_order_gain", "main", "read_recbole", "read_table", "to_source"]

TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
CATEGORY_FIELDS = ("class", "genre", "genres", "category", "categories")
TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # --time-unit -> per second
_INT_ID = re.compile(r"0|-?[1-9][0-9]{0,17}")  # ids kept as integers (fit int64, one spelling each)


@dataclass
class OwnLog:
    """An interaction log as read, ids as text; side information keyed by those ids."""

    name: str
    user: np.ndarray                  # str per interaction
    item: np.ndarray                  # str per interaction
    ts: np.ndarray                    # float64, Unix seconds
    rating: np.ndarray | None         # float64; None = implicit feedback
    titles: dict[str, str] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)


def engagement_order_gain(task: Task) -> np.ndarray:
    """Implicit feedback: ``1 / log2(1 + r)``, ``r`` = rank of each candidate's time among the
    context's candidates (1 = first; ties share the better rank)."""
    ranks = 1 + np.searchsorted(np.sort(task.cand_ts), task.cand_ts, side="left")
    return 1.0 / np.log2(1.0 + ranks)


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _profile(fields: dict[str, str]) -> str | None:
    parts = [f"{name} {_clean(value)}" for name, value in fields.items() if _clean(value)]
    return ", ".join(parts) or None


def _unique_keys(path: Path, keys: list[str], key: str, where: str) -> None:
    """One record per key. ``where``: 'line' (text with a header: record r is line r + 2) or 'row'."""
    first = 2 if where == "line" else 1
    seen: dict[str, int] = {}
    for row, k in enumerate(keys, first):
        if k in seen:
            raise DataPrepError(f"{path}: {where} {row}: field '{key}': {k!r} appears twice (first at {where} "
                                f"{seen[k]}); a side table has one record per key")
        seen[k] = row


def _check_items_known(path: Path, items: np.ndarray, known, missing_items: str) -> None:
    unknown = sorted(set(pd.unique(items).tolist()) - set(known))
    if not unknown:
        return
    shown = ", ".join(repr(i) for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    if missing_items == "error":
        raise DataPrepError(f"{path}: misses {len(unknown):,} item(s) of the interaction log ({shown}); add them, "
                            f"or pass --missing-items keep to show them as 'item <id>' with no category")
    log(f"note: {path.name} misses {len(unknown):,} item(s) of the log ({shown}); they show with no title or category")


# ---------------------------------------------------------------------------------------------
# RecBole atomic files
# ---------------------------------------------------------------------------------------------
def _pick(file: AtomicFile, flag: str | None, defaults: tuple[str, ...], flag_name: str) -> str | None:
    """The field a flag names (it must exist), else the first default the file has, else None."""
    if flag is not None:
        if flag not in file.types:
            raise DataPrepError(f"{file.path}: line 1: no field {flag!r} ({flag_name}); the header has "
                                f"{[f'{n}:{t}' for n, t in file.types.items()]}")
        return flag
    return next((d for d in defaults if d in file.types), None)


def _item_side(file: AtomicFile, args) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Titles and categories from NAME.item (or the .inter file when there is no NAME.item)."""
    keys = file.field(args.item_col, allowed=("token",), role="the item id").tolist()
    titles: dict[str, str] = {}
    categories: dict[str, tuple[str, ...]] = {}
    title = _pick(file, args.title_col, TITLE_FIELDS, "--title-col")
    if title is not None:  # an item's first record names it (the .inter file has one per interaction)
        values = file.field(title, allowed=("token", "token_seq"), role="the title").tolist()
        for k, v in zip(keys, values):
            if _clean(v):
                titles.setdefault(k, _clean(v))
    category = _pick(file, args.category_col, CATEGORY_FIELDS, "--category-col")
    if category is not None:
        kind = file.types[category]
        values = file.field(category, allowed=("token", "token_seq"), role="the category").tolist()
        for k, v in zip(keys, values):
            # a token is one category (a token never holds a tab: splitting at one only trims it)
            categories.setdefault(k, split_seq(v, args.seq_sep if kind == "token_seq" else "\t"))
    return titles, categories


def read_recbole(args) -> OwnLog:
    """The log of ``--recbole-dir`` (see the module docstring)."""
    files = find_atomic(args.recbole_dir, args.dataset)
    progress = not args.no_progress
    inter = read_atomic(files.inter, required=(args.user_col, args.item_col, args.time_col), seq_sep=args.seq_sep,
                        progress=progress)
    user = inter.field(args.user_col, allowed=("token",), role="the user id").to_numpy(dtype=object)
    item = inter.field(args.item_col, allowed=("token",), role="the item id").to_numpy(dtype=object)
    if args.time_unit == "iso":
        raise DataPrepError("--time-unit iso reads text times of a --table; a RecBole time is a float field")
    ts = inter.field(args.time_col, allowed=("float",), role="the time").to_numpy(dtype=np.float64)
    ts = ts / TIME_UNITS[args.time_unit]
    rating_col = _pick(inter, args.rating_col, ("rating",), "--rating-col")
    rating = None
    if rating_col is not None:
        values = inter.field(rating_col, allowed=("float",), role="the rating")
        rating = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.isnan(rating) | (rating < 0)
        if bad.any():
            i = int(np.argmax(bad))
            what = "value is missing" if np.isnan(rating[i]) else f"a rating is a gain and must be >= 0, got {rating[i]:g}"
            raise DataPrepError(f"{files.inter}: line {inter.line_of(i)}: field '{rating_col}': {what}")
    if files.item is not None:
        item_file = read_atomic(files.item, required=(args.item_col,), seq_sep=args.seq_sep)
        keys = item_file.field(args.item_col, allowed=("token",), role="the item id").tolist()
        _unique_keys(files.item, keys, args.item_col, "line")
        _check_items_known(files.item, item, keys, args.missing_items)
        titles, categories = _item_side(item_file, args)
    else:  # titles and categories may sit in the .inter file itself
        titles, categories = _item_side(inter, args)
    profiles: dict[str, str] = {}
    if files.user is not None:
        user_file = read_atomic(files.user, required=(args.user_col,), seq_sep=args.seq_sep)
        keys = user_file.field(args.user_col, allowed=("token",), role="the user id").tolist()
        _unique_keys(files.user, keys, args.user_col, "line")
        cols = _profile_columns(files.user, list(user_file.types), args.user_col, args.profile_cols)
        for i, k in enumerate(keys):
            text = _profile({c: user_file.frame[c].iat[i] for c in cols})
            if text:
                profiles[k] = text
    return OwnLog(files.name, user, item, ts, rating, titles, categories, profiles)


def _profile_columns(path: Path, found: list[str], key: str, wanted: str | None) -> list[str]:
    if wanted is None:
        return [c for c in found if c != key]
    cols = [c.strip() for c in wanted.split(",") if c.strip()]
    unknown = [c for c in cols if c not in found]
    if unknown:
        raise DataPrepError(f"{path}: no column {unknown[0]!r} (--profile-cols); found {found}")
    return cols


# ---------------------------------------------------------------------------------------------
# A plain table (CSV or parquet)
# ---------------------------------------------------------------------------------------------
def _columns_of(path: Path, sep: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        if _is_parquet(path):
            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0, sep=_sep(path, sep)).columns)
    except FileNotFoundError:
        raise DataPrepError(f"{path}: file not found") from None
    except Exception as e:  # noqa: BLE001 -- any reader error is bad input here
        raise DataPrepError(f"{path}: cannot read ({e})") from None


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq") or path.name.lower().endswith((".parquet.brotli", ".parquet.gz"))


def _sep(path: Path, sep: str) -> str:
    return "\t" if path.suffix.lower() == ".tsv" and sep == "," else sep


def _read(path: Path, columns: list[Column], sep: str, progress: bool) -> tuple[pd.DataFrame, str]:
    """The columns of a CSV or parquet file and the word its errors use for a record."""
    if _is_parquet(path):
        return read_parquet_checked(path, columns), "row"
    frame, _ = read_csv_checked(path, columns, sep=_sep(path, sep), text_columns=True, progress=progress)
    return frame, "line"


def _mapped(path: Path, found: list[str], flag: str, name: str | None, default: str | None, *,
            required: bool) -> str | None:
    """The column a flag maps (it must exist when given or required), else None."""
    chosen = name if name is not None else default
    if chosen is not None and chosen in found:
        return chosen
    if name is not None or required:
        raise DataPrepError(f"{path}: no column {chosen!r} ({flag}); found {found}")
    return None


def read_table(args) -> OwnLog:
    """The log of ``--table`` (see the module docstring)."""
    path, progress = args.table, not args.no_progress
    found = _columns_of(path, args.sep)
    user = _mapped(path, found, "--user-col", args.user_col, None, required=True)
    item = _mapped(path, found, "--item-col", args.item_col, None, required=True)
    ts = _mapped(path, found, "--time-col", args.time_col, None, required=True)
    rating = _mapped(path, found, "--rating-col", args.rating_col, "rating", required=False)
    side_here = args.item_table is None
    title = _mapped(path, found, "--title-col", args.title_col, None, required=False) if side_here else None
    category = _mapped(path, found, "--category-col", args.category_col, None, required=False) if side_here else None
    cols = [Column(user, "str"), Column(item, "str"), Column(ts, "str" if args.time_unit == "iso" else "float")]
    cols += [Column(rating, "float", low=0.0)] if rating else []  # a rating is a gain: >= 0
    cols += [Column(c, "str", missing="fill", fill="") for c in (title, category) if c]
    frame, where = _read(path, cols, args.sep, progress)
    if args.time_unit == "iso":
        seconds = _iso_seconds(path, frame[ts], ts, where)
    else:
        seconds = frame[ts].to_numpy(dtype=np.float64) / TIME_UNITS[args.time_unit]
    items = frame[item].to_numpy(dtype=object)
    titles, categories = {}, {}
    if side_here and (title or category):
        first = frame.drop_duplicates(item, keep="first")  # an item's first row names it
        titles, categories = _side_info(first, item, title, category, args.category_sep)
    elif not side_here:
        titles, categories = _read_item_table(args, item, items)
    profiles = _read_user_table(args, user) if args.user_table is not None else {}
    return OwnLog(path.name.split(".")[0], frame[user].to_numpy(dtype=object), items, seconds,
                  frame[rating].to_numpy(dtype=np.float64) if rating else None, titles, categories, profiles)


def _iso_seconds(path: Path, text: pd.Series, column: str, where: str) -> np.ndarray:
    """Unix seconds of ISO 8601 times (``2020-01-31``, ``2020-01-31T08:15:00+01:00``; UTC when
    no offset is given); a DataPrepError naming the first line that is not one."""
    times = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataPrepError(f"{path}: {where} {i + (2 if where == 'line' else 1)}: field '{column}': expected an "
                            f"ISO 8601 time such as 2020-01-31T08:15:00 (--time-unit iso), got {text.iat[i]!r}")
    return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def _side_info(frame: pd.DataFrame, key: str, title: str | None, category: str | None, sep: str):
    keys = frame[key].tolist()
    titles = {k: _clean(t) for k, t in zip(keys, frame[title].tolist()) if _clean(t)} if title else {}
    categories = {k: split_seq(c, sep) for k, c in zip(keys, frame[category].tolist())} if category else {}
    return titles, categories


def _read_item_table(args, item_col: str, items: np.ndarray):
    path = args.item_table
    found = _columns_of(path, args.sep)
    key = _mapped(path, found, "--item-col", item_col, None, required=True)
    title = _mapped(path, found, "--title-col", args.title_col, None, required=False)
    category = _mapped(path, found, "--category-col", args.category_col, None, required=False)
    cols = [Column(key, "str")] + [Column(c, "str", missing="fill", fill="") for c in (title, category) if c]
    frame, where = _read(path, cols, args.sep, False)
    keys = frame[key].tolist()
    _unique_keys(path, keys, key, where)
    _check_items_known(path, items, keys, args.missing_items)
    return _side_info(frame, key, title, category, args.category_sep)


def _read_user_table(args, user_col: str) -> dict[str, str]:
    path = args.user_table
    found = _columns_of(path, args.sep)
    key = _mapped(path, found, "--user-col", user_col, None, required=True)
    cols = _profile_columns(path, found, key, args.profile_cols)
    frame, where = _read(path, [Column(key, "str")] + [Column(c, "str", missing="fill", fill="") for c in cols],
                         args.sep, False)
    keys = frame[key].tolist()
    _unique_keys(path, keys, key, where)
    profiles = {}
    for i, k in enumerate(keys):
        text = _profile({c: frame[c].iat[i] for c in cols})
        if text:
            profiles[k] = text
    return profiles


# ---------------------------------------------------------------------------------------------
# The log -> the pipeline's event log and item source
# ---------------------------------------------------------------------------------------------
def _encode(tokens: np.ndarray) -> tuple[np.ndarray, list[str] | None, dict[str, int]]:
    """Integer ids stay themselves; other ids become codes (in sorted order) with their labels.

    Returns (codes, labels or None, {id: code} of the ids in the log).
    """
    codes, uniques = pd.factorize(np.asarray(tokens, dtype=object), sort=True)  # hashing, then sorts the few
    labels = [str(t) for t in uniques]
    if all(_INT_ID.fullmatch(t) for t in labels):
        values = np.array([int(t) for t in labels], dtype=np.int64)
        return values[codes], None, dict(zip(labels, values.tolist()))
    return codes.astype(np.int64), labels, {t: i for i, t in enumerate(labels)}


def to_source(own: OwnLog, *, popularity_days: float, item_noun: str) -> tuple[EventLog, ItemSource]:
    """The pipeline's inputs: the event log and what is known about its items and users."""
    if len(own.user) == 0:
        raise DataPrepError("the interaction log has no rows")
    users, user_labels, user_code = _encode(own.user)
    items, item_labels, item_code = _encode(own.item)
    implicit = own.rating is None
    events = EventLog(users, items, own.ts, np.ones(len(users)) if implicit else own.rating)
    window = int(popularity_days) if float(popularity_days).is_integer() else popularity_days
    top = 0.0 if implicit else float(np.max(own.rating))
    feedback = (lambda r: "") if implicit else (lambda r: f"rated {r:g}/{top:g}")
    profiles = {user_code[u]: p for u, p in own.profiles.items() if u in user_code}
    src = ItemSource(
        name=own.name, data_source=f"flexrec/{own.name}", item_noun=item_noun,
        history_heading=f"{item_noun.capitalize()}s I {'interacted with' if implicit else 'rated'}",
        popularity_unit=f"interactions in the last {window} days",
        titles={item_code[i]: t for i, t in own.titles.items() if i in item_code},
        categories={item_code[i]: c for i, c in own.categories.items() if i in item_code},
        feedback=feedback, popularity=RecentCounts(events, popularity_days), profile=profiles.get,
        user_labels=user_labels, item_labels=item_labels, grade=engagement_order_gain if implicit else None,
    )
    return events, src


def build_parser(prog: str | None = None):
    p = base_parser(__doc__.split("\n\n")[0], default_needs="maximize_interest", train_size=None, test_size=1000,
                    prog=prog, official_source=False)
    p.epilog = __doc__[__doc__.index("Usage"):]
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--recbole-dir", type=Path, help="folder of RecBole atomic files (NAME.inter, NAME.item, NAME.user)")
    source.add_argument("--table", type=Path, help="one CSV/TSV or parquet file, one row per interaction")
    p.add_argument("--dataset", default=None, help="RecBole: NAME of NAME.inter when the folder holds several")
    p.add_argument("--name", default=None,
                   help="dataset name in the rows (data_source flexrec/NAME; default: the RecBole NAME or the table's file name)")
    p.add_argument("--user-col", default="user_id", help="user id field/column (default: user_id)")
    p.add_argument("--item-col", default="item_id", help="item id field/column (default: item_id)")
    p.add_argument("--time-col", default="timestamp", help="time field/column (default: timestamp)")
    p.add_argument("--time-unit", choices=(*TIME_UNITS, "iso"), default="s",
                   help="unit of a numeric time since 1970 (s, ms, us, ns), or 'iso': ISO 8601 text such as "
                        "2020-01-31T08:15:00 in a table, UTC unless an offset is given (default: s)")
    p.add_argument("--rating-col", default=None,
                   help="rating field/column (default: 'rating' if present; without one the log is implicit feedback)")
    p.add_argument("--title-col", default=None, help=f"item title (default: the first of {', '.join(TITLE_FIELDS)})")
    p.add_argument("--category-col", default=None,
                   help=f"item categories (default: the first of {', '.join(CATEGORY_FIELDS)})")
    p.add_argument("--seq-sep", default=" ", help="RecBole: separator of token_seq/float_seq values (default: a space)")
    p.add_argument("--category-sep", default="|", help="table: separator of several categories in one cell (default: |)")
    p.add_argument("--sep", default=",", help="CSV field separator (default: ','; a .tsv file: tab)")
    p.add_argument("--item-table", type=Path, default=None, help="table: item side table (CSV/parquet) keyed by --item-col")
    p.add_argument("--user-table", type=Path, default=None, help="table: user side table (CSV/parquet) keyed by --user-col")
    p.add_argument("--profile-cols", default=None,
                   help="comma-separated user-table columns shown as the user's profile (default: all but the id)")
    p.add_argument("--missing-items", choices=("error", "keep"), default="error",
                   help="items of the log missing from the item side table: stop (default) or show them without side info")
    p.add_argument("--item-noun", default="item", help="what an item is called in the prompt (default: item)")
    p.add_argument("--popularity-days", type=float, default=30.0,
                   help="trend window: interactions in this many days before the cut-off (default: 30)")
    add_interaction_args(p, split="user", test_time_frac=0.2)
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    """Prepare your own log from the command-line flags ``argv``; a DataPrepError on bad input."""
    started = time.perf_counter()
    args = build_parser(prog).parse_args(argv)
    if args.recbole_dir is None and (args.dataset is not None):
        raise DataPrepError("--dataset applies to --recbole-dir only")
    if args.recbole_dir is not None and (args.item_table or args.user_table):
        raise DataPrepError("--item-table/--user-table apply to --table only (RecBole reads NAME.item and NAME.user)")
    own = read_recbole(args) if args.recbole_dir is not None else read_table(args)
    if args.name:
        own.name = args.name
    # without categories no candidate is ever novel: refuse the needs that rely on novelty
    # (--needs all leaves them out); the prompts then show no category
    features = ItemSource.FEATURES
    if not any(own.categories.values()):
        features = tuple(f for f in features if f != "novel_topic")
        log("note: no item categories (see --category-col): explore_new_topics cannot be prepared")
    train_needs, test_needs = split_needs(
        args, features=features, side_info=ItemSource.SIDE_INFO,
        dataset=own.name if features == ItemSource.FEATURES else f"{own.name} (no item categories; see --category-col)")
    events, src = to_source(own, popularity_days=args.popularity_days, item_noun=args.item_noun)
    log(f"{own.name}: {len(events):,} interactions of {len(events.users):,} users "
        f"({'ratings' if own.rating is not None else 'implicit feedback'}); {len(own.categories):,} items with "
        f"categories, {len(own.titles):,} with titles")
    run_interaction_pipeline(args, src, events, events, events, train_needs, test_needs, started=started)


if __name__ == "__main__":
    sys.exit(run_main(main))
