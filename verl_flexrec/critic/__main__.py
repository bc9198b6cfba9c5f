"""Command line: ``python -m verl_flexrec.critic {train,fill,evaluate,serving,synth} ...``.

    python -m verl_flexrec.critic train    --data OUT/interactions.parquet OUT/train.parquet --out critic.pt
    python -m verl_flexrec.critic evaluate --critic critic.pt --data OUT/test.parquet \
                                           --train-data OUT/interactions.parquet OUT/train.parquet --out-dir rep/
    python -m verl_flexrec.critic fill     --critic critic.pt --data OUT/train.parquet --out OUT/train.filled.parquet
    python -m verl_flexrec.critic fill     --filler item_knn --data OUT/train.parquet --out OUT/train.iknn.parquet
    python -m verl_flexrec.critic serving  --critic critic.pt --out critic.serving.pt  # for critic_path
    python -m verl_flexrec.critic synth    --out-dir /tmp/synth          # toy train/test parquet

``evaluate`` prints the critic-vs-baselines table (constant, ridge bias, cornac MF, user/item-KNN;
NLL, RMSE, coverage, variance information, breakdowns, bootstrap intervals; docs/critic.md) and
writes ``report.md``, ``metrics.json`` and ``reliability.png``; ``--json`` prints a summary instead.

Bad input exits with status 2 and one ``error: FILE: row N: reward_model.ground_truth.FIELD ...``
line; outputs are written atomically, so nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .baselines import BASELINES
from .data import CriticDataError

FILLERS = ("critic", *BASELINES)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 128,64, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from .model import CriticConfig

    d = CriticConfig()
    p = argparse.ArgumentParser(prog="python -m verl_flexrec.critic", description="FlexRec uncertainty critic")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train the critic on the observed interactions of parquet file(s)")
    t.add_argument("--data", nargs="+", required=True, help="FlexRec parquet file(s) (reward_model.ground_truth)")
    t.add_argument("--out", required=True, help="checkpoint path (e.g. critic.pt)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs")
    t.add_argument("--ensemble", type=int, default=d.ensemble, help="deep-ensemble members")
    t.add_argument("--val-frac", type=float, default=d.val_frac,
                   help="validation share (each user's latest points) for early stopping and calibration")
    t.add_argument(
        "--patience", type=int, default=d.patience, help="epochs without val-NLL improvement before stopping"
    )
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--emb-dim", type=int, default=d.emb_dim, help="category / need embedding size")
    t.add_argument("--hidden", type=_hidden, default=d.hidden, help="MLP sizes, comma-separated")
    t.add_argument("--folds", type=int, default=d.folds, help="cross-fitting folds of the support features")
    t.add_argument("--bias-reg", type=float, default=d.bias_reg,
                   help="ridge penalty of the user / item biases (default: chosen on the validation slice)")
    t.add_argument("--mf-dim", type=int, default=d.mf_dim, help="MF factors of the MF feature (0: none)")
    t.add_argument("--beta", type=float, default=d.beta, help="beta-NLL exponent (0 = Gaussian NLL)")
    t.add_argument("--use-need", action="store_true", help="condition on the need (default: need-free base signal)")
    t.add_argument("--no-categories", action="store_true", help="ignore item categories")
    t.add_argument("--no-calibrate", action="store_true", help="skip the held-out variance calibration")
    t.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is faster on a busy shared CPU)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    f = sub.add_parser("fill", help="write filled gains / variances for unobserved candidates")
    f.add_argument("--data", required=True, help="input parquet")
    f.add_argument("--out", required=True, help="output parquet (may equal --data)")
    f.add_argument("--filler", choices=FILLERS, default="critic")
    f.add_argument("--critic", help="critic checkpoint (required for --filler critic)")
    f.add_argument("--train-data", "--knn-data", nargs="+", dest="train_data",
                   help="parquet(s) a baseline filler learns from (default: --data)")
    f.add_argument("--val-frac", type=float, default=d.val_frac,
                   help="baselines: validation share for their knob and variance (as the critic's)")
    f.add_argument("--seed", type=int, default=d.seed)

    e = sub.add_parser("evaluate", help="the critic against rating-prediction baselines on held-out points")
    e.add_argument("--data", nargs="+", required=True, help="parquet(s) with held-out observed interest")
    e.add_argument("--out-dir", required=True, help="metrics.json, report.md and reliability.png go here")
    e.add_argument("--critic", help="critic checkpoint (omit to compare the baselines only)")
    e.add_argument("--train-data", nargs="+",
                   help="the parquet(s) the critic trained on; the baselines learn from them (default: the "
                        "checkpoint's recorded sources, when they still exist)")
    e.add_argument("--baselines", nargs="*", default=list(BASELINES), metavar="NAME",
                   help=f"baselines to compare with (default: all of {' '.join(BASELINES)}; none: no names)")
    e.add_argument("--val-frac", type=float, default=None,
                   help="baselines' validation share (default: the critic's, else %(const)s)".replace(
                       "%(const)s", str(d.val_frac)))
    e.add_argument("--seed", type=int, default=None, help="split seed (default: the critic's, else 0)")
    e.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: no intervals)")
    e.add_argument(
        "--include-train",
        action="store_true",
        help="also score (user, item) pairs of the training data (default: held-out pairs only)",
    )
    e.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")

    v = sub.add_parser("serving", help="write the checkpoint without its training pairs, for live filling (critic_path)")
    v.add_argument("--critic", required=True, help="checkpoint written by `train`")
    v.add_argument("--out", required=True, help="serving file (e.g. critic.serving.pt)")

    s = sub.add_parser("synth", help="write a small synthetic train/test parquet pair (GroundTruth schema)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--users", type=int, default=120)
    s.add_argument("--items", type=int, default=200)
    s.add_argument("--density", type=float, default=0.1)
    s.add_argument("--candidates", type=int, default=30)
    s.add_argument("--lists-per-user", type=int, default=4)
    s.add_argument("--need", default="maximize_interest")
    s.add_argument("--seed", type=int, default=0)
    return p


def _baseline(name: str, paths, val_frac: float, seed: int):
    """One baseline fitted the way :func:`~verl_flexrec.critic.baselines.fit_baselines` does."""
    from .baselines import fit_baselines
    from .data import load_interactions, validation_split

    train = load_interactions(paths)
    tr, va = validation_split(train, val_frac, seed)
    return fit_baselines(train.subset(tr), train.subset(va), [name])[name]


def _cmd_train(a) -> dict:
    from .data import load_interactions
    from .model import CriticConfig
    from .train import train_critic

    cfg = CriticConfig(
        ensemble=a.ensemble,
        emb_dim=a.emb_dim,
        hidden=a.hidden,
        folds=a.folds,
        bias_reg=a.bias_reg,
        mf_dim=a.mf_dim,
        use_categories=not a.no_categories,
        use_need=a.use_need,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        beta=a.beta,
        val_frac=a.val_frac,
        patience=a.patience,
        calibrate=not a.no_calibrate,
        seed=a.seed,
    )
    inter = load_interactions(a.data, by_need=cfg.use_need)
    if len(inter) < 2:
        raise CriticDataError(f"{', '.join(a.data)}: only {len(inter)} observed interaction(s); the critic needs >= 2")
    pred = train_critic(inter, cfg, progress=not a.quiet, num_threads=a.threads)
    pred.save(a.out)
    return {"checkpoint": str(a.out), **pred.meta, "var_scale": pred.var_scale}


def _cmd_fill(a) -> dict:
    from .fill import fill_parquet
    from .predictor import CriticPredictor

    if a.filler == "critic":
        if not a.critic:
            raise CriticDataError("fill --filler critic needs --critic CHECKPOINT")
        filler = CriticPredictor.load(a.critic)
    else:
        filler = _baseline(a.filler, a.train_data or [a.data], a.val_frac, a.seed)
    return fill_parquet(a.data, a.out, filler)


def _cmd_evaluate(a) -> dict:
    from .baselines import fit_baselines
    from .data import load_interactions, validation_split
    from .evaluate import compare_fillers
    from .predictor import CriticPredictor
    from .report import format_report, write_report

    fillers, notes = {}, []
    critic = CriticPredictor.load(a.critic) if a.critic else None
    train_paths = a.train_data
    if critic is not None and not train_paths:
        train_paths = [p for p in critic.meta.get("sources", []) if Path(p).is_file()] or None
        if train_paths:
            notes.append(f"baselines learn from the checkpoint's sources: {', '.join(train_paths)}")
    if not train_paths and (critic is None or a.baselines):
        if critic is None:
            raise CriticDataError("evaluate needs --critic and/or --train-data (the data the baselines learn from)")
        notes.append("no --train-data: the critic alone, without baselines")
    val_frac = a.val_frac if a.val_frac is not None else (critic.config.val_frac if critic else 0.1)
    seed = a.seed if a.seed is not None else (critic.config.seed if critic else 0)
    test = load_interactions(a.data)
    train = load_interactions(train_paths) if train_paths else None
    n_all = len(test)
    if not a.include_train:
        seen = critic.seen_pairs() if critic is not None else set()
        if train is not None:
            seen |= set(zip(train.user_ids.tolist(), train.item_ids.tolist()))
        keep = np.array([(u, i) not in seen for u, i in zip(test.user_ids, test.item_ids)], dtype=bool)
        test = test.subset(keep)
        if not len(test):
            raise CriticDataError(f"{', '.join(map(str, a.data))}: every point is a training pair; nothing is "
                                  "held out (--include-train scores them anyway)")
    if critic is not None:
        fillers["critic"] = critic
    if train is not None and a.baselines:
        tr, va = validation_split(train, val_frac, seed)
        fillers.update(fit_baselines(train.subset(tr), train.subset(va), a.baselines))
    known_users = set(train.user_ids) if train is not None else (set(critic.users.values) if critic else None)
    known_items = set(train.item_ids) if train is not None else (set(critic.items.values) if critic else None)
    report = compare_fillers(fillers, test, reference="critic" if critic is not None else None,
                             known_users=known_users, known_items=known_items, n_boot=a.n_boot, seed=seed)
    report.update(points_in_data=n_all, points_excluded_as_training=n_all - len(test), notes=notes,
                  data=[Path(p).name for p in a.data], train_data=[Path(p).name for p in train_paths or []],
                  validation={"val_frac": val_frac, "seed": seed})
    what = "critic and baselines" if critic is not None else "baselines"
    title = f"{what} on {', '.join(Path(p).name for p in a.data)}"
    paths = write_report(report, a.out_dir, title=title)
    if a.json:
        summary = {k: {m: v["metrics"][m]["mean"] for m in ("nll", "rmse", "coverage_50", "coverage_90")}
                   for k, v in report["fillers"].items()}
        return {**paths, "n": report["n"], "points_excluded_as_training": n_all - len(test), "fillers": summary,
                "goal": {k: v["met"] for k, v in report.get("goal", {}).items()}, "notes": notes}
    print(format_report(report, title))
    for line in notes:
        print(f"note: {line}")
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return None


def _cmd_serving(a) -> dict:
    from ..provenance import file_sha256
    from .predictor import write_serving_file

    out = write_serving_file(a.critic, a.out)
    return {"out": str(out), "bytes": out.stat().st_size, "source_bytes": Path(a.critic).stat().st_size,
            "sha256": file_sha256(out)}


def _cmd_synth(a) -> dict:
    from .synthetic import make_rows, make_synthetic, write_parquet

    m = make_synthetic(a.users, a.items, a.density, cold_user_frac=0.05, cold_item_frac=0.05, seed=a.seed)
    tr, te = m.split(0.2, seed=a.seed)
    out = Path(a.out_dir)
    train_rows = make_rows(
        m,
        tr,
        n_candidates=a.candidates,
        lists_per_user=a.lists_per_user,
        need=a.need,
        split="train",
        observed_share=0.3,
        seed=a.seed,
    )
    test_rows = make_rows(
        m, te, n_candidates=a.candidates, need=a.need, split="test", only_observed=True, seed=a.seed + 1
    )
    write_parquet(train_rows, out / "train.parquet")
    write_parquet(test_rows, out / "test.parquet")
    return {
        "train": str(out / "train.parquet"),
        "test": str(out / "test.parquet"),
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cmd = {"train": _cmd_train, "fill": _cmd_fill, "evaluate": _cmd_evaluate, "serving": _cmd_serving,
           "synth": _cmd_synth}[args.cmd]
    from .train import CriticTrainingError

    try:
        result = cmd(args)
    except (CriticDataError, CriticTrainingError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
