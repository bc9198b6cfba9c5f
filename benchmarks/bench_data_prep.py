"""Benchmark data prep on full-size synthetic inputs: preparation time and peak RSS.

The input is generated in the official file format by ``tests/fixtures_raw.py`` (no real data),
then the dataset script runs in a child process exactly as a user runs it; the report gives the
child's wall time, its peak resident memory (``ru_maxrss``) and the rows it wrote.

Usage (from the repository root)::

    # ML-1M size: 6,040 users, 3,706 movies, ~1,000,209 ratings; target <= 60 s on 2 cores
    python benchmarks/bench_data_prep.py
    # KuaiRec size: 1,411 x 3,327 small matrix + 12.5 M-row big matrix; target <= 4 GB peak RSS
    python benchmarks/bench_data_prep.py --dataset kuairec
    # any extra flags go to the dataset script
    python benchmarks/bench_data_prep.py -- --needs all --sparse-frac 0.1
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import pyarrow.parquet as pq  # noqa: E402

from fixtures_raw import write_kuairec, write_movielens  # noqa: E402

SIZES = {
    "movielens": dict(n_users=6040, n_movies=3706, n_ratings=1_000_209),
    "kuairec": dict(n_items=10_728, small_items=3327, small_users=1411, big_users=7176, big_per_user=1746,
                    big_first_item=0, days=62),
}


def generate(dataset: str, raw: Path) -> float:
    started = time.perf_counter()
    if dataset == "movielens":
        write_movielens(raw, **SIZES[dataset])
    else:
        write_kuairec(raw, **SIZES[dataset])
    return time.perf_counter() - started


def prepare(dataset: str, raw: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(REPO / "data_prep" / f"{dataset}.py"), "--raw-dir", str(raw), "--out-dir", str(out),
           "--no-progress", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = {s: pq.read_metadata(out / f"{s}.parquet").num_rows for s in ("train", "test")}
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(max(peak_kib, before) / 1024, 1),
            "rows": rows, "rows_per_second": round(sum(rows.values()) / seconds, 1), "log": result.stderr.strip()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(SIZES), default="movielens")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the generated input and output here")
    p.add_argument("extra", nargs="*", help="flags passed to the dataset script (after --)")
    args = p.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="flexrec-bench-"))
    try:
        raw = work / "raw"
        gen_seconds = generate(args.dataset, raw) if not raw.exists() else 0.0
        report = {"dataset": args.dataset, "input": SIZES[args.dataset], "generate_seconds": round(gen_seconds, 1),
                  **prepare(args.dataset, raw, work / "out", args.extra)}
        print(json.dumps(report, indent=2))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
