"""End to end on a CPU: ``recipes/flexrec/run_tiny_cpu.sh`` runs verl's real PPO trainer
(``python -m verl.trainer.main_ppo``: Ray, TransferQueue, FSDP2 engine, agent loop, reward loop)
with FlexRec's reward manager, estimator and ``flexrec_sync`` seam on the MovieLens-1M fixture,
and its checkpoint reloads as a Hugging Face model (resuming after a crash:
``test_e2e_crash_resume.py``).

Runs ~3-6 minutes on 2 cores. Wall time and peak memory of the first run are written to
``tiny_cpu_stats.json`` in the run's folder and printed (see ``pytest -s``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from e2e_tiny_job import step_metrics

from verl_flexrec.cpu.advantage_dump import split_by_item_tokens
from verl_flexrec.cpu.measure import run_measured

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "flexrec" / "run_tiny_cpu.sh"
STEPS = 3
TIMEOUT_S = 900
RUN = "e2e"


def _run(work: Path, log: Path, *overrides: str, skip_setup: bool = False) -> dict:
    env = {**os.environ, "PYTHON": sys.executable, "TINY_CPU_SKIP_SETUP": "1" if skip_setup else "0", "RUN_NAME": RUN}
    with open(log, "w") as out:
        report = run_measured(["bash", str(SCRIPT), str(work), *overrides], timeout=TIMEOUT_S,
                              stdout=out, stderr=out, env=env, cwd=REPO)
    return report





@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny_cpu")
    log = work / "run.log"
    report = _run(work, log)
    (work / "tiny_cpu_stats.json").write_text(json.dumps(report, indent=1))
    print(f"\ntiny CPU job: {json.dumps({k: report[k] for k in ('wall_s', 'peak_tree_rss_mib', 'peak_process_rss_mib')})}")
    text = log.read_text(errors="replace")
    assert report["returncode"] == 0, f"tiny CPU job failed (rc {report['returncode']}):\n{text[-6000:]}"
    return work, text


def test_steps_complete_with_flexrec_metrics_on_console(tiny_run):
    _, text = tiny_run
    steps = step_metrics(text)
    assert set(range(1, STEPS + 1)) <= set(steps), sorted(steps)
    for step in range(1, STEPS + 1):
        metrics = steps[step]
        for name in ("flexrec/valid_ratio", "flexrec/ndcg/mean", "flexrec/item_reward/mean",
                     "flexrec/uncertainty_scale/mean", "flexrec_dump/item_token_adv_abs/mean", "actor/pg_loss"):
            assert name in metrics, f"step {step} lacks {name}"
        assert 0.0 <= float(metrics["flexrec/valid_ratio"]) <= 1.0
    # validation before training (step 0) and at the end, with the FlexRec reward manager's metrics
    for step in (0, STEPS):
        assert any(k.startswith("val-core/flexrec/") for k in steps[step]), steps[step].keys()
        assert any("flexrec_ndcg" in k for k in steps[step])


def test_flexrec_metrics_in_tensorboard(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _ = tiny_run
    event_files = list((work / "tensorboard").rglob("events.out.tfevents.*"))
    assert event_files, "no tensorboard event file"
    acc = EventAccumulator(str(event_files[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("flexrec/valid_ratio")] == list(range(1, STEPS + 1))
    assert any(t.startswith("val-core/flexrec/") for t in tags)
    assert "flexrec_dump/item_token_adv_abs/mean" in tags


def test_item_tokens_carry_item_level_advantages(tiny_run):
    work, _ = tiny_run
    rows = []
    for step in range(1, STEPS + 1):
        path = work / "rollouts" / "advantages" / f"{step}.jsonl"
        assert path.exists(), path
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    valid = [r for r in rows if r["valid"] == 1.0]
    assert valid, "no valid ranking in any step: the warm start did not take"
    item_nonzero = False
    item_level = False
    for row in rows:
        assert row["advantages"], row["key"]
        item_adv, other_adv = split_by_item_tokens(row)
        if row["valid"] != 1.0:
            # an invalid ranking has no item tokens: one sequence-level advantage on every token
            assert not row["item_token_spans"]
            assert max(other_adv) - min(other_adv) < 1e-5
            continue
        assert len(row["item_token_spans"]) == 10  # 10 candidates, each id mapped to its tokens
        item_nonzero |= any(abs(a) > 1e-6 for a in item_adv)
        # GRPO would give every token of a response the same value; FlexRec gives item tokens
        # their position's item advantage
        item_level |= max(item_adv) - min(item_adv) > 1e-4
    assert item_nonzero, "item advantages are zero on every item token"
    assert item_level, "item tokens of every valid rollout share one advantage (no item-level credit)"


def _sequence_advantage(row: dict) -> float | None:
    """The advantage of a response token that spells no ranked id (None if every token does)."""
    _, other = split_by_item_tokens(row)
    return other[0] if other else None


def test_dumped_advantages_agree_with_the_logged_metrics_and_grpo_normalisation(tiny_run):
    """Per step, from the dump alone: the console's valid ratio is the share of valid rollouts, and
    within each prompt group the sequence advantages are GRPO-normalised: A = (r - mean) / (s + eps),
    so mean 0 and unbiased std s / (s + 1e-6) (1 less a hair when the rewards are close: the
    first run of this test saw 0.9984 in a group whose rewards differ by ~1e-3), or all 0 when the
    group's rewards are equal; the fixture is fully observed, so every uncertainty scale is 1."""
    work, text = tiny_run
    steps = step_metrics(text)
    for step in range(1, STEPS + 1):
        path = work / "rollouts" / "advantages" / f"{step}.jsonl"
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if not r["key"].startswith("pad")]
        valid = sum(r["valid"] == 1.0 for r in rows) / len(rows)
        assert float(steps[step]["flexrec/valid_ratio"]) == pytest.approx(valid, abs=1e-6), step
        groups: dict[str, list[float]] = {}
        for row in rows:
            a = _sequence_advantage(row)
            if a is not None:
                groups.setdefault(row["key"].rsplit("_", 2)[0], []).append(a)
        assert groups
        for uid, adv in groups.items():
            t = torch.tensor(adv, dtype=torch.float64)
            if len(adv) < 2 or t.abs().max() < 1e-6:
                continue
            assert abs(float(t.mean())) < 1e-4, (step, uid, adv)
            assert 0.95 < float(t.std()) <= 1.0 + 1e-6, (step, uid, adv)  # raw centred rewards: std ~0.1


def test_checkpoint_reloads(tiny_run):
    from transformers import AutoModelForCausalLM

    work, _ = tiny_run
    ckpt = work / "checkpoints" / RUN / f"global_step_{STEPS}"
    assert (work / "checkpoints" / RUN / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)
    trained = AutoModelForCausalLM.from_pretrained(ckpt / "actor" / "huggingface")
    start = AutoModelForCausalLM.from_pretrained(work / "model")
    t, s = trained.state_dict(), start.state_dict()
    assert set(t) == set(s)
    assert any(not torch.equal(t[k], s[k]) for k in s), "the checkpoint equals the starting model"

