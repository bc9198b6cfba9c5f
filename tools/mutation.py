"""Mutation testing of the math and seam modules with mutmut, one module group at a time.

    pip install -e ".[test,mutation]"
    python tools/mutation.py                   # every group (tens of minutes on 2 cores)
    python tools/mutation.py ranking parsing   # some groups
    python tools/mutation.py --list            # the groups, their modules and test files
    python tools/mutation.py --sample 60 advantage   # 60 mutants drawn at random (seed 0)
    python tools/mutation.py --only '*uncertainty_scale__*' advantage   # every mutant of one function

mutmut plants one small bug at a time (a changed operator, constant, comparison, argument ...)
and runs the tests that call the mutated function; a mutant no test notices "survives". mutmut
reads one ``[tool.mutmut]`` block, so each group runs in its own folder ``.mutation/<group>/``:
a copy of the package, tests, recipes and data_prep, and a ``pyproject.toml`` whose block is the
repository's (``[tool.mutmut]`` in pyproject.toml: isolation, pytest options, lines never mutated)
plus the group's modules and the fast test files that exercise them. That keeps each mutant's run
to the group's own tests: a mutant in the ranking code does not run the trainer-seam tests.

Re-running reuses mutmut's results for unchanged functions (delete ``.mutation/<group>`` to start
over); ``--survivors`` re-checks only the last run's survivors against the current tests;
``--sample N`` checks N mutants per group drawn at random (a score with a confidence interval in
a fraction of the time: each mutant costs a pytest start in a forked process, seconds on a
loaded 2-core machine). Results: ``.mutation/summary.json`` and ``.mutation/summary.md`` (per
module: mutants, checked, killed / survived / no tests / timeout, and the killed share of the
checked ones with a Wilson 95 % interval), ``.mutation/<group>/survivors.diff`` (each surviving
mutant's diff). docs/mutation.md records the last run and explains the survivors.

Not in CI: it is slow. Never imported by the package.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".mutation"

# group -> (modules to mutate, test files whose tests may kill them, extra pytest arguments)
GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "ranking": (
        ["verl_flexrec/ranking/*"],
        ["tests/test_ranking_metrics.py", "tests/test_swap_rewards.py", "tests/test_ranking_edges.py"],
        [],
    ),
    "advantage": (
        ["verl_flexrec/advantage.py", "verl_flexrec/uncertainty.py"],
        ["tests/test_advantage.py", "tests/test_options_behaviour.py", "tests/test_reward.py", "tests/test_fast_paths.py"],
        [],
    ),
    "reward": (["verl_flexrec/reward.py"], ["tests/test_reward.py", "tests/test_options_behaviour.py"], []),
    "parsing": (["verl_flexrec/parsing.py"], ["tests/test_parsing.py"], []),
    "tokens": (["verl_flexrec/tokens.py"], ["tests/test_fast_paths.py", "tests/test_reward_manager.py"], []),
    "integration": (
        ["verl_flexrec/integration/*"],
        ["tests/test_trainer_seam_on_cpu.py", "tests/test_seam_behaviour.py", "tests/test_reward_manager.py",
         "tests/test_registration.py", "tests/test_fast_paths.py", "tests/test_advantage.py",
         "tests/test_options_behaviour.py"],
        [],
    ),
    "critic": (
        ["verl_flexrec/critic/features.py", "verl_flexrec/critic/baselines.py", "verl_flexrec/critic/knn.py",
         "verl_flexrec/critic/model.py", "verl_flexrec/critic/predictor.py", "verl_flexrec/critic/fill.py"],
        ["tests/test_critic_units.py", "tests/test_critic_variance.py", "tests/test_critic_model.py",
         "tests/test_critic_knn.py", "tests/test_critic_baselines.py", "tests/test_critic_fill.py",
         "tests/test_critic_train.py"],
        [],
    ),
    # data preparation's leakage rules (run with --only on the rule functions: the rest is I/O)
    "data_leakage": (
        ["verl_flexrec/data/esci.py", "verl_flexrec/data/leakage.py", "verl_flexrec/data/split.py",
         "verl_flexrec/data/candidates.py"],
        ["tests/test_data_leakage_rules.py", "tests/test_data_prep_esci.py", "tests/test_data_prep_common.py"],
        [],
    ),
    # the critic's training loop, data reading, evaluation and report (longer: each mutant trains)
    "critic_pipeline": (
        ["verl_flexrec/critic/train.py", "verl_flexrec/critic/data.py", "verl_flexrec/critic/evaluate.py",
         "verl_flexrec/critic/report.py"],
        ["tests/test_critic_train.py", "tests/test_critic_variance.py", "tests/test_critic_model.py",
         "tests/test_critic_evaluate.py", "tests/test_critic_fill.py"],
        [],
    ),
}
COPY = ["verl_flexrec", "tests", "recipes", "data_prep", "pyproject.toml"]
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _multiline_lists_to_one_line(text: str) -> str:
    """TOML arrays spread over lines -> one line each (the block filter above works per line)."""
    return re.sub(r"\[\s*\n(.*?)\n\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text, flags=re.S)


def _group_pyproject(modules: list[str], tests: list[str], extra_args: list[str]) -> str:
    """The repository's pyproject.toml with the group's modules and tests in [tool.mutmut]."""
    text = (REPO / "pyproject.toml").read_text()
    head, sep, block = text.partition("[tool.mutmut]")
    if not sep:
        raise SystemExit("pyproject.toml has no [tool.mutmut] block")
    block = "\n".join(line for line in _multiline_lists_to_one_line(block).splitlines()
                      if not line.startswith(("only_mutate", "pytest_add_cli_args_test_selection")))
    args = re.search(r"^pytest_add_cli_args\s*=\s*(\[.*\])$", block, re.M)
    if args and extra_args:
        block = block.replace(args.group(0), f"pytest_add_cli_args = {_toml_list(json.loads(args.group(1)) + extra_args)}")
    return (head + sep + "\n" + f"only_mutate = {_toml_list(modules)}\n"
            + f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n" + block.lstrip("\n") + "\n")


def prepare(group: str) -> Path:
    """``.mutation/<group>/``: the files the tests need and the group's pyproject.toml."""
    modules, tests, extra = GROUPS[group]
    where = OUT / group
    where.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPY[:-1]:
        shutil.copytree(REPO / name, where / name, dirs_exist_ok=True, ignore=ignore)
    (where / "pyproject.toml").write_text(_group_pyproject(modules, tests, extra))
    return where


def _env(where: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # one thread per library in each mutant's process: forking a process whose thread pools are
    # running can deadlock, and the machine's cores are the children's
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HYPOTHESIS_STORAGE_DIRECTORY=str(where / ".hypothesis"))
    return env


def _mutmut() -> str:
    return shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"


def _all_mutants(where: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in sorted((where / "mutants").rglob("*.py.meta")):
        codes.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    return codes


def _generated(where: Path) -> list[str]:
    """Every mutant name of the group (mutmut generates them first: a run whose filter matches
    nothing generates the mutants and the test statistics, then stops)."""
    if not _all_mutants(where):
        with open(where / "mutmut.log", "w") as log:
            subprocess.run([_mutmut(), "run", "--max-children", "1", "__generate_only__"], cwd=where, env=_env(where),
                           stdout=log, stderr=subprocess.STDOUT)
    names = sorted(_all_mutants(where))
    if not names:
        raise SystemExit(f"mutmut generated no mutants in {where} (see {where / 'mutmut.log'})")
    return names


def _select(where: Path, chosen: list[str], of: int, **how) -> list[str]:
    (where / "sample.json").write_text(json.dumps({**how, "size": len(chosen), "of": of, "mutants": sorted(chosen)},
                                                  indent=1))
    return sorted(chosen)


def _sample(where: Path, size: int, seed: int) -> list[str]:
    """``size`` mutant names drawn without replacement."""
    names = _generated(where)
    return _select(where, random.Random(seed).sample(names, min(size, len(names))), len(names), seed=seed)


def _only(where: Path, patterns: list[str]) -> list[str]:
    """Every mutant whose name matches one of ``patterns`` (fnmatch, e.g. ``*uncertainty_scale__*``)."""
    names = _generated(where)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"no mutant of {where.name} matches {patterns}")
    return _select(where, chosen, len(names), only=patterns)


def run(group: str, max_children: int, survivors_only: bool = False, sample: int | None = None, seed: int = 0,
        only: list[str] | None = None) -> float:
    where = prepare(group)
    names = _survivors(where) if survivors_only and (where / "mutants").exists() else []
    if survivors_only and not names:
        print(f"[mutation] {group}: no survivors to re-check", flush=True)
        return 0.0
    if not sample and not survivors_only and not only:
        (where / "sample.json").unlink(missing_ok=True)  # a full run: the summary counts every mutant
    if sample or only:
        codes = _all_mutants(where)
        chosen = _only(where, only) if only else _sample(where, sample, seed)
        names = [n for n in chosen if codes.get(n) is None]  # checked ones stand
        if not names:
            return 0.0
    env = _env(where)
    mutmut = _mutmut()
    start = time.perf_counter()
    with open(where / "mutmut.log", "w") as log:
        code = subprocess.run([mutmut, "run", "--max-children", str(max_children), *names], cwd=where, env=env,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = (where / "mutmut.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed for group {group} (exit {code}); {where / 'mutmut.log'}:\n{tail}")
    _write_survivor_diffs(where, env)
    return seconds


def _results(where: Path) -> dict[str, Counter]:
    """Per module: how many mutants had each status (of the last sample when one was drawn)."""
    per_file: dict[str, Counter] = {}
    sample_file = where / "sample.json"
    sample = set(json.loads(sample_file.read_text())["mutants"]) if sample_file.exists() else None
    for meta in sorted((where / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        if codes:
            per_file[str(meta.relative_to(where / "mutants"))[: -len(".meta")]] = Counter(
                "not drawn" if sample is not None and k not in sample else STATUS.get(c, "suspicious")
                for k, c in codes.items())
    return per_file


def _survivors(where: Path) -> list[str]:
    return sorted(k for k, c in _all_mutants(where).items() if c == 0)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    mid, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)


def _write_survivor_diffs(where: Path, env: dict) -> None:
    names = _survivors(where)
    script = ("import sys\nfrom mutmut.__main__ import find_mutant, get_diff_for_mutant\n"
              "for name in sys.argv[1:]:\n    m = find_mutant(name)\n"
              "    print(f'# {name}')\n    print(get_diff_for_mutant(name, path=m.path))\n")
    with open(where / "survivors.diff", "w") as out:
        subprocess.run([sys.executable, "-c", script, *names], cwd=where, env=env, stdout=out, stderr=subprocess.STDOUT)


def summarise(groups: list[str], seconds: dict[str, float], key: str = "seconds") -> dict:
    summary_path = OUT / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for group in groups:
        files = _results(OUT / group)
        entry = summary.get(group, {})
        if group in seconds:
            entry[key] = round(seconds[group], 1)
        entry["files"] = {f: dict(c) for f, c in files.items()}
        sample_file = OUT / group / "sample.json"
        if sample_file.exists():
            drawn = json.loads(sample_file.read_text())
            entry["sample"] = {k: drawn[k] for k in ("seed", "only", "size", "of") if k in drawn}
        else:
            entry.pop("sample", None)
        summary[group] = entry
    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))
    lines = ["| group | module | mutants | checked | killed | survived | no tests | timeout | killed % of checked (95 % CI) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, info in sorted(summary.items()):
        for path, c in sorted(info["files"].items()):
            total = sum(c.values())
            checked = total - c.get("not checked", 0) - c.get("not drawn", 0)
            killed = c.get("killed", 0) + c.get("timeout", 0)
            lo, hi = wilson(killed, checked)
            lines.append(f"| {group} | {path} | {total} | {checked} | {c.get('killed', 0)} | {c.get('survived', 0)} | "
                         f"{c.get('no tests', 0)} | {c.get('timeout', 0)} | "
                         f"{100 * killed / max(checked, 1):.1f} ({100 * lo:.0f}–{100 * hi:.0f}) |")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--summary-only", action="store_true", help="only re-read the results of earlier runs")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="check N mutants per group drawn at random (the summary counts that sample)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                        help="check every mutant whose name matches a pattern (fnmatch), e.g. '*uncertainty_scale__*'")
    parser.add_argument("--survivors", action="store_true",
                        help="re-run only the last run's surviving mutants (with the current tests)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (modules, tests, extra) in GROUPS.items():
            print(f"{name}: {' '.join(modules)}\n    tests: {' '.join(tests)} {' '.join(extra)}")
        return
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    groups = args.groups or list(GROUPS)
    seconds = {}
    if not args.summary_only:
        for group in groups:
            print(f"[mutation] {group} ...", flush=True)
            seconds[group] = run(group, args.max_children, args.survivors, args.sample, args.seed, args.only)
            print(f"[mutation] {group}: {seconds[group]:.0f} s", flush=True)
    summarise(groups, seconds, "survivors_seconds" if args.survivors else "seconds")


if __name__ == "__main__":
    main()
