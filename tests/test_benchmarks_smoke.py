"""Each benchmark script's ``--smoke`` run, in a subprocess: it finishes and writes sane results.

Both scripts start together (they are independent processes) so the module costs about one
import of verl plus a few seconds. Timings are not asserted; exactness, completeness and
finiteness are.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two benchmark scripts in subprocesses (~20 s of CPU)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"cost": "benchmarks/bench_cost.py", "learning_dynamics": "benchmarks/learning_dynamics.py"}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    procs = {}
    for name, script in SCRIPTS.items():
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / script), "--smoke", "--out", str(out / f"{name}.json")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    results = {}
    for name, p in procs.items():
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"{SCRIPTS[name]} --smoke failed:\n{log[-4000:]}"
        results[name] = (json.loads((out / f"{name}.json").read_text()), log, out)
    return results


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return True


def test_cost_smoke_is_exact_complete_and_finite(smoke_runs):
    res, log, out = smoke_runs["cost"]
    s = res["swap"]
    assert s["max_abs_err_causal"] <= 1e-6 and s["max_abs_err_noncausal"] <= 1e-6 and s["max_abs_err_pairwise"] <= 1e-6
    assert s["package_s"] > 0 and s["naive_s"] > s["package_s"]  # the literal loop is never faster
    e = res["estimator"]
    assert e["standard_args_equal_grpo"] and e["grpo_vectorized_close_to_grpo"] and e["collate_matches_direct_inputs"]
    assert e["trainer_path_equals_direct_items"] and e["dense_positions_equal_item_tokens"]
    for name in ("grpo", "items", "items_dense", "collate", "trainer_path"):  # every ratio, on every statistic
        assert set(e["vs_grpo_vectorized"][name]) == {"cpu_min", "cpu_median", "wall_median"}
    assert res["reward_manager"]["flexrec_output_valid"] and set(res["reward_manager"]["flexrec_vs_naive"]) == {"cpu_min", "cpu_median", "wall_median"}
    assert [r["K"] for r in res["scaling"]["swap_vs_K"]] == [10, 30, 100]
    assert set(res["targets_met"]) == {
        "swap_speedup>=2000x",
        "swap_exact<=1e-6",
        "trainer_path<=3x grpo_vectorized",
        "reward_manager<=2x naive",
    }
    assert _finite({k: v for k, v in res.items() if k != "targets"})
    assert (out / "cost_scaling.png").stat().st_size > 10_000
    assert "1. swap rewards" in log and "targets (CPU min):" in log


def test_learning_dynamics_smoke_has_every_method_and_sane_curves(smoke_runs):
    res, log, out = smoke_runs["learning_dynamics"]
    expected = {
        "dense": {"grpo", "rank_grpo", "flexrec_causal", "flexrec_noncausal", "flexrec_independent"},
        "sparse": {"grpo", "flexrec_unc", "flexrec_raw", "flexrec_user_knn", "flexrec_item_knn"},
    }
    assert set(res["settings"]) == set(expected)
    seeds = res["args"]["seeds"]
    assert seeds >= 2
    for setting, names in expected.items():
        summary = res["settings"][setting]
        assert set(summary["methods"]) == names
        for name, m in summary["methods"].items():
            n = len(m["step"])
            assert m["step"][0] == 0 and m["step"][-1] == res["args"]["steps"]
            for metric in ("ndcg@5", "recall@5"):
                per_seed = m[metric]["per_seed"]
                assert len(per_seed) == seeds and all(len(c) == n for c in per_seed)
                assert all(0.0 <= v <= 1.0 for c in per_seed for v in c), (setting, name, metric)
                assert all(ci >= 0 for ci in m[metric]["ci95"])
            # every method starts from the same seeded policy, so the step-0 evaluation agrees
            assert m["ndcg@5"]["per_seed"][0][0] == summary["methods"]["grpo"]["ndcg@5"]["per_seed"][0][0]
        assert summary["methods"]["grpo"]["steps_to_reach_grpo_final"] is not None
    assert _finite(res["settings"])
    assert (out / "learning_dynamics.png").stat().st_size > 10_000
    assert "[dense]" in log and "[sparse]" in log
