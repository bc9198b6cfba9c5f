"""Command line: ``python -m verl_flexrec {doctor,recipes-path,check-config}`` (also ``verl-flexrec``).

* ``doctor``: does verl see every FlexRec name (reward manager, estimator, trainer)?
* ``recipes-path``: print the folder of the packaged Hydra recipes, for ``--config-path``.
* ``check-config [--config-name NAME] [overrides...]``: compose a recipe and run verl's checks.

Data preparation, the critic, evaluation and the quickstart have their own entry points:
``python -m verl_flexrec.data``, ``.critic``, ``.evaluate``, ``.quickstart``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m verl_flexrec", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that verl sees every FlexRec name (reward manager, estimator)")
    sub.add_parser("recipes-path", help="print the folder of the packaged Hydra recipes (for --config-path)")
    sub.add_parser("check-config", help="compose a recipe and run verl's config checks (no Ray, no GPU)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "check-config":
        from .recipes.check import main as check_main

        return check_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "doctor":
        from .doctor import run_doctor

        return 0 if run_doctor() else 1
    if args.command == "recipes-path":
        from .recipes import config_dir

        print(config_dir())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
