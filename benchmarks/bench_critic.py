"""Benchmark the uncertainty critic.

    python benchmarks/bench_critic.py                 # KuaiRec-small size: 1,411 x 3,327, 10 % observed
    python benchmarks/bench_critic.py --quick         # 300 x 600, for a smoke run

Measures, on a synthetic matrix with known heteroscedastic noise:

- critic training time (default config: 5-member ensemble, early stopping) and its held-out
  NLL / RMSE / 50-90 % coverage against the constant-mean predictor;
- User-KNN / Item-KNN fit time and the same metrics;
- inference for 1,024 lists x 30 candidates: one batched ``predict`` call, 1,024 per-list calls
  (the reward-loop live path), ``CriticPredictor.fill`` on 1,024 ground-truth records, and
  ``fill_parquet`` on a 1,024-row parquet.

Prints a table and writes JSON to ``benchmarks/results/bench_critic.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from verl_flexrec.critic import CriticConfig, CriticPredictor, train_critic  # noqa: E402
from verl_flexrec.critic.evaluate import gaussian_metrics  # noqa: E402
from verl_flexrec.critic.fill import fill_parquet  # noqa: E402
from verl_flexrec.critic.knn import KNNFiller  # noqa: E402
from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet  # noqa: E402
from verl_flexrec.paths import portable_path  # noqa: E402
from verl_flexrec.schema import GroundTruth  # noqa: E402


def timed(fn, repeat: int = 1):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1411)
    p.add_argument("--items", type=int, default=3327)
    p.add_argument("--density", type=float, default=0.10)
    p.add_argument("--ensemble", type=int, default=CriticConfig.ensemble)
    p.add_argument("--epochs", type=int, default=CriticConfig.epochs)
    p.add_argument("--lists", type=int, default=1024)
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="300 x 600 matrix, 10 epochs")
    p.add_argument("--skip-knn", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_critic.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.users, a.items, a.epochs = 300, 600, 10

    load0 = os.getloadavg()
    m = make_synthetic(a.users, a.items, a.density, cold_user_frac=0.02, cold_item_frac=0.02, seed=a.seed)
    train_mask, test_mask = m.split(0.1, seed=a.seed + 1)
    train, test = m.interactions(train_mask), m.interactions(test_mask)
    density = len(m.obs_values) / (a.users * a.items)
    threads = a.threads or torch.get_num_threads()
    print(
        f"matrix {a.users} x {a.items}, {len(m.obs_values)} observed ({density:.1%}); train {len(train)}, "
        f"held-out test {len(test)}; train threads {threads}, load {load0[0]:.2f}"
    )

    cfg = CriticConfig(ensemble=a.ensemble, epochs=a.epochs, seed=a.seed)
    pred, (t_train,) = timed(lambda: train_critic(train, cfg, progress=True, num_threads=a.threads))
    results: dict = {
        "config": {**vars(a), "out": portable_path(a.out, REPO), "critic": cfg.to_dict()},  # no absolute path
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads_default": torch.get_num_threads(),
            "torch_threads_train": a.threads or torch.get_num_threads(),
            "loadavg_at_start": load0,
            "processor": platform.processor() or platform.machine(),
        },
        "data": {"observed": int(len(m.obs_values)), "train": len(train), "test": len(test)},
        "train": {
            "seconds": t_train,
            "epochs_run": pred.meta["epochs_run"],
            "best_epoch": pred.meta["best_epoch"],
            "seconds_per_epoch": t_train / max(pred.meta["epochs_run"], 1),
            "var_scale": pred.var_scale,
        },
    }

    mean, var = pred.predict(test.user_ids, test.item_ids)
    y = test.interest
    quality = {
        "critic": gaussian_metrics(y, mean, var),
        "constant": gaussian_metrics(y, np.full(len(y), pred.baseline["mean"]), np.full(len(y), pred.baseline["var"])),
        "oracle_truth": gaussian_metrics(
            y,
            m.true_mean(m.obs_users[test_mask], m.obs_items[test_mask]),
            m.true_var(m.obs_users[test_mask], m.obs_items[test_mask]),
        ),
    }
    if not a.skip_knn:
        for kind in ("user", "item"):
            t = time.perf_counter()
            f = KNNFiller(kind, k=50).fit(train)
            t_fit = time.perf_counter() - t
            km, kv = f.predict(test.user_ids, test.item_ids)
            t_pred = time.perf_counter() - t - t_fit
            quality[f"{kind}_knn"] = {**gaussian_metrics(y, km, kv), "fit_seconds": t_fit, "predict_seconds": t_pred}
    results["quality_heldout"] = quality

    # -- inference: 1,024 lists x 30 candidates -----------------------------------------------
    rng = np.random.default_rng(a.seed)
    lists_u = rng.integers(0, a.users, a.lists)
    lists_i = np.stack([rng.choice(a.items, a.candidates, replace=False) for _ in range(a.lists)])
    uid = np.repeat(m.user_id(lists_u), a.candidates)
    iid = m.item_id(lists_i.ravel())
    pred.predict(uid[:10], iid[:10])  # warm-up
    _, t_batch = timed(lambda: pred.predict(uid, iid), repeat=5)
    per_list = []
    for r in range(a.lists):
        t = time.perf_counter()
        pred.predict(str(m.user_id(lists_u[r])), m.item_id(lists_i[r]).tolist())
        per_list.append(time.perf_counter() - t)
    rows = make_rows(m, train_mask, n_candidates=a.candidates, users=lists_u.tolist(), seed=a.seed)
    gts = [GroundTruth.from_any(r["reward_model"]["ground_truth"]) for r in rows]
    _, t_fill_records = timed(lambda: [pred.fill(g) for g in gts], repeat=2)
    with tempfile.TemporaryDirectory() as d:
        src = write_parquet(rows, Path(d) / "lists.parquet")
        ckpt = pred.save(Path(d) / "critic.pt")
        _, (t_load,) = timed(lambda: CriticPredictor.load(ckpt))
        size_mb = ckpt.stat().st_size / 2**20
        stats, (t_fill_parquet,) = timed(lambda: fill_parquet(src, Path(d) / "filled.parquet", pred))
    n_pairs = a.lists * a.candidates
    results["inference"] = {
        "lists": a.lists,
        "candidates": a.candidates,
        "batched_predict_seconds_best": min(t_batch),
        "batched_predict_pairs_per_second": n_pairs / min(t_batch),
        "per_list_predict_ms_median": 1000 * statistics.median(per_list),
        "per_list_predict_ms_p99": 1000 * float(np.quantile(per_list, 0.99)),
        "per_list_predict_seconds_total": float(sum(per_list)),
        "fill_records_seconds_best": min(t_fill_records),
        "fill_parquet_seconds": t_fill_parquet,
        "fill_parquet_filled": stats["filled"],
        "checkpoint_load_seconds": t_load,
        "checkpoint_mb": size_mb,
    }
    results["loadavg_at_end"] = os.getloadavg()

    # -- table ----------------------------------------------------------------------------------
    tr = results["train"]
    print("\n== training (CPU) ==")
    print(
        f"critic ensemble={a.ensemble}: {tr['seconds']:.1f} s total, {tr['epochs_run']} epochs "
        f"({tr['seconds_per_epoch']:.2f} s/epoch), best epoch {tr['best_epoch']}, var scale {tr['var_scale']:.3f}"
    )
    print("\n== held-out quality ==")
    print(f"{'filler':<14}{'NLL':>8}{'RMSE':>8}{'cov50':>8}{'cov90':>8}{'fit s':>8}")
    for name, q in quality.items():
        fit = q.get("fit_seconds", tr["seconds"] if name == "critic" else float("nan"))
        print(f"{name:<14}{q['nll']:>8.3f}{q['rmse']:>8.3f}{q['coverage_50']:>8.3f}{q['coverage_90']:>8.3f}{fit:>8.2f}")
    inf = results["inference"]
    print(f"\n== inference: {a.lists} lists x {a.candidates} candidates ==")
    print(
        f"one batched predict     {1000 * inf['batched_predict_seconds_best']:9.1f} ms  "
        f"({inf['batched_predict_pairs_per_second']:,.0f} pairs/s)"
    )
    print(
        f"per-list predict        {inf['per_list_predict_ms_median']:9.3f} ms median, "
        f"{inf['per_list_predict_ms_p99']:.3f} ms p99, {inf['per_list_predict_seconds_total']:.2f} s total"
    )
    print(f"CriticPredictor.fill    {1000 * inf['fill_records_seconds_best']:9.1f} ms for {a.lists} records")
    print(
        f"fill_parquet            {1000 * inf['fill_parquet_seconds']:9.1f} ms for {a.lists} rows "
        f"({inf['fill_parquet_filled']} filled)"
    )
    print(f"checkpoint              {inf['checkpoint_mb']:.2f} MB, load {1000 * inf['checkpoint_load_seconds']:.1f} ms")

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
