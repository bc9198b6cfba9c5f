"""Your own interaction log (RecBole atomic files or a CSV/parquet table) -> FlexRec verl parquet.

Command line over :mod:`verl_flexrec.data.own` (its docstring documents the input, the
output and every flag); the same as ``python -m verl_flexrec.data interactions``::

    python data_prep/interactions.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python data_prep/interactions.py` from a clone that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data.io import run_main  # noqa: E402
from verl_flexrec.data.own import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_main(main))
