"""The interaction-dataset pipeline: KuaiRec, MovieLens and a user's own data share everything after loading.

split -> sample -> the critic's interactions table -> leakage check -> render rows -> write.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from ..needs import Need
from .events import EventLog
from .interactions import training_interactions
from .io import DataPrepError, log
from .leakage import check_no_leakage, task_record
from .parquet import write_outputs
from .rows import ItemSource, render_interaction_row
from .split import build_test_tasks, build_train_tasks, split_config
from .targets import assign_needs

__all__ = ["measure_prompts", "relabel", "run_interaction_pipeline", "settings_info", "summarise"]


def settings_info(args, train_needs: Sequence[Need], test_needs: Sequence[Need]) -> dict:
    """The run's settings for prep_info.json (paths left out: output must not depend on them)."""
    skip = {"raw_dir", "out_dir", "no_progress", "prompt_tokenizer", "download", "download_url", "download_checksum",
            "needs_yaml"}
    # a file given by a flag is recorded by its name only: the output must not depend on the folder
    settings = {k: v.name if isinstance(v, Path) else v for k, v in sorted(vars(args).items()) if k not in skip}
    settings["train_needs"] = [n.name for n in train_needs]
    settings["test_needs"] = [n.name for n in test_needs]
    return settings


def run_interaction_pipeline(args, src: ItemSource, train_src: EventLog, test_src: EventLog,
                             all_inter: EventLog, train_needs: Sequence[Need], test_needs: Sequence[Need], *,
                             started: float | None = None) -> dict:
    """Split, sample, check for leakage, render and write. Returns the summary.

    ``started``: ``time.perf_counter()`` when the run began (the summary line reports the time since).
    """
    started = time.perf_counter() if started is None else started
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
    if src.grade is not None:  # implicit feedback: the interest of a context's candidates is graded
        for task in [*train_tasks, *test_tasks]:
            task.cand_interest = src.grade(task)
    if hasattr(src.popularity, "hide_test"):
        src.popularity.hide_test(cutoffs, default_cutoff)
    interactions, inter_info = training_interactions(all_inter, src.cats, cutoffs, default_cutoff, test_tasks,
                                                     sparse_frac=args.sparse_frac, seed=args.seed)
    checked = check_no_leakage((task_record(t) for t in [*train_tasks, *test_tasks]),
                               global_cutoff=None if math.isinf(default_cutoff) else default_cutoff,
                               interactions=interactions)

    interactions = relabel(interactions, src)  # after the check, which compares the log's own ids

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
    summarise(args.out_dir, counts, started)
    measure_prompts(args)
    return {"rows": counts, **info["split"]}


def relabel(table: pa.Table, src: ItemSource) -> pa.Table:
    """interactions.parquet with the dataset's own user and item ids (see ``ItemSource.user_labels``)."""
    for column, labels in (("user_id", src.user_labels), ("item_id", src.item_labels)):
        if labels is not None:
            codes = pc.cast(table.column(column), pa.int64())
            table = table.set_column(table.schema.get_field_index(column), column,
                                     pa.array(labels, type=pa.string()).take(codes))
    return table


def measure_prompts(args) -> None:
    """``--prompt-tokenizer``: prompt-token statistics into prep_info.json (:mod:`.prompt_lengths`)."""
    if getattr(args, "prompt_tokenizer", None):
        from .prompt_lengths import measure

        result = measure(args.out_dir, args.prompt_tokenizer, progress=not args.no_progress)
        log(f"prompt tokens ({args.prompt_tokenizer}): train max {result['train'].get('max')}, test max "
            f"{result['test'].get('max')} -> data.max_prompt_length={result['max_prompt_length']} fits every row")


def summarise(out_dir: Path, counts: Mapping[str, int], started: float) -> None:
    """One line on stderr: what was written, how fast (since ``started``, a ``time.perf_counter()``)."""
    seconds = time.perf_counter() - started
    total = counts["train"] + counts["test"]
    extra = (f", {out_dir / 'interactions.parquet'} ({counts['interactions']:,} rows)"
             if "interactions" in counts else "")
    log(f"wrote {out_dir / 'train.parquet'} ({counts['train']:,} rows){extra} and {out_dir / 'test.parquet'} "
        f"({counts['test']:,} rows) in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} rows/s); "
        f"leakage check passed")
