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

pytestmark = pytest.mark.slow  # benchmark scripts in subprocesses (~20 s of CPU)

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


def _strings(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif isinstance(x, str):
        yield x


def test_learning_dynamics_smoke_has_every_setting_arm_and_statistic(smoke_runs):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from learning_dynamics import SETTINGS

    res, log, out = smoke_runs["learning_dynamics"]
    assert set(res["settings"]) == set(SETTINGS)
    seeds = res["args"]["seeds"]
    assert seeds >= 2
    for name, setting in SETTINGS.items():
        summary = res["settings"][name]
        assert set(summary["arms"]) == {a.name for a in setting.arms}
        base = summary["baseline"]
        step0 = summary["arms"][base]["curves"]["ndcg@5"]
        for arm, e in summary["arms"].items():
            assert e["seeds"] == list(range(seeds))
            n = len(e["step"])
            assert e["step"][0] == 0 and e["step"][-1] == res["args"]["steps"] and n >= 3
            for metric in ("ndcg@5", "recall@5"):
                curves = e["curves"][metric]
                assert len(curves) == seeds and all(len(c) == n for c in curves)
                assert all(0.0 <= v <= 1.0 for c in curves for v in c), (name, arm, metric)
            # every arm of a seed starts from the same seeded policy: identical step-0 evaluations
            assert [c[0] for c in e["curves"]["ndcg@5"]] == [c[0] for c in step0]
            for stat in ("auc", "steps_to_threshold", "final_ndcg@5"):
                assert {"mean", "ci95", "n"} <= set(e[stat]), (name, arm, stat)
            assert len(e["auc"]["per_seed"]) == seeds and 0.0 <= e["collapse_rate"] <= 1.0
            if arm != base:
                assert {"auc", "final_ndcg@5", "steps_to_threshold"} == set(e[f"vs_{base}"])
            filled = setting.sparse and summary["arm_configs"][arm]["filler"] != "oracle"
            assert ("c_vs_abs_error" in e) == filled
            if filled:
                assert len(e["c_vs_abs_error"]["within_group"]["per_seed"]) == seeds
        if setting.sparse:
            assert {"critic", "user_knn"} <= set(summary["filler_quality"])
    assert _finite(res) and res["wall_s"] > 0  # undefined values are null, never NaN
    assert not [s for s in _strings(res) if s.startswith("/")], "results must hold no absolute paths"
    assert (out / "learning_dynamics.png").stat().st_size > 10_000
    assert "[dense]" in log and "[sparse]" in log


@pytest.mark.network  # SmolLM2's and Qwen2's vocabularies come from their PyPI wheels (cached)
def test_token_offsets_smoke_is_identical_and_faster_than_prefix_decoding(tmp_path):
    """benchmarks/bench_token_offsets.py --smoke: windowed offsets equal prefix decoding (the script
    asserts it) on both real vocabularies, with finite timings; the ratio is reported, not asserted."""
    out = tmp_path / "token_offsets.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_token_offsets.py"), "--smoke", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["vocabularies"]) == {"smollm2", "qwen2"} and _finite(res)
    for rows in res["vocabularies"].values():
        for row in rows.values():
            assert row["identical"] and row["tokens"] == 250 and row["speedup_cpu_min"] > 0
    assert str(ROOT) not in out.read_text()
