"""Command line: ``python -m verl_flexrec doctor``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_flexrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that verl sees every FlexRec name (reward manager, estimator)")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from .doctor import run_doctor

        return 0 if run_doctor() else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
