"""``benchmarks/cpu_learning.py --smoke``: both arms through verl's real trainer (4 steps each), the
validation curves read back from verl's file logger, the floor and ceiling on the same rows.

A few minutes on 2 cores (two trainer launches); learning itself is the benchmark's job, not this
test's. Cross-checks what could silently go wrong: the curves are verl's (the console log of each
run prints the same numbers), both arms start from the same model, the references are the
validation rows' own, and the results file holds no machine paths.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("cpu_learning")
    out = work / "results" / "cpu_learning.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_learning.py"), "--smoke", "--work-dir",
                           str(work), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                          check=False)
    assert proc.returncode == 0, f"cpu_learning.py --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return work, out, json.loads(out.read_text()), proc.stdout


def test_each_arm_has_verl_validation_curves(smoke):
    work, _, res, _ = smoke
    assert set(res["runs"]) == {"flexrec", "grpo"}
    assert res["seeds_finished"] == 1
    for arm, seeds in res["runs"].items():
        assert len(seeds) == 1 and seeds[0]["seed"] == 0
        assert seeds[0]["wall_s"] > 0 and all(t > 0 for t in seeds[0]["train"]["step_s"])
        val = seeds[0]["val"]
        assert val["step"] == [0, 2, 4]
        for key in ("ndcg@5", "valid_ratio"):
            assert len(val[key]) == 3 and all(0.0 <= x <= 1.0 for x in val[key])
        assert seeds[0]["train"]["step"] == [1, 2, 3, 4]
        # the same numbers verl's console logger printed for this run
        console = (work / f"{arm}_seed0" / "train.log").read_text(errors="replace")
        n = res["settings"]["val_n"]
        printed = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
            rf"step:(\d+) - .*?val-aux/flexrec/genre_task/ndcg@5/mean@{n}:(?:np\.float64\()?([0-9.eE+-]+)", console)}
        assert printed == pytest.approx(dict(zip(val["step"], val["ndcg@5"])))
    # both arms start from the same warm-started model, and step 0's validation samples with the same seed
    assert res["runs"]["flexrec"][0]["val"]["ndcg@5"][0] == res["runs"]["grpo"][0]["val"]["ndcg@5"][0]


def test_floor_and_ceiling_are_the_validation_rows_own(smoke):
    work, _, res, _ = smoke
    rows = pq.read_table(work / "shared" / "data" / "test.parquet").to_pylist()
    d = 1.0 / np.log2(np.arange(2, 12))
    floors = []
    for r in rows:
        g = 2.0 ** np.asarray(r["reward_model"]["ground_truth"]["gains"]) - 1.0  # exponential gain
        floors.append(g.mean() * d[:5].sum() / (np.sort(g)[::-1][:5] * d[:5]).sum())
    ref = res["references"]
    assert ref["rows"] == len(rows) == res["settings"]["val_rows"]
    assert ref["exponential"]["random_floor"] == pytest.approx(np.mean(floors))
    assert ref["exponential"]["oracle_ceiling"] == pytest.approx(1.0)
    assert ref["exponential"]["random_floor"] < ref["linear"]["random_floor"] < 1.0


def test_results_are_complete_finite_and_hold_no_machine_paths(smoke):
    work, out, res, stdout = smoke
    text = out.read_text()
    assert str(work) not in text and "/tmp/" not in text and str(Path.home()) not in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = res["summary"]
    assert set(summary["arms"]) == {"flexrec", "grpo"} and "verdict" in summary["flexrec_minus_grpo"]
    for arm in summary["arms"].values():
        assert all(math.isfinite(x) for x in arm["ndcg@5"]["mean"])
        assert arm["training_rollouts"]["window_steps"] == res["settings"]["steps"]
    assert "random floor (expected)" in stdout and "oracle ceiling" in stdout and "exponential gain" in stdout


def test_collect_rebuilds_the_same_summary_from_the_run_folders(smoke, tmp_path):
    work, _, res, _ = smoke
    out = tmp_path / "collected.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_learning.py"), "--smoke", "--collect",
                           "--work-dir", str(work), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["summary"] == res["summary"] and again["references"] == res["references"]
    for arm in res["runs"]:
        assert [r["val"] for r in again["runs"][arm]] == [r["val"] for r in res["runs"][arm]]
    assert again["total_wall_s"] is None  # a summary of finished runs claims no wall time
