"""Memory of the live critic in one reward-loop worker: serving form vs the full checkpoint.

    python benchmarks/bench_critic_serving.py                      # KuaiRec size (~1 min)
    python benchmarks/bench_critic_serving.py --users 1000000 --items 500000 --points 50000000
    python benchmarks/bench_critic_serving.py --smoke              # seconds

A reward-loop worker serving ``algorithm.flexrec.reward.critic_path`` holds one critic per
process (``verl_flexrec.critic.predictor.get_predictor``). Its size is set by the id vocabularies
and per-user / per-item statistics; the full checkpoint also carries every training pair (one
int64 each) and the training history, which scoring never reads and the serving form leaves out.

The critic files are built at the requested size from a real trained critic (a small synthetic
one: its network, config and feature settings) by widening the vocabularies and the per-user /
per-item arrays, and ``--points`` random training pairs for the full form: the network does not
depend on the number of users or items, so this is the file ``critic train`` writes at that size
up to the values. Each measurement runs in a fresh Python process that has imported torch and the
predictor (what a reward worker has anyway): resident memory (VmRSS) before, after the load and
after scoring 64 lists of 30 candidates, and the peak during the load (VmHWM).

Prints a table; writes ``benchmarks/results/critic_serving.json`` (``--smoke``: a temporary file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KUAIREC = {"users": 7_176, "items": 10_728, "points": 11_000_000}  # KuaiRec big matrix, its training pairs

MEASURE = r"""
import json, sys, numpy as np
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out
import torch
from verl_flexrec.critic.predictor import CriticPredictor, get_predictor
path, how = sys.argv[1], sys.argv[2]
before = status()
critic = get_predictor(path) if how == "get_predictor" else CriticPredictor.load(path)
loaded = status()
rng = np.random.default_rng(0)
users = critic.users.values
items = critic.items.values
for _ in range(64):
    critic.predict(users[int(rng.integers(len(users)))], [items[int(j)] for j in rng.integers(len(items), size=30)])
scored = status()
print(json.dumps({"rss_before": before["VmRSS"], "rss_loaded": loaded["VmRSS"], "rss_scored": scored["VmRSS"],
                  "peak_during_load": loaded["VmHWM"], "peak_before": before["VmHWM"]}))
"""


def build_critic(path: Path, n_users: int, n_items: int, n_points: int, seed: int = 0) -> Path:
    """A critic file of the given size from a real small critic (see the module docstring)."""
    import torch

    from verl_flexrec.critic import CriticConfig, load_interactions, train_critic
    from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet

    with tempfile.TemporaryDirectory() as tmp:
        matrix = make_synthetic(n_users=40, n_items=60, density=0.3, seed=seed)
        train = write_parquet(make_rows(matrix, n_candidates=10), Path(tmp) / "train.parquet")
        small = train_critic(load_interactions(train), CriticConfig(epochs=1, ensemble=5), progress=False)
    state = small.state(serving=False)
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(n_users)]
    items = [f"i{i}" for i in range(n_items)]
    state["vocab"].update(users=users, items=items, catalog=items)
    width = state["catalog_categories"].shape[1]
    n_cat = len(state["vocab"]["categories"])
    state["catalog_categories"] = torch.from_numpy(rng.integers(0, n_cat + 1, size=(n_items + 1, width)).astype(np.int64))
    for name, array in list(state["features"]["arrays"].items()):
        rows = n_users + 1 if name.endswith("_u") or name in ("user_bias", "mf_p") else n_items + 1
        shape = (rows, *array.shape[1:])
        state["features"]["arrays"][name] = torch.from_numpy(rng.random(shape).astype(array.numpy().dtype))
    state["seen_pairs"] = torch.from_numpy(np.sort(rng.integers(0, (n_users + 1) * (n_items + 1), size=n_points)))
    torch.save(state, path)
    return path


def measure(path: Path, how: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), how], capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"measurement failed:\n{out.stderr[-3000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    return {
        "file_mib": path.stat().st_size / mib,
        "loaded_mib": (m["rss_loaded"] - m["rss_before"]) / mib,
        "after_scoring_mib": (m["rss_scored"] - m["rss_before"]) / mib,
        "peak_during_load_mib": (m["peak_during_load"] - m["rss_before"]) / mib,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=KUAIREC["users"])
    p.add_argument("--items", type=int, default=KUAIREC["items"])
    p.add_argument("--points", type=int, default=KUAIREC["points"], help="training pairs in the full checkpoint")
    p.add_argument("--smoke", action="store_true", help="a small critic (1k users, 2k items, 100k pairs)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/critic_serving.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.users, args.items, args.points = 1_000, 2_000, 100_000
    from verl_flexrec.critic.predictor import write_serving_file

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        full = build_critic(Path(tmp) / "critic.pt", args.users, args.items, args.points)
        serving = write_serving_file(full, Path(tmp) / "critic.serving.pt")
        rows = {
            "full file, CriticPredictor.load (before issue 19)": measure(full, "load"),
            "full file, get_predictor (serving form in memory)": measure(full, "get_predictor"),
            "serving file, get_predictor": measure(serving, "get_predictor"),
        }
    res = {"users": args.users, "items": args.items, "training_pairs": args.points, "smoke": args.smoke, "rows": rows,
           "wall_s": time.perf_counter() - t0,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}}
    print(f"\ncritic of {args.users:,} users x {args.items:,} items, {args.points:,} training pairs; MiB over a process "
          "that imported torch and the predictor")
    print(f"{'':52} {'file':>8} {'loaded':>8} {'scored':>8} {'peak':>8}")
    for name, r in rows.items():
        print(f"{name:52} {r['file_mib']:8.1f} {r['loaded_mib']:8.1f} {r['after_scoring_mib']:8.1f} "
              f"{r['peak_during_load_mib']:8.1f}")
    out = args.out or (Path(tempfile.gettempdir()) / "critic_serving.json" if args.smoke else RESULTS / "critic_serving.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"\nwall time {res['wall_s']:.1f} s; wrote {out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
