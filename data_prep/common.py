"""Shared machinery of the data-prep scripts.

Read top to bottom:

1. errors and the ``main`` wrapper (one clear message, exit code 2, nothing half-written);
2. command-line flags shared by every script;
3. reading raw files with validation (errors name the file, the line/row and the field);
4. seeded randomness (every random choice is keyed by the seed and a stable name);
5. needs: which needs a run uses, checked against what the dataset can provide;
6. interactions, the time split, candidate sampling and the training-interactions table
   (KuaiRec, MovieLens);
7. rendering one (task, need) pair into a verl row;
8. the leakage check every script runs before writing;
9. the parquet schema and the atomic writer;
10. the pipeline KuaiRec and MovieLens share after loading their files.

Row layout (verl's RLHFDataset schema, identical for every dataset so files can be mixed)::

    data_source   str       "flexrec/kuairec" | "flexrec/ml-1m" | "flexrec/esci"
    prompt        list<{role: str, content: str}>   system + user message
    ability       str       "recommendation"
    reward_model  {style: "rule", ground_truth: GroundTruth}  (verl_flexrec.schema)
    extra_info    {split, index, dataset, need, user_id, query, cutoff_ts, history_item_ids,
                   history_ts, candidate_ts, sparse, observed_frac, id_style, seed}

KuaiRec and MovieLens also write ``interactions.parquet`` for the uncertainty critic
(``python -m verl_flexrec.critic train --data OUT/interactions.parquet OUT/train.parquet``): every
interaction of the training period, one row per (user, item), in the plain-table layout that
``verl_flexrec.critic.data.load_interactions`` reads (:data:`INTERACTIONS_SCHEMA`)::

    user_id     str      dataset user id (as in ground_truth.user_id)
    item_id     str      dataset item id (as in ground_truth.item_ids)
    interest    float64  the base signal (capped watch ratio / star rating); 0.0 where not observed
    observed    bool     the sparse variant's per-pair coin (observed_mask); all True when dense
    categories  str      the item's categories, '|'-joined (as in ground_truth.categories)
    timestamp   float64  time of the pair's latest interaction before the user's cut-off
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from verl_flexrec.argtypes import positive_int
from verl_flexrec.needs import BUILTIN_NEEDS, Need, get_need, load_needs_yaml
from verl_flexrec.prompt import ID_STYLES, Candidate, HistoryItem, build_messages, candidate_ids
from verl_flexrec.schema import GroundTruth

ABILITY = "recommendation"
_STARTED = time.perf_counter()  # the summary reports the time since the script started


# ---------------------------------------------------------------------------------------------
# 1. Errors and the main wrapper
# ---------------------------------------------------------------------------------------------
class DataPrepError(Exception):
    """Bad input or settings; the message names the file, the line/row and the field."""


class LeakageError(DataPrepError):
    """The split lets test information into a history or a training row."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a script's main; turn a DataPrepError into one line on stderr and exit code 2."""
    try:
        main(argv)
    except DataPrepError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: nothing was written")
        return 130
    return 0


# ---------------------------------------------------------------------------------------------
# 2. Command-line flags
# ---------------------------------------------------------------------------------------------
def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def base_parser(description: str, *, default_needs: str, train_size: int | None, test_size: int | None):
    """Flags every script has; dataset scripts add their own."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-dir", type=Path, required=True, help="folder holding the raw dataset (or the unpacked archive)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="folder for train.parquet, test.parquet, prep_info.json (KuaiRec and MovieLens: "
                        "also interactions.parquet, the critic's training interactions)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--needs", default=default_needs,
                   help=f"comma-separated needs for train and test, or 'all' (default: {default_needs})")
    p.add_argument("--train-needs", default=None, help="needs of the training rows (default: --needs)")
    p.add_argument("--test-needs", default=None, help="needs of the test rows (default: --needs)")
    p.add_argument("--needs-yaml", type=Path, default=None, help="YAML file with extra user-defined needs")
    p.add_argument("--train-need-mix", choices=("sample", "all"), default="sample",
                   help="with several train needs: 'sample' gives each training context one need drawn "
                        "uniformly (a uniform mix over (user, need)); 'all' repeats each context once per "
                        "need (default: sample). Test contexts always get one row per test need.")
    p.add_argument("--num-candidates", type=positive_int, default=30, help="candidates per prompt (default: 30)")
    p.add_argument("--id-style", choices=ID_STYLES, default="index",
                   help="candidate ids in the prompt: 'index' = 1..K in prompt order, 'item' = dataset item ids "
                        "(default: index)")
    p.add_argument("--train-size", type=positive_int, default=train_size,
                   help=f"number of training contexts, sampled with the seed (default: {train_size or 'all'})")
    p.add_argument("--test-size", type=positive_int, default=test_size,
                   help=f"number of test contexts, sampled with the seed (default: {test_size or 'all'})")
    p.add_argument("--download", action="store_true",
                   help="first download the official files into --raw-dir (resumable, checksum-verified)")
    p.add_argument("--download-url", default=None, metavar="BASE_URL",
                   help="download from this mirror (a base URL holding the same file names) instead")
    p.add_argument("--download-checksum", default=None, metavar="record|sha256:HEX|md5:HEX",
                   help="default: the published checksums; 'record': compute and record them instead (a mirror "
                        "with different files); or one explicit checksum (single-file datasets)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def add_interaction_args(p: argparse.ArgumentParser, *, split: str, test_time_frac: float) -> None:
    """Flags of the interaction datasets (KuaiRec, MovieLens)."""
    p.add_argument("--history-len", type=positive_int, default=20,
                   help="most recent distinct items shown as the user's history (default: 20)")
    p.add_argument("--novelty-window", type=positive_int, default=None, metavar="N",
                   help="Explore New Topics: a candidate is novel when none of its categories appears among the "
                        "user's N most recent history items (the paper's 'recent history'; default: the whole "
                        "shown history, --history-len items)")
    p.add_argument("--min-history", type=positive_int, default=5,
                   help="skip contexts with fewer distinct history items (default: 5)")
    p.add_argument("--split", choices=("global", "user"), default=split,
                   help="time split: 'global' = one cut-off time for everybody (the --test-time-frac "
                        "quantile of the test interactions); 'user' = per test user, the cut-off is the time "
                        f"of the user's K-th most recent interaction (default: {split})")
    p.add_argument("--test-time-frac", type=_fraction, default=test_time_frac,
                   help=f"global split: fraction of test-source interactions after the cut-off (default: {test_time_frac})")
    p.add_argument("--train-per-user", type=positive_int, default=1,
                   help="training contexts (cut-off anchors) drawn per user (default: 1)")
    p.add_argument("--sparse-frac", type=_fraction, nargs="?", const=0.1, default=None,
                   help="sparse-feedback variant: keep only this fraction of training interactions observed "
                        "(seeded, per user-item pair, the same coin in train.parquet and interactions.parquet); "
                        "'--sparse-frac' alone means 0.1. Test rows stay dense.")


# ---------------------------------------------------------------------------------------------
# 3. Reading raw files with validation
# ---------------------------------------------------------------------------------------------
def find_file(raw_dir: Path, candidates: Sequence[str], *, what: str, required: bool = True) -> Path | None:
    """First of ``raw_dir/c`` that exists; else a DataPrepError listing where we looked."""
    for rel in candidates:
        path = raw_dir / rel
        if path.is_file():
            return path
    if not required:
        return None
    looked = ", ".join(str(raw_dir / c) for c in candidates)
    raise DataPrepError(f"{what}: file not found; looked for {looked}")


@dataclass(frozen=True)
class Column:
    """A column to read: its kind ('int', 'float', 'str') and what to do with empty values.

    ``missing``: 'error' (default), 'drop' (drop the row, counted and reported) or 'fill'.
    ``low``/``high``: allowed range of a numeric value (inclusive).
    """

    name: str
    kind: str
    missing: str = "error"
    fill: object = None
    low: float | None = None
    high: float | None = None


@dataclass
class ReadReport:
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def _bad_text_line(path: Path, encoding: str) -> int | None:
    """Line number of the first line that does not decode (for the error message)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return number
    return None


def _parser_error(path: Path, err: Exception) -> DataPrepError:
    text = str(err)
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return DataPrepError(f"{path}: line {m.group(2)}: expected {m.group(1)} fields, saw {m.group(3)}")
    return DataPrepError(f"{path}: cannot parse: {text.strip()}")


def _shown(value: object) -> str:
    """A raw value for an error message: strings quoted, numbers plain."""
    if hasattr(value, "item"):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _check_chunk(chunk: pd.DataFrame, columns: Sequence[Column], path: Path, first_line: int,
                 report: ReadReport) -> pd.DataFrame:
    """Validate and convert one chunk; ``first_line`` is the file line of the chunk's first row."""
    keep = np.ones(len(chunk), dtype=bool)
    out = {}
    for col in columns:
        raw = chunk[col.name]
        missing = raw.isna().to_numpy()
        if col.kind == "str":
            fill = col.fill if col.missing == "fill" else ""
            values = np.array([fill if m else str(v) for v, m in zip(raw.tolist(), missing)], dtype=object)
        else:
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~missing & ~np.isfinite(values)
            if col.kind == "int":
                bad |= ~missing & np.isfinite(values) & (values != np.floor(values))
            if bad.any():
                i = int(np.argmax(bad))
                expected = "an integer" if col.kind == "int" else "a finite number"
                raise DataPrepError(
                    f"{path}: line {first_line + i}: field '{col.name}': expected {expected}, got {_shown(raw.iloc[i])}"
                )
            with np.errstate(invalid="ignore"):
                out_of_range = ~missing & (((values < col.low) if col.low is not None else False)
                                           | ((values > col.high) if col.high is not None else False))
            if np.any(out_of_range):
                i = int(np.argmax(out_of_range))
                raise DataPrepError(
                    f"{path}: line {first_line + i}: field '{col.name}': expected a value in "
                    f"[{col.low if col.low is not None else '-inf'}, {col.high if col.high is not None else 'inf'}], "
                    f"got {_shown(raw.iloc[i])}"
                )
            values = np.where(missing, col.fill if col.missing == "fill" else 0, values)
            if col.kind == "int":
                values = values.astype(np.int64)
        if missing.any():
            if col.missing == "error":
                i = int(np.argmax(missing))
                raise DataPrepError(f"{path}: line {first_line + i}: field '{col.name}': value is missing")
            if col.missing == "drop":
                report.dropped[col.name] = report.dropped.get(col.name, 0) + int((missing & keep).sum())
                keep &= ~missing
        out[col.name] = values
    frame = pd.DataFrame(out)
    if not keep.all():
        frame = frame[keep]
    report.rows += len(frame)
    return frame


def read_csv_checked(
    path: Path,
    columns: Sequence[Column],
    *,
    sep: str = ",",
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    chunksize: int = 1_000_000,
    progress: bool = False,
    text_transform: Callable[[str], str] | None = None,
) -> tuple[pd.DataFrame, ReadReport]:
    """Read the given columns of a CSV, streaming in chunks, validating every value.

    ``names`` means the file has no header row (MovieLens). ``text_transform`` rewrites the
    decoded text first (MovieLens: ``::`` -> one separator character, so pandas' fast C parser
    can read it; line numbers are unchanged).
    """
    if not path.is_file():
        raise DataPrepError(f"{path}: file not found")
    report = ReadReport()
    frames = []
    try:
        if names is None:
            found = list(pd.read_csv(path, nrows=0, sep=sep, encoding=encoding).columns)
            check_columns(path, found, [c.name for c in columns])
            source: object = path
        else:
            source = io.StringIO(text_transform(path.read_text(encoding=encoding))) if text_transform else path
        # Every column is parsed (no usecols): only then does pandas reject a line with too many
        # fields. It costs little (~0.35 s per million KuaiRec rows) and memory stays per chunk.
        reader = pd.read_csv(
            source, sep=sep, header=None if names is not None else "infer", names=names,
            encoding=encoding, chunksize=chunksize,
            quoting=csv.QUOTE_NONE if names is not None else csv.QUOTE_MINIMAL,
            keep_default_na=False, na_values=[""], skip_blank_lines=False,  # keeps line numbers exact
        )
        line = first_data_line = 1 if names is not None else 2
        bar = tqdm(desc=f"reading {path.name}", unit=" rows", unit_scale=True, disable=not progress, leave=False)
        with bar:
            for chunk in reader:
                frames.append(_check_chunk(chunk, columns, path, line, report))
                line += len(chunk)
                bar.update(len(chunk))
    except UnicodeDecodeError as e:
        bad = _bad_text_line(path, encoding)
        where = f"line {bad}: " if bad else ""
        raise DataPrepError(f"{path}: {where}not valid {encoding} text ({e.reason})") from None
    except pd.errors.EmptyDataError:
        raise DataPrepError(f"{path}: file is empty") from None
    except DataPrepError:
        raise
    except ValueError as e:  # pandas ParserError: a line with too many fields, a broken quote
        raise _parser_error(path, e) from None
    if line == first_data_line:
        raise DataPrepError(f"{path}: file has no data rows")
    return pd.concat(frames, ignore_index=True), report


def check_columns(path: Path, found: Iterable[str], wanted: Iterable[str]) -> None:
    found = list(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataPrepError(f"{path}: missing column(s) {missing}; found {found}")


def report_drops(path: Path, report: ReadReport, why: str) -> None:
    for column, n in report.dropped.items():
        if n:
            log(f"note: {path.name}: dropped {n:,} rows with an empty '{column}' ({why})")


# ---------------------------------------------------------------------------------------------
# 4. Seeded randomness
# ---------------------------------------------------------------------------------------------
def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator determined by the seed and stable keys (no Python hash randomisation)."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def observed_mask(seed: int, user: object, items: Sequence[object], frac: float) -> np.ndarray:
    """Sparse-feedback mask: True where the (user, item) interaction stays observed.

    A hash of (seed, user, item), so a pair is observed or not in every row it appears in (and
    in interactions.parquet): blake2b-64 of ``"{seed}:{user}:{item}"``, as a fraction of 2**64,
    below ``frac``. The common prefix is hashed once per call (the KuaiRec interactions table
    asks for ~12 M pairs).
    """
    prefix = hashlib.blake2b(f"{seed}:{user}:".encode(), digest_size=8)
    digests = bytearray()
    for item in items:
        h = prefix.copy()
        h.update(f"{item}".encode())
        digests += h.digest()
    # uint64 -> float64 rounds to nearest like Python's int -> float; / 2**64 is exact
    return np.frombuffer(bytes(digests), dtype=">u8").astype(np.float64) / 2.0**64 < frac


def sample_sorted(rng: np.random.Generator, n: int, k: int | None) -> np.ndarray:
    """Indices of ``k`` of ``n`` things (all when k is None or >= n), in increasing order."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


# ---------------------------------------------------------------------------------------------
# 5. Needs
# ---------------------------------------------------------------------------------------------
def resolve_needs(spec: str, *, features: Sequence[str], side_info: Sequence[str], dataset: str,
                  yaml_names: Sequence[str] = ()) -> list[Need]:
    """Parse ``a,b,c`` or ``all`` (the built-in needs + this run's ``--needs-yaml`` ones) into needs
    this dataset can serve. ``all`` never picks up needs another caller registered in this process."""
    if spec.strip() == "all":
        needs = [get_need(n) for n in sorted({*BUILTIN_NEEDS, *yaml_names})]
        needs = [n for n in needs if set(n.features) <= set(features) and set(n.side_info) <= set(side_info)]
        if not needs:
            raise DataPrepError(f"--needs all: no registered need can be served by {dataset}")
        return needs
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise DataPrepError("--needs: no need given")
    needs = []
    for name in names:
        try:
            need = get_need(name)
        except KeyError as e:
            raise DataPrepError(str(e.args[0])) from None
        lacking = [f for f in need.features if f not in features]
        if lacking:
            raise DataPrepError(
                f"need {name!r} uses candidate feature(s) {lacking}, which {dataset} does not provide "
                f"(available: {list(features)})"
            )
        lacking = [s for s in need.side_info if s not in side_info]
        if lacking:
            raise DataPrepError(
                f"need {name!r} shows side info {lacking}, which {dataset} does not have (available: {list(side_info)})"
            )
        if need not in needs:
            needs.append(need)
    return needs


def split_needs(args, *, features: Sequence[str], side_info: Sequence[str], dataset: str) -> tuple[list[Need], list[Need]]:
    """(train needs, test needs) from --needs / --train-needs / --test-needs / --needs-yaml."""
    yaml_names: list[str] = []
    if args.needs_yaml is not None:
        try:
            yaml_names = [need.name for need in load_needs_yaml(args.needs_yaml)]
        except (ValueError, FileNotFoundError) as e:
            raise DataPrepError(str(e)) from None
    kw = dict(features=features, side_info=side_info, dataset=dataset, yaml_names=yaml_names)
    train = resolve_needs(args.train_needs or args.needs, **kw)
    test = resolve_needs(args.test_needs or args.needs, **kw)
    return train, test


# ---------------------------------------------------------------------------------------------
# 6. Interactions, the time split and candidate sampling
# ---------------------------------------------------------------------------------------------
class Interactions:
    """User-item interactions with a time and an interest value, sorted by (user, time, item)."""

    def __init__(self, user, item, ts, interest):
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        interest = np.asarray(interest, dtype=np.float64)
        order = np.lexsort((item, ts, user))
        self.user, self.item, self.ts, self.interest = user[order], item[order], ts[order], interest[order]
        self.users, starts = np.unique(self.user, return_index=True)
        ends = np.append(starts[1:], len(self.user))
        self._range = {int(u): (int(s), int(e)) for u, s, e in zip(self.users, starts, ends)}

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def concat(cls, a: "Interactions", b: "Interactions") -> "Interactions":
        return cls(np.concatenate([a.user, b.user]), np.concatenate([a.item, b.item]),
                   np.concatenate([a.ts, b.ts]), np.concatenate([a.interest, b.interest]))

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, times, interest) of one user, in time order (empty if unknown)."""
        s, e = self._range.get(int(user), (0, 0))
        return self.item[s:e], self.ts[s:e], self.interest[s:e]


@dataclass
class Task:
    """One ranking context: a user's history before ``cutoff`` and candidates at/after it."""

    split: str
    user: int
    cutoff: float
    hist_items: np.ndarray
    hist_ts: np.ndarray
    hist_interest: np.ndarray
    cand_items: np.ndarray
    cand_ts: np.ndarray
    cand_interest: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.split}:{self.user}:{self.cutoff!r}"


@dataclass
class SplitConfig:
    mode: str
    num_candidates: int
    history_len: int
    min_history: int
    test_time_frac: float
    train_per_user: int
    train_size: int | None
    test_size: int | None
    seed: int
    progress: bool = False


def recent_history(all_inter: Interactions, user: int, before: float, length: int):
    """Last ``length`` distinct items of ``user`` strictly before ``before``, oldest first."""
    items, ts, interest = all_inter.of(user)
    n = int(np.searchsorted(ts, before, side="left"))
    rev_items = items[:n][::-1]
    _, first = np.unique(rev_items, return_index=True)  # most recent occurrence of each item
    keep = np.sort(first)[:length]
    idx = (n - 1 - keep)[::-1]
    return items[idx], ts[idx], interest[idx], len(first)


def candidate_pool(source: Interactions, all_inter: Interactions, user: int, start: float, end: float):
    """Distinct items of ``user`` in ``source`` with start <= time < end (first occurrence),
    leaving out items the user met before ``start`` (so no candidate repeats a past item)."""
    items, ts, interest = source.of(user)
    lo = int(np.searchsorted(ts, start, side="left"))
    hi = int(np.searchsorted(ts, end, side="left"))
    w_items, w_ts, w_int = items[lo:hi], ts[lo:hi], interest[lo:hi]
    _, first = np.unique(w_items, return_index=True)
    first = np.sort(first)
    w_items, w_ts, w_int = w_items[first], w_ts[first], w_int[first]
    seen_items, seen_ts, _ = all_inter.of(user)
    seen = seen_items[: int(np.searchsorted(seen_ts, start, side="left"))]
    fresh = ~np.isin(w_items, seen)
    return w_items[fresh], w_ts[fresh], w_int[fresh]


def _make_task(split, user, cutoff, hist, pool, k, rng) -> Task:
    pick = rng.choice(len(pool[0]), size=k, replace=False)
    return Task(split, int(user), float(cutoff), hist[0], hist[1], hist[2],
                pool[0][pick], pool[1][pick], pool[2][pick])


def build_test_tasks(test_src: Interactions, all_inter: Interactions, cfg: SplitConfig):
    """Test contexts and the per-user cut-offs they impose on training.

    Returns ``(tasks, cutoffs, default_cutoff)``: training data of user ``u`` must lie strictly
    before ``cutoffs.get(u, default_cutoff)``.
    """
    k = cfg.num_candidates
    if cfg.mode == "global":
        default_cutoff = float(np.quantile(test_src.ts, 1.0 - cfg.test_time_frac)) if len(test_src) else math.inf
    else:
        default_cutoff = math.inf
    eligible = []
    for user in tqdm(test_src.users, desc="test users", disable=not cfg.progress, leave=False):
        _, ts, _ = test_src.of(user)
        if cfg.mode == "global":
            cutoff = default_cutoff
        elif len(ts) >= k:
            cutoff = float(ts[len(ts) - k])  # the K-th most recent interaction starts the test window
        else:
            continue
        pool = candidate_pool(test_src, all_inter, user, cutoff, math.inf)
        if len(pool[0]) < k:
            continue
        hist = recent_history(all_inter, user, cutoff, cfg.history_len)
        if hist[3] < cfg.min_history:
            continue
        eligible.append((user, cutoff, hist[:3], pool))
    chosen = sample_sorted(rng_for(cfg.seed, "test-users"), len(eligible), cfg.test_size)
    tasks, cutoffs = [], {}
    for i in chosen:
        user, cutoff, hist, pool = eligible[i]
        tasks.append(_make_task("test", user, cutoff, hist, pool, k, rng_for(cfg.seed, "test", user)))
        cutoffs[int(user)] = cutoff
    return tasks, cutoffs, default_cutoff


def build_train_tasks(train_src: Interactions, all_inter: Interactions, cutoffs: Mapping[int, float],
                      default_cutoff: float, cfg: SplitConfig) -> list[Task]:
    """Training contexts: per user, ``train_per_user`` anchors drawn before the user's cut-off.

    An anchor is the time of one of the user's training interactions; the history is what came
    strictly before it, the candidates are drawn from the user's training interactions between
    the anchor and the cut-off.
    """
    k = cfg.num_candidates
    tasks = []
    for user in tqdm(train_src.users, desc="train users", disable=not cfg.progress, leave=False):
        cutoff = cutoffs.get(int(user), default_cutoff)
        _, ts, _ = train_src.of(user)
        n_pre = int(np.searchsorted(ts, cutoff, side="left"))
        if n_pre < k:
            continue
        _, all_ts, _ = all_inter.of(user)
        if len(all_ts) < cfg.min_history:
            continue
        # Anchor positions leaving >= min_history interactions before and >= k training ones after.
        lo = int(np.searchsorted(ts[:n_pre], all_ts[cfg.min_history - 1], side="right"))
        hi = n_pre - k
        if lo > hi:
            continue
        rng = rng_for(cfg.seed, "train", user)
        positions = np.sort(rng.choice(np.arange(lo, hi + 1), size=min(cfg.train_per_user, hi - lo + 1), replace=False))
        for pos in positions:
            anchor = float(ts[pos])
            hist = recent_history(all_inter, user, anchor, cfg.history_len)
            pool = candidate_pool(train_src, all_inter, user, anchor, cutoff)
            if hist[3] < cfg.min_history or len(pool[0]) < k:
                continue
            tasks.append(_make_task("train", user, anchor, hist[:3], pool, k, rng))
    chosen = sample_sorted(rng_for(cfg.seed, "train-contexts"), len(tasks), cfg.train_size)
    return [tasks[i] for i in chosen]


def training_limits(inter: Interactions, cutoffs: Mapping[int, float], default_cutoff: float) -> np.ndarray:
    """Per interaction: the time its user's training data must lie strictly before."""
    limit = np.full(len(inter), default_cutoff, dtype=np.float64)
    if cutoffs and len(inter):
        users = np.array(sorted(cutoffs), dtype=np.int64)
        values = np.array([cutoffs[int(u)] for u in users], dtype=np.float64)
        pos = np.clip(np.searchsorted(users, inter.user), 0, len(users) - 1)
        hit = users[pos] == inter.user
        limit[hit] = values[pos[hit]]
    return limit


def _pair_codes(users: np.ndarray, items: np.ndarray, other_users: np.ndarray, other_items: np.ndarray):
    """One int64 code per (user, item) pair, comparable between the two sets of pairs."""
    u, _ = pd.factorize(np.concatenate([users, other_users]))
    i, item_values = pd.factorize(np.concatenate([items, other_items]))
    codes = u.astype(np.int64) * max(len(item_values), 1) + i
    return codes[: len(users)], codes[len(users):]


INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("interest", pa.float64()), ("observed", pa.bool_()),
    ("categories", pa.string()), ("timestamp", pa.float64()),
])


def training_interactions(all_inter: Interactions, cats: Callable[[int], Sequence[str]],
                          cutoffs: Mapping[int, float], default_cutoff: float, test_tasks: Sequence[Task], *,
                          sparse_frac: float | None, seed: int) -> tuple[pa.Table, dict]:
    """The critic's table (:data:`INTERACTIONS_SCHEMA`): every training-period interaction.

    Kept: each interaction of ``all_inter`` (the data every history and training candidate is
    drawn from) strictly before its user's training limit (the user's test cut-off, else the
    global cut-off, else no limit), whether or not a sampled training row shows it. Left out:
    every (user, item) pair that is a test candidate (the time split already excludes them; this
    makes sure). One row per (user, item): its latest interaction before the limit (the one a
    history shows). Rows are in (user, time, item) order, so the bytes depend only on the input
    and the seed.

    ``observed`` is :func:`observed_mask` -- the very coin the sparse rows use for that pair --
    or all True when dense. Where it is False, ``interest`` is written as 0.0 (as in the sparse
    rows' ground truth): the true value never reaches the file, so the critic cannot learn it.
    """
    keep = all_inter.ts < training_limits(all_inter, cutoffs, default_cutoff)
    user, item, ts, interest = (a[keep] for a in (all_inter.user, all_inter.item, all_inter.ts, all_inter.interest))
    pairs = np.array([(t.user, int(i)) for t in test_tasks for i in t.cand_items], dtype=np.int64).reshape(-1, 2)
    codes, test_codes = _pair_codes(user, item, pairs[:, 0], pairs[:, 1])
    # no test-candidate pair; rows are in (user, time, item) order, so the last duplicate of a pair
    # is its latest interaction
    codes = pd.Series(codes)
    keep = ~codes.isin(test_codes).to_numpy() & ~codes.duplicated(keep="last").to_numpy()
    user, item, ts, interest = user[keep], item[keep], ts[keep], interest[keep]

    starts = np.flatnonzero(np.diff(user, prepend=user[:1] - 1))  # user is sorted: where each user begins
    observed = np.ones(len(user), dtype=bool)
    if sparse_frac is not None:
        ends = np.append(starts[1:], len(user))
        for u, lo, hi in zip(user[starts].tolist(), starts.tolist(), ends.tolist()):
            observed[lo:hi] = observed_mask(seed, u, item[lo:hi].tolist(), sparse_frac)
        interest = np.where(observed, interest, 0.0)

    item_index, item_values = pd.factorize(item)
    cat_values = pa.array(["|".join(cats(int(i))) for i in item_values], type=pa.string())
    table = pa.table({
        "user_id": pc.cast(pa.array(user, type=pa.int64()), pa.string()),
        "item_id": pc.cast(pa.array(item, type=pa.int64()), pa.string()),
        "interest": pa.array(interest, type=pa.float64()),
        "observed": pa.array(observed, type=pa.bool_()),
        "categories": cat_values.take(pa.array(item_index.astype(np.int64))),
        "timestamp": pa.array(ts, type=pa.float64()),
    }, schema=INTERACTIONS_SCHEMA)
    summary = {"rows": table.num_rows, "observed": int(observed.sum()), "users": len(starts),
               "items": len(item_values), "unobserved_interest": "written as 0.0 (hidden)"}
    return table, summary


def assign_needs(tasks: Sequence, needs: Sequence[Need], *, mix: str, seed: int, split: str) -> list[tuple]:
    """(task, need) pairs: every need per task ('all') or one need drawn uniformly ('sample')."""
    if mix == "all" or len(needs) == 1:
        pairs = [(t, n) for t in tasks for n in needs]
    else:
        draw = rng_for(seed, "need-mix", split).integers(len(needs), size=len(tasks))
        pairs = [(t, needs[j]) for t, j in zip(tasks, draw)]
    if split == "train":  # interleave users and needs; verl shuffles again, but batches stay mixed
        order = rng_for(seed, "train-order").permutation(len(pairs))
        pairs = [pairs[i] for i in order]
    return pairs


# ---------------------------------------------------------------------------------------------
# 7. Rendering one (task, need) pair into a verl row
# ---------------------------------------------------------------------------------------------
@dataclass
class ItemSource:
    """What an interaction dataset knows about its items and users, for prompts and features."""

    name: str                      # "kuairec"
    data_source: str               # "flexrec/kuairec"
    item_noun: str                 # "video"
    history_heading: str           # "Videos I watched"
    popularity_unit: str           # "plays in the last day"
    titles: Mapping[int, str]
    categories: Mapping[int, tuple[str, ...]]
    feedback: Callable[[float], str]                       # interest -> "rated 4/5"
    popularity: Callable[[np.ndarray, float], np.ndarray]  # (items, cutoff) -> counts
    profile: Callable[[int], str | None] = lambda user: None

    FEATURES = ("interest", "novel_topic", "popularity")
    SIDE_INFO = ("title", "category", "popularity")

    def title(self, item: int) -> str:
        return self.titles.get(int(item)) or f"{self.item_noun} {item}"

    def cats(self, item: int) -> tuple[str, ...]:
        return self.categories.get(int(item), ())


class RecentCounts:
    """Popularity as interactions per item in the ``days`` before a cut-off (MovieLens).

    Counts only interactions training may see: :meth:`hide_test` drops every interaction at or
    after its user's test cut-off, so no test interaction reaches a training row even as a count.
    """

    def __init__(self, inter: Interactions, days: float):
        self.window = float(days) * 86400.0
        self._inter = inter
        self._index(np.ones(len(inter), dtype=bool))

    def _index(self, keep: np.ndarray) -> None:
        # One sorted int64 key per interaction, item-major: item * n_times + rank of its time.
        # A window count is then two vectorised searchsorted calls per row.
        self._times = np.unique(self._inter.ts)
        rank = np.searchsorted(self._times, self._inter.ts[keep])
        self._keys = np.sort(self._inter.item[keep] * len(self._times) + rank)

    def hide_test(self, cutoffs: Mapping[int, float], default_cutoff: float) -> None:
        self._index(self._inter.ts < training_limits(self._inter, cutoffs, default_cutoff))

    def __call__(self, items: np.ndarray, cutoff: float) -> np.ndarray:
        base = np.asarray(items, dtype=np.int64) * len(self._times)
        hi = np.searchsorted(self._times, cutoff, side="left")
        lo = np.searchsorted(self._times, cutoff - self.window, side="left")
        return np.searchsorted(self._keys, base + hi) - np.searchsorted(self._keys, base + lo)


def novelty(cand_cats: Sequence[tuple[str, ...]], history_cats: set[str]) -> np.ndarray:
    """1.0 where none of the candidate's categories appears in the history (0.0 if it has none)."""
    return np.array([1.0 if cats and not (set(cats) & history_cats) else 0.0 for cats in cand_cats])


def normalised(counts: np.ndarray) -> np.ndarray:
    top = float(np.max(counts)) if len(counts) else 0.0
    return counts / top if top > 0 else np.zeros(len(counts))


def extra_info(*, split: str, index: int, dataset: str, need: str, user_id: str, query: str = "",
               cutoff_ts: float = math.nan, history_item_ids=(), history_ts=(), candidate_ts=(),
               sparse: bool = False, observed_frac: float = 1.0, id_style: str = "index", seed: int = 0) -> dict:
    return {
        "split": split, "index": int(index), "dataset": dataset, "need": need, "user_id": user_id,
        "query": query, "cutoff_ts": float(cutoff_ts),
        "history_item_ids": [str(i) for i in history_item_ids],
        "history_ts": [float(t) for t in history_ts],
        "candidate_ts": [float(t) for t in candidate_ts],
        "sparse": bool(sparse), "observed_frac": float(observed_frac), "id_style": id_style, "seed": int(seed),
    }


def make_row(data_source: str, messages: list[dict], gt: GroundTruth, info: dict) -> dict:
    # The same mapping as gt.to_dict(), without dataclasses.asdict's per-element deep copy
    # (that copy was half of the preparation time); the values are already plain lists.
    ground_truth = {f.name: getattr(gt, f.name) for f in dataclasses.fields(gt)}
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": info,
    }


def render_interaction_row(src: ItemSource, task: Task, need: Need, *, index: int, id_style: str,
                           sparse_frac: float | None, seed: int, novelty_window: int | None = None) -> dict:
    """One verl row: shuffled candidates, need-specific gains, the prompt.

    ``novelty_window``: the familiar categories are those of the last N history items (None: all).
    """
    order = rng_for(seed, "order", task.key, need.name).permutation(len(task.cand_items))
    items, ts, interest = task.cand_items[order], task.cand_ts[order], task.cand_interest[order].copy()
    cand_cats = [src.cats(i) for i in items]
    recent = task.hist_items if novelty_window is None else task.hist_items[-novelty_window:]  # oldest first
    hist_cats = {c for i in recent for c in src.cats(i)}
    counts = np.asarray(src.popularity(items, task.cutoff), dtype=np.int64)
    features = {"interest": interest, "novel_topic": novelty(cand_cats, hist_cats), "popularity": normalised(counts)}
    with np.errstate(divide="ignore", invalid="ignore"):  # a non-finite gain is reported by GroundTruth
        gains = need.gain(features)
        weight = need.weight(features)

    sparse = sparse_frac is not None and task.split == "train"
    if sparse:
        observed = observed_mask(seed, task.user, items.tolist(), sparse_frac)
        hist_observed = observed_mask(seed, task.user, task.hist_items.tolist(), sparse_frac)
        interest[~observed] = 0.0
        gains = np.where(observed, gains, 0.0)
    else:
        observed = np.ones(len(items), dtype=bool)
        hist_observed = np.ones(len(task.hist_items), dtype=bool)

    item_ids = [str(i) for i in items]
    ids = candidate_ids(item_ids, id_style)
    candidates = [
        Candidate(id=cid, title=src.title(i), category=", ".join(cats), popularity=int(c))
        for cid, i, cats, c in zip(ids, items, cand_cats, counts)
    ]
    history = [
        HistoryItem(title=src.title(i), category=", ".join(src.cats(i)), feedback=src.feedback(x) if obs else "")
        for i, x, obs in zip(task.hist_items, task.hist_interest, hist_observed)
    ]
    messages = build_messages(
        need, candidates, history=history, user_profile=src.profile(task.user), item_noun=src.item_noun,
        history_heading=src.history_heading, popularity_unit=src.popularity_unit,
    )
    gt = GroundTruth(
        candidates=ids, gains=gains.tolist(), observed=observed.tolist(), gain_var=[], need=need.name,
        user_id=str(task.user), item_ids=item_ids, interest=interest.tolist(), need_weight=weight.tolist(),
        categories=["|".join(c) for c in cand_cats],
    )
    info = extra_info(
        split=task.split, index=index, dataset=src.name, need=need.name, user_id=str(task.user),
        cutoff_ts=task.cutoff, history_item_ids=task.hist_items.tolist(), history_ts=task.hist_ts.tolist(),
        candidate_ts=ts.tolist(), sparse=sparse, observed_frac=sparse_frac if sparse else 1.0,
        id_style=id_style, seed=seed,
    )
    return make_row(src.data_source, messages, gt, info)


# ---------------------------------------------------------------------------------------------
# 8. The leakage check
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LeakRecord:
    """What the check needs to know about one row."""

    split: str
    user: str
    cutoff: float
    hist_items: tuple[str, ...]
    hist_ts: tuple[float, ...]
    cand_items: tuple[str, ...]
    cand_ts: tuple[float, ...]


def task_record(task: Task) -> LeakRecord:
    return LeakRecord(task.split, str(task.user), task.cutoff, tuple(str(i) for i in task.hist_items),
                      tuple(task.hist_ts.tolist()), tuple(str(i) for i in task.cand_items),
                      tuple(task.cand_ts.tolist()))


def row_record(row: Mapping) -> LeakRecord:
    """From a parquet row (dict with numpy arrays or lists)."""
    info, gt = row["extra_info"], row["reward_model"]["ground_truth"]
    return LeakRecord(str(info["split"]), str(info["user_id"]), float(info["cutoff_ts"]),
                      tuple(str(i) for i in info["history_item_ids"]), tuple(float(t) for t in info["history_ts"]),
                      tuple(str(i) for i in gt["item_ids"]), tuple(float(t) for t in info["candidate_ts"]))


def check_no_leakage(records: Iterable[LeakRecord], *, global_cutoff: float | None = None,
                     interactions: pa.Table | None = None) -> dict:
    """Raise LeakageError unless the split is clean; return counts of what was checked.

    Checked, for interaction datasets:
    1. every row: each history time < the row's cut-off <= each candidate time;
    2. no (user, item) pair of a test candidate appears in any history or in any training row;
    3. every training row of a test user lies strictly before that user's test cut-off;
    4. with a global split, every training time lies strictly before the global cut-off;
    5. ``interactions`` (the interactions.parquet table, if given): every timestamp lies strictly
       before its user's test cut-off and the global cut-off, and no (user, item) pair is a test
       candidate.
    """
    records = list(records)
    test_pairs: set[tuple[str, str]] = set()
    test_cutoff: dict[str, float] = {}
    for r in records:
        where = f"{r.split} row of user {r.user}"
        if r.hist_ts and max(r.hist_ts) >= r.cutoff:
            raise LeakageError(f"{where}: history time {max(r.hist_ts)} is not before the cut-off {r.cutoff}")
        if r.cand_ts and min(r.cand_ts) < r.cutoff:
            raise LeakageError(f"{where}: candidate time {min(r.cand_ts)} is before the cut-off {r.cutoff}")
        if r.split == "test":
            test_pairs.update((r.user, i) for i in r.cand_items)
            test_cutoff[r.user] = min(test_cutoff.get(r.user, math.inf), r.cutoff)
    limit_all = math.inf if global_cutoff is None else global_cutoff
    for r in records:
        where = f"{r.split} row of user {r.user}"
        for item in r.hist_items:
            if (r.user, item) in test_pairs:
                raise LeakageError(f"{where}: history item {item} is a test candidate of that user")
        if r.split != "train":
            continue
        for item in r.cand_items:
            if (r.user, item) in test_pairs:
                raise LeakageError(f"{where}: candidate {item} is a test candidate of that user")
        limit = min(test_cutoff.get(r.user, math.inf), limit_all)
        latest = max(r.cand_ts + r.hist_ts, default=-math.inf)
        if latest >= limit:
            raise LeakageError(f"{where}: time {latest} is not before the test cut-off {limit}")
    checked = {"rows": len(records), "test_pairs": len(test_pairs)}
    if interactions is not None:
        _check_interactions(interactions, test_pairs, test_cutoff, limit_all)
        checked["interactions"] = interactions.num_rows
    return checked


def _check_interactions(table: pa.Table, test_pairs: set[tuple[str, str]], test_cutoff: Mapping[str, float],
                        limit_all: float) -> None:
    """Rule 5 of :func:`check_no_leakage`, vectorised (the KuaiRec table has ~12 M rows)."""
    if table.num_rows == 0:
        return
    user = pc.cast(table.column("user_id"), pa.string()).combine_chunks()
    item = pc.cast(table.column("item_id"), pa.string()).combine_chunks()
    ts = pc.cast(table.column("timestamp"), pa.float64()).combine_chunks()
    where = pa.array(list(test_cutoff), type=pa.string())
    limits = pa.array([min(c, limit_all) for c in test_cutoff.values()], type=pa.float64())
    limit = pc.fill_null(limits.take(pc.index_in(user, value_set=where)), limit_all)
    late = pc.greater_equal(ts, limit)
    if pc.any(late).as_py():
        i = pc.index(late, True).as_py()
        raise LeakageError(f"interactions row {i} (user {user[i].as_py()}, item {item[i].as_py()}): time "
                           f"{ts[i].as_py()} is not before the test cut-off {limit[i].as_py()}")
    if test_pairs:
        keys = pc.binary_join_element_wise(user, item, "\x1f")
        held_out = pa.array(sorted(f"{u}\x1f{i}" for u, i in test_pairs), type=pa.string())
        hit = pc.is_in(keys, value_set=held_out)
        if pc.any(hit).as_py():
            i = pc.index(hit, True).as_py()
            raise LeakageError(f"interactions row {i}: (user {user[i].as_py()}, item {item[i].as_py()}) "
                               f"is a test candidate of that user")


# ---------------------------------------------------------------------------------------------
# 9. Parquet schema and the atomic writer
# ---------------------------------------------------------------------------------------------
_GT_TYPES = {
    "list[str]": pa.list_(pa.string()),
    "list[float]": pa.list_(pa.float64()),
    "list[bool]": pa.list_(pa.bool_()),
    "str": pa.string(),
}


def _ground_truth_type() -> pa.DataType:
    """Struct of the GroundTruth fields, derived from the dataclass so the two cannot drift."""
    fields = []
    for f in dataclasses.fields(GroundTruth):
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if type_name not in _GT_TYPES:
            raise TypeError(f"GroundTruth.{f.name}: no parquet type for {type_name!r}; extend _GT_TYPES")
        fields.append((f.name, _GT_TYPES[type_name]))
    return pa.struct(fields)


ROW_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", _ground_truth_type())])),
    ("extra_info", pa.struct([
        ("split", pa.string()), ("index", pa.int64()), ("dataset", pa.string()), ("need", pa.string()),
        ("user_id", pa.string()), ("query", pa.string()), ("cutoff_ts", pa.float64()),
        ("history_item_ids", pa.list_(pa.string())), ("history_ts", pa.list_(pa.float64())),
        ("candidate_ts", pa.list_(pa.float64())), ("sparse", pa.bool_()), ("observed_frac", pa.float64()),
        ("id_style", pa.string()), ("seed", pa.int64()),
    ])),
])


class AtomicOutputs:
    """Write files under temporary names in OUT; rename them all only when everything succeeded.

    Used as a context manager: on any exception the temporary files are removed and nothing in
    OUT changes.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self._pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> "AtomicOutputs":
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataPrepError(f"{self.out_dir}: cannot create the output folder ({e.strerror})") from None
        return self

    def temp_path(self, name: str) -> Path:
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        self._pending.append((tmp, final))
        return tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, final in self._pending:
                os.replace(tmp, final)
        else:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)


def write_rows(path: Path, rows: Iterable[dict], *, batch_size: int = 512) -> int:
    """Stream rows into one parquet file with :data:`ROW_SCHEMA`; returns the row count."""
    n = 0
    with pq.ParquetWriter(path, ROW_SCHEMA, compression="snappy") as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
            n += len(batch)
    return n


def write_outputs(out_dir: Path, train_rows: Iterable[dict], test_rows: Iterable[dict], info: dict, *,
                  interactions: pa.Table | None = None) -> dict:
    """Write train.parquet, test.parquet, interactions.parquet (if given) and prep_info.json
    atomically; return the counts (``rows`` of prep_info.json)."""
    with AtomicOutputs(out_dir) as out:
        n_train = write_rows(out.temp_path("train.parquet"), train_rows)
        n_test = write_rows(out.temp_path("test.parquet"), test_rows)
        rows = {"train": n_train, "test": n_test}
        if interactions is not None:
            pq.write_table(interactions.cast(INTERACTIONS_SCHEMA), out.temp_path("interactions.parquet"),
                           compression="snappy", row_group_size=1 << 20)
            rows["interactions"] = interactions.num_rows
        info = {**info, "rows": rows}
        out.temp_path("prep_info.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return info["rows"]


# ---------------------------------------------------------------------------------------------
# 10. The interaction-dataset pipeline (KuaiRec and MovieLens share everything after loading)
# ---------------------------------------------------------------------------------------------
def split_config(args) -> SplitConfig:
    return SplitConfig(
        mode=args.split, num_candidates=args.num_candidates, history_len=args.history_len,
        min_history=args.min_history, test_time_frac=args.test_time_frac, train_per_user=args.train_per_user,
        train_size=args.train_size, test_size=args.test_size, seed=args.seed, progress=not args.no_progress,
    )


def settings_info(args, train_needs: Sequence[Need], test_needs: Sequence[Need]) -> dict:
    """The run's settings for prep_info.json (paths left out: output must not depend on them)."""
    skip = {"raw_dir", "out_dir", "no_progress", "download", "download_url", "download_checksum", "needs_yaml"}
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in skip}
    settings["train_needs"] = [n.name for n in train_needs]
    settings["test_needs"] = [n.name for n in test_needs]
    return settings


def run_interaction_pipeline(args, src: ItemSource, train_src: Interactions, test_src: Interactions,
                             all_inter: Interactions, train_needs: Sequence[Need], test_needs: Sequence[Need]) -> dict:
    """Split, sample, check for leakage, render and write. Returns the summary."""
    cfg = split_config(args)
    test_tasks, cutoffs, default_cutoff = build_test_tasks(test_src, all_inter, cfg)
    train_tasks = build_train_tasks(train_src, all_inter, cutoffs, default_cutoff, cfg)
    if not test_tasks:
        raise DataPrepError(
            f"no user qualifies for a test row (needs >= {cfg.num_candidates} candidates after the cut-off and "
            f">= {cfg.min_history} history items before it); lower --num-candidates or --min-history"
        )
    if not train_tasks:
        raise DataPrepError("no user qualifies for a training row; lower --num-candidates or --min-history")
    if hasattr(src.popularity, "hide_test"):
        src.popularity.hide_test(cutoffs, default_cutoff)
    interactions, inter_info = training_interactions(all_inter, src.cats, cutoffs, default_cutoff, test_tasks,
                                                     sparse_frac=args.sparse_frac, seed=args.seed)
    checked = check_no_leakage((task_record(t) for t in [*train_tasks, *test_tasks]),
                               global_cutoff=None if math.isinf(default_cutoff) else default_cutoff,
                               interactions=interactions)

    train_pairs = assign_needs(train_tasks, train_needs, mix=args.train_need_mix, seed=args.seed, split="train")
    test_pairs = assign_needs(test_tasks, test_needs, mix="all", seed=args.seed, split="test")

    def rows(pairs, desc):
        for index, (task, need) in enumerate(tqdm(pairs, desc=desc, disable=args.no_progress, leave=False)):
            try:
                yield render_interaction_row(src, task, need, index=index, id_style=args.id_style,
                                             sparse_frac=args.sparse_frac, seed=args.seed,
                                             novelty_window=args.novelty_window)
            except ValueError as e:  # e.g. a YAML need whose gain is not finite, an unshowable item id
                raise DataPrepError(f"{task.split} row {index} (user {task.user}, need {need.name}): {e}") from None

    info = {
        "dataset": src.name, "data_source": src.data_source, "settings": settings_info(args, train_needs, test_needs),
        "split": {"mode": cfg.mode, "global_cutoff": None if math.isinf(default_cutoff) else default_cutoff,
                  "train_contexts": len(train_tasks), "test_contexts": len(test_tasks), "leakage_check": checked},
        "interactions": inter_info,
    }
    counts = write_outputs(args.out_dir, rows(train_pairs, "train rows"), rows(test_pairs, "test rows"), info,
                           interactions=interactions)
    summarise(args.out_dir, counts)
    return {"rows": counts, **info["split"]}


def summarise(out_dir: Path, counts: Mapping[str, int]) -> None:
    """One line on stderr: what was written, how fast (since the script started)."""
    seconds = time.perf_counter() - _STARTED
    total = counts["train"] + counts["test"]
    extra = (f", {out_dir / 'interactions.parquet'} ({counts['interactions']:,} rows)"
             if "interactions" in counts else "")
    log(f"wrote {out_dir / 'train.parquet'} ({counts['train']:,} rows){extra} and {out_dir / 'test.parquet'} "
        f"({counts['test']:,} rows) in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} rows/s); "
        f"leakage check passed")
