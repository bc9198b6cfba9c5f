"""Benchmark the uncertainty critic against rating-prediction baselines.

    python benchmarks/bench_critic.py                     # synthetic + ML-100k + KuaiRec fixture + inference
    python benchmarks/bench_critic.py --quick             # smaller synthetic matrix, one critic seed
    python benchmarks/bench_critic.py --datasets ml100k --ml100k-dir flexrec-quickstart/data

Datasets (each: the critic trained with ``--seeds`` seeds; the baselines of
:mod:`verl_flexrec.critic.baselines` tuned and variance-scaled on the critic's validation slice;
everything scored on the same held-out points by :func:`verl_flexrec.critic.evaluate.compare_fillers`,
intervals from a paired bootstrap over users):

``synthetic``  the generator of :mod:`verl_flexrec.critic.synthetic` (KuaiRec-small size by default:
               1,411 x 3,327, 10 % observed; rank-4 structure, known heteroscedastic noise), with the
               generator's true mean and variance as an "oracle" row.
``ml100k``     the quickstart's split: MovieLens-100k with 10 % of training ratings observed, the test
               set each user's last 10 ratings (``python -m verl_flexrec.quickstart --skip-train``
               prepares it; ``--ml100k-dir`` reuses a prepared ``data`` folder).
``kuairec``    the KuaiRec fixture of ``tests/fixtures_raw.py`` through the real data prep (10 %
               sparse). Its watch ratios are i.i.d. draws (no user or item effect), so nothing can
               beat the constant predictor there: it checks that the critic does no harm.

Then inference for 1,024 lists x 30 candidates (batched ``predict``, per-list ``predict``, ``fill``
of records and ``fill_parquet``). Prints the tables and writes ``benchmarks/results/bench_critic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from verl_flexrec.critic import CriticConfig, CriticPredictor, fit_baselines, train_critic  # noqa: E402
from verl_flexrec.critic.data import Interactions, load_interactions, validation_split  # noqa: E402
from verl_flexrec.critic.evaluate import compare_fillers  # noqa: E402
from verl_flexrec.critic.fill import fill_parquet  # noqa: E402
from verl_flexrec.critic.report import format_report  # noqa: E402
from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402

DATASETS = ("synthetic", "ml100k", "kuairec")
KUAIREC_FIXTURE = dict(small_users=150, big_users=400, n_items=600, small_items=300, big_per_user=200,
                       big_first_item=100)


class _Truth:
    """The synthetic generator's own mean and variance, as a filler."""

    def __init__(self, m):
        self.m = m

    def predict(self, user_ids, item_ids, need=None, categories=None):
        u = np.array([int(str(x)[1:]) for x in user_ids])
        i = np.array([int(str(x)[1:]) for x in item_ids])
        return self.m.true_mean(u, i), self.m.true_var(u, i)


def compare(name: str, train: Interactions, test: Interactions, seeds, threads, n_boot: int, extra=None) -> dict:
    """Critic (every seed) and baselines on ``test``; the full report for the first seed."""
    runs, critics = [], {}
    for seed in seeds:
        t = time.perf_counter()
        pred = train_critic(train, CriticConfig(seed=seed), progress=False, num_threads=threads)
        runs.append({"seed": seed, "train_seconds": time.perf_counter() - t, "best_epoch": pred.meta["best_epoch"],
                     "bias_reg": pred.meta["bias_reg"], "mf_reg": pred.meta["mf_reg"], "var_scale": pred.var_scale})
        critics[seed] = pred
    tr, va = validation_split(train, CriticConfig.val_frac, seeds[0])
    t = time.perf_counter()
    baselines = fit_baselines(train.subset(tr), train.subset(va))
    fit_s = time.perf_counter() - t
    keep = ~critics[seeds[0]].seen_in_training(test.user_ids, test.item_ids)
    test = test.subset(keep)
    known = dict(known_users=set(train.user_ids), known_items=set(train.item_ids))
    report = compare_fillers({"critic": critics[seeds[0]], **baselines, **(extra or {})}, test, reference="critic",
                             n_boot=n_boot, seed=0, not_baselines=tuple(extra or ()), **known)
    for run, seed in zip(runs, seeds):  # every seed's critic against the same baselines
        rep = compare_fillers({"critic": critics[seed], **baselines}, test, reference="critic", n_boot=n_boot,
                              seed=0, **known)
        c = rep["fillers"]["critic"]
        run.update(nll=c["metrics"]["nll"]["mean"], rmse=c["metrics"]["rmse"]["mean"],
                   coverage_50=c["metrics"]["coverage_50"]["mean"], coverage_90=c["metrics"]["coverage_90"]["mean"],
                   variance_gain=c["variance_information"]["nll_gain_vs_constant_var_ci"]
                   if c["variance_information"] else None,
                   spearman=c["variance_information"]["spearman"] if c["variance_information"] else None,
                   goals={k: v["met"] for k, v in rep["goal"].items()},
                   margin_vs_best_baseline=rep["goal"]["nll_below_best_baseline"]["margin"])
    print(format_report(report, f"{name}: {len(train):,} observed training points"))
    for r in runs:
        print(f"critic seed {r['seed']}: NLL {r['nll']:.4f}, margin over the best baseline "
              f"{r['margin_vs_best_baseline']['mean']:+.4f} [{r['margin_vs_best_baseline']['low']:+.4f}, "
              f"{r['margin_vs_best_baseline']['high']:+.4f}], "
              f"coverage {r['coverage_50']:.3f} / {r['coverage_90']:.3f}, "
              f"train {r['train_seconds']:.1f} s")
    print()
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    return {"data": {"train": len(train), "test": len(test)}, "critic_runs": runs, "baselines_fit_seconds": fit_s,
            "report": clean, "report_md": format_report(report, name)}


def synthetic(a, threads) -> tuple[dict, object, object]:
    m = make_synthetic(a.users, a.items, a.density, cold_user_frac=0.02, cold_item_frac=0.02, seed=0)
    train_mask, test_mask = m.split(0.1, seed=1)
    res = compare("synthetic", m.interactions(train_mask), m.interactions(test_mask), a.seeds, threads, a.n_boot,
                  extra={"oracle_truth": _Truth(m)})
    return res, m, train_mask


def ml100k(a, threads) -> dict:
    data = Path(a.ml100k_dir) if a.ml100k_dir else None
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            done = subprocess.run([sys.executable, "-m", "verl_flexrec.quickstart", "--skip-train", "--workdir", tmp,
                                   "--baselines", "random", "--critic-epochs", "1"], cwd=REPO, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise RuntimeError(f"preparing ML-100k with the quickstart failed:\n{done.stderr[-3000:]}")
            data = Path(tmp) / "data"
        train = load_interactions([data / "interactions.parquet", data / "train.parquet"])
        test = load_interactions(data / "test.parquet")
        return compare("ml100k", train, test, a.seeds, threads, a.n_boot)


def kuairec(a, threads) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_raw import run_in_process, write_kuairec  # the fixture and the real data prep

    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        write_kuairec(raw, **KUAIREC_FIXTURE)
        code, err = run_in_process("kuairec", "--raw-dir", raw, "--out-dir", out, "--sparse-frac", "0.1")
        if code != 0:
            raise RuntimeError(f"KuaiRec data prep failed: {err}")
        train = load_interactions([out / "interactions.parquet", out / "train.parquet"])
        test = load_interactions(out / "test.parquet")
        res = compare("kuairec", train, test, a.seeds, threads, a.n_boot)
    res["fixture"] = KUAIREC_FIXTURE
    return res


def inference(a, m, train_mask) -> dict:
    pred = train_critic(m.interactions(train_mask), CriticConfig(epochs=3), progress=False, num_threads=1)
    rng = np.random.default_rng(0)
    lists_u = rng.integers(0, m.n_users, a.lists)
    lists_i = np.stack([rng.choice(m.n_items, a.candidates, replace=False) for _ in range(a.lists)])
    uid = np.repeat(m.user_id(lists_u), a.candidates)
    iid = m.item_id(lists_i.ravel())
    pred.predict(uid[:10], iid[:10])  # warm-up

    def timed(fn, repeat=1):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return out, times

    _, t_batch = timed(lambda: pred.predict(uid, iid), repeat=5)
    per_list = [timed(lambda r=r: pred.predict(str(m.user_id(lists_u[r])), m.item_id(lists_i[r]).tolist()))[1][0]
                for r in range(a.lists)]
    rows = make_rows(m, train_mask, n_candidates=a.candidates, users=lists_u.tolist(), seed=0)
    gts = [GroundTruth.from_any(r["reward_model"]["ground_truth"]) for r in rows]
    _, t_fill_records = timed(lambda: [pred.fill(g) for g in gts], repeat=2)
    with tempfile.TemporaryDirectory() as d:
        src = write_parquet(rows, Path(d) / "lists.parquet")
        ckpt = pred.save(Path(d) / "critic.pt")
        _, (t_load,) = timed(lambda: CriticPredictor.load(ckpt))
        size_mb = ckpt.stat().st_size / 2**20
        stats, (t_fill_parquet,) = timed(lambda: fill_parquet(src, Path(d) / "filled.parquet", pred))
    n_pairs = a.lists * a.candidates
    res = {
        "lists": a.lists, "candidates": a.candidates,
        "batched_predict_seconds_best": min(t_batch),
        "batched_predict_pairs_per_second": n_pairs / min(t_batch),
        "per_list_predict_ms_median": 1000 * statistics.median(per_list),
        "per_list_predict_ms_p99": 1000 * float(np.quantile(per_list, 0.99)),
        "fill_records_seconds_best": min(t_fill_records),
        "fill_parquet_seconds": t_fill_parquet,
        "fill_parquet_filled": stats["filled"],
        "checkpoint_load_seconds": t_load,
        "checkpoint_mb": size_mb,
    }
    print(f"== inference: {a.lists} lists x {a.candidates} candidates ==")
    print(f"one batched predict  {1000 * res['batched_predict_seconds_best']:8.1f} ms "
          f"({res['batched_predict_pairs_per_second']:,.0f} pairs/s)")
    print(f"per-list predict     {res['per_list_predict_ms_median']:8.3f} ms median, "
          f"{res['per_list_predict_ms_p99']:.3f} ms p99")
    print(f"CriticPredictor.fill {1000 * res['fill_records_seconds_best']:8.1f} ms for {a.lists} records")
    print(f"fill_parquet         {1000 * res['fill_parquet_seconds']:8.1f} ms for {a.lists} rows")
    print(f"checkpoint           {res['checkpoint_mb']:.2f} MB, load {1000 * res['checkpoint_load_seconds']:.1f} ms")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--users", type=int, default=1411)
    p.add_argument("--items", type=int, default=3327)
    p.add_argument("--density", type=float, default=0.10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="critic training seeds")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--ml100k-dir", default=None, help="a prepared quickstart data folder (default: prepare one)")
    p.add_argument("--lists", type=int, default=1024)
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="400 x 800 synthetic matrix, one seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (default: 1)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_critic.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.users, a.items, a.seeds = 400, 800, a.seeds[:1]

    load0 = os.getloadavg()
    results: dict = {
        "config": {k: v for k, v in vars(a).items() if k not in ("out", "ml100k_dir")},
        "critic_config": CriticConfig().to_dict(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "torch_threads_train": a.threads, "loadavg_at_start": load0,
                    "processor": platform.processor() or platform.machine()},
    }
    m = train_mask = None
    if "synthetic" in a.datasets:
        results["synthetic"], m, train_mask = synthetic(a, a.threads)
    if "ml100k" in a.datasets:
        results["ml100k"] = ml100k(a, a.threads)
    if "kuairec" in a.datasets:
        results["kuairec"] = kuairec(a, a.threads)
    if m is None:
        m = make_synthetic(300, 600, 0.1, seed=0)
        train_mask, _ = m.split(0.1, seed=1)
    results["inference"] = inference(a, m, train_mask)
    results["loadavg_at_end"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
