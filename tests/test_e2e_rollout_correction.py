"""End to end on a CPU with verl's rollout correction switched on: the tiny CPU job
(``python -m verl_flexrec.cpu.tiny_job``: verl's real PPO trainer, Ray, TransferQueue, FSDP2,
agent loop, reward loop) with ``actor_rollout_ref.rollout.calculate_log_probs=true``,
``algorithm.rollout_correction.rollout_rs=token_k1`` and the tight threshold ``0.9999_1.0001``.

verl's rejection sampling then zeroes the rejected tokens in ``response_mask`` before FlexRec's
estimator runs. Before the hand-off aligned rows by TransferQueue's ``response_len`` tag, this run
stopped in step 1 with ``row 0: verl's estimator input has uid=... with 0 response tokens``
(issue 19). Here the steps complete, verl's ``rollout_corr/*`` metrics are logged, the threshold
really rejects tokens, and FlexRec's metrics and per-token advantages are still there.

Runs ~3-5 minutes on 2 cores (warm start included); run it under ``flock /tmp/ray.lock`` (one Ray
cluster at a time).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from e2e_tiny_job import prepare, step_metrics

from verl_flexrec.cpu.measure import run_measured

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
STEPS = 2
TIMEOUT_S = 900  # the trainer; the warm start has its own
SETUP_TIMEOUT_S = 1800
SFT_STEPS = 300  # the tiny job's default: valid rankings, so item tokens meet rejected ones
OVERRIDES = (
    "actor_rollout_ref.rollout.calculate_log_probs=true",
    "algorithm.rollout_correction.rollout_rs=token_k1",
    "algorithm.rollout_correction.rollout_rs_threshold=0.9999_1.0001",
    f"trainer.total_training_steps={STEPS}",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
)





@pytest.fixture(scope="module")
def corrected_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny_rollout_corr")
    prepare(work, SFT_STEPS, "FLEXREC_E2E_PREPARED_SFT300", SETUP_TIMEOUT_S)
    log = work / "run.log"
    env = {**os.environ, "TINY_CPU_SKIP_SETUP": "1"}
    with open(log, "w") as out:
        report = run_measured([sys.executable, "-m", "verl_flexrec.cpu.tiny_job", str(work), *OVERRIDES],
                              timeout=TIMEOUT_S, stdout=out, stderr=out, env=env, cwd=REPO)
    text = log.read_text(errors="replace")
    assert report["returncode"] == 0, f"tiny CPU job with rollout_rs failed (rc {report['returncode']}):\n{text[-6000:]}"
    return work, text


def test_steps_complete_with_rollout_correction_metrics(corrected_run):
    _, text = corrected_run
    assert "FlexRecBatchMismatch" not in text
    steps = step_metrics(text)
    assert set(range(1, STEPS + 1)) <= set(steps), sorted(steps)
    masked = []
    for step in range(1, STEPS + 1):
        metrics = steps[step]
        corr = sorted(k for k in metrics if k.startswith("rollout_corr/"))
        assert "rollout_corr/rollout_rs_masked_fraction" in corr, f"step {step}: {corr}"
        assert "rollout_corr/rollout_rs_token_k1_masked_fraction" in corr, f"step {step}: {corr}"
        for name in ("flexrec/valid_ratio", "flexrec/ndcg/mean", "flexrec_dump/item_token_adv_abs/mean", "actor/pg_loss"):
            assert name in metrics, f"step {step} lacks {name}"
            assert math.isfinite(float(metrics[name])), f"step {step}: {name} is {metrics[name]}"
        fraction = float(metrics["rollout_corr/rollout_rs_masked_fraction"])
        assert 0.0 <= fraction <= 1.0
        masked.append(fraction)
    # the tight threshold must actually reject tokens, or the run did not exercise the corrected mask
    assert max(masked) > 0.0, masked


def test_every_step_dumps_finite_advantages_with_item_spans(corrected_run):
    """Per-token advantages over the corrected ``response_mask`` are dumped every step, finite, and
    valid rankings still carry their item-token spans."""
    work, _ = corrected_run
    rows = []
    for step in range(1, STEPS + 1):
        path = work / "rollouts" / "advantages" / f"{step}.jsonl"
        assert path.exists(), path
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    assert rows
    for row in rows:
        assert all(math.isfinite(a) for a in row["advantages"]), row["key"]
    valid = [r for r in rows if r["valid"] == 1.0]
    assert valid, "no valid ranking in any step: the warm start did not take"
    assert all(len(r["item_token_spans"]) == 10 for r in valid)
