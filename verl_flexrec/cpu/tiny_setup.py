"""Build everything the tiny CPU job needs: fixture data, a tokenizer and a warm-started tiny model.

``python -m verl_flexrec.cpu.tiny_setup --workdir DIR [--dataset ml-1m|kuairec|genre_task]`` writes

* ``DIR/raw/``: a small synthetic dataset in the official raw format (:mod:`verl_flexrec.data.fixtures`);
* ``DIR/data/{train,test}.parquet``: data preparation run on it (:mod:`verl_flexrec.data`, 10
  candidates, 5 history items), i.e. the same verl parquet a real run uses; or, with
  ``--train-file`` / ``--val-file``, seeded subsets of parquet you prepared (the quickstart passes
  ML-100k); or, with ``--dataset genre_task``, a task a tiny model can learn (:mod:`.learnable_task`,
  no raw files);
* ``DIR/model/``: the tiny byte-level BPE tokenizer and a random-init 2-layer Qwen2
  (``verl_flexrec.testing``), warm-started (:mod:`.warm_start`) so some rollouts are valid
  rankings.

It works from a plain install and is deterministic for a seed. Existing outputs are rebuilt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from ..atomic import atomic_path

DATASETS = {
    # dataset: (fixture writer, data-prep module, extra data-prep flags)
    "ml-1m": ("write_movielens", "movielens", ["--num-candidates", "10", "--history-len", "5"]),
    "kuairec": ("write_kuairec", "kuairec", ["--num-candidates", "10", "--history-len", "5",
                                             "--test-time-frac", "0.5"]),
}


def build_data(workdir: Path, dataset: str, seed: int) -> Path:
    """Raw fixture -> ``workdir/data/{train,test}.parquet`` through :mod:`verl_flexrec.data`."""
    import importlib

    from ..data import fixtures
    from ..data.io import run_main

    writer_name, module, flags = DATASETS[dataset]
    raw = getattr(fixtures, writer_name)(workdir / "raw", seed=seed)
    out = workdir / "data"
    argv = ["--raw-dir", str(raw), "--out-dir", str(out), "--seed", str(seed), "--no-progress", *flags]
    main = importlib.import_module(f"verl_flexrec.data.{module}").main
    messages = io.StringIO()
    with contextlib.redirect_stderr(messages):
        code = run_main(main, argv)
    if code != 0:
        raise SystemExit(f"data prep failed (verl_flexrec.data.{module} {' '.join(argv)}):\n{messages.getvalue()}")
    return out


def copy_data(workdir: Path, train_file: Path, val_file: Path, *, max_train: int, max_val: int, seed: int) -> Path:
    """Prepared parquet (e.g. the quickstart's ML-100k) -> ``workdir/data``, seeded row subsets.

    A tiny CPU job runs 3 steps of 2 prompts and validates on every ``val`` row twice, so both
    files are cut down; the training subset also feeds the warm start.
    """
    import numpy as np
    import pyarrow.parquet as pq

    out = workdir / "data"
    out.mkdir(parents=True, exist_ok=True)
    for src, name, cap in ((train_file, "train.parquet", max_train), (val_file, "test.parquet", max_val)):
        if not Path(src).is_file():
            raise SystemExit(f"tiny_setup: {src} not found")
        table = pq.read_table(src)
        if table.num_rows > cap:
            keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=cap, replace=False))
            table = table.take(keep)
        with atomic_path(out / name) as tmp:
            pq.write_table(table, tmp)
    return out


def build_model(workdir: Path, train_parquet: Path, *, sft_steps: int, seed: int, sft_lr: float = 3e-3,
                sft_orders: int = 2, sft_batch_size: int = 8, vary_orders: bool = False, sft_lean: float = 0.0,
                hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Tokenizer + tiny Qwen2, warm-started on the training prompts, saved to ``workdir/model``.

    ``sft_*`` and ``vary_orders`` are :func:`.warm_start.warm_start`'s knobs (``sft_lean``: its ``lean``); ``hidden_size`` and
    ``num_layers`` size the model (:func:`verl_flexrec.testing.build_tiny_model`).
    """
    import pyarrow.parquet as pq

    from verl_flexrec.schema import GroundTruth
    from verl_flexrec.testing import build_tiny_model, build_tiny_tokenizer

    from .warm_start import warm_start

    out = workdir / "model"
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, hidden_size=hidden_size, num_layers=num_layers)
    rows = pq.read_table(train_parquet).to_pylist()
    prompts = [row["prompt"] for row in rows]
    truths = [GroundTruth.from_any(row["reward_model"]["ground_truth"]) for row in rows]
    if sft_steps > 0:
        losses = warm_start(model, tokenizer, prompts, [t.candidates for t in truths], steps=sft_steps, seed=seed,
                            lr=sft_lr, n_orders=sft_orders, batch_size=sft_batch_size, vary_by_prompt=vary_orders,
                            gains=[list(t.gains) for t in truths], lean=sft_lean)
        print(f"warm-start SFT: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {sft_steps} steps")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--dataset", choices=[*sorted(DATASETS), "genre_task"], default="ml-1m",
                        help="fixture run through data prep, or genre_task: a task a tiny model can learn "
                             "(verl_flexrec.cpu.learnable_task)")
    parser.add_argument("--task-rows", type=int, nargs=2, default=(640, 50), metavar=("TRAIN", "VAL"),
                        help="genre_task: training and validation rows (default: 640 50)")
    parser.add_argument("--sft-steps", type=int, default=300, help="warm-start steps (0 = random model)")
    parser.add_argument("--sft-lr", type=float, default=3e-3, help="warm-start learning rate")
    parser.add_argument("--sft-orders", type=int, default=2, help="warm-start target orders per prompt")
    parser.add_argument("--sft-batch-size", type=int, default=8, help="warm-start examples per step")
    parser.add_argument("--sft-vary-orders", action="store_true",
                        help="draw each prompt's target orders with its own seed (a high-entropy policy)")
    parser.add_argument("--sft-lean", type=float, default=0.0,
                        help="draw the target orders from Plackett-Luce with weights exp(LEAN * gain): a warm start "
                             "that leans towards the better items but still explores (0: uniform orders)")
    parser.add_argument("--model-hidden", type=int, default=64, help="tiny Qwen2 hidden size")
    parser.add_argument("--model-layers", type=int, default=2, help="tiny Qwen2 layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-file", type=Path, default=None,
                        help="use this prepared verl parquet instead of the fixture (needs --val-file)")
    parser.add_argument("--val-file", type=Path, default=None)
    parser.add_argument("--max-train-rows", type=int, default=256, help="with --train-file: seeded subset size")
    parser.add_argument("--max-val-rows", type=int, default=16, help="with --val-file: seeded subset size")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if (args.train_file is None) != (args.val_file is None):
        parser.error("--train-file and --val-file go together")
    if args.train_file is not None:
        data = copy_data(args.workdir, args.train_file, args.val_file, max_train=args.max_train_rows,
                         max_val=args.max_val_rows, seed=args.seed)
    elif args.dataset == "genre_task":
        from .learnable_task import write_task

        data = write_task(args.workdir / "data", n_train=args.task_rows[0], n_val=args.task_rows[1], seed=args.seed)
    else:
        data = build_data(args.workdir, args.dataset, args.seed)
    model = build_model(args.workdir, data / "train.parquet", sft_steps=args.sft_steps, seed=args.seed,
                        sft_lr=args.sft_lr, sft_orders=args.sft_orders, sft_batch_size=args.sft_batch_size,
                        vary_orders=args.sft_vary_orders, sft_lean=args.sft_lean, hidden_size=args.model_hidden, num_layers=args.model_layers)
    print(f"data: {data}\nmodel: {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
