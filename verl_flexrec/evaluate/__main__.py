"""``python -m verl_flexrec.evaluate ...`` (see :mod:`verl_flexrec.evaluate.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
