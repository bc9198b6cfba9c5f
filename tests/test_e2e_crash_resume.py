"""A run killed mid-way resumes from its last checkpoint (verl's real trainer on a CPU).

The tiny CPU job (``python -m verl_flexrec.cpu.tiny_job``) saves every step; once the step-2
checkpoint is complete its whole process tree gets SIGKILL (no clean exit: Ray, the trainer and
its workers die mid-step 3, possibly mid-save). A half-written ``global_step_3`` is left in place
(made so if the kill did not leave one). The same command again (same ``RUN_NAME``,
``resume_mode=auto``) must skip it, say so, resume from global_step_2 (not from step 0) and finish
step 3, with finite ``flexrec/*`` metrics logged once per resumed step. A damaged checkpoint the
tracker points to (truncated shard, missing folder, bad tracker) stops the run with an error
naming the file: ``tests/test_checkpoint_check.py`` checks that without Ray, on real
``torch.save`` files; the resumed run here shows the check sits in verl's resume path.

Wall time on 2 cores: 150 s measured (setup with a 30-step warm start and 2 steps until the kill:
97 s; the resumed run: 53 s); several minutes more when other jobs share the machine.
Run under ``flock /tmp/ray.lock`` with the other Ray tests.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = "crash_test"
STEPS = 3
KILL_AFTER = 2
# short: the metrics, not the policy's quality, are under test here
COMMON = ["trainer.save_freq=1", f"trainer.total_training_steps={STEPS}", "trainer.val_before_train=false",
          "trainer.test_freq=-1", "trainer.logger=[console]"]
TIMEOUT_S = 900


def _env(**extra) -> dict:
    return {**os.environ, "RUN_NAME": RUN, "TINY_CPU_SFT_STEPS": "30", **extra}


def _command(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "verl_flexrec.cpu.tiny_job", str(work), *COMMON, *extra]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the job's process group and every descendant (Ray's raylet/GCS/workers start their own)."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(tree, timeout=30)


def _run(work: Path, log: Path, *extra: str, env: dict | None = None, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(work, *extra), stdout=out, stderr=subprocess.STDOUT, env=env or _env(),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -9
        finally:
            _kill_tree(proc)  # a Ray process left behind would hold CPUs and memory
    return code, log.read_text(errors="replace")


def _step_metrics(text: str) -> dict[int, list[dict[str, str]]]:
    """verl's console lines ``step:N - name:value - ...`` -> {N: [one dict per line logged for N]}."""
    steps: dict[int, list[dict[str, str]]] = {}
    for match in re.finditer(r"step:(\d+) - (.*)", text):
        fields = dict(part.split(":", 1) for part in match.group(2).split(" - ") if ":" in part)
        steps.setdefault(int(match.group(1)), []).append(fields)
    return steps


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """The job killed after its step-2 checkpoint; returns (work dir, checkpoint folder, first log)."""
    work = tmp_path_factory.mktemp("crash")
    ckpt = work / "checkpoints" / RUN
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    log = work / "first.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(work), stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        try:
            while proc.poll() is None and time.monotonic() - started < TIMEOUT_S:
                if tracker.exists() and tracker.read_text().strip() == str(KILL_AFTER):
                    break
                time.sleep(0.5)
        finally:
            finished = proc.poll() is not None
            _kill_tree(proc)
    text = log.read_text(errors="replace")
    assert not finished, f"the job ended (rc {proc.returncode}) before its step-{KILL_AFTER} checkpoint:\n{text[-4000:]}"
    assert tracker.read_text().strip() == str(KILL_AFTER), text[-4000:]
    print(f"\nfirst run killed after {time.monotonic() - started:.0f} s")
    return work, ckpt, text


@pytest.fixture(scope="module")
def resumed(crashed):
    work, ckpt, first = crashed
    partial = ckpt / f"global_step_{STEPS}" / "actor"
    if not any(partial.glob("model_world_size_*_rank_0.pt")):  # the kill came before step 3 began saving
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "model_world_size_1_rank_0.pt").write_bytes(b"PK\x03\x04 cut short")
    started = time.monotonic()
    code, text = _run(work, work / "resume.log", env=_env(TINY_CPU_SKIP_SETUP="1"))
    print(f"\nresumed run: {time.monotonic() - started:.0f} s")
    assert code == 0, text[-6000:]
    return work, ckpt, first, text


def test_a_killed_run_resumes_from_its_last_checkpoint(resumed):
    work, ckpt, first, text = resumed
    # (the first run's last console lines may die in its stdout buffer: the tracker shows how far it got)
    assert f"resuming from {ckpt / f'global_step_{KILL_AFTER}'}" in text
    assert f"global_step_[{STEPS}] never finished saving: skipped" in text
    assert f"setting global step to {KILL_AFTER}" in text
    steps = _step_metrics(text)
    assert sorted(steps) == list(range(KILL_AFTER + 1, STEPS + 1)), f"resumed run logged steps {sorted(steps)}"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)


def test_resumed_steps_log_finite_flexrec_metrics_once(resumed):
    _, _, _, text = resumed
    for step, lines in _step_metrics(text).items():
        assert len(lines) == 1, f"step {step} logged {len(lines)} times"
        flexrec = {k: v for k, v in lines[0].items() if k.startswith("flexrec/")}
        for name in ("flexrec/valid_ratio", "flexrec/ndcg/mean", "flexrec/item_reward/mean",
                     "flexrec/uncertainty_scale/mean"):
            assert name in flexrec, f"step {step} lacks {name}"
        bad = {k: v for k, v in flexrec.items() if not math.isfinite(float(v))}
        assert not bad, f"step {step}: non-finite {bad}"

