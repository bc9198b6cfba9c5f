"""Amazon Shopping Queries (ESCI) -> FlexRec verl parquet (train.parquet, test.parquet, prep_info.json).

Raw input: the two parquet files of ``github.com/amazon-science/esci-data``, in
``RAW/shopping_queries_dataset/`` (or ``RAW/``):

    shopping_queries_dataset_examples.parquet  query, query_id, product_id, product_locale,
                                               esci_label, small_version, large_version, split
    shopping_queries_dataset_products.parquet  product_id, product_title, product_brand,
                                               product_color, product_locale, ...

Each row is one query: the query text is the context (no user history), the candidates are the
query's judged products (``--num-candidates`` at most, drawn with the seed when a query has more;
queries with fewer than ``--min-candidates``, or whose products are all equally relevant, are
skipped), each shown with its product text (title, brand, colour).

Gains (need ``product_search``, base feature ``esci_gain``): the ESCI labels mapped through
``verl_flexrec.needs.ESCI_GAINS`` = E (Exact) 1.0, S (Substitute) 0.1, C (Complement) 0.01,
I (Irrelevant) 0.0 -- the gains of the KDD Cup 2022 task-1 nDCG. ``interest`` stores the same
value (the base signal); every candidate is observed.

Split: the dataset's own ``split`` column (train / test queries), Task 1 (``small_version``) by
default, US locale by default. ``--train-size`` / ``--test-size`` queries are sampled with the
seed (5,000 / 1,000 by default, as in the FlexRec setup). The leakage check: no query id and no
query text (case- and space-normalised) in both splits; train queries whose text is also a test
query are dropped before sampling.

Usage (the clone's ``data_prep`` scripts take the same flags)::

    python -m verl_flexrec.data esci --raw-dir data/raw --out-dir data/esci --seed 0
    python -m verl_flexrec.data esci --raw-dir data/raw --out-dir data/esci_es --locale es --version large
    # fetch the two parquet files first (SHA-256 from their Git LFS pointers, resumable; ~1.2 GB)
    python -m verl_flexrec.data esci --raw-dir data/raw --out-dir data/esci --download
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from ..needs import ESCI_GAINS, Need
from ..prompt import Candidate, build_messages, candidate_ids
from ..schema import GroundTruth
from .cli import base_parser
from .download import Source, fetch_sources
from .io import DataPrepError, check_columns, find_file, log, run_main
from .leakage import LeakageError
from .parquet import write_outputs
from .pipeline import measure_prompts, settings_info, summarise
from .rows import extra_info, make_row
from .seeded import rng_for, sample_sorted
from .targets import assign_needs, split_needs

DATASET = "esci"
FOLDER = "shopping_queries_dataset"
EXAMPLES = "shopping_queries_dataset_examples.parquet"
PRODUCTS = "shopping_queries_dataset_products.parquet"
_LFS = "https://github.com/amazon-science/esci-data/raw/main/shopping_queries_dataset"
SOURCES = [  # checksums and sizes: the Git LFS pointers of commit 7e0e307 of amazon-science/esci-data
    Source(url=f"{_LFS}/{EXAMPLES}", dest=f"{FOLDER}/{EXAMPLES}", size=51_286_808,
           checksum="sha256:4a735b693b4a424a6fc67f5be6e4c811495c488bbf66d02a602d308b2744263a"),
    Source(url=f"{_LFS}/{PRODUCTS}", dest=f"{FOLDER}/{PRODUCTS}", size=1_108_857_465,
           checksum="sha256:25124442d064d64b26f74082d6fa09438d679efc0c183cf28d19064a2b65a265"),
]
FEATURES = ("esci_gain",)
SIDE_INFO = ("product_text", "title")
EXAMPLE_COLUMNS = ["query", "query_id", "product_id", "product_locale", "esci_label", "small_version",
                   "large_version", "split"]
PRODUCT_COLUMNS = ["product_id", "product_title", "product_brand", "product_color", "product_locale"]


def _file(raw_dir: Path, name: str) -> Path:
    return find_file(raw_dir, [f"{FOLDER}/{name}", name], what=f"ESCI {name}")


def _read_parquet(path: Path, columns: list[str], **kw) -> pa.Table:
    try:
        check_columns(path, pq.read_schema(path).names, columns)
        return pq.read_table(path, columns=columns, **kw)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataPrepError(f"{path}: not a readable parquet file ({e})") from None


def _first_bad_row(path: Path, table: pa.Table, column: str, bad: np.ndarray, expected: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        raise DataPrepError(f"{path}: row {i}: field '{column}': expected {expected}, "
                            f"got {table.column(column)[i].as_py()!r}")


def read_examples(path: Path, *, locale: str, version: str):
    """Validated judgements of the chosen task version and locale, as a pandas frame."""
    table = _read_parquet(path, EXAMPLE_COLUMNS)
    for column in EXAMPLE_COLUMNS:
        _first_bad_row(path, table, column, table.column(column).is_null().to_numpy(zero_copy_only=False),
                       "a value (it is missing)")
    labels = table.column("esci_label")
    _first_bad_row(path, table, "esci_label", ~pc.is_in(labels, pa.array(list(ESCI_GAINS))).to_numpy(zero_copy_only=False),
                   f"one of {list(ESCI_GAINS)}")
    splits = table.column("split")
    _first_bad_row(path, table, "split", ~pc.is_in(splits, pa.array(["train", "test"])).to_numpy(zero_copy_only=False),
                   "'train' or 'test'")
    keep = pc.equal(table.column(f"{version}_version"), 1)
    if locale != "all":
        keep = pc.and_(keep, pc.equal(table.column("product_locale"), locale))
    df = table.filter(keep).to_pandas().drop_duplicates(["query_id", "product_id"])
    if df.empty:
        raise DataPrepError(f"{path}: no judgements for --locale {locale} --version {version}")
    return df


def read_products(path: Path, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(product_id, locale) -> (title, brand, colour) for the products the rows show."""
    ids = pa.array(sorted({p for p, _ in wanted}))
    table = _read_parquet(path, PRODUCT_COLUMNS, filters=pc.field("product_id").isin(ids))
    out = {}
    cols = [table.column(c).to_pylist() for c in PRODUCT_COLUMNS]
    for pid, title, brand, color, locale in zip(*cols):
        if (pid, locale) in wanted:
            out[(pid, locale)] = (title or "", brand or "", color or "")
    return out


def product_text(info: tuple[str, str, str] | None, limit: int) -> str:
    if info is None:
        return "(no product information)"
    title, brand, color = (" ".join(x.split()) for x in info)
    details = ", ".join(d for d in (f"brand: {brand}" if brand else "", f"color: {color}" if color else "") if d)
    text = (title or "(untitled product)") + (f" ({details})" if details else "")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _norm(query: str) -> str:
    return " ".join(query.lower().split())


def select_queries(df, *, min_candidates: int, seed: int, train_size: int | None, test_size: int | None):
    """Eligible queries per split, leak-free, sampled. Returns {split: [(query_id, frame)]}."""
    groups = {qid: g for qid, g in df.groupby("query_id", sort=True)}
    eligible = {"train": [], "test": []}
    for qid, g in groups.items():
        gains = g["esci_label"].map(ESCI_GAINS).to_numpy()
        if len(g) < min_candidates or np.all(gains == gains[0]):
            continue
        split = g["split"].iloc[0]
        if (g["split"] != split).any():
            raise DataPrepError(f"query {qid} has judgements in both the train and the test split")
        eligible[split].append((qid, g))
    test_texts = {_norm(g["query"].iloc[0]) for _, g in eligible["test"]}
    dropped = [q for q, g in eligible["train"] if _norm(g["query"].iloc[0]) in test_texts]
    if dropped:
        log(f"note: dropped {len(dropped)} train queries whose text is also a test query")
        eligible["train"] = [(q, g) for q, g in eligible["train"] if q not in set(dropped)]
    chosen = {}
    for split, size in (("train", train_size), ("test", test_size)):
        pick = sample_sorted(rng_for(seed, f"esci-{split}"), len(eligible[split]), size)
        chosen[split] = [eligible[split][i] for i in pick]
    return chosen


def check_query_leakage(chosen) -> dict:
    ids = {s: {q for q, _ in chosen[s]} for s in chosen}
    texts = {s: {_norm(g["query"].iloc[0]) for _, g in chosen[s]} for s in chosen}
    if ids["train"] & ids["test"]:
        raise LeakageError(f"query ids in both splits: {sorted(ids['train'] & ids['test'])[:5]}")
    if texts["train"] & texts["test"]:
        raise LeakageError(f"query texts in both splits: {sorted(texts['train'] & texts['test'])[:5]}")
    return {"train_queries": len(ids["train"]), "test_queries": len(ids["test"])}


def render_row(qid, g, need: Need, products, *, split: str, index: int, args) -> dict:
    rng = rng_for(args.seed, "esci-row", split, qid, need.name)
    take = rng.permutation(len(g))[: args.num_candidates]  # a sample when there are more, shuffled
    g = g.iloc[take]
    item_ids = g["product_id"].astype(str).tolist()
    esci = g["esci_label"].map(ESCI_GAINS).to_numpy(dtype=np.float64)
    features = {"esci_gain": esci}
    gains, weight = need.gain(features), need.weight(features)
    ids = candidate_ids(item_ids, args.id_style)
    infos = [products.get((p, loc)) for p, loc in zip(item_ids, g["product_locale"])]
    candidates = [Candidate(id=cid, title=product_text(info, args.product_text_chars),
                            product_text=product_text(info, args.product_text_chars)) for cid, info in zip(ids, infos)]
    query = str(g["query"].iloc[0])
    messages = build_messages(need, candidates, query=query, item_noun="product")
    gt = GroundTruth(candidates=ids, gains=gains.tolist(), observed=[True] * len(ids), gain_var=[], need=need.name,
                     user_id=str(qid), item_ids=item_ids, interest=esci.tolist(), need_weight=weight.tolist(),
                     categories=[(info[1] if info else "") for info in infos])
    info = extra_info(split=split, index=index, dataset=DATASET, need=need.name, user_id=str(qid), query=query,
                      cutoff_ts=math.nan, id_style=args.id_style, seed=args.seed)
    return make_row(f"flexrec/{DATASET}", messages, gt, info)


def build_parser(prog: str | None = None):
    p = base_parser(__doc__.split("\n\n")[0], default_needs="product_search", train_size=5000, test_size=1000,
                    prog=prog)
    p.epilog = __doc__[__doc__.index("Usage"):]
    p.add_argument("--locale", default="us", choices=("us", "es", "jp", "all"), help="product locale (default: us)")
    p.add_argument("--version", default="small", choices=("small", "large"),
                   help="'small' = Task 1 (query-product ranking), 'large' = Tasks 2/3 (default: small)")
    p.add_argument("--min-candidates", type=int, default=10,
                   help="skip queries with fewer judged products (default: 10)")
    p.add_argument("--product-text-chars", type=int, default=200, help="product text is cut to this length (default: 200)")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    """Prepare ESCI from the command-line flags ``argv``; a DataPrepError on bad input."""
    started = time.perf_counter()
    args = build_parser(prog).parse_args(argv)
    progress = not args.no_progress
    train_needs, test_needs = split_needs(args, features=FEATURES, side_info=SIDE_INFO, dataset=DATASET)
    if args.download:
        fetch_sources(args.raw_dir, SOURCES, mirror=args.download_url, checksum_mode=args.download_checksum,
                      progress=progress)
    examples_path, products_path = _file(args.raw_dir, EXAMPLES), _file(args.raw_dir, PRODUCTS)
    df = read_examples(examples_path, locale=args.locale, version=args.version)
    chosen = select_queries(df, min_candidates=min(args.min_candidates, args.num_candidates), seed=args.seed,
                            train_size=args.train_size, test_size=args.test_size)
    if not chosen["train"] or not chosen["test"]:
        raise DataPrepError(f"{examples_path}: no eligible {'train' if not chosen['train'] else 'test'} query "
                            f"(needs >= {args.min_candidates} judged products with different labels)")
    checked = check_query_leakage(chosen)
    wanted = {(p, loc) for s in chosen for _, g in chosen[s] for p, loc in zip(g["product_id"], g["product_locale"])}
    products = read_products(products_path, wanted)

    def rows(split, needs):
        mix = args.train_need_mix if split == "train" else "all"
        pairs = assign_needs(chosen[split], needs, mix=mix, seed=args.seed, split=split)
        for index, ((q, g), need) in enumerate(tqdm(pairs, desc=f"{split} rows", disable=not progress, leave=False)):
            try:
                yield render_row(q, g, need, products, split=split, index=index, args=args)
            except ValueError as e:  # e.g. a product id that cannot be shown with --id-style item
                raise DataPrepError(f"{split} row {index} (query {q}, need {need.name}): {e}") from None

    info = {"dataset": DATASET, "data_source": f"flexrec/{DATASET}",
            "settings": settings_info(args, train_needs, test_needs), "split": {"leakage_check": checked}}
    counts = write_outputs(args.out_dir, rows("train", train_needs), rows("test", test_needs), info)
    summarise(args.out_dir, counts, started)
    measure_prompts(args)


if __name__ == "__main__":
    sys.exit(run_main(main))
