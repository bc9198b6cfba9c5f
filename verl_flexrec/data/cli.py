"""Command-line flags every dataset's data preparation shares (the dataset modules add theirs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import positive_int
from ..prompt import ID_STYLES

__all__ = ["add_interaction_args", "base_parser"]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def base_parser(description: str, *, default_needs: str, train_size: int | None, test_size: int | None,
                prog: str | None = None, official_source: bool = True):
    """Flags every dataset has; each dataset module adds its own.

    ``official_source``: the dataset has an official release (``--raw-dir`` and the ``--download``
    flags); a user's own data (:mod:`.own`) names its files with its own flags.
    """
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if official_source:
        p.add_argument("--raw-dir", type=Path, required=True,
                       help="folder holding the raw dataset (or the unpacked archive)")
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
    if official_source:
        p.add_argument("--download", action="store_true",
                       help="first download the official files into --raw-dir (resumable, checksum-verified)")
        p.add_argument("--download-url", default=None, metavar="BASE_URL",
                       help="download from this mirror (a base URL holding the same file names) instead")
        p.add_argument("--download-checksum", default=None, metavar="record|sha256:HEX|md5:HEX",
                       help="default: the published checksums; 'record': compute and record them instead (a "
                            "mirror with different files); or one explicit checksum (single-file datasets)")
    p.add_argument("--prompt-tokenizer", default=None, metavar="qwen2|smollm2|PATH",
                   help="also count each prompt's tokens with this tokenizer (qwen2: Qwen2/2.5's vocabulary, "
                        "smollm2, or a transformers tokenizer path / hub id) and record the statistics and the "
                        "data.max_prompt_length that fits every row in prep_info.json (python -m verl_flexrec.data "
                        "prompt-lengths does the same for prepared data)")
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
